//! Catalog read models: products, stock levels (sums of deltas) and reservations.

use serde::{Deserialize, Serialize};

use crate::events::{
    ProductCreated, ProductUpdated, ReservationHeld, ReservationRejected, ReservationReleased,
    ReservationRequested,
};
use crate::model::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductRow {
    pub product_id: Str,
    pub sku: Str,
    pub name: Str,
    pub price_cents: i64,
    pub currency: Str,
    pub reorder_point: i64,
    pub warehouse_id: Option<Str>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StockMeasure {
    OnHand,
    Reserved,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StockRow {
    pub product_id: Str,
    pub measure: StockMeasure,
    pub quantity: i64,
}

states! {
    pub enum ReservationStatus {
        Pending = "pending",
        Held = "held",
        Rejected = "rejected",
        Released = "released",
    }
}

/// Stock held through the inventory API.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReservationRow {
    pub reservation_id: Str,
    pub status: ReservationStatus,
    pub reason: Option<CancelReason>,
    pub items: Vec<Line>,
    pub lines: Vec<PricedLine>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

pub(crate) fn step_product(row: &mut Option<ProductRow>, event: &Event) {
    match &event.body {
        EventBody::ProductCreated(ProductCreated {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
            warehouse_id,
        }) => {
            *row = Some(ProductRow {
                product_id: product_id.clone(),
                sku: sku.clone(),
                name: name.clone(),
                price_cents: *price_cents,
                currency: currency.clone(),
                reorder_point: *reorder_point,
                warehouse_id: warehouse_id.clone(),
                created_at: event.ts,
                updated_at: event.ts,
            })
        }
        EventBody::ProductUpdated(ProductUpdated {
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.sku = sku.clone();
                row.name = name.clone();
                row.price_cents = *price_cents;
                row.currency = currency.clone();
                row.reorder_point = *reorder_point;
                row.updated_at = event.ts;
            }
        }
        _ => {}
    }
}

pub(crate) fn step_reservation(row: &mut Option<ReservationRow>, event: &Event) {
    if let EventBody::ReservationRequested(ReservationRequested {
        reservation_id,
        items,
    }) = &event.body
    {
        *row = Some(ReservationRow {
            reservation_id: reservation_id.clone(),
            status: ReservationStatus::Pending,
            reason: None,
            items: items.clone(),
            lines: Vec::new(),
            created_at: event.ts,
            updated_at: event.ts,
        });
        return;
    }
    let Some(row) = row.as_mut() else { return };
    row.updated_at = event.ts;
    match &event.body {
        EventBody::ReservationHeld(ReservationHeld { lines, .. }) => {
            row.status = ReservationStatus::Held;
            row.lines = lines.clone();
        }
        EventBody::ReservationRejected(ReservationRejected { reason, .. }) => {
            row.status = ReservationStatus::Rejected;
            row.reason = Some(*reason);
        }
        EventBody::ReservationReleased(ReservationReleased { .. }) => {
            row.status = ReservationStatus::Released
        }
        _ => {}
    }
}

//! Shipment read model.

use serde::{Deserialize, Serialize};

use crate::events::{ShipmentCancelled, ShipmentCreated, ShipmentDelivered, ShipmentDispatched};
use crate::model::*;

states! {
    pub enum ShipmentStatus {
        Pending = "pending",
        Dispatched = "dispatched",
        Delivered = "delivered",
        Cancelled = "cancelled",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShipmentRow {
    pub shipment_id: Str,
    pub order_id: Str,
    pub status: ShipmentStatus,
    pub carrier: Option<Str>,
    pub tracking_number: Option<Str>,
    pub address: Option<Str>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

pub(crate) fn step_shipment(row: &mut Option<ShipmentRow>, event: &Event) {
    if let EventBody::ShipmentCreated(ShipmentCreated {
        shipment_id,
        order_id,
        address,
    }) = &event.body
    {
        *row = Some(ShipmentRow {
            shipment_id: shipment_id.clone(),
            order_id: order_id.clone(),
            status: ShipmentStatus::Pending,
            carrier: None,
            tracking_number: None,
            address: address.clone(),
            created_at: event.ts,
            updated_at: event.ts,
        });
        return;
    }
    let Some(row) = row.as_mut() else { return };
    row.updated_at = event.ts;
    match &event.body {
        EventBody::ShipmentDispatched(ShipmentDispatched {
            carrier,
            tracking_number,
            ..
        }) => {
            row.status = ShipmentStatus::Dispatched;
            row.carrier = Some(carrier.clone());
            row.tracking_number = Some(tracking_number.clone());
        }
        EventBody::ShipmentDelivered(ShipmentDelivered { .. }) => {
            row.status = ShipmentStatus::Delivered
        }
        EventBody::ShipmentCancelled(ShipmentCancelled { .. }) => {
            row.status = ShipmentStatus::Cancelled
        }
        _ => {}
    }
}

//! Order and cart read models.

use serde::{Deserialize, Serialize};

use crate::events::{
    CartCreated, CartUpdated, OrderCancelled, OrderCompleted, OrderConfirmed, OrderCreated,
    OrderReserved, OrderShipped, PaymentInitiated, ShipmentCreated,
};
use crate::model::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CartRow {
    pub cart_id: Str,
    pub user_id: Str,
    pub items: Vec<Line>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub at: Ts,
    pub reason: Option<CancelReason>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderRow {
    pub order_id: Str,
    pub user_id: Str,
    pub status: OrderStatus,
    pub cancel_reason: Option<CancelReason>,
    /// The lines as requested, until stock is held for them; then `lines` has them.
    pub items: Box<[Line]>,
    pub lines: Box<[PricedLine]>,
    pub total_cents: i64,
    pub currency: Str,
    /// Whether a payment was started; its id is `payment_id_for(order_id)`.
    pub has_payment: bool,
    /// Whether a shipment was created; its id is `shipment_id_for(order_id)`.
    pub has_shipment: bool,
    pub cart_id: Option<Str>,
    pub shipping_address: Option<Str>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub history: Box<[StatusChange]>,
}

impl OrderRow {
    pub fn payment_id(&self) -> Option<Str> {
        self.has_payment.then(|| payment_id_for(&self.order_id))
    }

    pub fn shipment_id(&self) -> Option<Str> {
        self.has_shipment.then(|| shipment_id_for(&self.order_id))
    }
}

pub(crate) fn step_cart(row: &mut Option<CartRow>, event: &Event) {
    match &event.body {
        EventBody::CartCreated(CartCreated { cart_id, user_id }) => {
            *row = Some(CartRow {
                cart_id: cart_id.clone(),
                user_id: user_id.clone(),
                items: Vec::new(),
                created_at: event.ts,
                updated_at: event.ts,
            })
        }
        EventBody::CartUpdated(CartUpdated {
            product_id,
            quantity,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.items.retain(|line| line.product_id != *product_id);
                if *quantity > 0 {
                    row.items.push(Line {
                        product_id: product_id.clone(),
                        quantity: *quantity,
                    });
                }
                row.updated_at = event.ts;
            }
        }
        _ => {}
    }
}

pub(crate) fn step_order(row: &mut Option<OrderRow>, event: &Event) {
    if let EventBody::OrderCreated(OrderCreated {
        order_id,
        user_id,
        items,
        cart_id,
        shipping_address,
    }) = &event.body
    {
        *row = Some(OrderRow {
            order_id: order_id.clone(),
            user_id: user_id.clone(),
            status: OrderStatus::Pending,
            cancel_reason: None,
            items: items.as_slice().into(),
            lines: Box::default(),
            total_cents: 0,
            currency: Str::default(),
            has_payment: false,
            has_shipment: false,
            cart_id: cart_id.clone(),
            shipping_address: shipping_address.clone(),
            created_at: event.ts,
            updated_at: event.ts,
            history: Box::new([StatusChange {
                status: OrderStatus::Pending,
                at: event.ts,
                reason: None,
            }]),
        });
        return;
    }
    let Some(row) = row.as_mut() else { return };
    let status = |row: &mut OrderRow, status: OrderStatus, reason: Option<CancelReason>| {
        row.status = status;
        row.cancel_reason = reason;
        push_boxed(
            &mut row.history,
            StatusChange {
                status,
                at: event.ts,
                reason,
            },
        );
    };
    row.updated_at = event.ts;
    match &event.body {
        EventBody::OrderReserved(OrderReserved {
            lines,
            total_cents,
            currency,
            ..
        }) => {
            row.lines = lines.as_slice().into();
            // The priced lines say all the requested ones did; keep one copy.
            row.items = Box::default();
            row.total_cents = *total_cents;
            row.currency = currency.clone();
            status(row, OrderStatus::Reserved, None);
        }
        EventBody::PaymentInitiated(PaymentInitiated { .. }) => row.has_payment = true,
        EventBody::OrderConfirmed(OrderConfirmed { .. }) => {
            status(row, OrderStatus::Confirmed, None)
        }
        EventBody::ShipmentCreated(ShipmentCreated { .. }) => row.has_shipment = true,
        EventBody::OrderShipped(OrderShipped { .. }) => status(row, OrderStatus::Shipped, None),
        EventBody::OrderCompleted(OrderCompleted { .. }) => {
            status(row, OrderStatus::Completed, None)
        }
        EventBody::OrderCancelled(OrderCancelled { reason, .. }) => {
            status(row, OrderStatus::Cancelled, Some(*reason))
        }
        _ => {}
    }
}

//! The orders context's part of the event catalogue: carts, orders and the order saga (`cart.*`, `order.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{CancelReason, Line, PricedLine, Str};

records! {
    /// A user opened a cart.
    pub struct CartCreated {
        pub cart_id: Str,
        pub user_id: Str,
    }

    /// A cart's quantity of one product changed (0 removes it).
    pub struct CartUpdated {
        pub cart_id: Str,
        pub product_id: Str,
        pub quantity: i64,
    }

    /// An order was placed; its saga starts by reserving stock.
    pub struct OrderCreated {
        pub order_id: Str,
        pub user_id: Str,
        pub items: Vec<Line>,
        pub cart_id: Option<Str>,
        pub shipping_address: Option<Str>,
    }

    /// Every line of an order is held, priced at the prices in force.
    pub struct OrderReserved {
        pub order_id: Str,
        pub lines: Vec<PricedLine>,
        pub total_cents: i64,
        pub currency: Str,
    }

    /// An order's payment succeeded.
    pub struct OrderConfirmed {
        pub order_id: Str,
        pub payment_id: Str,
    }

    /// An order's shipment left the warehouse.
    pub struct OrderShipped {
        pub order_id: Str,
        pub shipment_id: Str,
    }

    /// An order's shipment was delivered.
    pub struct OrderCompleted {
        pub order_id: Str,
    }

    /// An order ended without being fulfilled; its stock is released.
    pub struct OrderCancelled {
        pub order_id: Str,
        pub reason: CancelReason,
    }
}

//! The catalog context's part of the event catalogue: products, their stock and reservations of stock (`product.*`, `inventory.*`, `reservation.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{CancelReason, Line, PricedLine, Str};

records! {
    /// A product entered the catalogue.
    pub struct ProductCreated {
        pub product_id: Str,
        pub sku: Str,
        pub name: Str,
        pub price_cents: i64,
        pub currency: Str,
        pub reorder_point: i64,
        pub warehouse_id: Option<Str>,
    }

    /// A product's details changed; every field is its value after the change.
    pub struct ProductUpdated {
        pub product_id: Str,
        pub sku: Str,
        pub name: Str,
        pub price_cents: i64,
        pub currency: Str,
        pub reorder_point: i64,
    }

    /// Units on hand changed by `delta` outside any order (receipts, counts, damage).
    pub struct StockAdjusted {
        pub product_id: Str,
        pub delta: i64,
        pub reason: Str,
    }

    /// Stock held for a holder: `order_id` names an order or a reservation (`rsv_…`).
    pub struct InventoryReserved {
        pub product_id: Str,
        pub order_id: Str,
        pub quantity: i64,
    }

    /// Stock a holder held went back to available.
    pub struct InventoryReleased {
        pub product_id: Str,
        pub order_id: Str,
        pub quantity: i64,
    }

    /// Held stock left the warehouse with its order: on hand and reserved both fall.
    pub struct InventoryDeducted {
        pub product_id: Str,
        pub order_id: Str,
        pub quantity: i64,
    }

    /// Available stock crossed down to the product's reorder point or below (once per crossing).
    pub struct LowStock {
        pub product_id: Str,
        pub available: i64,
        pub reorder_point: i64,
    }

    /// Stock was asked for through the inventory API, outside any order.
    pub struct ReservationRequested {
        pub reservation_id: Str,
        pub items: Vec<Line>,
    }

    /// Every line of a reservation is held, at the prices in force.
    pub struct ReservationHeld {
        pub reservation_id: Str,
        pub lines: Vec<PricedLine>,
    }

    /// A reservation holds nothing: some line could not be held.
    pub struct ReservationRejected {
        pub reservation_id: Str,
        pub reason: CancelReason,
    }

    /// A reservation's stock went back to available.
    pub struct ReservationReleased {
        pub reservation_id: Str,
    }
}

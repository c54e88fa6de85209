//! Fulfillment: shipments. The saga asks for a shipment once an order is paid; the
//! carrier's answers (dispatched, delivered) come back as commands. Its rows are in
//! `views.rs`.

pub mod events;
pub mod views;

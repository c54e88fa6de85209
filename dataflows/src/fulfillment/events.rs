//! The fulfillment context's part of the event catalogue: shipments (`shipping.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::Str;

records! {
    /// A paid order's shipment was opened.
    pub struct ShipmentCreated {
        pub shipment_id: Str,
        pub order_id: Str,
        pub address: Option<Str>,
    }

    /// A carrier took the shipment.
    pub struct ShipmentDispatched {
        pub shipment_id: Str,
        pub order_id: Str,
        pub carrier: Str,
        pub tracking_number: Str,
    }

    /// The carrier delivered the shipment.
    pub struct ShipmentDelivered {
        pub shipment_id: Str,
        pub order_id: Str,
    }

    /// A shipment will not be sent: its order was cancelled before dispatch.
    pub struct ShipmentCancelled {
        pub shipment_id: Str,
        pub order_id: Str,
    }
}

//! The fulfillment context's part of the event catalogue: shipments (`shipping.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Str;

/// A paid order's shipment was opened.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct ShipmentCreated {
    pub shipment_id: Str,
    pub order_id: Str,
    pub address: Option<Str>,
}

/// A carrier took the shipment.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct ShipmentDispatched {
    pub shipment_id: Str,
    pub order_id: Str,
    pub carrier: Str,
    pub tracking_number: Str,
}

/// The carrier delivered the shipment.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct ShipmentDelivered {
    pub shipment_id: Str,
    pub order_id: Str,
}

/// A shipment will not be sent: its order was cancelled before dispatch.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct ShipmentCancelled {
    pub shipment_id: Str,
    pub order_id: Str,
}

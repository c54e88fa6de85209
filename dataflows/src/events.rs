//! The event catalogue: every event the dataflow emits, by its name on the event bus.
//!
//! Each bounded context declares its events in its own `events.rs` (a plain record per
//! event); `EventBody` is their union, and the one table below gives each its bus name.
//! On the wire an event is its record with a `type` tag (`{"type": "order_created", …}`).

use serde::{Deserialize, Serialize};

pub use crate::analytics::events::*;
pub use crate::auth::events::*;
pub use crate::catalog::events::*;
pub use crate::fulfillment::events::*;
pub use crate::orders::events::*;
pub use crate::payments::events::*;
pub use crate::reporting::events::*;
pub use crate::support::events::*;
pub use crate::users::events::*;

use crate::model::{Seq, Str, Ts};

/// A domain event: what the dataflow decided. `seq`, `phase` and `sub` order events
/// deterministically: by the command that caused them, then by saga round, then by
/// their position among that command's events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub seq: Seq,
    pub phase: u8,
    pub sub: u16,
    pub ts: Ts,
    pub body: EventBody,
}

/// Declares event records: plain data with the derives every event needs (ordering for
/// determinism, serde for the wire, a JSON Schema for the bus's consumers).
macro_rules! records {
    ($($(#[$doc:meta])* pub struct $record:ident { $($field:tt)* })*) => {
        $(
            $(#[$doc])*
            #[derive(
                Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
                serde::Serialize, serde::Deserialize, schemars::JsonSchema,
            )]
            pub struct $record { $($field)* }
        )*
    };
}
pub(crate) use records;

/// Declares `EventBody` from `Record = "bus.name"` pairs: the union, its names, its
/// JSON Schemas, and `From` each record.
macro_rules! catalogue {
    ($($record:ident = $name:literal,)*) => {
        /// One event of any context.
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum EventBody {
            $($record($record),)*
        }

        impl EventBody {
            /// Every event's name on the bus, in catalogue order.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The event's name on the event bus, as in the architecture brief.
            pub fn name(&self) -> &'static str {
                match self {
                    $(EventBody::$record(_) => $name,)*
                }
            }

            /// Serialises the event's record alone, without its `type` tag (the bus
            /// envelope's `data`): its fields in declaration order.
            pub fn serialize_record<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(EventBody::$record(record) => record.serialize(serializer),)*
                }
            }

            /// Each event's name with the JSON Schema of its record, in catalogue order.
            pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
                vec![$(($name, schemars::schema_for!($record)),)*]
            }
        }

        $(impl From<$record> for EventBody {
            fn from(record: $record) -> Self {
                EventBody::$record(record)
            }
        })*
    };
}

catalogue! {
    ProductCreated = "product.created",
    ProductUpdated = "product.updated",
    StockAdjusted = "inventory.adjusted",
    InventoryReserved = "inventory.reserved",
    InventoryReleased = "inventory.released",
    InventoryDeducted = "inventory.deducted",
    LowStock = "inventory.low_stock",
    UserCreated = "user.created",
    UserUpdated = "user.updated",
    UserDeleted = "user.deleted",
    CartCreated = "cart.created",
    CartUpdated = "cart.updated",
    OrderCreated = "order.created",
    OrderReserved = "order.reserved",
    OrderConfirmed = "order.confirmed",
    OrderShipped = "order.shipped",
    OrderCompleted = "order.completed",
    OrderCancelled = "order.cancelled",
    PaymentInitiated = "payment.initiated",
    PaymentCompleted = "payment.completed",
    PaymentFailed = "payment.failed",
    FraudDetected = "fraud.detected",
    RefundRequested = "refund.requested",
    RefundProcessed = "refund.processed",
    RefundFailed = "refund.failed",
    ShipmentCreated = "shipping.created",
    ShipmentDispatched = "shipping.dispatched",
    ShipmentDelivered = "shipping.completed",
    ShipmentCancelled = "shipping.cancelled",
    ReservationRequested = "reservation.requested",
    ReservationHeld = "reservation.held",
    ReservationRejected = "reservation.rejected",
    ReservationReleased = "reservation.released",
    AnomalyDetected = "analytics.anomaly",
    ReportRequested = "report.requested",
    ReportCompleted = "report.completed",
    ReportFailed = "report.failed",
    ReportScheduled = "report.scheduled",
    ReportScheduleDeleted = "report.schedule_deleted",
    DashboardCreated = "dashboard.created",
    DashboardUpdated = "dashboard.updated",
    DashboardDeleted = "dashboard.deleted",
    ApiKeyCreated = "api_key.created",
    ApiKeyExpiryChanged = "api_key.expiry_changed",
    ApiKeyRevoked = "api_key.revoked",
    AccessTokenRevoked = "access_token.revoked",
    SigningKeyPublished = "signing_key.published",
    SigningKeyRetired = "signing_key.retired",
    AuthorizationCodeGranted = "authorization_code.granted",
    SessionOpened = "session.opened",
    SessionRefreshed = "session.refreshed",
    SessionRevoked = "session.revoked",
    UserAuthenticated = "user.authenticated",
    UserAuthenticationFailed = "user.authentication_failed",
    UserLocked = "user.locked",
    UserUnlocked = "user.unlocked",
    MfaEnrollmentStarted = "user.mfa_enrollment_started",
    MfaEnabled = "user.mfa_enabled",
    MfaDisabled = "user.mfa_disabled",
    MfaRecoveryCodeUsed = "user.mfa_recovery_code_used",
    PaymentMethodAdded = "payment_method.added",
    PaymentMethodRemoved = "payment_method.removed",
    TicketCreated = "ticket.created",
    TicketUpdated = "ticket.updated",
    TicketCommented = "ticket.commented",
    LoyaltyPointsEarned = "loyalty.points_earned",
    LoyaltyPointsReversed = "loyalty.points_reversed",
}

impl EventBody {
    /// The order this event belongs to, if any.
    pub fn order_id(&self) -> Option<&Str> {
        use EventBody as E;
        Some(match self {
            E::OrderCreated(e) => &e.order_id,
            E::OrderReserved(e) => &e.order_id,
            E::OrderConfirmed(e) => &e.order_id,
            E::OrderShipped(e) => &e.order_id,
            E::OrderCompleted(e) => &e.order_id,
            E::OrderCancelled(e) => &e.order_id,
            E::PaymentInitiated(e) => &e.order_id,
            E::PaymentCompleted(e) => &e.order_id,
            E::PaymentFailed(e) => &e.order_id,
            E::FraudDetected(e) => &e.order_id,
            E::RefundRequested(e) => &e.order_id,
            E::RefundProcessed(e) => &e.order_id,
            E::RefundFailed(e) => &e.order_id,
            E::ShipmentCreated(e) => &e.order_id,
            E::ShipmentDispatched(e) => &e.order_id,
            E::ShipmentDelivered(e) => &e.order_id,
            E::ShipmentCancelled(e) => &e.order_id,
            _ => return None,
        })
    }

    /// The payment this event belongs to, if any.
    pub fn payment_id(&self) -> Option<&Str> {
        use EventBody as E;
        Some(match self {
            E::PaymentInitiated(e) => &e.payment_id,
            E::PaymentCompleted(e) => &e.payment_id,
            E::PaymentFailed(e) => &e.payment_id,
            E::FraudDetected(e) => &e.payment_id,
            E::RefundRequested(e) => &e.payment_id,
            E::RefundProcessed(e) => &e.payment_id,
            E::RefundFailed(e) => &e.payment_id,
            _ => return None,
        })
    }

    /// The shipment this event belongs to, if any.
    pub fn shipment_id(&self) -> Option<&Str> {
        use EventBody as E;
        Some(match self {
            E::ShipmentCreated(e) => &e.shipment_id,
            E::ShipmentDispatched(e) => &e.shipment_id,
            E::ShipmentDelivered(e) => &e.shipment_id,
            E::ShipmentCancelled(e) => &e.shipment_id,
            _ => return None,
        })
    }

    /// The aggregate that owns this event (for keys on the event bus).
    pub fn aggregate_id(&self) -> &str {
        use EventBody as E;
        match self {
            E::ProductCreated(e) => &e.product_id,
            E::ProductUpdated(e) => &e.product_id,
            E::StockAdjusted(e) => &e.product_id,
            E::InventoryReserved(e) => &e.product_id,
            E::InventoryReleased(e) => &e.product_id,
            E::InventoryDeducted(e) => &e.product_id,
            E::LowStock(e) => &e.product_id,
            E::UserCreated(e) => &e.user_id,
            E::UserUpdated(e) => &e.user_id,
            E::UserDeleted(e) => &e.user_id,
            E::CartCreated(e) => &e.cart_id,
            E::CartUpdated(e) => &e.cart_id,
            E::ReservationRequested(e) => &e.reservation_id,
            E::ReservationHeld(e) => &e.reservation_id,
            E::ReservationRejected(e) => &e.reservation_id,
            E::ReservationReleased(e) => &e.reservation_id,
            E::AnomalyDetected(e) => &e.series,
            E::ReportRequested(e) => &e.report_id,
            E::ReportCompleted(e) => &e.report_id,
            E::ReportFailed(e) => &e.report_id,
            E::ReportScheduled(e) => &e.schedule_id,
            E::ReportScheduleDeleted(e) => &e.schedule_id,
            E::DashboardCreated(e) => &e.dashboard_id,
            E::DashboardUpdated(e) => &e.dashboard_id,
            E::DashboardDeleted(e) => &e.dashboard_id,
            E::PaymentMethodAdded(e) => &e.method_id,
            E::PaymentMethodRemoved(e) => &e.method_id,
            E::TicketCreated(e) => &e.ticket_id,
            E::TicketUpdated(e) => &e.ticket_id,
            E::TicketCommented(e) => &e.ticket_id,
            E::LoyaltyPointsEarned(e) => &e.user_id,
            E::LoyaltyPointsReversed(e) => &e.user_id,
            other => other.order_id().map_or("", |id| id),
        }
    }

    /// What ties this event to the others of one business process: the order for
    /// everything its saga does (stock held for it, its payment, its shipment), the
    /// reservation for a reservation's, and otherwise the aggregate.
    pub fn correlation_id(&self) -> &str {
        use EventBody as E;
        match self {
            // Stock held, released or deducted for an order (or a reservation).
            E::InventoryReserved(e) => &e.order_id,
            E::InventoryReleased(e) => &e.order_id,
            E::InventoryDeducted(e) => &e.order_id,
            other => match other.order_id() {
                Some(order_id) => order_id,
                None => other.aggregate_id(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CancelReason;

    /// The wire form is the record with a `type` tag, as before events had records of
    /// their own: envelopes' ids are digests of it, so it must not move.
    #[test]
    fn an_event_serialises_as_its_tagged_record() {
        let event = Event {
            seq: 3,
            phase: 1,
            sub: 2,
            ts: 1_795_000_000_000,
            body: OrderCancelled {
                order_id: "ord_1".into(),
                reason: CancelReason::OutOfStock,
            }
            .into(),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"phase":1,"sub":2,"ts":1795000000000,"body":{"type":"order_cancelled","order_id":"ord_1","reason":"out_of_stock"}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        assert_eq!(event.body.name(), "order.cancelled");
        assert_eq!(EventBody::NAMES.len(), EventBody::schemas().len());
    }
}

//! The domain model: commands that enter the log, events that leave the dataflow,
//! rejections, and the small value types they share. Everything here is plain data.

use serde::{Deserialize, Serialize};

/// Logical timestamp of a log batch (milliseconds since the Unix epoch, strictly
/// increasing per batch). Stored in the log, so replays see the same value.
pub type Ts = u64;
/// Position of a record in the log; orders records within a timestamp.
pub type Seq = u64;

/// Time inside the dataflow: a batch at log timestamp `t` enters at `2t`; the
/// second round of the saga (replies from stock, released e-mail claims) runs at `2t + 1`.
pub type Time = u64;

/// The dataflow time at which a command appended at `ts` is first processed.
pub fn command_time(ts: Ts) -> Time {
    ts * 2
}

/// The least dataflow frontier at which every effect of the batch at `ts` is visible.
pub fn settled_frontier(ts: Ts) -> Time {
    ts * 2 + 2
}

/// The log timestamp of a dataflow time.
pub fn log_ts(time: Time) -> Ts {
    time / 2
}

/// A line of an order or a cart: a product and a positive quantity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i64,
}

/// A line with the unit price that was in force when stock was reserved for it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PricedLine {
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub currency: String,
}

/// Who holds reserved stock: an order, or a reservation made through the inventory API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    Order,
    Reservation,
}

/// A tokenised card: the number itself never enters the log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CardToken {
    /// Opaque token the payment provider resolves (sandbox: a digest of the number).
    pub token: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
}

/// Why an order was cancelled. Serialized in `snake_case`, as in the HTTP contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    FraudSuspected,
    CustomerRequest,
    InvalidItems,
    AdminRequest,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "out_of_stock",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::FraudSuspected => "fraud_suspected",
            CancelReason::CustomerRequest => "customer_request",
            CancelReason::InvalidItems => "invalid_items",
            CancelReason::AdminRequest => "admin_request",
        }
    }
}

/// Order status, exactly as the HTTP contract spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Reserved,
    Confirmed,
    Shipped,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the saga still has work to do on its own (no outside call needed).
    pub fn is_settled(self) -> bool {
        !matches!(self, OrderStatus::Pending | OrderStatus::Reserved)
    }
}

/// What the payment provider answered to a charge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PaymentOutcome {
    Approved { charge_id: String },
    Declined { decline_code: String },
    Fraud { decline_code: String },
}

/// A command as it is stored in the log: the command and, when the client sent one,
/// its idempotency key with a fingerprint of the request it was sent with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyKey>,
    pub command: Command,
}

impl Envelope {
    pub fn new(command: Command) -> Self {
        Envelope {
            idempotency: None,
            command,
        }
    }
}

/// How long an `Idempotency-Key` is remembered, in log time (as card processors do).
pub const IDEMPOTENCY_TTL_MS: Ts = 24 * 60 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// Digest of the method, path and body of the first request with this key.
    pub fingerprint: String,
}

/// Every state change enters the system as one of these, through the log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    CreateProduct {
        product_id: String,
        sku: String,
        name: String,
        price_cents: i64,
        currency: String,
        initial_stock: i64,
        warehouse_id: Option<String>,
        reorder_point: i64,
    },
    UpdateProduct {
        product_id: String,
        sku: Option<String>,
        name: Option<String>,
        price_cents: Option<i64>,
        currency: Option<String>,
        reorder_point: Option<i64>,
    },
    AdjustStock {
        product_id: String,
        delta: i64,
        reason: String,
    },
    CreateUser {
        user_id: String,
        email: String,
        name: String,
        password_hash: String,
    },
    UpdateUser {
        user_id: String,
        email: Option<String>,
        name: Option<String>,
        password_hash: Option<String>,
    },
    DeleteUser {
        user_id: String,
    },
    CreateCart {
        cart_id: String,
        user_id: String,
    },
    SetCartItem {
        cart_id: String,
        product_id: String,
        quantity: i64,
    },
    PlaceOrder {
        order_id: String,
        user_id: String,
        items: Vec<Line>,
        payment: Option<CardToken>,
        shipping_address: Option<String>,
        cart_id: Option<String>,
    },
    CancelOrder {
        order_id: String,
        reason: CancelReason,
    },
    /// Holds stock for every line or none, outside any order.
    ReserveStock {
        reservation_id: String,
        items: Vec<Line>,
    },
    ReleaseReservation {
        reservation_id: String,
    },
    SetOrderStatus {
        order_id: String,
        status: OrderStatus,
    },
    PayOrder {
        order_id: String,
        payment: CardToken,
    },
    PaymentResult {
        payment_id: String,
        order_id: String,
        outcome: PaymentOutcome,
    },
    ShipmentDispatched {
        shipment_id: String,
        order_id: String,
        carrier: String,
        tracking_number: String,
    },
    ShipmentDelivered {
        shipment_id: String,
        order_id: String,
    },
    RequestRefund {
        payment_id: String,
        order_id: String,
        amount_cents: Option<i64>,
        reason: String,
    },
    RefundResult {
        refund_id: String,
        payment_id: String,
        order_id: String,
        succeeded: bool,
    },
}

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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    ProductCreated {
        product_id: String,
        sku: String,
        name: String,
        price_cents: i64,
        currency: String,
        reorder_point: i64,
        warehouse_id: Option<String>,
    },
    ProductUpdated {
        product_id: String,
        sku: String,
        name: String,
        price_cents: i64,
        currency: String,
        reorder_point: i64,
    },
    StockAdjusted {
        product_id: String,
        delta: i64,
        reason: String,
    },
    /// Stock held for a holder: `order_id` names an order or a reservation (`rsv_…`).
    InventoryReserved {
        product_id: String,
        order_id: String,
        quantity: i64,
    },
    InventoryReleased {
        product_id: String,
        order_id: String,
        quantity: i64,
    },
    InventoryDeducted {
        product_id: String,
        order_id: String,
        quantity: i64,
    },
    LowStock {
        product_id: String,
        available: i64,
        reorder_point: i64,
    },
    UserCreated {
        user_id: String,
        email: String,
        name: String,
        password_hash: String,
    },
    UserUpdated {
        user_id: String,
        email: String,
        name: String,
        password_hash: String,
    },
    UserDeleted {
        user_id: String,
    },
    CartCreated {
        cart_id: String,
        user_id: String,
    },
    CartUpdated {
        cart_id: String,
        product_id: String,
        quantity: i64,
    },
    OrderCreated {
        order_id: String,
        user_id: String,
        items: Vec<Line>,
        cart_id: Option<String>,
        shipping_address: Option<String>,
    },
    OrderReserved {
        order_id: String,
        lines: Vec<PricedLine>,
        total_cents: i64,
        currency: String,
    },
    OrderConfirmed {
        order_id: String,
        payment_id: String,
    },
    OrderShipped {
        order_id: String,
        shipment_id: String,
    },
    OrderCompleted {
        order_id: String,
    },
    OrderCancelled {
        order_id: String,
        reason: CancelReason,
    },
    PaymentInitiated {
        payment_id: String,
        order_id: String,
        amount_cents: i64,
        currency: String,
        card: CardToken,
    },
    PaymentCompleted {
        payment_id: String,
        order_id: String,
        charge_id: String,
    },
    PaymentFailed {
        payment_id: String,
        order_id: String,
        decline_code: String,
    },
    FraudDetected {
        payment_id: String,
        order_id: String,
    },
    RefundRequested {
        refund_id: String,
        payment_id: String,
        order_id: String,
        amount_cents: i64,
        reason: String,
    },
    RefundProcessed {
        refund_id: String,
        payment_id: String,
        order_id: String,
        amount_cents: i64,
    },
    RefundFailed {
        refund_id: String,
        payment_id: String,
        order_id: String,
    },
    ShipmentCreated {
        shipment_id: String,
        order_id: String,
        address: Option<String>,
    },
    ShipmentDispatched {
        shipment_id: String,
        order_id: String,
        carrier: String,
        tracking_number: String,
    },
    ShipmentDelivered {
        shipment_id: String,
        order_id: String,
    },
    ShipmentCancelled {
        shipment_id: String,
        order_id: String,
    },
    ReservationRequested {
        reservation_id: String,
        items: Vec<Line>,
    },
    ReservationHeld {
        reservation_id: String,
        lines: Vec<PricedLine>,
    },
    ReservationRejected {
        reservation_id: String,
        reason: CancelReason,
    },
    ReservationReleased {
        reservation_id: String,
    },
}

impl EventBody {
    /// The event's name on the event bus, as in the architecture brief.
    pub fn name(&self) -> &'static str {
        use EventBody::*;
        match self {
            ProductCreated { .. } => "product.created",
            ProductUpdated { .. } => "product.updated",
            StockAdjusted { .. } => "inventory.adjusted",
            InventoryReserved { .. } => "inventory.reserved",
            InventoryReleased { .. } => "inventory.released",
            InventoryDeducted { .. } => "inventory.deducted",
            LowStock { .. } => "inventory.low_stock",
            UserCreated { .. } => "user.created",
            UserUpdated { .. } => "user.updated",
            UserDeleted { .. } => "user.deleted",
            CartCreated { .. } => "cart.created",
            CartUpdated { .. } => "cart.updated",
            OrderCreated { .. } => "order.created",
            OrderReserved { .. } => "order.reserved",
            OrderConfirmed { .. } => "order.confirmed",
            OrderShipped { .. } => "order.shipped",
            OrderCompleted { .. } => "order.completed",
            OrderCancelled { .. } => "order.cancelled",
            PaymentInitiated { .. } => "payment.initiated",
            PaymentCompleted { .. } => "payment.completed",
            PaymentFailed { .. } => "payment.failed",
            FraudDetected { .. } => "fraud.detected",
            RefundRequested { .. } => "refund.requested",
            RefundProcessed { .. } => "refund.processed",
            RefundFailed { .. } => "refund.failed",
            ShipmentCreated { .. } => "shipping.created",
            ShipmentDispatched { .. } => "shipping.dispatched",
            ShipmentDelivered { .. } => "shipping.completed",
            ShipmentCancelled { .. } => "shipping.cancelled",
            ReservationRequested { .. } => "reservation.requested",
            ReservationHeld { .. } => "reservation.held",
            ReservationRejected { .. } => "reservation.rejected",
            ReservationReleased { .. } => "reservation.released",
        }
    }

    /// The order this event belongs to, if any.
    pub fn order_id(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            OrderCreated { order_id, .. }
            | OrderReserved { order_id, .. }
            | OrderConfirmed { order_id, .. }
            | OrderShipped { order_id, .. }
            | OrderCompleted { order_id }
            | OrderCancelled { order_id, .. }
            | PaymentInitiated { order_id, .. }
            | PaymentCompleted { order_id, .. }
            | PaymentFailed { order_id, .. }
            | FraudDetected { order_id, .. }
            | RefundRequested { order_id, .. }
            | RefundProcessed { order_id, .. }
            | RefundFailed { order_id, .. }
            | ShipmentCreated { order_id, .. }
            | ShipmentDispatched { order_id, .. }
            | ShipmentDelivered { order_id, .. }
            | ShipmentCancelled { order_id, .. } => Some(order_id),
            _ => None,
        }
    }

    /// The payment this event belongs to, if any.
    pub fn payment_id(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            PaymentInitiated { payment_id, .. }
            | PaymentCompleted { payment_id, .. }
            | PaymentFailed { payment_id, .. }
            | FraudDetected { payment_id, .. }
            | RefundRequested { payment_id, .. }
            | RefundProcessed { payment_id, .. }
            | RefundFailed { payment_id, .. } => Some(payment_id),
            _ => None,
        }
    }

    /// The shipment this event belongs to, if any.
    pub fn shipment_id(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            ShipmentCreated { shipment_id, .. }
            | ShipmentDispatched { shipment_id, .. }
            | ShipmentDelivered { shipment_id, .. }
            | ShipmentCancelled { shipment_id, .. } => Some(shipment_id),
            _ => None,
        }
    }

    /// The aggregate that owns this event (for keys on the event bus).
    pub fn aggregate_id(&self) -> &str {
        use EventBody::*;
        match self {
            ProductCreated { product_id, .. }
            | ProductUpdated { product_id, .. }
            | StockAdjusted { product_id, .. }
            | InventoryReserved { product_id, .. }
            | InventoryReleased { product_id, .. }
            | InventoryDeducted { product_id, .. }
            | LowStock { product_id, .. } => product_id,
            UserCreated { user_id, .. } | UserUpdated { user_id, .. } | UserDeleted { user_id } => {
                user_id
            }
            CartCreated { cart_id, .. } | CartUpdated { cart_id, .. } => cart_id,
            ReservationRequested { reservation_id, .. }
            | ReservationHeld { reservation_id, .. }
            | ReservationRejected { reservation_id, .. }
            | ReservationReleased { reservation_id } => reservation_id,
            other => other.order_id().unwrap_or_default(),
        }
    }
}

/// Why the dataflow refused a command. Errors are data: a refused command produces one
/// of these, never a panic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejection {
    pub seq: Seq,
    pub ts: Ts,
    pub kind: RejectionKind,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectionKind {
    /// The aggregate the command names does not exist.
    NotFound,
    /// The aggregate exists but its state forbids the command.
    Conflict { code: String },
    /// The command is well formed but semantically invalid.
    Invalid { field: String },
    /// The idempotency key was used before; `first_seq` is the command that used it.
    Duplicate { first_seq: Seq, same_request: bool },
}

/// Deterministic ids of the saga's children, derived from the order id so that
/// replays and every worker agree without any coordination.
pub fn payment_id_for(order_id: &str) -> String {
    format!("pay_{}", order_id.strip_prefix("ord_").unwrap_or(order_id))
}

pub fn shipment_id_for(order_id: &str) -> String {
    format!("shp_{}", order_id.strip_prefix("ord_").unwrap_or(order_id))
}

pub fn refund_id_for(payment_id: &str, n: usize) -> String {
    format!(
        "re_{}_{}",
        payment_id.strip_prefix("pay_").unwrap_or(payment_id),
        n
    )
}

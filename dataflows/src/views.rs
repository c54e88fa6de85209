//! Read models: differential collections over the event collection.
//!
//! Every view row is a fold of the events of one key (`fold`), maintained by one
//! `reduce` keyed by `ViewKey`; stock levels are sums of deltas, maintained by `count`.
//! `fold` is also the specification: `oracle::recompute` applies it from scratch, and
//! tests check that the incremental views equal it after every batch.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewKey {
    Product(Str),
    User(Str),
    Cart(Str),
    Order(Str),
    Payment(Str),
    Shipment(Str),
    Effect(Str),
    Reservation(Str),
}

/// A row of one view. Each kind is its own allocation, sized to that kind and shared by
/// the dataflow's state, the published snapshot and any retraction in flight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Row {
    Product(Arc<ProductRow>),
    Stock(Arc<StockRow>),
    User(Arc<UserRow>),
    Cart(Arc<CartRow>),
    Order(Arc<OrderRow>),
    Payment(Arc<PaymentRow>),
    Shipment(Arc<ShipmentRow>),
    Effect(Arc<EffectRow>),
    Idempotency(Arc<IdempotencyRow>),
    Reservation(Arc<ReservationRow>),
}

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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: Str,
    pub email: Str,
    pub name: Str,
    pub password_hash: Str,
    pub created_at: Ts,
    pub updated_at: Ts,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    PartiallyRefunded,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    Pending,
    Dispatched,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Pending => "pending",
            ShipmentStatus::Dispatched => "dispatched",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RefundRow {
    pub refund_id: Str,
    /// Log position of the command that asked for the refund: a request's answer finds
    /// its own refund by it.
    pub requested_seq: Seq,
    pub amount_cents: i64,
    pub status: RefundStatus,
    pub reason: Str,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentRow {
    pub payment_id: Str,
    pub order_id: Str,
    pub status: PaymentStatus,
    pub amount_cents: i64,
    pub currency: Str,
    pub captured_cents: i64,
    pub refunded_cents: i64,
    pub card_brand: Str,
    pub card_last4: Str,
    pub charge_id: Option<Str>,
    pub decline_code: Option<Str>,
    pub fraud: bool,
    pub refunds: Box<[RefundRow]>,
    pub created_at: Ts,
    pub updated_at: Ts,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Pending,
    Held,
    Rejected,
    Released,
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

/// A call to the outside world the saga is waiting for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EffectRow {
    Charge {
        payment_id: Str,
        order_id: Str,
        amount_cents: i64,
        currency: Str,
        card: CardToken,
    },
    Refund {
        refund_id: Str,
        payment_id: Str,
        order_id: Str,
        amount_cents: i64,
    },
    Ship {
        shipment_id: Str,
        order_id: Str,
        address: Option<Str>,
    },
}

impl EffectRow {
    pub fn effect_id(&self) -> &str {
        match self {
            EffectRow::Charge { payment_id, .. } => payment_id,
            EffectRow::Refund { refund_id, .. } => refund_id,
            EffectRow::Ship { shipment_id, .. } => shipment_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyRow {
    pub key: Str,
    pub fingerprint: Str,
    pub first_seq: Seq,
    /// Log time of the first use; the key is forgotten `IDEMPOTENCY_TTL_MS` later.
    pub ts: Ts,
}

impl IdempotencyRow {
    /// Whether the key still binds a request arriving at log time `now`.
    pub fn is_live(&self, now: Ts) -> bool {
        now < self.ts.saturating_add(IDEMPOTENCY_TTL_MS)
    }
}

/// A row in a set keyed by its id: the id inside the row is the key, so a view holds no
/// second copy of it.
#[derive(Clone, Debug)]
pub struct ById(pub Row);

impl ById {
    pub fn id(&self) -> &str {
        self.0.key().1
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ById {}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id().hash(state)
    }
}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl OrderRow {
    pub fn payment_id(&self) -> Option<Str> {
        self.has_payment.then(|| payment_id_for(&self.order_id))
    }

    pub fn shipment_id(&self) -> Option<Str> {
        self.has_shipment.then(|| shipment_id_for(&self.order_id))
    }
}

impl ViewKey {
    /// The `Row::key` kind of this view's rows.
    pub fn kind(&self) -> u8 {
        match self {
            ViewKey::Product(_) => 0,
            ViewKey::User(_) => 3,
            ViewKey::Cart(_) => 4,
            ViewKey::Order(_) => 5,
            ViewKey::Payment(_) => 6,
            ViewKey::Shipment(_) => 7,
            ViewKey::Effect(_) => 8,
            ViewKey::Reservation(_) => 10,
        }
    }

    /// One more than the largest `kind`.
    pub const KINDS: u8 = 11;

    pub fn id(&self) -> &str {
        match self {
            ViewKey::Product(id)
            | ViewKey::User(id)
            | ViewKey::Cart(id)
            | ViewKey::Order(id)
            | ViewKey::Payment(id)
            | ViewKey::Shipment(id)
            | ViewKey::Effect(id)
            | ViewKey::Reservation(id) => id,
        }
    }
}

/// Typed access to one variant of `Row`.
pub trait RowKind: Sized {
    fn of(row: &Row) -> Option<&Self>;
}

macro_rules! row_kind {
    ($($variant:ident => $type:ty),*) => {
        $(impl RowKind for $type {
            fn of(row: &Row) -> Option<&Self> {
                match row {
                    Row::$variant(inner) => Some(&**inner),
                    _ => None,
                }
            }
        })*
    };
}

row_kind!(Product => ProductRow, User => UserRow, Cart => CartRow, Order => OrderRow, Payment => PaymentRow,
    Shipment => ShipmentRow, Effect => EffectRow, Idempotency => IdempotencyRow, Reservation => ReservationRow);

impl Row {
    /// The key a row is stored under in its view.
    pub fn key(&self) -> (u8, &str) {
        match self {
            Row::Product(row) => (0, &row.product_id),
            Row::Stock(row) => (
                if row.measure == StockMeasure::OnHand {
                    1
                } else {
                    2
                },
                &row.product_id,
            ),
            Row::User(row) => (3, &row.user_id),
            Row::Cart(row) => (4, &row.cart_id),
            Row::Order(row) => (5, &row.order_id),
            Row::Payment(row) => (6, &row.payment_id),
            Row::Shipment(row) => (7, &row.shipment_id),
            Row::Effect(row) => (8, row.effect_id()),
            Row::Idempotency(row) => (9, &row.key),
            Row::Reservation(row) => (10, &row.reservation_id),
        }
    }
}

/// The view keys an event contributes to.
pub fn view_keys(body: &EventBody) -> Vec<ViewKey> {
    use EventBody::*;
    let mut keys = Vec::with_capacity(3);
    match body {
        ProductCreated { product_id, .. } | ProductUpdated { product_id, .. } => {
            keys.push(ViewKey::Product(product_id.clone()))
        }
        UserCreated { user_id, .. } | UserUpdated { user_id, .. } | UserDeleted { user_id } => {
            keys.push(ViewKey::User(user_id.clone()))
        }
        CartCreated { cart_id, .. } | CartUpdated { cart_id, .. } => {
            keys.push(ViewKey::Cart(cart_id.clone()))
        }
        ReservationRequested { reservation_id, .. }
        | ReservationHeld { reservation_id, .. }
        | ReservationRejected { reservation_id, .. }
        | ReservationReleased { reservation_id } => {
            keys.push(ViewKey::Reservation(reservation_id.clone()))
        }
        _ => {}
    }
    if let Some(order_id) = body.order_id() {
        if !matches!(
            body,
            InventoryReserved { .. } | InventoryReleased { .. } | InventoryDeducted { .. }
        ) {
            keys.push(ViewKey::Order(order_id.clone()));
        }
    }
    if let Some(payment_id) = body.payment_id() {
        keys.push(ViewKey::Payment(payment_id.clone()));
    }
    if let Some(shipment_id) = body.shipment_id() {
        keys.push(ViewKey::Shipment(shipment_id.clone()));
    }
    match body {
        PaymentInitiated { payment_id: id, .. }
        | PaymentCompleted { payment_id: id, .. }
        | PaymentFailed { payment_id: id, .. } => keys.push(ViewKey::Effect(id.clone())),
        RefundRequested { refund_id: id, .. }
        | RefundProcessed { refund_id: id, .. }
        | RefundFailed { refund_id: id, .. } => keys.push(ViewKey::Effect(id.clone())),
        ShipmentCreated {
            shipment_id: id, ..
        }
        | ShipmentDispatched {
            shipment_id: id, ..
        }
        | ShipmentCancelled {
            shipment_id: id, ..
        } => keys.push(ViewKey::Effect(id.clone())),
        _ => {}
    }
    keys
}

/// Stock deltas of an event: `(product, measure, delta)`.
pub fn stock_deltas(body: &EventBody) -> Vec<(Str, StockMeasure, i64)> {
    use EventBody::*;
    match body {
        StockAdjusted {
            product_id, delta, ..
        } => vec![(product_id.clone(), StockMeasure::OnHand, *delta)],
        InventoryReserved {
            product_id,
            quantity,
            ..
        } => vec![(product_id.clone(), StockMeasure::Reserved, *quantity)],
        InventoryReleased {
            product_id,
            quantity,
            ..
        } => vec![(product_id.clone(), StockMeasure::Reserved, -*quantity)],
        InventoryDeducted {
            product_id,
            quantity,
            ..
        } => {
            vec![
                (product_id.clone(), StockMeasure::Reserved, -*quantity),
                (product_id.clone(), StockMeasure::OnHand, -*quantity),
            ]
        }
        _ => Vec::new(),
    }
}

/// The row of `key` after `events` (in log order). `None` when the key has no row.
pub fn fold<'a>(key: &ViewKey, events: impl IntoIterator<Item = &'a Event>) -> Option<Row> {
    let mut row = None;
    for event in events {
        step(key, &mut row, event);
    }
    row
}

/// One step of `fold`: the row of `key` after one more event. Events of a key only ever
/// arrive in log order and are never retracted, so a view can be maintained by applying
/// this step to each new event; `fold` over all events is the same function from scratch.
pub fn step(key: &ViewKey, row: &mut Option<Row>, event: &Event) {
    macro_rules! typed {
        ($variant:ident, $step:ident) => {{
            let mut typed = match row.take() {
                Some(Row::$variant(inner)) => Some(Arc::unwrap_or_clone(inner)),
                _ => None,
            };
            $step(&mut typed, event);
            *row = typed.map(|inner| Row::$variant(Arc::new(inner)));
        }};
    }
    match key {
        ViewKey::Product(_) => typed!(Product, step_product),
        ViewKey::User(_) => typed!(User, step_user),
        ViewKey::Cart(_) => typed!(Cart, step_cart),
        ViewKey::Order(_) => typed!(Order, step_order),
        ViewKey::Payment(_) => typed!(Payment, step_payment),
        ViewKey::Shipment(_) => typed!(Shipment, step_shipment),
        ViewKey::Effect(_) => typed!(Effect, step_effect),
        ViewKey::Reservation(_) => typed!(Reservation, step_reservation),
    }
}

fn step_product(row: &mut Option<ProductRow>, event: &Event) {
    match &event.body {
        EventBody::ProductCreated {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
            warehouse_id,
        } => {
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
        EventBody::ProductUpdated {
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
            ..
        } => {
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

fn step_user(row: &mut Option<UserRow>, event: &Event) {
    match &event.body {
        EventBody::UserCreated {
            user_id,
            email,
            name,
            password_hash,
        } => {
            *row = Some(UserRow {
                user_id: user_id.clone(),
                email: email.clone(),
                name: name.clone(),
                password_hash: password_hash.clone(),
                created_at: event.ts,
                updated_at: event.ts,
            })
        }
        EventBody::UserUpdated {
            email,
            name,
            password_hash,
            ..
        } => {
            if let Some(row) = row.as_mut() {
                row.email = email.clone();
                row.name = name.clone();
                row.password_hash = password_hash.clone();
                row.updated_at = event.ts;
            }
        }
        EventBody::UserDeleted { .. } => *row = None,
        _ => {}
    }
}

fn step_cart(row: &mut Option<CartRow>, event: &Event) {
    match &event.body {
        EventBody::CartCreated { cart_id, user_id } => {
            *row = Some(CartRow {
                cart_id: cart_id.clone(),
                user_id: user_id.clone(),
                items: Vec::new(),
                created_at: event.ts,
                updated_at: event.ts,
            })
        }
        EventBody::CartUpdated {
            product_id,
            quantity,
            ..
        } => {
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

fn step_order(row: &mut Option<OrderRow>, event: &Event) {
    if let EventBody::OrderCreated {
        order_id,
        user_id,
        items,
        cart_id,
        shipping_address,
    } = &event.body
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
        EventBody::OrderReserved {
            lines,
            total_cents,
            currency,
            ..
        } => {
            row.lines = lines.as_slice().into();
            // The priced lines say all the requested ones did; keep one copy.
            row.items = Box::default();
            row.total_cents = *total_cents;
            row.currency = currency.clone();
            status(row, OrderStatus::Reserved, None);
        }
        EventBody::PaymentInitiated { .. } => row.has_payment = true,
        EventBody::OrderConfirmed { .. } => status(row, OrderStatus::Confirmed, None),
        EventBody::ShipmentCreated { .. } => row.has_shipment = true,
        EventBody::OrderShipped { .. } => status(row, OrderStatus::Shipped, None),
        EventBody::OrderCompleted { .. } => status(row, OrderStatus::Completed, None),
        EventBody::OrderCancelled { reason, .. } => {
            status(row, OrderStatus::Cancelled, Some(*reason))
        }
        _ => {}
    }
}

fn step_payment(row: &mut Option<PaymentRow>, event: &Event) {
    if let EventBody::PaymentInitiated {
        payment_id,
        order_id,
        amount_cents,
        currency,
        card,
    } = &event.body
    {
        *row = Some(PaymentRow {
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            status: PaymentStatus::Pending,
            amount_cents: *amount_cents,
            currency: currency.clone(),
            captured_cents: 0,
            refunded_cents: 0,
            card_brand: card.brand.clone(),
            card_last4: card.last4.clone(),
            charge_id: None,
            decline_code: None,
            fraud: false,
            refunds: Box::default(),
            created_at: event.ts,
            updated_at: event.ts,
        });
        return;
    }
    let Some(row) = row.as_mut() else { return };
    row.updated_at = event.ts;
    match &event.body {
        EventBody::PaymentCompleted { charge_id, .. } => {
            row.status = PaymentStatus::Succeeded;
            row.captured_cents = row.amount_cents;
            row.charge_id = Some(charge_id.clone());
        }
        EventBody::PaymentFailed { decline_code, .. } => {
            row.status = PaymentStatus::Failed;
            row.decline_code = Some(decline_code.clone());
        }
        EventBody::FraudDetected { .. } => row.fraud = true,
        EventBody::RefundRequested {
            refund_id,
            amount_cents,
            reason,
            ..
        } => push_boxed(
            &mut row.refunds,
            RefundRow {
                refund_id: refund_id.clone(),
                requested_seq: event.seq,
                amount_cents: *amount_cents,
                status: RefundStatus::Pending,
                reason: reason.clone(),
            },
        ),
        EventBody::RefundProcessed {
            refund_id,
            amount_cents,
            ..
        } => {
            if let Some(refund) = row
                .refunds
                .iter_mut()
                .find(|refund| refund.refund_id == *refund_id)
            {
                refund.status = RefundStatus::Succeeded;
            }
            row.refunded_cents += amount_cents;
            row.status = if row.refunded_cents >= row.captured_cents {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
        }
        EventBody::RefundFailed { refund_id, .. } => {
            if let Some(refund) = row
                .refunds
                .iter_mut()
                .find(|refund| refund.refund_id == *refund_id)
            {
                refund.status = RefundStatus::Failed;
            }
        }
        _ => {}
    }
}

fn step_shipment(row: &mut Option<ShipmentRow>, event: &Event) {
    if let EventBody::ShipmentCreated {
        shipment_id,
        order_id,
        address,
    } = &event.body
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
        EventBody::ShipmentDispatched {
            carrier,
            tracking_number,
            ..
        } => {
            row.status = ShipmentStatus::Dispatched;
            row.carrier = Some(carrier.clone());
            row.tracking_number = Some(tracking_number.clone());
        }
        EventBody::ShipmentDelivered { .. } => row.status = ShipmentStatus::Delivered,
        EventBody::ShipmentCancelled { .. } => row.status = ShipmentStatus::Cancelled,
        _ => {}
    }
}

fn step_effect(row: &mut Option<EffectRow>, event: &Event) {
    *row = match &event.body {
        EventBody::PaymentInitiated {
            payment_id,
            order_id,
            amount_cents,
            currency,
            card,
        } => Some(EffectRow::Charge {
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            amount_cents: *amount_cents,
            currency: currency.clone(),
            card: card.clone(),
        }),
        EventBody::RefundRequested {
            refund_id,
            payment_id,
            order_id,
            amount_cents,
            ..
        } => Some(EffectRow::Refund {
            refund_id: refund_id.clone(),
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            amount_cents: *amount_cents,
        }),
        EventBody::ShipmentCreated {
            shipment_id,
            order_id,
            address,
        } => Some(EffectRow::Ship {
            shipment_id: shipment_id.clone(),
            order_id: order_id.clone(),
            address: address.clone(),
        }),
        _ => None,
    };
}

fn step_reservation(row: &mut Option<ReservationRow>, event: &Event) {
    if let EventBody::ReservationRequested {
        reservation_id,
        items,
    } = &event.body
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
        EventBody::ReservationHeld { lines, .. } => {
            row.status = ReservationStatus::Held;
            row.lines = lines.clone();
        }
        EventBody::ReservationRejected { reason, .. } => {
            row.status = ReservationStatus::Rejected;
            row.reason = Some(*reason);
        }
        EventBody::ReservationReleased { .. } => row.status = ReservationStatus::Released,
        _ => {}
    }
}

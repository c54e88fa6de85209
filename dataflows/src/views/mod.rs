//! Read models: differential collections over the event collection.
//!
//! Every view row is a fold of the events of one key (`fold`), maintained by one
//! `reduce` keyed by `ViewKey`; stock levels are sums of deltas, maintained by `count_total`.
//! `fold` is also the specification: `oracle::recompute` applies it from scratch, and
//! tests check that the incremental views equal it after every batch.

mod effects;
mod operator;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::analytics::views::{Metric, MetricRow};
pub use crate::auth::views::*;
pub use crate::catalog::views::*;
pub use crate::fulfillment::views::*;
pub use crate::orders::views::*;
pub use crate::payments::views::*;
pub use crate::reporting::views::*;
pub use crate::support::views::*;
pub use crate::users::views::*;
pub use effects::*;
pub use operator::{expires, read_models, WithTimes};

use crate::auth::views::{step_api_key, step_revoked_token, step_session, step_signing_key};
use crate::catalog::views::{step_product, step_reservation};
use crate::events::*;
use crate::fulfillment::views::step_shipment;
use crate::model::*;
use crate::orders::views::{step_cart, step_order};
use crate::payments::views::{step_payment, step_payment_method};
use crate::reporting::views::{step_dashboard, step_report, step_report_schedule};
use crate::support::views::step_ticket;
use crate::users::views::{step_erased_user, step_loyalty, step_sign_in, step_user};
use effects::step_effect;

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
    Report(Str),
    ReportSchedule(Str),
    ApiKey(Str),
    /// One sign-in attempt (the authentication log), by its attempt id.
    SignIn(Str),
    /// A revoked access token, by its id.
    RevokedToken(Str),
    /// An OAuth session, by its id.
    Session(Str),
    /// A deleted user's tombstone, by the user's id.
    ErasedUser(Str),
    /// A key access tokens are signed with, by its id.
    SigningKey(Str),
    /// A dashboard saved through the API, by its id.
    Dashboard(Str),
    /// A user's loyalty points, by the user's id.
    Loyalty(Str),
    /// A saved card, by its id.
    PaymentMethod(Str),
    /// A support ticket, by its id.
    Ticket(Str),
}

/// Which view a row belongs to. Stock has two: units on hand and units reserved, each a
/// count by product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewKind {
    Product,
    OnHand,
    Reserved,
    User,
    Cart,
    Order,
    Payment,
    Shipment,
    Effect,
    Idempotency,
    Reservation,
    Report,
    ReportSchedule,
    ApiKey,
    SignIn,
    RevokedToken,
    Session,
    ErasedUser,
    SigningKey,
    Dashboard,
    Loyalty,
    PaymentMethod,
    Ticket,
    Metric(Metric),
}

impl ViewKind {
    /// How many kinds there are, for tables with one slot per kind.
    pub const COUNT: usize = 23 + Metric::COUNT;

    /// A dense index below `COUNT`.
    pub fn index(self) -> usize {
        match self {
            ViewKind::Product => 0,
            ViewKind::OnHand => 1,
            ViewKind::Reserved => 2,
            ViewKind::User => 3,
            ViewKind::Cart => 4,
            ViewKind::Order => 5,
            ViewKind::Payment => 6,
            ViewKind::Shipment => 7,
            ViewKind::Effect => 8,
            ViewKind::Idempotency => 9,
            ViewKind::Reservation => 10,
            ViewKind::Report => 11,
            ViewKind::ReportSchedule => 12,
            ViewKind::ApiKey => 13,
            ViewKind::SignIn => 14,
            ViewKind::RevokedToken => 15,
            ViewKind::Session => 16,
            ViewKind::ErasedUser => 17,
            ViewKind::SigningKey => 18,
            ViewKind::Dashboard => 19,
            ViewKind::Loyalty => 20,
            ViewKind::PaymentMethod => 21,
            ViewKind::Ticket => 22,
            ViewKind::Metric(metric) => 23 + metric.index(),
        }
    }
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
    Report(Arc<ReportRow>),
    ReportSchedule(Arc<ReportScheduleRow>),
    ApiKey(Arc<ApiKeyRow>),
    SignIn(Arc<SignInRow>),
    RevokedToken(Arc<RevokedTokenRow>),
    Session(Arc<SessionRow>),
    ErasedUser(Arc<ErasedUserRow>),
    SigningKey(Arc<SigningKeyRow>),
    Dashboard(Arc<DashboardRow>),
    Loyalty(Arc<LoyaltyRow>),
    PaymentMethod(Arc<PaymentMethodRow>),
    Ticket(Arc<TicketRow>),
    Metric(Arc<MetricRow>),
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

impl ViewKey {
    /// The kind of this view's rows.
    pub fn kind(&self) -> ViewKind {
        match self {
            ViewKey::Product(_) => ViewKind::Product,
            ViewKey::User(_) => ViewKind::User,
            ViewKey::Cart(_) => ViewKind::Cart,
            ViewKey::Order(_) => ViewKind::Order,
            ViewKey::Payment(_) => ViewKind::Payment,
            ViewKey::Shipment(_) => ViewKind::Shipment,
            ViewKey::Effect(_) => ViewKind::Effect,
            ViewKey::Reservation(_) => ViewKind::Reservation,
            ViewKey::Report(_) => ViewKind::Report,
            ViewKey::ReportSchedule(_) => ViewKind::ReportSchedule,
            ViewKey::ApiKey(_) => ViewKind::ApiKey,
            ViewKey::SignIn(_) => ViewKind::SignIn,
            ViewKey::RevokedToken(_) => ViewKind::RevokedToken,
            ViewKey::Session(_) => ViewKind::Session,
            ViewKey::ErasedUser(_) => ViewKind::ErasedUser,
            ViewKey::SigningKey(_) => ViewKind::SigningKey,
            ViewKey::Dashboard(_) => ViewKind::Dashboard,
            ViewKey::Loyalty(_) => ViewKind::Loyalty,
            ViewKey::PaymentMethod(_) => ViewKind::PaymentMethod,
            ViewKey::Ticket(_) => ViewKind::Ticket,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            ViewKey::Product(id)
            | ViewKey::User(id)
            | ViewKey::Cart(id)
            | ViewKey::Order(id)
            | ViewKey::Payment(id)
            | ViewKey::Shipment(id)
            | ViewKey::Effect(id)
            | ViewKey::Reservation(id)
            | ViewKey::Report(id)
            | ViewKey::ReportSchedule(id)
            | ViewKey::ApiKey(id)
            | ViewKey::SignIn(id)
            | ViewKey::RevokedToken(id)
            | ViewKey::Session(id)
            | ViewKey::ErasedUser(id)
            | ViewKey::SigningKey(id)
            | ViewKey::Dashboard(id)
            | ViewKey::Loyalty(id)
            | ViewKey::PaymentMethod(id)
            | ViewKey::Ticket(id) => id,
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
    Shipment => ShipmentRow, Effect => EffectRow, Idempotency => IdempotencyRow, Reservation => ReservationRow, Report => ReportRow,
    ReportSchedule => ReportScheduleRow, ApiKey => ApiKeyRow, SignIn => SignInRow, RevokedToken => RevokedTokenRow, Session => SessionRow, ErasedUser => ErasedUserRow, SigningKey => SigningKeyRow, Dashboard => DashboardRow, Loyalty => LoyaltyRow, PaymentMethod => PaymentMethodRow, Ticket => TicketRow, Metric => MetricRow);

impl Row {
    /// The key a row is stored under: its view and its id there.
    pub fn key(&self) -> (ViewKind, &str) {
        match self {
            Row::Product(row) => (ViewKind::Product, &row.product_id),
            Row::Stock(row) => match row.measure {
                StockMeasure::OnHand => (ViewKind::OnHand, &row.product_id),
                StockMeasure::Reserved => (ViewKind::Reserved, &row.product_id),
            },
            Row::User(row) => (ViewKind::User, &row.user_id),
            Row::Cart(row) => (ViewKind::Cart, &row.cart_id),
            Row::Order(row) => (ViewKind::Order, &row.order_id),
            Row::Payment(row) => (ViewKind::Payment, &row.payment_id),
            Row::Shipment(row) => (ViewKind::Shipment, &row.shipment_id),
            Row::Effect(row) => (ViewKind::Effect, row.effect_id()),
            Row::Idempotency(row) => (ViewKind::Idempotency, &row.key),
            Row::Reservation(row) => (ViewKind::Reservation, &row.reservation_id),
            Row::Report(row) => (ViewKind::Report, &row.report_id),
            Row::ReportSchedule(row) => (ViewKind::ReportSchedule, &row.schedule_id),
            Row::ApiKey(row) => (ViewKind::ApiKey, &row.key_id),
            Row::SignIn(row) => (ViewKind::SignIn, &row.attempt_id),
            Row::RevokedToken(row) => (ViewKind::RevokedToken, &row.token_id),
            Row::Session(row) => (ViewKind::Session, &row.session_id),
            Row::ErasedUser(row) => (ViewKind::ErasedUser, &row.user_id),
            Row::SigningKey(row) => (ViewKind::SigningKey, &row.kid),
            Row::Dashboard(row) => (ViewKind::Dashboard, &row.dashboard_id),
            Row::Loyalty(row) => (ViewKind::Loyalty, &row.user_id),
            Row::PaymentMethod(row) => (ViewKind::PaymentMethod, &row.method_id),
            Row::Ticket(row) => (ViewKind::Ticket, &row.ticket_id),
            Row::Metric(row) => (ViewKind::Metric(row.metric), &row.id),
        }
    }
}

/// The view keys an event contributes to.
pub fn view_keys(body: &EventBody) -> Vec<ViewKey> {
    use EventBody as E;
    let mut keys = Vec::with_capacity(3);
    match body {
        E::ProductCreated(ProductCreated { product_id, .. })
        | E::ProductUpdated(ProductUpdated { product_id, .. }) => {
            keys.push(ViewKey::Product(product_id.clone()))
        }
        E::UserCreated(UserCreated { user_id, .. })
        | E::UserUpdated(UserUpdated { user_id, .. })
        | E::UserDeleted(UserDeleted { user_id })
        | E::UserLocked(UserLocked { user_id, .. })
        | E::UserUnlocked(UserUnlocked { user_id })
        | E::MfaEnrollmentStarted(MfaEnrollmentStarted { user_id, .. })
        | E::MfaEnabled(MfaEnabled { user_id, .. })
        | E::MfaDisabled(MfaDisabled { user_id })
        | E::MfaRecoveryCodeUsed(MfaRecoveryCodeUsed { user_id, .. }) => {
            keys.push(ViewKey::User(user_id.clone()));
            if matches!(body, E::UserDeleted(_)) {
                keys.push(ViewKey::ErasedUser(user_id.clone()));
            }
        }
        E::UserAuthenticated(UserAuthenticated {
            attempt_id,
            user_id,
            ..
        }) => {
            keys.push(ViewKey::User(user_id.clone()));
            keys.push(ViewKey::SignIn(attempt_id.clone()));
        }
        E::UserAuthenticationFailed(UserAuthenticationFailed { attempt_id, .. }) => {
            keys.push(ViewKey::SignIn(attempt_id.clone()))
        }
        E::CartCreated(CartCreated { cart_id, .. })
        | E::CartUpdated(CartUpdated { cart_id, .. }) => keys.push(ViewKey::Cart(cart_id.clone())),
        E::ReservationRequested(ReservationRequested { reservation_id, .. })
        | E::ReservationHeld(ReservationHeld { reservation_id, .. })
        | E::ReservationRejected(ReservationRejected { reservation_id, .. })
        | E::ReservationReleased(ReservationReleased { reservation_id }) => {
            keys.push(ViewKey::Reservation(reservation_id.clone()))
        }
        E::ReportRequested(ReportRequested { report_id, .. })
        | E::ReportCompleted(ReportCompleted { report_id, .. })
        | E::ReportFailed(ReportFailed { report_id, .. }) => {
            keys.push(ViewKey::Report(report_id.clone()))
        }
        E::ReportScheduled(ReportScheduled { schedule_id, .. })
        | E::ReportScheduleDeleted(ReportScheduleDeleted { schedule_id }) => {
            keys.push(ViewKey::ReportSchedule(schedule_id.clone()))
        }
        E::DashboardCreated(DashboardCreated { dashboard_id, .. })
        | E::DashboardUpdated(DashboardUpdated { dashboard_id, .. })
        | E::DashboardDeleted(DashboardDeleted { dashboard_id }) => {
            keys.push(ViewKey::Dashboard(dashboard_id.clone()))
        }
        E::TicketCreated(TicketCreated { ticket_id, .. })
        | E::TicketUpdated(TicketUpdated { ticket_id, .. })
        | E::TicketCommented(TicketCommented { ticket_id, .. }) => {
            keys.push(ViewKey::Ticket(ticket_id.clone()))
        }
        E::PaymentMethodAdded(PaymentMethodAdded { method_id, .. })
        | E::PaymentMethodRemoved(PaymentMethodRemoved { method_id, .. }) => {
            keys.push(ViewKey::PaymentMethod(method_id.clone()))
        }
        E::LoyaltyPointsEarned(LoyaltyPointsEarned { user_id, .. })
        | E::LoyaltyPointsReversed(LoyaltyPointsReversed { user_id, .. }) => {
            keys.push(ViewKey::Loyalty(user_id.clone()))
        }
        E::ApiKeyCreated(ApiKeyCreated { key_id, .. })
        | E::ApiKeyExpiryChanged(ApiKeyExpiryChanged { key_id, .. })
        | E::ApiKeyRevoked(ApiKeyRevoked { key_id }) => keys.push(ViewKey::ApiKey(key_id.clone())),
        E::AccessTokenRevoked(AccessTokenRevoked { token_id, .. }) => {
            keys.push(ViewKey::RevokedToken(token_id.clone()))
        }
        E::SigningKeyPublished(SigningKeyPublished { kid, .. })
        | E::SigningKeyRetired(SigningKeyRetired { kid }) => {
            keys.push(ViewKey::SigningKey(kid.clone()))
        }
        E::AuthorizationCodeGranted(AuthorizationCodeGranted { session_id, .. })
        | E::SessionOpened(SessionOpened { session_id, .. })
        | E::SessionRefreshed(SessionRefreshed { session_id, .. })
        | E::SessionRevoked(SessionRevoked { session_id, .. }) => {
            keys.push(ViewKey::Session(session_id.clone()))
        }
        _ => {}
    }
    if let Some(order_id) = body.order_id() {
        keys.push(ViewKey::Order(order_id.clone()));
    }
    if let Some(payment_id) = body.payment_id() {
        keys.push(ViewKey::Payment(payment_id.clone()));
    }
    if let Some(shipment_id) = body.shipment_id() {
        keys.push(ViewKey::Shipment(shipment_id.clone()));
    }
    match body {
        E::PaymentInitiated(PaymentInitiated { payment_id: id, .. })
        | E::PaymentCompleted(PaymentCompleted { payment_id: id, .. })
        | E::PaymentFailed(PaymentFailed { payment_id: id, .. })
        | E::RefundRequested(RefundRequested { refund_id: id, .. })
        | E::RefundProcessed(RefundProcessed { refund_id: id, .. })
        | E::RefundFailed(RefundFailed { refund_id: id, .. })
        | E::ShipmentCreated(ShipmentCreated {
            shipment_id: id, ..
        })
        | E::ShipmentDispatched(ShipmentDispatched {
            shipment_id: id, ..
        })
        | E::ShipmentCancelled(ShipmentCancelled {
            shipment_id: id, ..
        }) => keys.push(ViewKey::Effect(id.clone())),
        _ => {}
    }
    keys
}

/// Stock deltas of an event: `(product, measure, delta)`.
pub fn stock_deltas(body: &EventBody) -> Vec<(Str, StockMeasure, i64)> {
    use EventBody as E;
    match body {
        E::StockAdjusted(e) => vec![(e.product_id.clone(), StockMeasure::OnHand, e.delta)],
        E::InventoryReserved(e) => vec![(e.product_id.clone(), StockMeasure::Reserved, e.quantity)],
        E::InventoryReleased(e) => {
            vec![(e.product_id.clone(), StockMeasure::Reserved, -e.quantity)]
        }
        E::InventoryDeducted(e) => vec![
            (e.product_id.clone(), StockMeasure::Reserved, -e.quantity),
            (e.product_id.clone(), StockMeasure::OnHand, -e.quantity),
        ],
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
        ViewKey::Report(_) => typed!(Report, step_report),
        ViewKey::ReportSchedule(_) => typed!(ReportSchedule, step_report_schedule),
        ViewKey::ApiKey(_) => typed!(ApiKey, step_api_key),
        ViewKey::SignIn(_) => typed!(SignIn, step_sign_in),
        ViewKey::RevokedToken(_) => typed!(RevokedToken, step_revoked_token),
        ViewKey::Session(_) => typed!(Session, step_session),
        ViewKey::ErasedUser(_) => typed!(ErasedUser, step_erased_user),
        ViewKey::SigningKey(_) => typed!(SigningKey, step_signing_key),
        ViewKey::Dashboard(_) => typed!(Dashboard, step_dashboard),
        ViewKey::Loyalty(_) => typed!(Loyalty, step_loyalty),
        ViewKey::PaymentMethod(_) => typed!(PaymentMethod, step_payment_method),
        ViewKey::Ticket(_) => typed!(Ticket, step_ticket),
    }
}

//! The domain model: commands that enter the log, events that leave the dataflow,
//! rejections, and the small value types they share. Everything here is plain data.
//! The events themselves are in `crate::events`, each declared by its context.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::events::{Event, EventBody};

/// Logical timestamp of a log batch (milliseconds since the Unix epoch, strictly
/// increasing per batch). Stored in the log, so replays see the same value.
pub type Ts = u64;
/// Position of a record in the log; orders records within a timestamp.
pub type Seq = u64;

/// Time inside the dataflow: a batch at log timestamp `t` enters at `2t`; the
/// second round of the saga (replies from stock, released e-mail claims) runs at `2t + 1`.
pub type Time = u64;

/// Text in commands, events, state and rows. Immutable and shared: an id or a name is
/// allocated once, when its command is decoded, and every copy of it after that (saga
/// state, rows of several views, indexes) is a reference count.
pub type Str = std::sync::Arc<str>;

/// A row's state: each variant is named once, and the name is what `as_str`, serde
/// and the JSON Schema all use.
macro_rules! states {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize, schemars::JsonSchema,
        )]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}
pub(crate) use states;

/// Appends to a list kept as a boxed slice. Lists held for every order (status history,
/// refunds, lines) are boxed slices rather than `Vec`s: eight bytes less each, which
/// moves the rows that hold them into a smaller allocation, and they grow one item at a
/// time, rarely, anyway.
pub fn push_boxed<T>(items: &mut Box<[T]>, item: T) {
    let mut grown = std::mem::take(items).into_vec();
    grown.reserve_exact(1);
    grown.push(item);
    *items = grown.into_boxed_slice();
}

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
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Line {
    pub product_id: Str,
    pub quantity: i64,
}

/// A line with the unit price that was in force when stock was reserved for it.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct PricedLine {
    pub product_id: Str,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub currency: Str,
}

/// Who holds reserved stock: an order, or a reservation made through the inventory API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    Order,
    Reservation,
}

/// A tokenised card: the number itself never enters the log.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct CardToken {
    /// Opaque token the payment provider resolves (sandbox: a digest of the number).
    pub token: Str,
    pub brand: Str,
    pub last4: Str,
    pub exp_month: u8,
    pub exp_year: u16,
}

/// Why an order was cancelled. Serialized in `snake_case`, as in the HTTP contract.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
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
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
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
    Approved { charge_id: Str },
    Declined { decline_code: Str },
    Fraud { decline_code: Str },
}

/// A command as it is stored in the log: the command and, when the client sent one,
/// its idempotency key with a fingerprint of the request it was sent with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyKey>,
    pub command: Command,
    /// The HTTP request that sent it (`X-Request-Id`), so that a command in the log can
    /// be traced to the request and its log lines. Not part of the command: the
    /// dataflow does not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Str>,
}

impl Command {
    /// The command's name, as its `type` tag in the log has it.
    pub fn name(&self) -> &'static str {
        use Command::*;
        match self {
            CreateProduct { .. } => "create_product",
            UpdateProduct { .. } => "update_product",
            AdjustStock { .. } => "adjust_stock",
            CreateUser { .. } => "create_user",
            UpdateUser { .. } => "update_user",
            DeleteUser { .. } => "delete_user",
            CreateCart { .. } => "create_cart",
            SetCartItem { .. } => "set_cart_item",
            PlaceOrder { .. } => "place_order",
            CancelOrder { .. } => "cancel_order",
            ReserveStock { .. } => "reserve_stock",
            ReleaseReservation { .. } => "release_reservation",
            SetOrderStatus { .. } => "set_order_status",
            PayOrder { .. } => "pay_order",
            PaymentResult { .. } => "payment_result",
            ShipmentDispatched { .. } => "shipment_dispatched",
            ShipmentDelivered { .. } => "shipment_delivered",
            RequestRefund { .. } => "request_refund",
            RefundResult { .. } => "refund_result",
            RequestReport { .. } => "request_report",
            ReportResult { .. } => "report_result",
            ScheduleReport { .. } => "schedule_report",
            DeleteReportSchedule { .. } => "delete_report_schedule",
            OpenTicket { .. } => "open_ticket",
            ChangeTicket { .. } => "change_ticket",
            CommentOnTicket { .. } => "comment_on_ticket",
            AddPaymentMethod { .. } => "add_payment_method",
            RemovePaymentMethod { .. } => "remove_payment_method",
            CreateDashboard { .. } => "create_dashboard",
            UpdateDashboard { .. } => "update_dashboard",
            DeleteDashboard { .. } => "delete_dashboard",
            CreateApiKey { .. } => "create_api_key",
            RotateApiKey { .. } => "rotate_api_key",
            RevokeApiKey { .. } => "revoke_api_key",
            RevokeAccessToken { .. } => "revoke_access_token",
            PublishSigningKey { .. } => "publish_signing_key",
            RetireSigningKey { .. } => "retire_signing_key",
            OpenSession { .. } => "open_session",
            GrantAuthorizationCode { .. } => "grant_authorization_code",
            RedeemAuthorizationCode { .. } => "redeem_authorization_code",
            RefreshSession { .. } => "refresh_session",
            RevokeSession { .. } => "revoke_session",
            Authenticate { .. } => "authenticate",
            UnlockUser { .. } => "unlock_user",
            StartMfa { .. } => "start_mfa",
            ConfirmMfa { .. } => "confirm_mfa",
            DisableMfa { .. } => "disable_mfa",
        }
    }

    /// The aggregate a command is about: its key in a partitioned log, so that the
    /// commands of one aggregate stay in order. The saga's results belong to the order.
    pub fn aggregate_id(&self) -> &str {
        use Command::*;
        match self {
            CreateProduct { product_id, .. }
            | UpdateProduct { product_id, .. }
            | AdjustStock { product_id, .. } => product_id,
            CreateUser { user_id, .. } | UpdateUser { user_id, .. } | DeleteUser { user_id } => {
                user_id
            }
            CreateCart { cart_id, .. } | SetCartItem { cart_id, .. } => cart_id,
            ReserveStock { reservation_id, .. } | ReleaseReservation { reservation_id } => {
                reservation_id
            }
            PlaceOrder { order_id, .. }
            | CancelOrder { order_id, .. }
            | SetOrderStatus { order_id, .. }
            | PayOrder { order_id, .. }
            | PaymentResult { order_id, .. }
            | ShipmentDispatched { order_id, .. }
            | ShipmentDelivered { order_id, .. }
            | RequestRefund { order_id, .. }
            | RefundResult { order_id, .. } => order_id,
            RequestReport { report_id, .. } | ReportResult { report_id, .. } => report_id,
            ScheduleReport { schedule_id, .. } | DeleteReportSchedule { schedule_id } => {
                schedule_id
            }
            AddPaymentMethod { user_id, .. } | RemovePaymentMethod { user_id, .. } => user_id,
            OpenTicket { ticket_id, .. }
            | ChangeTicket { ticket_id, .. }
            | CommentOnTicket { ticket_id, .. } => ticket_id,
            CreateDashboard { dashboard_id, .. }
            | UpdateDashboard { dashboard_id, .. }
            | DeleteDashboard { dashboard_id } => dashboard_id,
            CreateApiKey { key_id, .. } | RotateApiKey { key_id, .. } | RevokeApiKey { key_id } => {
                key_id
            }
            RevokeAccessToken { token_id, .. } => token_id,
            PublishSigningKey { kid, .. } | RetireSigningKey { kid } => kid,
            OpenSession { session_id, .. }
            | GrantAuthorizationCode { session_id, .. }
            | RedeemAuthorizationCode { session_id, .. }
            | RefreshSession { session_id, .. }
            | RevokeSession { session_id, .. } => session_id,
            Authenticate { user_id, email, .. } => user_id.as_deref().unwrap_or(email),
            UnlockUser { user_id }
            | StartMfa { user_id, .. }
            | ConfirmMfa { user_id, .. }
            | DisableMfa { user_id } => user_id,
        }
    }
}

impl Envelope {
    pub fn new(command: Command) -> Self {
        Envelope {
            idempotency: None,
            command,
            request_id: None,
        }
    }
}

/// How long an `Idempotency-Key` is remembered, in log time (as card processors do).
pub const IDEMPOTENCY_TTL_MS: Ts = 24 * 60 * 60 * 1000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: Str,
    /// Digest of the method, path and body of the first request with this key.
    pub fingerprint: Str,
}

/// Every state change enters the system as one of these, through the log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    CreateProduct {
        product_id: Str,
        sku: Str,
        name: Str,
        price_cents: i64,
        currency: Str,
        initial_stock: i64,
        warehouse_id: Option<Str>,
        reorder_point: i64,
    },
    UpdateProduct {
        product_id: Str,
        sku: Option<Str>,
        name: Option<Str>,
        price_cents: Option<i64>,
        currency: Option<Str>,
        reorder_point: Option<i64>,
    },
    AdjustStock {
        product_id: Str,
        delta: i64,
        reason: Str,
    },
    CreateUser {
        user_id: Str,
        email: Str,
        name: Str,
        password_hash: Str,
    },
    UpdateUser {
        user_id: Str,
        email: Option<Str>,
        name: Option<Str>,
        password_hash: Option<Str>,
        /// The profile and preferences fields given, each replacing its value.
        #[serde(default, skip_serializing_if = "ProfileChange::is_empty")]
        profile: ProfileChange,
    },
    DeleteUser {
        user_id: Str,
    },
    CreateCart {
        cart_id: Str,
        user_id: Str,
    },
    SetCartItem {
        cart_id: Str,
        product_id: Str,
        quantity: i64,
        /// The product's currency when the item was put in: a cart holds one currency.
        /// Empty in commands written before carts checked it.
        #[serde(default)]
        currency: Str,
    },
    PlaceOrder {
        order_id: Str,
        user_id: Str,
        items: Vec<Line>,
        payment: Option<CardToken>,
        shipping_address: Option<Str>,
        cart_id: Option<Str>,
    },
    CancelOrder {
        order_id: Str,
        reason: CancelReason,
    },
    /// Holds stock for every line or none, outside any order.
    ReserveStock {
        reservation_id: Str,
        items: Vec<Line>,
    },
    ReleaseReservation {
        reservation_id: Str,
    },
    SetOrderStatus {
        order_id: Str,
        status: OrderStatus,
    },
    PayOrder {
        order_id: Str,
        payment: CardToken,
    },
    PaymentResult {
        payment_id: Str,
        order_id: Str,
        outcome: PaymentOutcome,
    },
    ShipmentDispatched {
        shipment_id: Str,
        order_id: Str,
        carrier: Str,
        tracking_number: Str,
    },
    ShipmentDelivered {
        shipment_id: Str,
        order_id: Str,
    },
    RequestRefund {
        payment_id: Str,
        order_id: Str,
        amount_cents: Option<i64>,
        reason: Str,
    },
    RefundResult {
        refund_id: Str,
        payment_id: Str,
        order_id: Str,
        succeeded: bool,
    },
    /// A report to run once: its SQL with the template's parameters bound, and where it
    /// came from (a template, a schedule's slot, or ad-hoc SQL).
    RequestReport {
        report_id: Str,
        request: ReportRequest,
    },
    /// What running a report gave: recorded by the report executor.
    ReportResult {
        report_id: Str,
        outcome: ReportOutcome,
    },
    /// A template run on a cron schedule.
    ScheduleReport {
        schedule_id: Str,
        template: Str,
        /// The parameters as a JSON object.
        params: Str,
        /// Six fields, seconds first (`0 0 6 * * *`: every day at 06:00 UTC).
        cron: Str,
        format: ReportFormat,
    },
    DeleteReportSchedule {
        schedule_id: Str,
    },
    /// A customer's ticket, with its first message (`comment_id`).
    OpenTicket {
        ticket_id: Str,
        user_id: Str,
        subject: Str,
        body: Str,
        order_id: Option<Str>,
        priority: TicketPriority,
        comment_id: Str,
    },
    /// The staff change a ticket's status, priority or assignee.
    ChangeTicket {
        ticket_id: Str,
        status: Option<TicketStatus>,
        priority: Option<TicketPriority>,
        assignee: Assignee,
    },
    /// A message on a ticket: from its customer, or from the staff (`staff`).
    CommentOnTicket {
        ticket_id: Str,
        comment_id: Str,
        author_id: Str,
        staff: bool,
        body: Str,
    },
    /// A card saved for a user to pay with later: its token, never its number.
    AddPaymentMethod {
        method_id: Str,
        user_id: Str,
        card: CardToken,
    },
    RemovePaymentMethod {
        method_id: Str,
        user_id: Str,
    },
    /// A dashboard saved through the API, beside the built-in ones.
    CreateDashboard {
        dashboard_id: Str,
        definition: DashboardDefinition,
    },
    /// A saved dashboard's new definition, replacing the old one whole.
    UpdateDashboard {
        dashboard_id: Str,
        definition: DashboardDefinition,
    },
    DeleteDashboard {
        dashboard_id: Str,
    },
    /// An API key, known from here on only by the digest of its secret.
    CreateApiKey {
        key_id: Str,
        name: Str,
        /// The user the key acts as; none for a service's key.
        owner: Option<Str>,
        scopes: Vec<Str>,
        /// SHA-256 of the key, in hex.
        key_hash: Str,
        /// How long the key lives, from the command's log time (milliseconds).
        lifetime_ms: Ts,
    },
    /// A new key in place of `key_id`, with its name, owner, scopes and lifetime; the
    /// old key keeps working for `grace_ms` more (or until it expires, if sooner).
    RotateApiKey {
        key_id: Str,
        new_key_id: Str,
        new_key_hash: Str,
        grace_ms: Ts,
    },
    RevokeApiKey {
        key_id: Str,
    },
    /// An access token is refused from now on (sign-out, RFC 7009 revocation).
    RevokeAccessToken {
        /// The token's `jti`.
        token_id: Str,
        user_id: Str,
        /// When the token expires anyway (Unix milliseconds).
        expires_at: Ts,
    },
    /// A server publishes the public half of a key it signs access tokens with, so
    /// that every server sharing the log accepts its tokens.
    PublishSigningKey {
        kid: Str,
        /// Ed25519, base64url without padding.
        public_key: Str,
    },
    /// A server deleted a signing key whose tokens have all expired.
    RetireSigningKey {
        kid: Str,
    },
    /// A user signed in through an OAuth client (the password grant): a session opens,
    /// holding its first refresh token. Only digests of refresh tokens and codes enter
    /// the log.
    OpenSession {
        session_id: Str,
        user_id: Str,
        client_id: Str,
        /// Space-separated scopes the session's tokens carry.
        scope: Str,
        refresh_hash: Str,
        /// How long a refresh token is good for, from its issue (milliseconds).
        ttl_ms: Ts,
    },
    /// A user let an OAuth client in (the authorization endpoint): a code, redeemable
    /// once, for a session that opens when it is.
    GrantAuthorizationCode {
        session_id: Str,
        user_id: Str,
        client_id: Str,
        scope: Str,
        code_hash: Str,
        redirect_uri: Str,
        /// The PKCE S256 challenge: BASE64URL(SHA-256(code_verifier)).
        code_challenge: Str,
        code_ttl_ms: Ts,
        /// The client's OpenID Connect `nonce`, returned in the ID token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<Str>,
    },
    /// A client exchanges its code, with the S256 digest of its PKCE verifier, for the
    /// session's first refresh token.
    RedeemAuthorizationCode {
        session_id: Str,
        client_id: Str,
        code_hash: Str,
        redirect_uri: Str,
        verifier_digest: Str,
        refresh_hash: Str,
        ttl_ms: Ts,
    },
    /// A session's current refresh token for the next one (rotation).
    RefreshSession {
        session_id: Str,
        client_id: Str,
        refresh_hash: Str,
        new_refresh_hash: Str,
        ttl_ms: Ts,
    },
    /// Ends a session: its refresh token and every access token issued in it are
    /// refused from now on.
    RevokeSession {
        session_id: Str,
        reason: Str,
        /// The refresh token presented as proof of holding the session (RFC 7009);
        /// none when its user or an administrator ends it.
        refresh_hash: Option<Str>,
    },
    /// A sign-in attempt, its password already checked (`password_matched`): whether
    /// it is let through is decided by the sign-in aggregate, which counts failures.
    Authenticate {
        attempt_id: Str,
        /// The account the address names; none for an address no account has.
        user_id: Option<Str>,
        email: Str,
        password_matched: bool,
        /// The client's network address.
        client: Str,
        /// The one-time code sent with the password, as the HTTP layer found it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        second_factor: Option<SecondFactor>,
    },
    /// Lifts an account's lock and forgets its failed sign-ins.
    UnlockUser {
        user_id: Str,
    },
    /// Starts two-factor enrollment: the TOTP secret is derived from `enrollment_id` by
    /// the server, so the log never holds it.
    StartMfa {
        user_id: Str,
        enrollment_id: Str,
    },
    /// The first valid code of an enrollment (its time step) confirms it; the digests
    /// of the recovery codes shown to the user once come with it.
    ConfirmMfa {
        user_id: Str,
        enrollment_id: Str,
        step: u64,
        recovery_code_hashes: Vec<Str>,
    },
    DisableMfa {
        user_id: Str,
    },
}

/// What a user shows of themselves and how they want to be reached (the brief's
/// user profiles and preferences).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(default)]
pub struct Profile {
    /// How the user is addressed; empty for their name.
    pub display_name: Str,
    /// A BCP 47 language tag (`en-GB`); empty for the shop's default.
    pub locale: Str,
    /// Whether the user wants marketing e-mail.
    pub marketing_emails: bool,
    /// Whether the user wants to be told about their orders' progress.
    pub order_updates: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            display_name: Str::from(""),
            locale: Str::from(""),
            marketing_emails: false,
            order_updates: true,
        }
    }
}

/// The profile fields an update sets; the others keep their values.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ProfileChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marketing_emails: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_updates: Option<bool>,
}

impl ProfileChange {
    pub fn is_empty(&self) -> bool {
        *self == ProfileChange::default()
    }

    /// `profile` with this change applied.
    pub fn apply(&self, profile: &mut Profile) {
        if let Some(display_name) = &self.display_name {
            profile.display_name = display_name.clone();
        }
        if let Some(locale) = &self.locale {
            profile.locale = locale.clone();
        }
        if let Some(marketing_emails) = self.marketing_emails {
            profile.marketing_emails = marketing_emails;
        }
        if let Some(order_updates) = self.order_updates {
            profile.order_updates = order_updates;
        }
    }
}

/// A sign-in's second factor, checked as far as the HTTP layer can: a TOTP code is
/// matched to its time step there (the secret never enters the log), and the sign-in
/// aggregate refuses a step already used; a recovery code is only digested there, and
/// the aggregate knows which are unused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SecondFactor {
    Totp {
        enrollment_id: Str,
        step: u64,
    },
    RecoveryCode {
        code_hash: Str,
    },
    /// A code that matches nothing.
    Invalid,
}

/// What a report runs and how it is written.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct ReportRequest {
    /// The template's id; null for ad-hoc SQL.
    pub template: Option<Str>,
    pub sql: Str,
    /// The parameters as a JSON object, bound to the SQL's `$name`s.
    pub params: Str,
    pub format: ReportFormat,
    /// The schedule and the slot (Unix milliseconds) this run is for.
    pub schedule_id: Option<Str>,
    pub slot: Option<Ts>,
}

/// The file a report is written as.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    Csv,
    Json,
    Parquet,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Parquet => "parquet",
        }
    }
}

states! {
    /// Where a support ticket stands: `open` (the staff's turn), `pending` (waiting
    /// for the customer), `resolved`, `closed` (final).
    pub enum TicketStatus {
        Open = "open",
        Pending = "pending",
        Resolved = "resolved",
        Closed = "closed",
    }
}

states! {
    pub enum TicketPriority {
        Low = "low",
        Normal = "normal",
        High = "high",
        Urgent = "urgent",
    }
}

/// What a ticket change does to its assignee.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Assignee {
    Unchanged,
    To(Str),
    Nobody,
}

/// A dashboard: panels, each a chart of one SQL query over the live views.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct DashboardDefinition {
    pub title: Str,
    pub description: Str,
    pub panels: Vec<PanelDefinition>,
}

/// One panel of a saved dashboard.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct PanelDefinition {
    /// Unique within its dashboard.
    pub id: Str,
    pub title: Str,
    pub chart: Chart,
    pub source: PanelSource,
    /// What the figures count: `cents`, `ratio`, `ms`, `per_second`, `days`, or none
    /// for plain counts.
    pub unit: Option<Str>,
    /// The per-minute series of the `anomalies` view marked on it.
    pub anomaly_series: Vec<Str>,
}

/// Where a panel's figures come from.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PanelSource {
    /// A query over the live views, as `POST /api/v1/sql` runs it.
    Sql(Str),
    /// A figure of the API's last minute: `p99_latency_ms`, `error_rate` or
    /// `requests_per_second`.
    Process(Str),
}

/// How a dashboard's panel is drawn.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Chart {
    /// One figure, or one per row (first column the label, second the figure).
    Stat,
    /// Lines over time: the first column is the time, each other column a series.
    Timeseries,
    /// One bar per row: the first column the label, the second the length.
    Bar,
    /// The rows as they are.
    Table,
}

/// How a report run ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReportOutcome {
    Completed {
        rows: u64,
        bytes: u64,
        /// The frontier of the views the report read.
        frontier: Time,
    },
    Failed {
        error: Str,
    },
}

/// Why the dataflow refused a command. Errors are data: a refused command produces one
/// of these, never a panic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejection {
    pub seq: Seq,
    pub ts: Ts,
    pub kind: RejectionKind,
    pub detail: Str,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectionKind {
    /// The aggregate the command names does not exist.
    NotFound,
    /// The aggregate exists but its state forbids the command.
    Conflict { code: Str },
    /// The command is well formed but semantically invalid.
    Invalid { field: Str },
    /// The idempotency key was used before; `first_seq` is the command that used it.
    Duplicate { first_seq: Seq, same_request: bool },
}

/// Deterministic ids of the saga's children, derived from the order id so that
/// replays and every worker agree without any coordination.
pub fn payment_id_for(order_id: &str) -> Str {
    format!("pay_{}", order_id.strip_prefix("ord_").unwrap_or(order_id)).into()
}

pub fn shipment_id_for(order_id: &str) -> Str {
    format!("shp_{}", order_id.strip_prefix("ord_").unwrap_or(order_id)).into()
}

pub fn refund_id_for(payment_id: &str, n: usize) -> Str {
    format!(
        "re_{}_{}",
        payment_id.strip_prefix("pay_").unwrap_or(payment_id),
        n
    )
    .into()
}

//! View rows as the JSON the HTTP contract promises.

use dataflows::analytics::days_until_stockout;
use dataflows::model::{CancelReason, Line, OrderStatus, PricedLine, Str, Ts};
use dataflows::views::*;
use queries::Snapshot;
use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value;

pub fn rfc3339(ms: Ts) -> String {
    Rfc3339(ms).to_string()
}

/// A log time as RFC 3339 UTC with milliseconds, written straight into the output.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub Ts);

impl JsonSchema for Rfc3339 {
    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(at).fmt(f)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A page of a list, rendered without building a JSON tree first: a page of 100
/// orders is the largest answer the API gives, and lists are read the most.
#[derive(Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// The first `limit` of `found`, which holds up to one more (telling whether there
    /// is a next page), each through `view`; the cursor is `cursor` of the last shown.
    pub fn of<R>(
        mut found: Vec<R>,
        limit: usize,
        cursor: impl Fn(&R) -> String,
        view: impl FnMut(R) -> T,
    ) -> Page<T> {
        let next_cursor = (found.len() > limit).then(|| cursor(&found[limit - 1]));
        found.truncate(limit);
        Page {
            items: found.into_iter().map(view).collect(),
            next_cursor,
        }
    }

    /// The page as the bytes of its JSON answer.
    pub fn render(&self) -> Rendered {
        Rendered(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A JSON answer already serialised (where the views it borrows from are gone by the
/// time the answer is sent).
pub struct Rendered(Vec<u8>);

impl axum::response::IntoResponse for Rendered {
    fn into_response(self) -> axum::response::Response {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.0,
        )
            .into_response()
    }
}

/// A product's stock level, as the inventory routes answer it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "StockLevel")]
pub struct StockLevel<'a> {
    product_id: &'a str,
    on_hand: i64,
    reserved: i64,
    /// `on_hand - reserved`: what an order can still take.
    available: i64,
}

impl<'a> StockLevel<'a> {
    pub fn of(snapshot: &Snapshot, product_id: &'a str) -> StockLevel<'a> {
        let level = snapshot.stock_of(product_id);
        StockLevel {
            product_id,
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available(),
        }
    }
}

pub fn stock(snapshot: &Snapshot, product_id: &str) -> Value {
    to_value(StockLevel::of(snapshot, product_id))
}

/// The stock levels asked for, in the order asked.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "StockLevels")]
pub struct StockLevels<'a> {
    pub items: Vec<StockLevel<'a>>,
}

/// A product's stock, with the forecast made from its sales.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ProductStock")]
struct Stock {
    on_hand: i64,
    reserved: i64,
    available: i64,
    /// Units in paid orders over the last 7 days of log time.
    units_sold_7d: i64,
    /// Days until `available` runs out at that pace; `null` when nothing sold.
    days_until_stockout: Option<f64>,
}

impl Stock {
    fn of(snapshot: &Snapshot, product_id: &str) -> Stock {
        let level = snapshot.stock_of(product_id);
        let units_sold_7d = snapshot
            .metric(Metric::StockForecast)
            .get(product_id)
            .and_then(|forecast| forecast.measure("units_sold_7d"))
            .unwrap_or(0);
        let days = days_until_stockout(level.available(), units_sold_7d);
        Stock {
            on_hand: level.on_hand,
            reserved: level.reserved,
            available: level.available(),
            units_sold_7d,
            // Tenths of a day are as precise as a forecast from a week of sales gets.
            days_until_stockout: days.map(|days| (days * 10.0).round() / 10.0),
        }
    }
}

/// A product with its stock, as the HTTP contract promises it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Product")]
pub struct ProductView<'a> {
    id: &'a str,
    sku: &'a str,
    name: &'a str,
    price_cents: i64,
    currency: &'a str,
    reorder_point: i64,
    warehouse_id: Option<&'a str>,
    stock: Stock,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

impl<'a> ProductView<'a> {
    pub fn of(snapshot: &Snapshot, row: &'a ProductRow) -> ProductView<'a> {
        ProductView {
            id: &row.product_id,
            sku: &row.sku,
            name: &row.name,
            price_cents: row.price_cents,
            currency: &row.currency,
            reorder_point: row.reorder_point,
            warehouse_id: row.warehouse_id.as_deref(),
            stock: Stock::of(snapshot, &row.product_id),
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
        }
    }
}

pub fn product(snapshot: &Snapshot, row: &ProductRow) -> Value {
    to_value(ProductView::of(snapshot, row))
}

/// A user as the HTTP contract promises it: never the password hash.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "User")]
pub struct UserView<'a> {
    id: &'a str,
    email: &'a str,
    name: &'a str,
    display_name: &'a str,
    locale: &'a str,
    preferences: Preferences,
    created_at: Rfc3339,
    updated_at: Rfc3339,
    /// When sign-ins are let through again, while the account is locked.
    locked_until: Option<Rfc3339>,
    last_sign_in_at: Option<Rfc3339>,
    /// Two-factor authentication: `off`, `pending` (enrolled, not confirmed) or `on`.
    mfa: &'static str,
    /// Recovery codes not used yet, while two-factor authentication is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes_left: Option<u32>,
    /// The loyalty tier, `standard` or `premium` (`GET /users/{id}/loyalty`).
    tier: &'static str,
}

impl<'a> UserView<'a> {
    pub fn of(snapshot: &Snapshot, row: &'a UserRow) -> UserView<'a> {
        UserView {
            id: &row.user_id,
            email: &row.email,
            name: &row.name,
            display_name: &row.profile.display_name,
            locale: &row.profile.locale,
            preferences: Preferences {
                marketing_emails: row.profile.marketing_emails,
                order_updates: row.profile.order_updates,
            },
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
            locked_until: row.locked_at(crate::auth::now_ms()).map(Rfc3339),
            last_sign_in_at: row.last_authenticated_at.map(Rfc3339),
            mfa: match (row.mfa_enabled, &row.mfa_enrollment) {
                (true, _) => "on",
                (false, Some(_)) => "pending",
                (false, None) => "off",
            },
            recovery_codes_left: row.mfa_enabled.then_some(row.recovery_codes_left),
            tier: snapshot.tier_of(&row.user_id).as_str(),
        }
    }
}

/// A user's loyalty points and tier.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Loyalty")]
pub struct LoyaltyView<'a> {
    user_id: &'a str,
    /// Earned less taken back by refunds.
    points: i64,
    earned: i64,
    reversed: i64,
    /// Completed orders that earned points.
    orders: u64,
    /// `standard`, or `premium` from `premium_points` on.
    tier: &'static str,
    premium_points: i64,
    /// Points per whole unit of an order's total (100 minor units, any currency).
    points_per_unit: i64,
    /// When points last changed; null before the first.
    updated_at: Option<Rfc3339>,
}

impl<'a> LoyaltyView<'a> {
    pub fn of(user_id: &'a str, row: Option<&LoyaltyRow>) -> LoyaltyView<'a> {
        use dataflows::users::loyalty::{Tier, POINTS_PER_UNIT, PREMIUM_POINTS};
        LoyaltyView {
            user_id,
            points: row.map_or(0, |row| row.points),
            earned: row.map_or(0, |row| row.earned),
            reversed: row.map_or(0, |row| row.reversed),
            orders: row.map_or(0, |row| row.orders),
            tier: row.map_or(Tier::Standard, |row| row.tier).as_str(),
            premium_points: PREMIUM_POINTS,
            points_per_unit: POINTS_PER_UNIT,
            updated_at: row.map(|row| Rfc3339(row.updated_at)),
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "UserPreferences")]
struct Preferences {
    marketing_emails: bool,
    order_updates: bool,
}

/// One attempt of the authentication log.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SignIn")]
pub struct SignInView<'a> {
    id: &'a str,
    user_id: Option<&'a str>,
    at: Rfc3339,
    /// The client's network address.
    client: &'a str,
    succeeded: bool,
    second_factor: Option<&'a str>,
    reason: Option<&'a str>,
    failures: u32,
    locked_until: Option<Rfc3339>,
}

impl<'a> SignInView<'a> {
    pub fn of(row: &'a SignInRow) -> SignInView<'a> {
        SignInView {
            id: &row.attempt_id,
            user_id: row.user_id.as_deref(),
            at: Rfc3339(row.at),
            client: &row.client,
            succeeded: row.succeeded,
            second_factor: row.second_factor.as_deref(),
            reason: row.reason.as_deref(),
            failures: row.failures,
            locked_until: row.locked_until.map(Rfc3339),
        }
    }
}

/// An OAuth session, without its secrets.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Session")]
pub struct SessionView<'a> {
    id: &'a str,
    user_id: &'a str,
    client_id: &'a str,
    /// `password` or `authorization_code`.
    grant: &'a str,
    scope: &'a str,
    status: SessionStatus,
    created_at: Rfc3339,
    refreshed_at: Option<Rfc3339>,
    /// When the refresh token (or a pending code) stops working.
    expires_at: Rfc3339,
    revoked_at: Option<Rfc3339>,
    revoke_reason: Option<&'a str>,
}

impl<'a> SessionView<'a> {
    pub fn of(row: &'a SessionRow) -> SessionView<'a> {
        SessionView {
            id: &row.session_id,
            user_id: &row.user_id,
            client_id: &row.client_id,
            grant: &row.grant,
            scope: &row.scope,
            status: row.status,
            created_at: Rfc3339(row.created_at),
            refreshed_at: row.refreshed_at.map(Rfc3339),
            expires_at: Rfc3339(row.expires_at),
            revoked_at: row.revoked_at.map(Rfc3339),
            revoke_reason: row.revoke_reason.as_deref(),
        }
    }
}

pub fn user(snapshot: &Snapshot, row: &UserRow) -> Value {
    to_value(UserView::of(snapshot, row))
}

/// A cart with its lines at today's prices. A product's currency can change after it was
/// put in; a cart whose lines no longer share one currency has no single subtotal, so
/// `subtotal_cents` and `currency` are null and each line names its own currency.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Cart")]
pub struct CartView<'a> {
    id: &'a str,
    user_id: &'a str,
    items: Vec<CartLine<'a>>,
    subtotal_cents: Option<i64>,
    currency: Option<&'a str>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "CartLine")]
struct CartLine<'a> {
    product_id: &'a str,
    quantity: i64,
    unit_price_cents: i64,
    /// `null` for a product no longer in the catalogue.
    currency: Option<&'a str>,
    line_total_cents: i64,
}

impl<'a> CartView<'a> {
    pub fn of(snapshot: &'a Snapshot, row: &'a CartRow) -> CartView<'a> {
        let mut subtotal = 0i64;
        let mut currencies: Vec<&str> = Vec::new();
        let items: Vec<CartLine> = row
            .items
            .iter()
            .map(|line| {
                let product = snapshot.products.get(&line.product_id);
                let price = product.map_or(0, |p| p.price_cents);
                let currency = product.map(|p| &*p.currency);
                if let Some(currency) = currency.filter(|c| !currencies.contains(c)) {
                    currencies.push(currency);
                }
                subtotal = price.saturating_mul(line.quantity).saturating_add(subtotal);
                CartLine {
                    product_id: &line.product_id,
                    quantity: line.quantity,
                    unit_price_cents: price,
                    currency,
                    line_total_cents: price.saturating_mul(line.quantity),
                }
            })
            .collect();
        let (subtotal_cents, currency) = match currencies.as_slice() {
            [] => (Some(0), None),
            [one] => (Some(subtotal), Some(*one)),
            _ => (None, None),
        };
        CartView {
            id: &row.cart_id,
            user_id: &row.user_id,
            items,
            subtotal_cents,
            currency,
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
        }
    }
}

pub fn cart(snapshot: &Snapshot, row: &CartRow) -> Value {
    to_value(CartView::of(snapshot, row))
}

/// The lines of an order or a reservation: priced once stock is held, as asked before.
struct Lines<'a> {
    items: &'a [Line],
    held: &'a [PricedLine],
}

/// A line asked for, before stock is held.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "AskedLine")]
struct AskedLine<'a> {
    product_id: &'a str,
    quantity: i64,
}

/// A line with stock held for it, at the price it was held at.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "PricedLine")]
struct HeldLine<'a> {
    product_id: &'a str,
    quantity: i64,
    unit_price_cents: i64,
    line_total_cents: i64,
}

impl JsonSchema for Lines<'_> {
    fn schema_name() -> Cow<'static, str> {
        "Lines".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let asked = generator.subschema_for::<AskedLine>();
        let held = generator.subschema_for::<HeldLine>();
        json_schema!({
            "description": "The lines as asked for, priced once stock is held",
            "type": "array",
            "items": {"anyOf": [held, asked]},
        })
    }
}

impl Serialize for Lines<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.held.is_empty() {
            let mut seq = serializer.serialize_seq(Some(self.items.len()))?;
            for line in self.items {
                seq.serialize_element(&AskedLine {
                    product_id: &line.product_id,
                    quantity: line.quantity,
                })?;
            }
            return seq.end();
        }
        let mut seq = serializer.serialize_seq(Some(self.held.len()))?;
        for line in self.held {
            seq.serialize_element(&HeldLine {
                product_id: &line.product_id,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
                line_total_cents: line.unit_price_cents.saturating_mul(line.quantity),
            })?;
        }
        seq.end()
    }
}

/// A status an order entered, and when.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "StatusChange")]
struct Change {
    status: OrderStatus,
    at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<CancelReason>,
}

struct History<'a>(&'a [StatusChange]);

impl JsonSchema for History<'_> {
    fn schema_name() -> Cow<'static, str> {
        "StatusHistory".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Vec::<Change>::json_schema(generator)
    }
}

impl Serialize for History<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|change| Change {
            status: change.status,
            at: Rfc3339(change.at),
            reason: change.reason,
        }))
    }
}

/// An order as the HTTP contract promises it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Order")]
pub struct OrderView<'a> {
    id: &'a str,
    user_id: &'a str,
    status: OrderStatus,
    cancel_reason: Option<CancelReason>,
    items: Lines<'a>,
    total_cents: i64,
    currency: Option<&'a str>,
    payment_id: Option<Str>,
    shipment_id: Option<Str>,
    cart_id: Option<&'a str>,
    shipping_address: Option<&'a str>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
    status_history: History<'a>,
}

impl<'a> OrderView<'a> {
    /// The order as answered; a deleted user's address is erased.
    pub fn of(snapshot: &Snapshot, row: &'a OrderRow) -> OrderView<'a> {
        let erased = snapshot.is_erased(&row.user_id);
        OrderView {
            id: &row.order_id,
            user_id: &row.user_id,
            status: row.status,
            cancel_reason: row.cancel_reason,
            items: Lines {
                items: &row.items,
                held: &row.lines,
            },
            total_cents: row.total_cents,
            currency: (!row.currency.is_empty()).then_some(&*row.currency),
            payment_id: row.payment_id(),
            shipment_id: row.shipment_id(),
            cart_id: row.cart_id.as_deref(),
            shipping_address: row.shipping_address.as_deref().filter(|_| !erased),
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
            status_history: History(&row.history),
        }
    }
}

pub fn order(snapshot: &Snapshot, row: &OrderRow) -> Value {
    to_value(OrderView::of(snapshot, row))
}

/// A refund of a payment.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Refund")]
pub struct RefundView<'a> {
    id: &'a str,
    payment_id: &'a str,
    amount_cents: i64,
    currency: &'a str,
    status: RefundStatus,
    reason: &'a str,
    /// When the provider paid it back or refused it.
    settled_at: Option<Rfc3339>,
}

impl<'a> RefundView<'a> {
    fn of(payment: &'a PaymentRow, row: &'a RefundRow) -> RefundView<'a> {
        RefundView {
            id: &row.refund_id,
            payment_id: &payment.payment_id,
            amount_cents: row.amount_cents,
            currency: &payment.currency,
            status: row.status,
            reason: &row.reason,
            settled_at: row.settled_at.map(Rfc3339),
        }
    }
}

pub fn refund(payment: &PaymentRow, row: &RefundRow) -> Value {
    to_value(RefundView::of(payment, row))
}

/// A payment, its charge and its refunds; never the card's number.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Payment")]
pub struct PaymentView<'a> {
    id: &'a str,
    order_id: &'a str,
    status: PaymentStatus,
    amount_cents: i64,
    currency: &'a str,
    captured_cents: i64,
    refunded_cents: i64,
    card: Card<'a>,
    charge_id: Option<&'a str>,
    decline_code: Option<&'a str>,
    fraud_suspected: bool,
    refunds: Vec<RefundView<'a>>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Card")]
struct Card<'a> {
    brand: &'a str,
    last4: &'a str,
}

impl<'a> PaymentView<'a> {
    pub fn of(row: &'a PaymentRow) -> PaymentView<'a> {
        PaymentView {
            id: &row.payment_id,
            order_id: &row.order_id,
            status: row.status,
            amount_cents: row.amount_cents,
            currency: &row.currency,
            captured_cents: row.captured_cents,
            refunded_cents: row.refunded_cents,
            card: Card {
                brand: &row.card_brand,
                last4: &row.card_last4,
            },
            charge_id: row.charge_id.as_deref(),
            decline_code: row.decline_code.as_deref(),
            fraud_suspected: row.fraud,
            refunds: (row.refunds.iter())
                .map(|refund| RefundView::of(row, refund))
                .collect(),
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
        }
    }
}

pub fn payment(row: &PaymentRow) -> Value {
    to_value(PaymentView::of(row))
}

/// A shipment; a deleted user's address is erased.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Shipment")]
pub struct ShipmentView<'a> {
    id: &'a str,
    order_id: &'a str,
    status: ShipmentStatus,
    carrier: Option<&'a str>,
    tracking_number: Option<&'a str>,
    address: Option<&'a str>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

impl<'a> ShipmentView<'a> {
    pub fn of(snapshot: &Snapshot, row: &'a ShipmentRow) -> ShipmentView<'a> {
        let erased = snapshot.order_is_erased(&row.order_id);
        ShipmentView {
            id: &row.shipment_id,
            order_id: &row.order_id,
            status: row.status,
            carrier: row.carrier.as_deref(),
            tracking_number: row.tracking_number.as_deref(),
            address: row.address.as_deref().filter(|_| !erased),
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
        }
    }
}

pub fn shipment(snapshot: &Snapshot, row: &ShipmentRow) -> Value {
    to_value(ShipmentView::of(snapshot, row))
}

/// Stock held through the inventory API.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Reservation")]
pub struct ReservationView<'a> {
    id: &'a str,
    status: ReservationStatus,
    /// Why it was refused or released.
    reason: Option<CancelReason>,
    items: Lines<'a>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
}

impl<'a> ReservationView<'a> {
    pub fn of(row: &'a ReservationRow) -> ReservationView<'a> {
        ReservationView {
            id: &row.reservation_id,
            status: row.status,
            reason: row.reason,
            items: Lines {
                items: &row.items,
                held: &row.lines,
            },
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
        }
    }
}

pub fn reservation(row: &ReservationRow) -> Value {
    to_value(ReservationView::of(row))
}

/// A view as a JSON tree. Every view here serialises: string keys, no maps of other keys.
pub fn to_value(view: impl Serialize) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

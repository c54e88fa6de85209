//! The OpenAPI 3.1 document (`GET /api/v1/openapi.json`) and the interactive docs page
//! (`GET /docs`), both served by the binary.
//!
//! The document is made from the code: one entry per operation below, whose request
//! schema is derived (schemars, JSON Schema 2020-12) from the very type the handler
//! deserializes, and whose security is read from `auth::policy`, the table the
//! authentication layer enforces. Every operation answers errors as RFC 9457 problem
//! documents (`default`). A test checks that every route the router has is here and
//! every operation here is routed.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::auth::policy::{self, Rule};
use crate::auth::principal::SCOPES;

/// What an operation takes as its body.
#[derive(Clone, Copy)]
enum Body {
    None,
    /// JSON of this type; `required` unless an empty body is read as `{}`.
    Json(fn(&mut SchemaGenerator) -> Value, bool),
    /// OAuth's form-encoded parameters (or the same as a JSON object of strings).
    Form(&'static [&'static str]),
}

/// What an operation answers when it succeeds.
#[derive(Clone, Copy)]
enum Answer {
    /// This status with a JSON object.
    Object(u16),
    /// This status with no body.
    Empty(u16),
    /// 200 with one of these media types.
    Media(&'static [&'static str]),
    /// 303 to the client's redirect URI, or 200 with an HTML page.
    RedirectOrHtml,
    /// This status with this JSON, as the handler's answer type serialises.
    Typed(u16, fn(&mut SchemaGenerator) -> Value),
    /// 200 with a page of these.
    TypedPage(fn(&mut SchemaGenerator) -> Value),
    /// 200 when ready, 503 when not, with this JSON either way.
    Readiness(fn(&mut SchemaGenerator) -> Value),
}

/// A query parameter: name, JSON type, whether it repeats, what it means.
type Query = (&'static str, &'static str, bool, &'static str);

struct Op {
    method: Method,
    /// The full path (`/api/v1/orders/{id}`).
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    query: &'static [Query],
    body: Body,
    answer: Answer,
}

const PAGE: &[Query] = &[LIMIT, CURSOR];

const LIMIT: Query = ("limit", "integer", false, "1 to 100 (default 20)");
const CURSOR: Query = (
    "cursor",
    "string",
    false,
    "`next_cursor` of the page before",
);
const SEARCH: &[Query] = &[
    ("q", "string", false, "text to find, case-insensitive"),
    LIMIT,
    CURSOR,
];

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

macro_rules! json_body {
    ($type:ty) => {
        Body::Json(schema::<$type>, true)
    };
    ($type:ty, optional) => {
        Body::Json(schema::<$type>, false)
    };
}

/// Every operation, grouped as the API reference is.
fn operations() -> Vec<Op> {
    use super::json::{
        CartView, OrderView, PaymentView, ProductView, RefundView, ReservationView, SessionView,
        ShipmentView, SignInView, StockLevel, StockLevels, UserView,
    };
    use super::keys::{IssuedKey, KeyView};
    use super::oauth::{self, Tokens};
    use super::{
        analytics, catalog, fulfillment, health, keys, orders, payments, reports, sql, users,
    };
    use Answer::*;
    use Body::None as NoBody;
    let op = |method: Method,
              path: &'static str,
              tag: &'static str,
              summary: &'static str,
              query: &'static [Query],
              body: Body,
              answer: Answer| Op {
        method,
        path,
        tag,
        summary,
        query,
        body,
        answer,
    };
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        op(post.clone(), "/api/v1/products", "catalog", "Create a product, with its initial stock", &[], json_body!(catalog::CreateProduct), Typed(201, schema::<ProductView>)),
        op(get.clone(), "/api/v1/products", "catalog", "List products", PAGE, NoBody, TypedPage(schema::<ProductView>)),
        op(get.clone(), "/api/v1/products/search", "catalog", "Products whose name or SKU contains q", SEARCH, NoBody, TypedPage(schema::<ProductView>)),
        op(get.clone(), "/api/v1/products/{id}", "catalog", "A product with its stock", &[], NoBody, Typed(200, schema::<ProductView>)),
        op(put.clone(), "/api/v1/products/{id}", "catalog", "Change a product", &[], json_body!(catalog::UpdateProduct), Typed(200, schema::<ProductView>)),
        op(post.clone(), "/api/v1/inventory/adjust", "inventory", "Adjust the stock on hand", &[], json_body!(catalog::Adjust), Typed(200, schema::<StockLevel>)),
        op(get.clone(), "/api/v1/inventory/availability", "inventory", "Stock of each product asked for", &[("product_id", "string", true, "1 to 100 product ids")], NoBody, Typed(200, schema::<StockLevels>)),
        op(post.clone(), "/api/v1/inventory/reserve", "inventory", "Reserve stock, all lines or none", &[], json_body!(catalog::Reserve), Typed(201, schema::<ReservationView>)),
        op(post.clone(), "/api/v1/inventory/release", "inventory", "Release a reservation", &[], json_body!(catalog::Release), Typed(200, schema::<ReservationView>)),
        op(get.clone(), "/api/v1/inventory/reservations/{id}", "inventory", "A reservation", &[], NoBody, Typed(200, schema::<ReservationView>)),
        op(post.clone(), "/api/v1/users", "users", "Sign up", &[], json_body!(users::CreateUser), Typed(201, schema::<UserView>)),
        op(post.clone(), "/api/v1/users/authenticate", "users", "Sign in: an access token", &[], json_body!(users::Authenticate), Typed(200, schema::<users::SignedIn>)),
        op(get.clone(), "/api/v1/users/search", "users", "Users whose email or name contains q", SEARCH, NoBody, TypedPage(schema::<UserView>)),
        op(get.clone(), "/api/v1/users/{id}", "users", "A user", &[], NoBody, Typed(200, schema::<UserView>)),
        op(put.clone(), "/api/v1/users/{id}", "users", "Change a user's name, password or profile", &[], json_body!(users::UpdateUser), Typed(200, schema::<UserView>)),
        op(delete.clone(), "/api/v1/users/{id}", "users", "Delete a user (their orders stay, pseudonymised)", &[], NoBody, Empty(204)),
        op(get.clone(), "/api/v1/users/{id}/orders", "orders", "A user's orders", PAGE, NoBody, TypedPage(schema::<OrderView>)),
        op(post.clone(), "/api/v1/users/{id}/unlock", "users", "Lift an account's sign-in lock", &[], NoBody, Typed(200, schema::<UserView>)),
        op(post.clone(), "/api/v1/users/{id}/mfa/enable", "users", "Start or confirm two-factor sign-in", &[], json_body!(users::EnableMfa, optional), Typed(200, schema::<users::MfaAnswer>)),
        op(delete.clone(), "/api/v1/users/{id}/mfa", "users", "Turn two-factor sign-in off", &[], NoBody, Empty(204)),
        op(get.clone(), "/api/v1/users/{id}/loyalty", "users", "The user's loyalty points and tier", &[], NoBody, Typed(200, schema::<super::json::LoyaltyView>)),
        op(get.clone(), "/api/v1/users/{id}/sign-ins", "users", "The account's authentication log, newest first", PAGE, NoBody, TypedPage(schema::<SignInView>)),
        op(get.clone(), "/api/v1/users/{id}/sessions", "users", "The user's OAuth sessions", PAGE, NoBody, TypedPage(schema::<SessionView>)),
        op(delete.clone(), "/api/v1/users/{id}/sessions/{session_id}", "users", "Sign one session out", &[], NoBody, Empty(204)),
        op(post.clone(), "/api/v1/carts", "carts", "Create a cart", &[], json_body!(orders::carts::CreateCart), Typed(201, schema::<CartView>)),
        op(get.clone(), "/api/v1/carts/{id}", "carts", "A cart at today's prices", &[], NoBody, Typed(200, schema::<CartView>)),
        op(put.clone(), "/api/v1/carts/{id}/items", "carts", "Set a line's quantity (0 removes it)", &[], json_body!(orders::carts::SetItem), Typed(200, schema::<CartView>)),
        op(post.clone(), "/api/v1/orders", "orders", "Place an order", &[], json_body!(orders::PlaceOrder), Typed(201, schema::<OrderView>)),
        op(get.clone(), "/api/v1/orders/{id}", "orders", "An order; wait=settled blocks until it leaves pending/reserved", &[("wait", "string", false, "`settled`"), ("timeout_ms", "integer", false, "how long to wait, up to 30000")], NoBody, Typed(200, schema::<OrderView>)),
        op(post.clone(), "/api/v1/orders/{id}/cancel", "orders", "Cancel an order", &[], json_body!(orders::Cancel, optional), Typed(200, schema::<OrderView>)),
        op(put.clone(), "/api/v1/orders/{id}/status", "orders", "Set an order's status (operators)", &[], json_body!(orders::SetStatus), Typed(200, schema::<OrderView>)),
        op(post.clone(), "/api/v1/payments", "payments", "Pay for an order", &[], json_body!(payments::CreatePayment), Typed(201, schema::<PaymentView>)),
        op(post.clone(), "/api/v1/support/tickets", "support", "Open a support ticket, with its first message", &[], json_body!(super::support::OpenTicket), Typed(201, schema::<super::support::TicketView>)),
        op(get.clone(), "/api/v1/support/tickets", "support", "A customer's tickets, or every ticket for the staff", &[("user_id", "string", false, "whose; the caller's own when left out"), ("status", "string", false, "open, pending, resolved or closed"), LIMIT, CURSOR], NoBody, TypedPage(schema::<super::support::TicketView>)),
        op(get.clone(), "/api/v1/support/tickets/{id}", "support", "A ticket with its conversation", &[], NoBody, Typed(200, schema::<super::support::TicketView>)),
        op(put.clone(), "/api/v1/support/tickets/{id}", "support", "Change a ticket's status, priority or assignee", &[], json_body!(super::support::ChangeTicket), Typed(200, schema::<super::support::TicketView>)),
        op(get.clone(), "/api/v1/support/tickets/{id}/chat/stream", "support", "Follow a ticket's conversation: the ticket, then each change, as Server-Sent Events", &[], NoBody, Media(&["text/event-stream"])),
        op(post.clone(), "/api/v1/support/tickets/{id}/comments", "support", "A message on a ticket, from its customer or the staff", &[], json_body!(super::support::Comment), Typed(201, schema::<super::support::TicketView>)),
        op(post.clone(), "/api/v1/payment-methods", "payments", "Save a card to pay with later (its token; never the number or the CVC)", &[], json_body!(super::payment_methods::SaveCard), Typed(201, schema::<super::payment_methods::MethodView>)),
        op(get.clone(), "/api/v1/payment-methods", "payments", "A user's saved cards", &[("user_id", "string", false, "whose; the caller's own when left out")], NoBody, Typed(200, schema::<super::payment_methods::MethodList>)),
        op(get.clone(), "/api/v1/payment-methods/{id}", "payments", "A saved card", &[], NoBody, Typed(200, schema::<super::payment_methods::MethodView>)),
        op(delete.clone(), "/api/v1/payment-methods/{id}", "payments", "Remove a saved card", &[], NoBody, Empty(204)),
        op(get.clone(), "/api/v1/payments/{id}", "payments", "A payment", &[], NoBody, Typed(200, schema::<PaymentView>)),
        op(post.clone(), "/api/v1/payments/{id}/refund", "payments", "Refund a payment, in full or in part", &[], json_body!(payments::Refund, optional), Typed(201, schema::<RefundView>)),
        op(get.clone(), "/api/v1/shipments/{id}", "shipping", "A shipment", &[], NoBody, Typed(200, schema::<ShipmentView>)),
        op(post.clone(), "/api/v1/shipments/{id}/deliver", "shipping", "The carrier reports a delivery", &[], json_body!(fulfillment::Deliver, optional), Typed(200, schema::<ShipmentView>)),
        op(post.clone(), "/api/v1/sql", "analytics", "Run SQL over the live views and the history", &[], json_body!(sql::SqlRequest), Media(&["application/json", "text/csv", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"])),
        op(get.clone(), "/api/v1/kpis", "analytics", "The business KPIs at one frontier", &[], NoBody, Typed(200, schema::<analytics::KpisView>)),
        op(get.clone(), "/api/v1/reports", "reports", "Report runs, newest first", &[LIMIT], NoBody, Typed(200, schema::<reports::ReportList>)),
        op(get.clone(), "/api/v1/reports/templates", "reports", "The report templates", &[], NoBody, Typed(200, schema::<reports::TemplateList>)),
        op(post.clone(), "/api/v1/reports/generate", "reports", "Generate a report", &[], json_body!(reports::Generate), Typed(202, schema::<reports::ReportView>)),
        op(post.clone(), "/api/v1/reports/schedule", "reports", "Schedule a report (cron)", &[], json_body!(reports::Schedule), Typed(201, schema::<reports::ScheduleView>)),
        op(get.clone(), "/api/v1/reports/schedules", "reports", "Report schedules", &[], NoBody, Typed(200, schema::<reports::ScheduleList>)),
        op(get.clone(), "/api/v1/reports/schedules/{id}", "reports", "A report schedule", &[], NoBody, Typed(200, schema::<reports::ScheduleView>)),
        op(delete.clone(), "/api/v1/reports/schedules/{id}", "reports", "Delete a report schedule", &[], NoBody, Empty(204)),
        op(get.clone(), "/api/v1/reports/{id}", "reports", "A report run", &[], NoBody, Typed(200, schema::<reports::ReportView>)),
        op(get.clone(), "/api/v1/reports/{id}/download", "reports", "A completed report's file", &[], NoBody, Media(&["text/csv", "application/json", "application/vnd.apache.parquet"])),
        op(get.clone(), "/api/v1/views/{name}/changes", "views", "Follow a view (orders, products, stock, payments, shipments, or a metric view such as orders_per_minute): a snapshot, then its changes, as Server-Sent Events", &[("id", "string", false, "one row, by its id"), ("user_id", "string", false, "one user's orders, payments or shipments")], NoBody, Media(&["text/event-stream"])),
        op(get.clone(), "/api/v1/dashboards", "dashboards", "The dashboards: their panels (title, chart, SQL or process figure)", &[], NoBody, Typed(200, schema::<crate::dashboards::DashboardList>)),
        op(get.clone(), "/api/v1/dashboards/{id}", "dashboards", "A dashboard with each panel's value at one frontier", &[], NoBody, Typed(200, schema::<crate::dashboards::DashboardView>)),
        op(post.clone(), "/api/v1/dashboards", "dashboards", "Save a dashboard: panels of SQL over the live views (each query is checked)", &[], json_body!(super::dashboards::SaveDashboard), Typed(201, schema::<crate::dashboards::DashboardView>)),
        op(put.clone(), "/api/v1/dashboards/{id}", "dashboards", "Replace a saved dashboard's definition", &[], json_body!(super::dashboards::SaveDashboard), Typed(200, schema::<crate::dashboards::DashboardView>)),
        op(delete.clone(), "/api/v1/dashboards/{id}", "dashboards", "Delete a saved dashboard", &[], NoBody, Empty(204)),
        op(get.clone(), "/api/v1/dashboards/{id}/stream", "dashboards", "Follow a dashboard: every panel's value, then the panels that change, as Server-Sent Events", &[], NoBody, Media(&["text/event-stream"])),
        op(post.clone(), "/api/v1/api-keys", "auth", "Issue an API key (shown once)", &[], json_body!(keys::CreateKey), Typed(201, schema::<IssuedKey>)),
        op(get.clone(), "/api/v1/api-keys", "auth", "API keys, without secrets", PAGE, NoBody, TypedPage(schema::<KeyView>)),
        op(get.clone(), "/api/v1/api-keys/{id}", "auth", "An API key, without its secret", &[], NoBody, Typed(200, schema::<KeyView>)),
        op(delete.clone(), "/api/v1/api-keys/{id}", "auth", "Revoke an API key", &[], NoBody, Empty(204)),
        op(post.clone(), "/api/v1/api-keys/{id}/rotate", "auth", "A new key in place of this one, after a grace period", &[], json_body!(keys::Rotate, optional), Typed(201, schema::<IssuedKey>)),
        op(get.clone(), "/api/v1/events/schemas", "events", "The event catalogue", &[], NoBody, Object(200)),
        op(get.clone(), "/api/v1/events/schemas/{type}", "events", "One event's JSON Schema", &[], NoBody, Object(200)),
        op(get.clone(), "/api/v1/openapi.json", "operations", "This document", &[], NoBody, Object(200)),
        op(post.clone(), "/oauth2/token", "oauth", "Tokens for a grant: password (tidemark-cli), authorization_code (PKCE), refresh_token, client_credentials", &[], Body::Form(&["grant_type", "client_id", "client_secret", "username", "password", "mfa_code", "scope", "code", "redirect_uri", "code_verifier", "refresh_token"]), Typed(200, schema::<Tokens>)),
        op(get.clone(), "/oauth2/authorize", "oauth", "Sign in and grant a client a code (PKCE S256)", &[("response_type", "string", false, "`code`"), ("client_id", "string", false, "a registered client"), ("redirect_uri", "string", false, "one of the client's"), ("code_challenge", "string", false, "BASE64URL(SHA-256(code_verifier))"), ("code_challenge_method", "string", false, "`S256`"), ("scope", "string", false, "openid profile email offline_access"), ("state", "string", false, "returned as is"), ("nonce", "string", false, "returned in the ID token")], NoBody, RedirectOrHtml),
        op(post.clone(), "/oauth2/authorize", "oauth", "The sign-in form of the authorization page", &[], Body::Form(&["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "scope", "state", "nonce", "email", "password", "mfa_code"]), RedirectOrHtml),
        op(post.clone(), "/oauth2/revoke", "oauth", "Revoke an access or refresh token (RFC 7009)", &[], Body::Form(&["token", "token_type_hint"]), Empty(200)),
        op(get.clone(), "/oauth2/userinfo", "oauth", "Who the token is for (OpenID Connect)", &[], NoBody, Typed(200, schema::<oauth::UserInfo>)),
        op(post.clone(), "/oauth2/userinfo", "oauth", "Who the token is for (OpenID Connect)", &[], NoBody, Typed(200, schema::<oauth::UserInfo>)),
        op(get.clone(), "/.well-known/openid-configuration", "oauth", "OpenID Connect discovery", &[], NoBody, Object(200)),
        op(get.clone(), "/.well-known/jwks.json", "oauth", "The keys tokens are signed with", &[], NoBody, Object(200)),
        op(get.clone(), "/health/live", "operations", "The process is up", &[], NoBody, Typed(200, schema::<health::Live>)),
        op(get, "/health/ready", "operations", "The log is open and the views caught up (503 otherwise)", &[], NoBody, Readiness(schema::<health::Readiness>)),
    ]
}

/// The document, made once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.definitions_path = "/components/schemas".into())
        .into_generator();
    // Answers as their types serialise; requests as theirs deserialise.
    let mut answers = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .with(|settings| settings.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths = Map::new();
    let operations = operations();
    for op in &operations {
        let mut operation = operation(op, &mut generator, &mut answers);
        if let Some(links) = links(op, &operations) {
            operation["responses"]["201"]["links"] = links;
        }
        let entry = paths
            .entry(op.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object");
        entry.insert(op.method.as_str().to_ascii_lowercase(), operation);
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (name, schema) in answers.take_definitions(true) {
        // A type both read and answered (an enum of names) is one schema.
        if let Some(taken) = schemas.insert(name.clone(), schema.clone()) {
            assert_eq!(taken, schema, "{name} names two different schemas");
        }
    }
    schemas.insert("Problem".into(), problem_schema());
    let scopes: Map<String, Value> = SCOPES
        .iter()
        .map(|(name, what)| (name.to_string(), json!(what)))
        .collect();
    let tags: Vec<Value> = [
        "catalog",
        "inventory",
        "users",
        "carts",
        "orders",
        "payments",
        "shipping",
        "support",
        "analytics",
        "reports",
        "views",
        "dashboards",
        "auth",
        "oauth",
        "events",
        "operations",
    ]
    .map(|name| json!({ "name": name }))
    .to_vec();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tidemark",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Commerce state as incrementally maintained dataflows over a durable event log. Writes are read-your-writes; errors are RFC 9457 problem documents; lists are `{items, next_cursor}` pages. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (a JWT from /oauth2/token or /api/v1/users/authenticate) or an API key",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "oauth2": {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": "/oauth2/authorize",
                            "tokenUrl": "/oauth2/token",
                            "refreshUrl": "/oauth2/token",
                            "scopes": {"openid": "an ID token", "profile": "name in the ID token", "email": "email in the ID token", "offline_access": "a refresh token"},
                        },
                        "clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": scopes},
                    },
                },
            },
            "responses": {
                "Problem": {
                    "description": "An error, as an RFC 9457 problem document: 400 malformed, 401 no or bad credentials, 403 not allowed, 404 unknown id, 409 conflict, 415 media type, 422 invalid field, 429 rate limited, 503 not ready",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        },
    })
}

/// What a client can do next with what a create answered (OpenAPI links): every
/// operation on `<the collection>/{id}` takes the new resource's `id`. Clients and
/// stateful fuzzers follow them from a create to its reads, changes and deletes.
fn links(op: &Op, operations: &[Op]) -> Option<Value> {
    if op.method != Method::POST
        || !matches!(op.answer, Answer::Object(201) | Answer::Typed(201, _))
    {
        return None;
    }
    let item = format!("{}/{{id}}", op.path);
    let links: Map<String, Value> = operations
        .iter()
        .filter(|other| other.path == item || other.path.starts_with(&format!("{item}/")))
        .filter(|other| path_parameters(other.path).count() == 1)
        .map(|other| {
            (
                operation_id(other),
                json!({"operationId": operation_id(other), "parameters": {"id": "$response.body#/id"}}),
            )
        })
        .collect();
    (!links.is_empty()).then_some(Value::Object(links))
}

fn operation(op: &Op, generator: &mut SchemaGenerator, answers: &mut SchemaGenerator) -> Value {
    let mut parameters: Vec<Value> = path_parameters(op.path)
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}})
        })
        .collect();
    for (name, kind, repeated, what) in op.query {
        let schema = match repeated {
            true => {
                json!({"type": "array", "items": {"type": kind}, "minItems": 1, "maxItems": 100})
            }
            false => json!({"type": kind}),
        };
        parameters.push(json!({"name": name, "in": "query", "required": *repeated, "description": what, "schema": schema}));
    }
    let mut operation = json!({
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": operation_id(op),
        "parameters": parameters,
        "responses": responses(op.answer, answers),
    });
    match op.body {
        Body::None => {}
        Body::Json(schema_of, required) => {
            operation["requestBody"] = json!({
                "required": required,
                "content": {"application/json": {"schema": schema_of(generator)}},
            });
        }
        Body::Form(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|field| (field.to_string(), json!({"type": "string"})))
                .collect();
            let schema = json!({"type": "object", "properties": properties});
            operation["requestBody"] = json!({
                "required": true,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": schema},
                    "application/json": {"schema": schema},
                },
            });
        }
    }
    if let Some(security) = security(op) {
        operation["security"] = security;
    }
    operation
}

/// `{name}` segments of a path.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn operation_id(op: &Op) -> String {
    let words: Vec<String> = op
        .path
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != "api" && *segment != "v1")
        .map(|segment| {
            segment
                .trim_matches(|c| c == '{' || c == '}')
                .replace(['-', '.'], "_")
        })
        .collect();
    format!(
        "{}_{}",
        op.method.as_str().to_ascii_lowercase(),
        words.join("_")
    )
}

fn responses(answer: Answer, answers: &mut SchemaGenerator) -> Value {
    let object = json!({"application/json": {"schema": {"type": "object"}}});
    let mut responses = match answer {
        Answer::Object(status) => {
            json!({status.to_string(): {"description": "OK", "content": object}})
        }
        Answer::Empty(status) => json!({status.to_string(): {"description": "Done"}}),
        Answer::Media(types) => {
            let content: Map<String, Value> = types
                .iter()
                .map(|media| (media.to_string(), json!({})))
                .collect();
            json!({"200": {"description": "The result", "content": content}})
        }
        Answer::Typed(status, schema_of) => json!({status.to_string(): {
            "description": "OK",
            "content": {"application/json": {"schema": schema_of(answers)}},
        }}),
        Answer::TypedPage(schema_of) => {
            json!({"200": {"description": "A page", "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "properties": {
                    "items": {"type": "array", "items": schema_of(answers)},
                    "next_cursor": {"type": ["string", "null"]},
                },
            }}}}})
        }
        Answer::Readiness(schema_of) => {
            let content = json!({"application/json": {"schema": schema_of(answers)}});
            json!({
                "200": {"description": "Ready", "content": content},
                "503": {"description": "Not ready yet, or the log does not take appends", "content": content},
            })
        }
        Answer::RedirectOrHtml => json!({
            "200": {"description": "The sign-in page", "content": {"text/html": {"schema": {"type": "string"}}}},
            "303": {"description": "Back to the client's redirect URI, with a code or an error", "headers": {"Location": {"schema": {"type": "string"}}}},
        }),
    };
    responses["default"] = json!({"$ref": "#/components/responses/Problem"});
    responses
}

/// Who may call: what `auth::policy` enforces. Public routes take credentials too
/// (they are checked when sent); open ones ignore them.
fn security(op: &Op) -> Option<Value> {
    let api_path = op.path.strip_prefix("/api/v1").unwrap_or(op.path);
    let open = op.path.starts_with("/health")
        || op.path.starts_with("/.well-known")
        || op.path.starts_with("/api/v1/events/schemas")
        || op.path == "/api/v1/openapi.json";
    if open {
        return Some(json!([]));
    }
    Some(match policy::rule(&op.method, api_path) {
        Rule::Public => json!([{}, {"bearer": []}, {"apiKey": []}]),
        Rule::SignedIn => json!([{"bearer": []}, {"apiKey": []}, {"oauth2": []}]),
        Rule::Scope(scope) => {
            json!([{"bearer": [scope]}, {"apiKey": [scope]}, {"oauth2": [scope]}])
        }
    })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            }},
            "error": {"type": "string", "description": "RFC 6749's error code, on the OAuth endpoints"},
            "error_description": {"type": "string"},
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    let mut response = axum::Json(document()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// `GET /docs`: the API reference, with a form to try each operation.
pub async fn docs() -> Response {
    let mut response = Html(include_str!("docs.html")).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_under_a_listed_tag() {
        let document = build();
        let tags: Vec<&str> = (document["tags"].as_array().unwrap().iter())
            .map(|tag| tag["name"].as_str().unwrap())
            .collect();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let tag = operation["tags"][0].as_str().unwrap();
                assert!(tags.contains(&tag), "{tag} of {}", operation["operationId"]);
            }
        }
    }

    /// The `.route("...")` paths of the router's source, with the prefix each router
    /// is mounted under.
    fn routed_paths() -> Vec<String> {
        let source = include_str!("mod.rs");
        let mut found = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            let quoted = rest.trim_start();
            let Some(literal) = quoted.strip_prefix('"') else {
                continue;
            };
            let path = &literal[..literal.find('"').expect("a closed literal")];
            let mounted = path.starts_with("/oauth2")
                || path.starts_with("/health")
                || path.starts_with("/.well-known")
                || path == "/docs"
                || path == "/dashboard"
                || path.starts_with("/dashboard/");
            found.push(match mounted {
                true => path.to_string(),
                false => format!("/api/v1{path}"),
            });
        }
        found
    }

    #[test]
    fn every_route_is_documented_and_every_operation_routed() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        let routed = routed_paths();
        assert!(routed.len() > 50, "{routed:?}");
        for path in &routed {
            // Pages, not API.
            if path == "/docs" || path == "/dashboard" || path.starts_with("/dashboard/") {
                continue;
            }
            assert!(
                paths.contains_key(path),
                "{path} is routed but not documented"
            );
        }
        for path in paths.keys() {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
    }

    #[test]
    fn request_schemas_come_from_the_handlers_types() {
        let document = document();
        let order = &document["paths"]["/api/v1/orders"]["post"];
        let schema = &order["requestBody"]["content"]["application/json"]["schema"];
        let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let resolved = &document["components"]["schemas"][name];
        assert!(resolved["properties"]["items"].is_object(), "{resolved}");
        // Security is the policy's: the catalog is public, stock changes need a scope.
        assert_eq!(
            document["paths"]["/api/v1/inventory/adjust"]["post"]["security"][0]["bearer"][0],
            "inventory:write"
        );
        assert_eq!(
            document["paths"]["/api/v1/products"]["get"]["security"][0],
            json!({})
        );
        // A create links to what can be done with what it made.
        let links = &document["paths"]["/api/v1/orders"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            links["get_orders_id"]["parameters"]["id"],
            "$response.body#/id"
        );
        assert!(links["post_orders_id_cancel"].is_object());
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                assert!(operation["responses"]["default"].is_object());
            }
        }
    }
}

//! Orders: placement, reads (with `?wait=settled`), cancellation, status changes.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use connectors::effects::payments::tokenize_card;
use dataflows::catalog::MAX_QUANTITY;
use dataflows::model::{CancelReason, CardToken, Command as DomainCommand, Line, OrderStatus, Str};
use dataflows::orders::{self, LineProblem};
use queries::OrderCursor;
use serde::Deserialize;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult, FieldError};
use crate::api::extract::{Command, Path, QueryPairs};
use crate::api::{admit, json, new_id, read_page, run_fresh, Admission, App};
use crate::auth::Caller;

pub mod carts;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,128}$"))]
    product_id: String,
    #[schemars(range(min = 1, max = 1_000_000))]
    quantity: i64,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) card_number: String,
    pub(crate) exp_month: u8,
    pub(crate) exp_year: u16,
    pub(crate) cvc: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    user_id: Option<String>,
    cart_id: Option<String>,
    items: Option<Vec<LineBody>>,
    payment_method: Option<PaymentMethod>,
    /// A card the user saved (`POST /payment-methods`), instead of `payment_method`.
    payment_method_id: Option<String>,
    shipping_address: Option<Value>,
}

/// The current `(year, month)` in UTC, for card expiry checks.
pub(crate) fn year_month_now() -> (u16, u8) {
    let now = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    let year = now.get(0..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    let month = now.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    (year, month)
}

/// Checks a payment method and turns it into a card token (422 on a bad card).
pub(crate) fn card_token(method: &PaymentMethod, field: &str) -> ApiResult<CardToken> {
    if method.kind != "card" {
        return Err(ApiError::invalid_field(
            &format!("{field}.type"),
            "only \"card\" is supported",
        ));
    }
    tokenize_card(
        &method.card_number,
        method.exp_month,
        method.exp_year,
        &method.cvc,
        year_month_now(),
    )
    .map_err(|error| {
        ApiError::invalid_field(&format!("{field}.{}", error.field()), error.to_string())
    })
}

pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    command: Command<PlaceOrder>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    let admission = admit(&app, &idempotency)?;
    let order_id = new_id("ord", &idempotency);
    if admission == Admission::Fresh {
        let order = validate_order(&app, body)?;
        // A customer orders as themselves; services and operators for anyone.
        caller.require_owner_or(&order.user_id, "orders:write")?;
        let DomainOrder {
            user_id,
            items,
            payment,
            shipping_address,
            cart_id,
        } = order;
        let command = DomainCommand::PlaceOrder {
            order_id: order_id.clone().into(),
            user_id,
            items,
            payment,
            shipping_address,
            cart_id,
        };
        run_fresh(&app, admission, idempotency, command).await?;
    }
    let snapshot = app.views.read();
    let row = snapshot
        .orders
        .get(&order_id)
        .ok_or_else(|| ApiError::not_found("order", &order_id))?;
    caller.require_owner_or(&row.user_id, "orders:write")?;
    Ok((StatusCode::CREATED, Json(json::order(&snapshot, row))))
}

struct DomainOrder {
    user_id: Str,
    items: Vec<Line>,
    payment: Option<CardToken>,
    shipping_address: Option<Str>,
    cart_id: Option<Str>,
}

/// Everything about an order that can be checked before it enters the log.
fn validate_order(app: &App, body: PlaceOrder) -> ApiResult<DomainOrder> {
    let snapshot = app.views.read();
    let mut errors = Vec::new();
    let (user_id, lines, cart_id) = match (&body.cart_id, body.items) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "items",
                "give either items or cart_id, not both",
            ))
        }
        (None, None) => return Err(ApiError::invalid_field("items", "give items or a cart_id")),
        (Some(cart_id), None) => {
            let cart = snapshot.carts.get(cart_id).ok_or_else(|| {
                ApiError::invalid_field("cart_id", format!("cart {cart_id:?} does not exist"))
            })?;
            if body
                .user_id
                .as_ref()
                .is_some_and(|user| user.as_str() != &*cart.user_id)
            {
                return Err(ApiError::invalid_field(
                    "user_id",
                    "the cart belongs to another user",
                ));
            }
            if cart.items.is_empty() {
                return Err(ApiError::invalid_field("cart_id", "the cart is empty"));
            }
            let lines = cart
                .items
                .iter()
                .map(|l| LineBody {
                    product_id: l.product_id.to_string(),
                    quantity: l.quantity,
                })
                .collect();
            (
                cart.user_id.clone(),
                lines,
                Some(Str::from(cart_id.as_str())),
            )
        }
        (None, Some(items)) => {
            let user_id = body
                .user_id
                .clone()
                .ok_or_else(|| ApiError::invalid_field("user_id", "is required with items"))?;
            (Str::from(user_id), items, None)
        }
    };
    if !snapshot.users.contains_key(&user_id) {
        errors.push(FieldError::new(
            "user_id",
            format!("user {user_id:?} does not exist"),
        ));
    }
    let mut resolved = Vec::with_capacity(lines.len());
    let mut currency: Option<&str> = None;
    for (index, line) in lines.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            errors.push(FieldError::new(
                format!("items[{index}].quantity"),
                format!("must be between 1 and {}", MAX_QUANTITY),
            ));
        }
        let Some(product) = snapshot.products.get(&line.product_id) else {
            errors.push(FieldError::new(
                format!("items[{index}].product_id"),
                format!("product {:?} does not exist", line.product_id),
            ));
            continue;
        };
        match currency {
            Some(first) if first != &*product.currency => errors.push(FieldError::new(
                format!("items[{index}].product_id"),
                "all products of an order must share one currency",
            )),
            _ => currency = Some(&product.currency),
        }
        // The order's lines share the product row's id rather than copy the request's.
        resolved.push(Line {
            product_id: product.product_id.clone(),
            quantity: line.quantity,
        });
    }
    let items = match orders::order_lines(resolved) {
        Ok(items) => items,
        Err(problem @ LineProblem::Count) => {
            errors.push(FieldError::new("items", problem.message()));
            Vec::new()
        }
        // A line's own quantity error is reported above; with every line resolved and
        // in bounds, positions in `resolved` are those of the request.
        Err(LineProblem::Quantity(_)) if !errors.is_empty() => Vec::new(),
        Err(problem @ LineProblem::Quantity(index)) => {
            errors.push(FieldError::new(
                format!("items[{index}].quantity"),
                problem.message(),
            ));
            Vec::new()
        }
    };
    let shipping_address = match body.shipping_address {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if !text.trim().is_empty() && text.len() <= 1000 => Some(text),
        Some(Value::Object(fields))
            if serde_json::to_string(&fields)
                .map(|s| s.len() <= 1000)
                .unwrap_or(false) =>
        {
            Some(Value::Object(fields).to_string())
        }
        Some(_) => {
            errors.push(FieldError::new(
                "shipping_address",
                "must be a string or an object of at most 1000 bytes",
            ));
            None
        }
    };
    let paying = super::payment_methods::paying(
        body.payment_method.as_ref(),
        body.payment_method_id.as_deref(),
    );
    let payment = match paying.and_then(|paying| paying.token(&snapshot, &user_id)) {
        Ok(token) => token,
        Err(error) => {
            errors.extend(error.errors);
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(DomainOrder {
        user_id,
        items,
        payment,
        shipping_address: shipping_address.map(Str::from),
        cart_id,
    })
}

/// `GET /orders/{id}`; with `?wait=settled` it waits (up to `timeout_ms`, default 5000,
/// at most 30000) until the order has left `pending` and `reserved`.
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let wait = match query.get("wait") {
        None => false,
        Some("settled") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "wait",
                "the only wait is \"settled\"",
            ))
        }
    };
    let timeout = Duration::from_millis(query.u64("timeout_ms", 30_000)?.unwrap_or(5_000));
    let deadline = Instant::now() + timeout;
    let mut frontier = app.views.subscribe_frontier();
    loop {
        {
            let snapshot = app.views.read();
            let row = snapshot
                .orders
                .get(&id)
                .ok_or_else(|| ApiError::not_found("order", &id))?;
            caller.require_owner_or(&row.user_id, "orders:read")?;
            if !wait || row.status.is_settled() || Instant::now() >= deadline {
                return Ok(Json(json::order(&snapshot, row)));
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(remaining, frontier.changed())
            .await
            .is_ok_and(|changed| changed.is_err())
        {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
    }
}

/// A user's orders, newest first.
pub async fn list_for_user(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    query: QueryPairs,
) -> ApiResult<json::Rendered> {
    caller.require_owner_or(&user_id, "orders:read")?;
    let limit = query.limit()?;
    let cursor = query.get("cursor").map(parse_order_cursor).transpose()?;
    read_page(&app, move |snapshot| {
        if !snapshot.users.contains_key(&user_id) && !snapshot.has_orders(&user_id) {
            return Err(ApiError::not_found("user", &user_id));
        }
        let page: Vec<_> = snapshot
            .orders_of(&user_id, cursor.as_ref())
            .take(limit + 1)
            .collect();
        let cursor = |(last, _): &(OrderCursor, &dataflows::views::OrderRow)| {
            format!("{}:{}", last.created_at, last.order_id)
        };
        let view = |(_, row)| json::OrderView::of(snapshot, row);
        Ok(json::Page::of(page, limit, cursor, view).render())
    })
    .await
}

/// A cursor of `list_for_user`: `created_at:order_id` of the last order of a page.
fn parse_order_cursor(text: &str) -> ApiResult<OrderCursor> {
    let invalid = || ApiError::invalid_field("cursor", "is not a cursor from this list");
    let (at, id) = text.split_once(':').ok_or_else(invalid)?;
    Ok(OrderCursor {
        created_at: at.parse().map_err(|_| invalid())?,
        order_id: id.into(),
    })
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    reason: Option<CancelReason>,
}

pub async fn cancel(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<Cancel>,
) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let admission = admit(&app, &idempotency)?;
    let owner = app
        .views
        .read()
        .orders
        .get(&id)
        .map(|order| order.user_id.clone());
    match owner {
        Some(owner) => caller.require_owner_or(&owner, "orders:write")?,
        None if admission == Admission::Fresh => return Err(ApiError::not_found("order", &id)),
        None => {}
    }
    let reason = body.reason.unwrap_or(CancelReason::CustomerRequest);
    if reason != CancelReason::CustomerRequest {
        caller.require("orders:write")?;
    }
    if !orders::client_may_cancel_for(reason) {
        return Err(ApiError::invalid_field(
            "reason",
            "a client may cancel for customer_request or admin_request; the other reasons are the order's own",
        ));
    }
    run_fresh(
        &app,
        admission,
        idempotency,
        DomainCommand::CancelOrder {
            order_id: id.clone().into(),
            reason,
        },
    )
    .await?;
    get(State(app), Caller(caller), Path(id), QueryPairs(Vec::new())).await
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    status: OrderStatus,
}

pub async fn set_status(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    command: Command<SetStatus>,
) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh && !app.views.read().orders.contains_key(&id) {
        return Err(ApiError::not_found("order", &id));
    }
    run_fresh(
        &app,
        admission,
        idempotency,
        DomainCommand::SetOrderStatus {
            order_id: id.clone().into(),
            status: body.status,
        },
    )
    .await?;
    get(State(app), caller, Path(id), QueryPairs(Vec::new())).await
}

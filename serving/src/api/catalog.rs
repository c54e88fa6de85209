//! Catalog: products, stock and reservations (the brief's inventory-service).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{Command as DomainCommand, Line, Str};
use dataflows::views::ReservationStatus;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{Command, Path, QueryPairs};
use super::validate::{self, Validator, MAX_PRICE_CENTS, MAX_QUANTITY};
use super::{admit, json, new_id, read_page, run_fresh, Admission, App};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schemars(length(min = 1, max = 64), pattern(r"\S"))]
    sku: String,
    #[schemars(length(min = 1, max = 200), pattern(r"\S"))]
    name: String,
    #[schemars(range(min = 0, max = 10_000_000_000i64))]
    price_cents: i64,
    #[schemars(pattern(r"^[A-Za-z]{3}$"))]
    currency: String,
    #[schemars(range(min = 0, max = 1_000_000))]
    initial_stock: Option<i64>,
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,128}$"))]
    warehouse_id: Option<String>,
    #[schemars(range(min = 0, max = 1_000_000))]
    reorder_point: Option<i64>,
}

pub async fn create(
    State(app): State<App>,
    command: Command<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    let currency = validate::currency(&body.currency);
    Validator::default()
        .text(&body.sku, "sku", 64)
        .text(&body.name, "name", 200)
        .check(
            (0..=MAX_PRICE_CENTS).contains(&body.price_cents),
            "price_cents",
            "must be between 0 and 10000000000",
        )
        .check(
            currency.is_some(),
            "currency",
            "must be a three-letter currency code",
        )
        .check(
            (0..=MAX_QUANTITY).contains(&body.initial_stock.unwrap_or(0)),
            "initial_stock",
            "must be between 0 and 1000000",
        )
        .check(
            (0..=MAX_QUANTITY).contains(&body.reorder_point.unwrap_or(0)),
            "reorder_point",
            "must be between 0 and 1000000",
        )
        .check(
            body.warehouse_id.as_deref().is_none_or(validate::id),
            "warehouse_id",
            "must be a short id",
        )
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    let sku = body.sku.trim().to_string();
    if admission == Admission::Fresh && app.views.read().product_by_sku(&sku).is_some() {
        return Err(ApiError::conflict(
            "sku_taken",
            format!("a product with sku {sku:?} already exists"),
        ));
    }
    let product_id = new_id("prd", &idempotency);
    let command = DomainCommand::CreateProduct {
        product_id: product_id.clone().into(),
        sku: sku.into(),
        name: body.name.trim().into(),
        price_cents: body.price_cents,
        currency: currency.unwrap_or_default().into(),
        initial_stock: body.initial_stock.unwrap_or(0),
        warehouse_id: body.warehouse_id.map(Str::from),
        reorder_point: body.reorder_point.unwrap_or(0),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let row = snapshot
        .products
        .get(&product_id)
        .ok_or_else(|| ApiError::internal("created product is not in the view"))?;
    Ok((StatusCode::CREATED, Json(json::product(&snapshot, row))))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .products
        .get(&id)
        .ok_or_else(|| ApiError::not_found("product", &id))?;
    Ok(Json(json::product(&snapshot, row)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    sku: Option<String>,
    name: Option<String>,
    price_cents: Option<i64>,
    currency: Option<String>,
    reorder_point: Option<i64>,
}

pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    command: Command<UpdateProduct>,
) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let currency = body.currency.as_deref().map(validate::currency);
    let mut validator = Validator::default();
    if let Some(sku) = &body.sku {
        validator.text(sku, "sku", 64);
    }
    if let Some(name) = &body.name {
        validator.text(name, "name", 200);
    }
    validator
        .check(
            body.price_cents
                .is_none_or(|p| (0..=MAX_PRICE_CENTS).contains(&p)),
            "price_cents",
            "must be between 0 and 10000000000",
        )
        .check(
            !matches!(currency, Some(None)),
            "currency",
            "must be a three-letter currency code",
        )
        .check(
            body.reorder_point
                .is_none_or(|r| (0..=MAX_QUANTITY).contains(&r)),
            "reorder_point",
            "must be between 0 and 1000000",
        )
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh {
        let snapshot = app.views.read();
        if !snapshot.products.contains_key(&id) {
            return Err(ApiError::not_found("product", &id));
        }
        if let Some(sku) = &body.sku {
            if snapshot
                .product_by_sku(sku.trim())
                .is_some_and(|p| *p.product_id != *id)
            {
                return Err(ApiError::conflict(
                    "sku_taken",
                    format!("a product with sku {sku:?} already exists"),
                ));
            }
        }
    }
    let command = DomainCommand::UpdateProduct {
        product_id: id.clone().into(),
        sku: body.sku.map(|s| s.trim().into()),
        name: body.name.map(|s| s.trim().into()),
        price_cents: body.price_cents,
        currency: currency.flatten().map(Str::from),
        reorder_point: body.reorder_point,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    get(State(app), Path(id)).await
}

/// Products whose name or sku contains `q` (case-insensitive), ordered by id.
pub async fn search(State(app): State<App>, query: QueryPairs) -> ApiResult<json::Rendered> {
    let needle = query.get("q").unwrap_or("").to_lowercase();
    list_matching(&app, &query, move |name, sku| {
        needle.is_empty()
            || name.to_lowercase().contains(&needle)
            || sku.to_lowercase().contains(&needle)
    })
    .await
}

pub async fn list(State(app): State<App>, query: QueryPairs) -> ApiResult<json::Rendered> {
    list_matching(&app, &query, |_, _| true).await
}

async fn list_matching(
    app: &App,
    query: &QueryPairs,
    matches: impl Fn(&str, &str) -> bool + Send + 'static,
) -> ApiResult<json::Rendered> {
    let limit = query.limit()?;
    let after = query.get("cursor").unwrap_or("").to_string();
    read_page(app, move |snapshot| {
        let found: Vec<&dataflows::views::ProductRow> = snapshot
            .products
            .after(&after)
            .filter(|p| matches(&p.name, &p.sku))
            .take(limit + 1)
            .collect();
        let cursor = |row: &&dataflows::views::ProductRow| row.product_id.to_string();
        let view = |row| json::ProductView::of(snapshot, row);
        Ok(json::Page::of(found, limit, cursor, view).render())
    })
    .await
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    product_id: String,
    delta: i64,
    reason: Option<String>,
    warehouse_id: Option<String>,
}

pub async fn adjust(State(app): State<App>, command: Command<Adjust>) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let reason = body.reason.unwrap_or_else(|| "manual".into());
    Validator::default()
        .check(
            validate::id(&body.product_id),
            "product_id",
            "must be a product id",
        )
        .check(
            dataflows::catalog::adjustment_in_bounds(body.delta),
            "delta",
            "must be non-zero, at most 1000000 either way",
        )
        .text(&reason, "reason", 200)
        .check(
            body.warehouse_id.as_deref().is_none_or(validate::id),
            "warehouse_id",
            "must be a short id",
        )
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh && !app.views.read().products.contains_key(&body.product_id) {
        return Err(ApiError::not_found("product", &body.product_id));
    }
    let command = DomainCommand::AdjustStock {
        product_id: body.product_id.clone().into(),
        delta: body.delta,
        reason: reason.into(),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    Ok(Json(json::stock(&app.views.read(), &body.product_id)))
}

/// `?product_id=a&product_id=b`: stock of each product, in the order asked.
pub async fn availability(State(app): State<App>, query: QueryPairs) -> ApiResult<Json<Value>> {
    let ids = query.all("product_id");
    if ids.is_empty() || ids.len() > 100 {
        return Err(ApiError::invalid_field(
            "product_id",
            "give 1 to 100 product_id parameters",
        ));
    }
    let snapshot = app.views.read();
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        if !snapshot.products.contains_key(id) {
            return Err(ApiError::not_found("product", id));
        }
        items.push(json::StockLevel::of(&snapshot, id));
    }
    Ok(Json(json::to_value(json::StockLevels { items })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveLine {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    reservation_id: Option<String>,
    items: Vec<ReserveLine>,
}

/// Holds stock for every line or none. 201 with the held reservation; 409
/// `insufficient_stock` when any line cannot be held (nothing is held then).
pub async fn reserve(
    State(app): State<App>,
    command: Command<Reserve>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    let mut validator = Validator::default();
    validator
        .check(
            body.reservation_id.as_deref().is_none_or(validate::id),
            "reservation_id",
            "must be 1 to 128 letters, digits, _ or -",
        )
        .check(
            (1..=100).contains(&body.items.len()),
            "items",
            "a reservation has 1 to 100 lines",
        );
    let mut merged: Vec<Line> = Vec::new();
    for (index, line) in body.items.iter().enumerate() {
        validator.check(
            (1..=MAX_QUANTITY).contains(&line.quantity),
            &format!("items[{index}].quantity"),
            "must be between 1 and 1000000",
        );
        match merged
            .iter_mut()
            .find(|held| *held.product_id == *line.product_id)
        {
            Some(held) => held.quantity = held.quantity.saturating_add(line.quantity),
            None => merged.push(Line {
                product_id: line.product_id.clone().into(),
                quantity: line.quantity,
            }),
        }
    }
    validator.finish()?;
    let admission = admit(&app, &idempotency)?;
    let reservation_id = body
        .reservation_id
        .unwrap_or_else(|| new_id("rsv", &idempotency));
    if admission == Admission::Fresh {
        let snapshot = app.views.read();
        if snapshot.reservations.contains_key(&reservation_id) {
            return Err(ApiError::conflict(
                "reservation_exists",
                format!("reservation {reservation_id:?} already exists"),
            ));
        }
        let unknown: Vec<FieldError> = body
            .items
            .iter()
            .enumerate()
            .filter(|(_, line)| !snapshot.products.contains_key(&line.product_id))
            .map(|(index, line)| {
                FieldError::new(
                    format!("items[{index}].product_id"),
                    format!("product {:?} does not exist", line.product_id),
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::invalid(unknown));
        }
    }
    let command = DomainCommand::ReserveStock {
        reservation_id: reservation_id.clone().into(),
        items: merged,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let row = snapshot
        .reservations
        .get(&reservation_id)
        .ok_or_else(|| ApiError::not_found("reservation", &reservation_id))?;
    if row.status == ReservationStatus::Rejected {
        let mut error = ApiError::conflict(
            "insufficient_stock",
            format!("reservation {reservation_id} could not hold every line; nothing is held"),
        );
        error.errors = row
            .items
            .iter()
            .filter(|line| snapshot.stock_of(&line.product_id).available() < line.quantity)
            .map(|line| {
                FieldError::new(
                    "items",
                    format!(
                        "product {} has {} available",
                        line.product_id,
                        snapshot.stock_of(&line.product_id).available()
                    ),
                )
            })
            .collect();
        return Err(error);
    }
    Ok((StatusCode::CREATED, Json(json::reservation(row))))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    reservation_id: String,
}

pub async fn release(State(app): State<App>, command: Command<Release>) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh
        && !app
            .views
            .read()
            .reservations
            .contains_key(&body.reservation_id)
    {
        return Err(ApiError::not_found("reservation", &body.reservation_id));
    }
    let command = DomainCommand::ReleaseReservation {
        reservation_id: body.reservation_id.clone().into(),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    reservation(State(app), Path(body.reservation_id)).await
}

pub async fn reservation(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .reservations
        .get(&id)
        .ok_or_else(|| ApiError::not_found("reservation", &id))?;
    Ok(Json(json::reservation(row)))
}

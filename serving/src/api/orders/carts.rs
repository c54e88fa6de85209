//! Carts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{Command as DomainCommand, Str};
use serde::Deserialize;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{Command, Path};
use crate::api::validate::{self, Validator, MAX_QUANTITY};
use crate::api::{admit, json, new_id, run_fresh, Admission, App};
use crate::auth::Caller;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,128}$"))]
    user_id: String,
}

pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    command: Command<CreateCart>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    caller.require_owner_or(&body.user_id, "orders:write")?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh && !app.views.read().users.contains_key(&body.user_id) {
        return Err(ApiError::invalid_field(
            "user_id",
            format!("user {:?} does not exist", body.user_id),
        ));
    }
    let cart_id = new_id("crt", &idempotency);
    run_fresh(
        &app,
        admission,
        idempotency,
        DomainCommand::CreateCart {
            cart_id: cart_id.clone().into(),
            user_id: body.user_id.into(),
        },
    )
    .await?;
    let snapshot = app.views.read();
    let row = snapshot
        .carts
        .get(&cart_id)
        .ok_or_else(|| ApiError::not_found("cart", &cart_id))?;
    Ok((StatusCode::CREATED, Json(json::cart(&snapshot, row))))
}

pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .carts
        .get(&id)
        .ok_or_else(|| ApiError::not_found("cart", &id))?;
    caller.require_owner_or(&row.user_id, "orders:read")?;
    Ok(Json(json::cart(&snapshot, row)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetItem {
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,128}$"))]
    product_id: String,
    #[schemars(range(min = 0, max = 1_000_000))]
    quantity: i64,
}

/// Sets a product's quantity in the cart; 0 removes it.
pub async fn set_item(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<SetItem>,
) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    Validator::default()
        .check(
            validate::id(&body.product_id),
            "product_id",
            "must be a product id",
        )
        .check(
            (0..=MAX_QUANTITY).contains(&body.quantity),
            "quantity",
            "must be between 0 and 1000000",
        )
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    let currency = {
        let snapshot = app.views.read();
        match snapshot.carts.get(&id) {
            Some(cart) => caller.require_owner_or(&cart.user_id, "orders:write")?,
            None if admission == Admission::Fresh => return Err(ApiError::not_found("cart", &id)),
            None => {}
        }
        match snapshot.products.get(&body.product_id) {
            Some(product) => product.currency.clone(),
            None if admission == Admission::Fresh => {
                return Err(ApiError::invalid_field(
                    "product_id",
                    format!("product {:?} does not exist", body.product_id),
                ))
            }
            None => Str::default(),
        }
    };
    let command = DomainCommand::SetCartItem {
        cart_id: id.clone().into(),
        product_id: body.product_id.into(),
        quantity: body.quantity,
        currency,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    get(State(app), Caller(caller), Path(id)).await
}

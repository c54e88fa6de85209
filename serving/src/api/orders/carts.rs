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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    user_id: String,
}

pub async fn create(
    State(app): State<App>,
    command: Command<CreateCart>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
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

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .carts
        .get(&id)
        .ok_or_else(|| ApiError::not_found("cart", &id))?;
    Ok(Json(json::cart(&snapshot, row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetItem {
    product_id: String,
    quantity: i64,
}

/// Sets a product's quantity in the cart; 0 removes it.
pub async fn set_item(
    State(app): State<App>,
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
        if admission == Admission::Fresh && !snapshot.carts.contains_key(&id) {
            return Err(ApiError::not_found("cart", &id));
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
    get(State(app), Path(id)).await
}

//! Payments and refunds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{payment_id_for, Command as DomainCommand};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path};
use super::orders::PaymentMethod;
use super::payment_methods::{paying, Paying};
use super::validate::Validator;
use super::{admit, json, order_owner, run_fresh, Admission, App};
use crate::auth::Caller;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    order_id: String,
    payment_method: Option<PaymentMethod>,
    /// A card the order's user saved (`POST /payment-methods`), instead of
    /// `payment_method`.
    payment_method_id: Option<String>,
}

/// Pays a reserved order that was placed without a payment method.
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    command: Command<CreatePayment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    // A card given is checked first, whatever the order; a saved one once the order's
    // user is known.
    let paying = paying(
        body.payment_method.as_ref(),
        body.payment_method_id.as_deref(),
    )?;
    if matches!(paying, Paying::Nothing) {
        return Err(ApiError::invalid_field(
            "payment_method",
            "give either payment_method or payment_method_id",
        ));
    }
    let admission = admit(&app, &idempotency)?;
    let snapshot = app.views.read();
    let owner = order_owner(&snapshot, &body.order_id);
    match &owner {
        Some(owner) => caller.require_owner_or(owner, "payment:write")?,
        None if admission == Admission::Fresh => {
            return Err(ApiError::invalid_field(
                "order_id",
                format!("order {:?} does not exist", body.order_id),
            ))
        }
        None => {}
    }
    let card = match &owner {
        Some(owner) => paying.token(&snapshot, owner)?,
        // A replay: the first request's command is in the log already.
        None => None,
    };
    drop(snapshot);
    let payment_id = payment_id_for(&body.order_id);
    if let Some(card) = card {
        let command = DomainCommand::PayOrder {
            order_id: body.order_id.into(),
            payment: card,
        };
        run_fresh(&app, admission, idempotency, command).await?;
    }
    let snapshot = app.views.read();
    let row = snapshot
        .payments
        .get(&payment_id)
        .ok_or_else(|| ApiError::not_found("payment", &payment_id))?;
    Ok((StatusCode::CREATED, Json(json::payment(row))))
}

pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .payments
        .get(&id)
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    let owner = order_owner(&snapshot, &row.order_id).unwrap_or_default();
    caller.require_owner_or(&owner, "payment:read")?;
    Ok(Json(json::payment(row)))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RefundRequest")]
pub struct Refund {
    amount_cents: Option<i64>,
    reason: Option<String>,
}

/// Refunds all (default) or part of a captured payment; answers the new refund.
pub async fn refund(
    State(app): State<App>,
    Path(id): Path<String>,
    command: Command<Refund>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    let reason = body
        .reason
        .unwrap_or_else(|| "requested_by_customer".into());
    Validator::default()
        .check(
            body.amount_cents.is_none_or(|amount| amount > 0),
            "amount_cents",
            "must be positive",
        )
        .text(&reason, "reason", 200)
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    let order_id = {
        let snapshot = app.views.read();
        let payment = snapshot
            .payments
            .get(&id)
            .ok_or_else(|| ApiError::not_found("payment", &id))?;
        payment.order_id.clone()
    };
    let command = DomainCommand::RequestRefund {
        payment_id: id.clone().into(),
        order_id,
        amount_cents: body.amount_cents,
        reason: reason.into(),
    };
    let requested_seq = run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let payment = snapshot
        .payments
        .get(&id)
        .ok_or_else(|| ApiError::not_found("payment", &id))?;
    // The refund this request created (or, for a replay, the first request created).
    let refund = payment
        .refunds
        .iter()
        .find(|refund| refund.requested_seq == requested_seq)
        .ok_or_else(|| ApiError::internal("refund not in the view"))?;
    Ok((StatusCode::CREATED, Json(json::refund(payment, refund))))
}

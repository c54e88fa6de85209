//! Saved cards (`/api/v1/payment-methods`): a user's cards, kept as the provider's
//! token with the brand, the last four digits and the expiry, never the number or the
//! CVC, to pay orders with later (`payment_method_id`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use dataflows::model::{CardToken, Command as DomainCommand};
use dataflows::views::PaymentMethodRow;
use queries::Snapshot;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path, QueryPairs};
use super::json::{self, Rfc3339};
use super::orders::{card_token, year_month_now, PaymentMethod};
use super::{admit, new_id, run_fresh, Admission, App};
use crate::auth::{Caller, Principal};

/// A card to save.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveCard {
    /// Whose card: the caller's own when left out (a key acting for no user must say).
    user_id: Option<String>,
    /// `card`.
    #[serde(rename = "type")]
    kind: String,
    card_number: String,
    exp_month: u8,
    exp_year: u16,
    cvc: String,
}

/// A saved card, as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SavedCard")]
pub struct MethodView<'a> {
    id: &'a str,
    user_id: &'a str,
    /// `card`.
    r#type: &'static str,
    brand: &'a str,
    last4: &'a str,
    exp_month: u8,
    exp_year: u16,
    created_at: Rfc3339,
}

impl<'a> MethodView<'a> {
    fn of(row: &'a PaymentMethodRow) -> MethodView<'a> {
        MethodView {
            id: &row.method_id,
            user_id: &row.user_id,
            r#type: "card",
            brand: &row.card.brand,
            last4: &row.card.last4,
            exp_month: row.card.exp_month,
            exp_year: row.card.exp_year,
            created_at: Rfc3339(row.created_at),
        }
    }
}

/// `GET /payment-methods`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SavedCardList")]
pub struct MethodList<'a> {
    items: Vec<MethodView<'a>>,
}

/// The card a request pays with, as it names it: `payment_method` (a card, checked
/// and tokenised at once) or `payment_method_id` (a saved one, looked up once the
/// paying user is known), never both.
pub(crate) enum Paying<'a> {
    Nothing,
    Card(CardToken),
    Saved(&'a str),
}

pub(crate) fn paying<'a>(
    method: Option<&PaymentMethod>,
    saved: Option<&'a str>,
) -> ApiResult<Paying<'a>> {
    match (method, saved) {
        (None, None) => Ok(Paying::Nothing),
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "payment_method_id",
            "give either payment_method or payment_method_id, not both",
        )),
        (Some(method), None) => Ok(Paying::Card(card_token(method, "payment_method")?)),
        (None, Some(id)) => Ok(Paying::Saved(id)),
    }
}

impl Paying<'_> {
    /// The token to charge when `user_id` pays: a saved card must be theirs.
    pub(crate) fn token(self, snapshot: &Snapshot, user_id: &str) -> ApiResult<Option<CardToken>> {
        match self {
            Paying::Nothing => Ok(None),
            Paying::Card(card) => Ok(Some(card)),
            Paying::Saved(id) => saved_card(snapshot, user_id, id).map(Some),
        }
    }
}

/// The token of `user_id`'s saved card `method_id`, to pay with: 422 naming
/// `payment_method_id` when it is not one of theirs or has expired.
fn saved_card(snapshot: &Snapshot, user_id: &str, method_id: &str) -> ApiResult<CardToken> {
    let row = (snapshot.payment_methods.get(method_id))
        .filter(|row| *row.user_id == *user_id)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "payment_method_id",
                format!("{method_id:?} is not a card user {user_id} saved"),
            )
        })?;
    if (row.card.exp_year, row.card.exp_month) < year_month_now() {
        return Err(ApiError::invalid_field(
            "payment_method_id",
            "the saved card has expired; save the new one",
        ));
    }
    Ok(row.card.clone())
}

/// `POST /payment-methods`: 201 with the saved card.
pub async fn create(
    State(app): State<App>,
    Caller(caller): Caller,
    command: Command<SaveCard>,
) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let user_id = caller.user_or(body.user_id.as_deref())?;
    caller.require_owner_or(&user_id, "payment:write")?;
    let card = card_token(
        &PaymentMethod {
            kind: body.kind,
            card_number: body.card_number,
            exp_month: body.exp_month,
            exp_year: body.exp_year,
            cvc: body.cvc,
        },
        "card",
    )
    .map_err(|mut error| {
        // The fields are the body's own, not a nested object's.
        for field in &mut error.errors {
            field.field = field.field.trim_start_matches("card.").to_string();
        }
        ApiError::invalid(error.errors)
    })?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh && !app.views.read().users.contains_key(&user_id) {
        return Err(ApiError::invalid_field(
            "user_id",
            format!("user {user_id:?} does not exist"),
        ));
    }
    let method_id = new_id("pm", &idempotency);
    let command = DomainCommand::AddPaymentMethod {
        method_id: method_id.as_str().into(),
        user_id: user_id.into(),
        card,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let row = (snapshot.payment_methods.get(&method_id))
        .ok_or_else(|| ApiError::not_found("payment method", &method_id))?;
    caller.require_owner_or(&row.user_id, "payment:write")?;
    Ok(super::created(
        format!("/api/v1/payment-methods/{method_id}"),
        Json(json::to_value(MethodView::of(row))),
    ))
}

/// `GET /payment-methods?user_id=`: the user's saved cards (the caller's own when left
/// out).
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    query: QueryPairs,
) -> ApiResult<Json<serde_json::Value>> {
    let user_id = caller.user_or(query.get("user_id"))?;
    caller.require_owner_or(&user_id, "payment:read")?;
    let snapshot = app.views.read();
    if !snapshot.users.contains_key(&user_id) {
        return Err(ApiError::not_found("user", &user_id));
    }
    let items = snapshot
        .payment_methods_of(&user_id)
        .map(MethodView::of)
        .collect();
    Ok(Json(json::to_value(MethodList { items })))
}

/// The card `id`, if the caller may see it (`scope` for another user's): 404 for one
/// that does not exist.
fn visible(
    snapshot: &Snapshot,
    caller: &Principal,
    id: &str,
    scope: &str,
) -> ApiResult<PaymentMethodRow> {
    let row = (snapshot.payment_methods.get(id))
        .ok_or_else(|| ApiError::not_found("payment method", id))?;
    caller.require_owner_or(&row.user_id, scope)?;
    Ok(row.clone())
}

/// `GET /payment-methods/{id}`.
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let row = visible(&app.views.read(), &caller, &id, "payment:read")?;
    Ok(Json(json::to_value(MethodView::of(&row))))
}

/// `DELETE /payment-methods/{id}`: 204; orders already paid with it are not touched.
pub async fn delete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let row = visible(&app.views.read(), &caller, &id, "payment:write")?;
    let command = DomainCommand::RemovePaymentMethod {
        method_id: row.method_id,
        user_id: row.user_id,
    };
    run_fresh(&app, Admission::Fresh, None, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

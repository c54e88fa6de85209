//! API keys: issued once (the answer is the only place the key appears), listed
//! without secrets, rotated with a grace period, revoked. Administrators only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{Command as DomainCommand, IdempotencyKey, Str};
use dataflows::views::ApiKeyRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path, QueryPairs};
use super::json::Rfc3339;
use super::validate::Validator;
use super::{admit, new_id, read_page, run_fresh, Admission, App};
use crate::auth::{self, principal};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub expires_in_days: Option<u64>,
    /// The user the key acts as (their own orders, carts, ...); none for a service.
    pub owner_id: Option<String>,
    /// A named permission set (`auth.service_accounts`, e.g. `order_service`): the key
    /// is that service account's, with the set's scopes.
    #[serde(default)]
    pub service_account: Option<String>,
}

pub async fn create(
    State(app): State<App>,
    command: Command<CreateKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    Ok((
        StatusCode::CREATED,
        Json(issue(&app, body, idempotency).await?),
    ))
}

/// Issues a key: the answer holds its secret, which appears nowhere else. Also what
/// `tidemark admin create-key` runs.
pub async fn issue(
    app: &App,
    mut body: CreateKey,
    idempotency: Option<IdempotencyKey>,
) -> ApiResult<Value> {
    if let Some(account) = &body.service_account {
        let Some(scopes) = app.config.auth.service_accounts.get(account) else {
            let known: Vec<&str> = app
                .config
                .auth
                .service_accounts
                .keys()
                .map(String::as_str)
                .collect();
            return Err(ApiError::invalid_field(
                "service_account",
                format!("is not one of {}", known.join(", ")),
            ));
        };
        if !body.scopes.is_empty() || body.owner_id.is_some() {
            return Err(ApiError::invalid_field(
                "service_account",
                "a service account's key has its set's scopes and no owner: leave scopes and owner_id out",
            ));
        }
        body.scopes = scopes.clone();
    }
    let mut validator = Validator::default();
    validator.text(&body.name, "name", 200);
    for (i, scope) in body.scopes.iter().enumerate() {
        validator.check(
            principal::is_scope(scope),
            &format!("scopes[{i}]"),
            "is not a scope (see docs/api.md)",
        );
    }
    validator
        .check(
            !body.scopes.is_empty() || body.owner_id.is_some(),
            "scopes",
            "a key without an owner needs at least one scope",
        )
        .check(body.scopes.len() <= 32, "scopes", "at most 32")
        .check(
            body.expires_in_days
                .is_none_or(|days| (1..=3650).contains(&days)),
            "expires_in_days",
            "must be between 1 and 3650",
        )
        .finish()?;
    let admission = admit(app, &idempotency)?;
    if let Some(owner) = &body.owner_id {
        if admission == Admission::Fresh && !app.views.read().users.contains_key(owner) {
            return Err(ApiError::invalid_field(
                "owner_id",
                format!("user {owner:?} does not exist"),
            ));
        }
    }
    let key_id = new_id("key", &idempotency);
    let secret = app.auth.new_key(&idempotency);
    let mut scopes: Vec<Str> = body.scopes.iter().map(|s| Str::from(s.as_str())).collect();
    scopes.sort();
    scopes.dedup();
    let days = body
        .expires_in_days
        .unwrap_or(app.config.auth.api_key_ttl_days);
    let command = DomainCommand::CreateApiKey {
        key_id: key_id.clone().into(),
        name: body.name.trim().into(),
        owner: body.owner_id.map(Str::from),
        scopes,
        key_hash: hex::encode(auth::digest(&secret)).into(),
        lifetime_ms: days * DAY_MS,
    };
    run_fresh(app, admission, idempotency, command).await?;
    issued(app, &key_id, &secret)
}

/// A new key's answer: the key with its secret, shown this once.
fn issued(app: &App, key_id: &str, secret: &str) -> ApiResult<Value> {
    let snapshot = app.views.read();
    let row = snapshot
        .api_keys
        .get(key_id)
        .ok_or_else(|| ApiError::not_found("API key", key_id))?;
    let issued = IssuedKey {
        view: KeyView::of(row),
        key: secret,
    };
    Ok(super::json::to_value(issued))
}

pub async fn list(State(app): State<App>, query: QueryPairs) -> ApiResult<super::json::Rendered> {
    let limit = query.limit()?;
    let after = query.get("cursor").unwrap_or("").to_string();
    read_page(&app, move |snapshot| {
        let found: Vec<&ApiKeyRow> = snapshot.api_keys.after(&after).take(limit + 1).collect();
        let cursor = |row: &&ApiKeyRow| row.key_id.to_string();
        Ok(super::json::Page::of(found, limit, cursor, KeyView::of).render())
    })
    .await
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .api_keys
        .get(&id)
        .ok_or_else(|| ApiError::not_found("API key", &id))?;
    Ok(Json(super::json::to_value(KeyView::of(row))))
}

/// Revokes a key: refused from the next request on. Revoking a revoked key is a no-op.
pub async fn revoke(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    match app.views.read().api_keys.get(&id) {
        None => return Err(ApiError::not_found("API key", &id)),
        Some(row) if row.revoked_at.is_some() => return Ok(StatusCode::NO_CONTENT),
        Some(_) => {}
    }
    let command = DomainCommand::RevokeApiKey { key_id: id.into() };
    match run_fresh(&app, Admission::Fresh, None, command).await {
        // Revoked meanwhile by another request.
        Err(error) if error.code == "api_key_revoked" => Ok(StatusCode::NO_CONTENT),
        Err(error) => Err(error),
        Ok(_) => Ok(StatusCode::NO_CONTENT),
    }
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old key keeps working (hours, default 24; 0 ends it now).
    grace_period_hours: Option<u64>,
}

/// A new key with the old one's name, owner, scopes and lifetime; the old one works for
/// the grace period more, so that clients can move over.
pub async fn rotate(
    State(app): State<App>,
    Path(id): Path<String>,
    command: Command<Rotate>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    let hours = body.grace_period_hours.unwrap_or(24);
    Validator::default()
        .check(
            hours <= 24 * 90,
            "grace_period_hours",
            "must be at most 2160",
        )
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh && !app.views.read().api_keys.contains_key(&id) {
        return Err(ApiError::not_found("API key", &id));
    }
    let new_key_id = new_id("key", &idempotency);
    let secret = app.auth.new_key(&idempotency);
    let command = DomainCommand::RotateApiKey {
        key_id: id.into(),
        new_key_id: new_key_id.clone().into(),
        new_key_hash: hex::encode(auth::digest(&secret)).into(),
        grace_ms: hours * 60 * 60 * 1000,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    Ok((
        StatusCode::CREATED,
        Json(issued(&app, &new_key_id, &secret)?),
    ))
}

/// A key as listed: never its secret nor the secret's digest.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ApiKey")]
pub struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    /// The user the key acts as; `null` for a service's key.
    owner_id: Option<&'a str>,
    scopes: Vec<&'a str>,
    created_at: Rfc3339,
    expires_at: Rfc3339,
    revoked_at: Option<Rfc3339>,
    status: KeyStatus,
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ApiKeyStatus")]
enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

impl<'a> KeyView<'a> {
    fn of(row: &'a ApiKeyRow) -> KeyView<'a> {
        KeyView {
            id: &row.key_id,
            name: &row.name,
            owner_id: row.owner.as_deref(),
            scopes: row.scopes.iter().map(|scope| &**scope).collect(),
            created_at: Rfc3339(row.created_at),
            expires_at: Rfc3339(row.expires_at),
            revoked_at: row.revoked_at.map(Rfc3339),
            status: if row.revoked_at.is_some() {
                KeyStatus::Revoked
            } else if row.is_live(auth::now_ms()) {
                KeyStatus::Active
            } else {
                KeyStatus::Expired
            },
        }
    }
}

/// A key just issued: the one answer that holds its secret.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "IssuedApiKey")]
pub struct IssuedKey<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    /// The secret: send it as `X-API-Key` or `Authorization: Bearer`. Shown only here.
    key: &'a str,
}

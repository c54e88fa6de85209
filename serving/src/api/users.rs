//! Users. Passwords are hashed with Argon2id before they reach the log; neither the
//! password nor its hash is ever answered.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{Command as DomainCommand, Str};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path, QueryPairs};
use super::validate::{self, Validator};
use super::{admit, json, new_id, read_page, run_fresh, Admission, App};

/// Hashes on the bounded pool; when it is full the client is asked to retry.
async fn hash_password(app: &App, password: String) -> ApiResult<String> {
    app.password_hashing
        .run(move || {
            // 16 bytes from the OS generator (uuid v4 draws them from getrandom).
            let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
        })
        .await
        .map_err(|_| {
            ApiError::unavailable("too many passwords are being hashed; try again shortly")
        })?
        .map_err(ApiError::internal)
}

fn password_ok(password: &str) -> bool {
    (8..=256).contains(&password.chars().count())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    password: String,
    name: String,
}

pub async fn create(
    State(app): State<App>,
    command: Command<CreateUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Command { body, idempotency } = command;
    Validator::default()
        .check(
            validate::email(&body.email),
            "email",
            "must be an email address",
        )
        .check(
            password_ok(&body.password),
            "password",
            "must be 8 to 256 characters",
        )
        .text(&body.name, "name", 200)
        .finish()?;
    let admission = admit(&app, &idempotency)?;
    let email = body.email.trim().to_string();
    if admission == Admission::Fresh && app.views.read().user_by_email(&email).is_some() {
        return Err(ApiError::conflict(
            "email_taken",
            "a user with this email already exists",
        ));
    }
    let user_id = new_id("usr", &idempotency);
    if admission == Admission::Fresh {
        let password_hash = hash_password(&app, body.password).await?;
        let command = DomainCommand::CreateUser {
            user_id: user_id.clone().into(),
            email: email.into(),
            name: body.name.trim().into(),
            password_hash: password_hash.into(),
        };
        run_fresh(&app, admission, idempotency, command).await?;
    }
    let snapshot = app.views.read();
    let row = snapshot
        .users
        .get(&user_id)
        .ok_or_else(|| ApiError::not_found("user", &user_id))?;
    Ok((StatusCode::CREATED, Json(json::user(row))))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .users
        .get(&id)
        .ok_or_else(|| ApiError::not_found("user", &id))?;
    Ok(Json(json::user(row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
}

pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    command: Command<UpdateUser>,
) -> ApiResult<Json<Value>> {
    let Command { body, idempotency } = command;
    let mut validator = Validator::default();
    validator
        .check(
            body.email.as_deref().is_none_or(validate::email),
            "email",
            "must be an email address",
        )
        .check(
            body.password.as_deref().is_none_or(password_ok),
            "password",
            "must be 8 to 256 characters",
        );
    if let Some(name) = &body.name {
        validator.text(name, "name", 200);
    }
    validator.finish()?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh {
        {
            let snapshot = app.views.read();
            if !snapshot.users.contains_key(&id) {
                return Err(ApiError::not_found("user", &id));
            }
            if let Some(other) = body
                .email
                .as_deref()
                .and_then(|email| snapshot.user_by_email(email))
            {
                if *other.user_id != *id {
                    return Err(ApiError::conflict(
                        "email_taken",
                        "a user with this email already exists",
                    ));
                }
            }
        }
        let password_hash = match body.password {
            Some(password) => Some(hash_password(&app, password).await?),
            None => None,
        };
        let command = DomainCommand::UpdateUser {
            user_id: id.clone().into(),
            email: body.email.map(|e| e.trim().into()),
            name: body.name.map(|n| n.trim().into()),
            password_hash: password_hash.map(Str::from),
        };
        run_fresh(&app, admission, idempotency, command).await?;
    }
    get(State(app), Path(id)).await
}

pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if !app.views.read().users.contains_key(&id) {
        return Err(ApiError::not_found("user", &id));
    }
    run_fresh(
        &app,
        Admission::Fresh,
        None,
        DomainCommand::DeleteUser { user_id: id.into() },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users whose email or name contains `q` (case-insensitive), ordered by id.
pub async fn search(State(app): State<App>, query: QueryPairs) -> ApiResult<json::Rendered> {
    let limit = query.limit()?;
    let needle = query.get("q").unwrap_or("").to_lowercase();
    let after = query.get("cursor").unwrap_or("").to_string();
    read_page(&app, move |snapshot| {
        let found: Vec<_> = snapshot
            .users
            .after(&after)
            .filter(|u| {
                needle.is_empty()
                    || u.email.to_lowercase().contains(&needle)
                    || u.name.to_lowercase().contains(&needle)
            })
            .take(limit + 1)
            .collect();
        let next = (found.len() > limit).then(|| found[limit - 1].user_id.to_string());
        Ok(json::Page {
            items: found
                .into_iter()
                .take(limit)
                .map(json::UserView::of)
                .collect(),
            next_cursor: next,
        }
        .render())
    })
    .await
}

//! Users. Passwords are hashed with Argon2id before they reach the log; neither the
//! password nor its hash is ever answered.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
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
use crate::auth::{tokens, unauthenticated, Caller};

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

/// Checks `password` against `hash` on the bounded pool (a check costs what a hash does).
async fn verify_password(app: &App, password: String, hash: String) -> ApiResult<bool> {
    app.password_hashing
        .run(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|_| {
            ApiError::unavailable("too many passwords are being checked; try again shortly")
        })
}

/// An Argon2id hash no password matches, checked for unknown addresses so that an
/// unknown address takes as long to refuse as a wrong password.
const NO_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bm8tdXNlci1zYWx0LTE2$3H4nQk5g2kLqY7x0mJpV4b7fD2wq8sE1rT6uY9iO0aA";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    email: String,
    password: String,
    /// For accounts with two-factor authentication (not offered yet: ignored).
    #[allow(dead_code)]
    mfa_code: Option<String>,
}

/// Signs a user in: an access token for `Authorization: Bearer`.
pub async fn authenticate(
    State(app): State<App>,
    command: Command<Authenticate>,
) -> ApiResult<Json<Value>> {
    let body = command.body;
    Validator::default()
        .check(!body.email.trim().is_empty(), "email", "is required")
        .check(
            (1..=256).contains(&body.password.chars().count()),
            "password",
            "must be 1 to 256 characters",
        )
        .finish()?;
    let user = app
        .views
        .read()
        .user_by_email(body.email.trim())
        .map(|user| (user.user_id.clone(), user.password_hash.to_string()));
    let hash = user
        .as_ref()
        .map_or_else(|| NO_USER_HASH.to_string(), |(_, hash)| hash.clone());
    let matches = verify_password(&app, body.password, hash).await?;
    let Some((user_id, _)) = user.filter(|_| matches) else {
        return Err(unauthenticated(
            "invalid_credentials",
            "the email address or the password is wrong",
        ));
    };
    let (token, claims) = app.auth.tokens.issue(&user_id, &[], tokens::unix_seconds());
    Ok(Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "user_id": user_id,
    })))
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

pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_owner_or(&id, "users:read")?;
    read(&app, &id)
}

fn read(app: &App, id: &str) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .users
        .get(id)
        .ok_or_else(|| ApiError::not_found("user", id))?;
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
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<UpdateUser>,
) -> ApiResult<Json<Value>> {
    caller.require_owner_or(&id, "users:write")?;
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
    read(&app, &id)
}

pub async fn delete(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner_or(&id, "users:write")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in hash is a real Argon2id hash with the default cost, so checking it
    /// costs what checking a user's does, and matches no password.
    #[test]
    fn the_unknown_user_hash_costs_what_a_real_one_does() {
        let parsed = PasswordHash::new(NO_USER_HASH).expect("parses");
        let real = Argon2::default()
            .hash_password(
                b"any password",
                &SaltString::encode_b64(b"sixteen bytes!!!").expect("salt"),
            )
            .expect("hashes")
            .to_string();
        let real = PasswordHash::new(&real).expect("parses");
        assert_eq!(parsed.algorithm, real.algorithm);
        assert_eq!(parsed.params, real.params);
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_err());
    }
}

//! Users. Passwords are hashed with Argon2id before they reach the log; neither the
//! password nor its hash is ever answered.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use dataflows::model::{Command as DomainCommand, ProfileChange, Str};
use dataflows::users::sign_ins::{
    ACCOUNT_LOCKED, INVALID_CREDENTIALS, INVALID_MFA_CODE, MAX_FAILURES, MFA_REQUIRED,
};
use dataflows::views::{SessionRow, SignInRow, UserRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Client, Command, Path, QueryPairs};
use super::validate::{self, Validator};
use super::{admit, json, new_id, read_page, run, run_fresh, Admission, App};
use crate::auth::{mfa, tokens, unauthenticated, Caller};

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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    email: String,
    password: String,
    /// For accounts with two-factor authentication: the authenticator app's current
    /// code, or one of the recovery codes.
    mfa_code: Option<String>,
}

/// Signs a user in: an access token for `Authorization: Bearer`. Every attempt goes
/// through the log, where the sign-in aggregate counts failures and locks the account
/// after `MAX_FAILURES` in its window (`dataflows::users::sign_ins`); the password is
/// checked here, on the bounded hashing pool, before the attempt is logged.
pub async fn authenticate(
    State(app): State<App>,
    client: Client,
    command: Command<Authenticate>,
) -> ApiResult<Json<SignedIn>> {
    let body = command.body;
    let user_id = sign_in(&app, &client, &body.email, body.password, body.mfa_code).await?;
    let (token, claims) = app.auth.tokens.issue(&user_id, &[], tokens::unix_seconds());
    Ok(Json(SignedIn {
        access_token: token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        user_id: user_id.to_string(),
    }))
}

/// A signed-in user's access token.
#[derive(Serialize, JsonSchema)]
pub struct SignedIn {
    /// A signed JWT; send it as `Authorization: Bearer`.
    access_token: String,
    token_type: &'static str,
    /// Seconds the token is good for.
    expires_in: u64,
    user_id: String,
}

/// Two-factor enrollment, started or confirmed.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "MfaEnrollment")]
pub enum MfaAnswer {
    /// Started: the secret for an authenticator app, whose first code confirms it.
    Pending {
        /// `pending`.
        status: &'static str,
        /// Base32, as authenticator apps take it.
        secret: String,
        otpauth_uri: String,
        algorithm: &'static str,
        digits: usize,
        period: u64,
    },
    /// Confirmed: on from now, with recovery codes shown only here.
    On {
        /// `on`.
        status: &'static str,
        recovery_codes: Vec<String>,
    },
}

/// Checks a user's password (and one-time code) and logs the attempt, which the
/// sign-in aggregate lets through or refuses: the user's id, or why not (401
/// `invalid_credentials`, `mfa_required`, `invalid_mfa_code`; 423 `account_locked`).
/// What `POST /users/authenticate`, the password grant and the sign-in page share.
pub(crate) async fn sign_in(
    app: &App,
    client: &Client,
    email: &str,
    password: String,
    mfa_code: Option<String>,
) -> ApiResult<Str> {
    Validator::default()
        .check(!email.trim().is_empty(), "email", "is required")
        .text(email, "email", 320)
        .check(
            (1..=256).contains(&password.chars().count()),
            "password",
            "must be 1 to 256 characters",
        )
        .finish()?;
    let email = email.trim();
    let mut user = app.views.read().user_by_email(email).cloned();
    // Signed up a moment ago on another server sharing the log?
    if user.is_none() && app.catch_up_with_log().await.unwrap_or(false) {
        user = app.views.read().user_by_email(email).cloned();
    }
    let hash = user.as_ref().map_or_else(
        || NO_USER_HASH.to_string(),
        |user| user.password_hash.to_string(),
    );
    let matched = verify_password(app, password, hash).await? && user.is_some();
    // The code is looked at only with the right password: it is no oracle for guessing.
    let second_factor = match &user {
        Some(user) if matched && user.mfa_enabled => {
            app.auth
                .mfa
                .second_factor(user, mfa_code.as_deref(), tokens::unix_seconds())
        }
        _ => None,
    };
    let attempt_id = new_id("sgn", &None);
    run(
        app,
        None,
        DomainCommand::Authenticate {
            attempt_id: attempt_id.clone().into(),
            user_id: user.map(|user| user.user_id.clone()),
            email: email.into(),
            password_matched: matched,
            client: client.to_string().into(),
            second_factor,
        },
    )
    .await?;
    let attempt = app
        .views
        .read()
        .sign_ins
        .get(&attempt_id)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("sign-in {attempt_id} left no row")))?;
    match (attempt.user_id, attempt.succeeded, attempt.locked_until) {
        (_, false, None) if attempt.reason.as_deref() == Some(MFA_REQUIRED) => {
            Err(unauthenticated(
                MFA_REQUIRED,
                "this account needs a one-time code: send `mfa_code`, the authenticator app's current code or a recovery code",
            ))
        }
        (_, false, None) if attempt.reason.as_deref() == Some(INVALID_MFA_CODE) => {
            Err(unauthenticated(
                INVALID_MFA_CODE,
                "the one-time code is wrong, expired or already used",
            ))
        }
        (Some(user_id), true, _) => Ok(user_id),
        (_, _, Some(locked_until)) => {
            let wait_s = locked_until.saturating_sub(attempt.at).div_ceil(1000);
            Err(ApiError::new(
                StatusCode::LOCKED,
                ACCOUNT_LOCKED,
                format!(
                    "the account is locked after {MAX_FAILURES} failed sign-ins; try again in {} minutes or ask an administrator to unlock it",
                    wait_s.div_ceil(60)
                ),
            )
            .retry_after(wait_s))
        }
        _ => Err(unauthenticated(
            INVALID_CREDENTIALS,
            "the email address or the password is wrong",
        )),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableMfa {
    /// The authenticator app's current code, which confirms the enrollment.
    code: Option<String>,
}

/// Turns two-factor authentication on, in two steps: without a `code`, starts an
/// enrollment and answers its TOTP secret and `otpauth://` URI (for the authenticator
/// app); with the app's first code, confirms it and answers the recovery codes, shown
/// this once. From then on every sign-in needs a code.
pub async fn enable_mfa(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<EnableMfa>,
) -> ApiResult<Json<MfaAnswer>> {
    caller.require_owner_or(&id, "users:write")?;
    let Command { body, idempotency } = command;
    let user = app
        .views
        .read()
        .users
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("user", &id))?;
    let Some(code) = body.code else {
        let admission = admit(&app, &idempotency)?;
        if admission == Admission::Fresh && user.mfa_enabled {
            return Err(ApiError::conflict(
                "mfa_enabled",
                "two-factor authentication is already on; turn it off first",
            ));
        }
        let enrollment_id = new_id("mfa", &idempotency);
        run_fresh(
            &app,
            admission,
            idempotency,
            DomainCommand::StartMfa {
                user_id: id.clone().into(),
                enrollment_id: enrollment_id.clone().into(),
            },
        )
        .await?;
        let totp = app.auth.mfa.totp(&id, &enrollment_id, &user.email);
        return Ok(Json(MfaAnswer::Pending {
            status: "pending",
            secret: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
            algorithm: "SHA1",
            digits: mfa::DIGITS,
            period: mfa::PERIOD_S,
        }));
    };
    let Some(enrollment_id) = user.mfa_enrollment.clone().filter(|_| !user.mfa_enabled) else {
        return Err(ApiError::conflict(
            "mfa_not_pending",
            "no two-factor enrollment waits for a code: start one without `code` first",
        ));
    };
    let totp = app.auth.mfa.totp(&id, &enrollment_id, &user.email);
    let step = mfa::Mfa::step_of(&totp, &code, tokens::unix_seconds()).ok_or_else(|| {
        ApiError::invalid_field("code", "is not the authenticator app's current code")
    })?;
    let recovery_codes = mfa::recovery_codes();
    run(
        &app,
        None,
        DomainCommand::ConfirmMfa {
            user_id: id.into(),
            enrollment_id,
            step,
            recovery_code_hashes: mfa::digests(&recovery_codes),
        },
    )
    .await?;
    Ok(Json(MfaAnswer::On {
        status: "on",
        recovery_codes,
    }))
}

/// Turns two-factor authentication off.
pub async fn disable_mfa(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner_or(&id, "users:write")?;
    require_user(&app, &id)?;
    run(&app, None, DomainCommand::DisableMfa { user_id: id.into() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts an account's lock at once (administrators, or `users:write`).
pub async fn unlock(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    require_user(&app, &id)?;
    run(
        &app,
        None,
        DomainCommand::UnlockUser {
            user_id: id.clone().into(),
        },
    )
    .await?;
    read(&app, &id)
}

/// An account's sign-in attempts, newest first (the authentication log): the user's
/// own, or anyone's for an administrator.
pub async fn sign_ins(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<json::Rendered> {
    caller.require_owner_or(&id, "users:read")?;
    let limit = query.limit()?;
    let before = match query.get("cursor") {
        None => None,
        Some(cursor) => Some(
            cursor
                .split_once('.')
                .and_then(|(at, attempt)| Some((at.parse().ok()?, Str::from(attempt))))
                .ok_or_else(|| {
                    ApiError::invalid_field("cursor", "is not a cursor this API gave")
                })?,
        ),
    };
    read_page(&app, move |snapshot| {
        if !snapshot.users.contains_key(&id) {
            return Err(ApiError::not_found("user", &id));
        }
        let found: Vec<_> = snapshot.sign_ins_of(&id, before).take(limit + 1).collect();
        let cursor = |attempt: &&SignInRow| format!("{}.{}", attempt.at, attempt.attempt_id);
        Ok(json::Page::of(found, limit, cursor, json::SignInView::of).render())
    })
    .await
}

/// `GET /users/{id}/sessions`: the user's OAuth sessions (signed-in apps and devices),
/// oldest first, without secrets.
pub async fn sessions(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<json::Rendered> {
    caller.require_owner_or(&id, "users:read")?;
    let limit = query.limit()?;
    let after = query.get("cursor").unwrap_or("").to_string();
    read_page(&app, move |snapshot| {
        if !snapshot.users.contains_key(&id) {
            return Err(ApiError::not_found("user", &id));
        }
        let found: Vec<_> = snapshot.sessions_of(&id, &after).take(limit + 1).collect();
        let cursor = |session: &&SessionRow| session.session_id.to_string();
        Ok(json::Page::of(found, limit, cursor, json::SessionView::of).render())
    })
    .await
}

/// `DELETE /users/{id}/sessions/{session_id}`: signs the user out of one app or device:
/// its refresh token and access tokens are refused from the next request on.
pub async fn end_session(
    State(app): State<App>,
    Caller(caller): Caller,
    Path((id, session_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_owner_or(&id, "users:write")?;
    let belongs = app
        .views
        .read()
        .sessions
        .get(&session_id)
        .is_some_and(|session| *session.user_id == *id);
    if !belongs {
        return Err(ApiError::not_found("session", &session_id));
    }
    let command = DomainCommand::RevokeSession {
        session_id: session_id.into(),
        reason: "revoked".into(),
        refresh_hash: None,
    };
    match run(&app, None, command).await {
        // Ending an ended session is done already.
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(error) if error.code == "session_revoked" => Ok(StatusCode::NO_CONTENT),
        Err(error) => Err(error),
    }
}

/// 404 unless the user exists: what a command about an existing user checks first.
fn require_user(app: &App, id: &str) -> ApiResult<()> {
    match app.views.read().users.contains_key(id) {
        true => Ok(()),
        false => Err(ApiError::not_found("user", id)),
    }
}

fn password_ok(password: &str) -> bool {
    (8..=256).contains(&password.chars().count())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schemars(email, length(max = 320))]
    email: String,
    #[schemars(length(min = 8, max = 256))]
    password: String,
    #[schemars(length(min = 1, max = 200), pattern(r"\S"))]
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
    Ok((StatusCode::CREATED, Json(json::user(&snapshot, row))))
}

pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_owner_or(&id, "users:read")?;
    read(&app, &id)
}

/// `GET /users/{id}/loyalty`: the user's points and tier; the user's own, or anyone's
/// with `users:read`.
pub async fn loyalty(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_owner_or(&id, "users:read")?;
    let snapshot = app.views.read();
    if !snapshot.users.contains_key(&id) {
        return Err(ApiError::not_found("user", &id));
    }
    let row = snapshot.loyalty.get(&id);
    Ok(Json(json::to_value(json::LoyaltyView::of(&id, row))))
}

fn read(app: &App, id: &str) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .users
        .get(id)
        .ok_or_else(|| ApiError::not_found("user", id))?;
    Ok(Json(json::user(&snapshot, row)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
    /// How the user is addressed; `""` for their name.
    display_name: Option<String>,
    /// A BCP 47 language tag (`en-GB`); `""` for the shop's default.
    locale: Option<String>,
    preferences: Option<Preferences>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    marketing_emails: Option<bool>,
    order_updates: Option<bool>,
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
    if let Some(display_name) = body.display_name.as_deref().filter(|d| !d.is_empty()) {
        validator.text(display_name, "display_name", 100);
    }
    validator.check(
        body.locale
            .as_deref()
            .is_none_or(|locale| locale.is_empty() || validate::language_tag(locale)),
        "locale",
        "must be a language tag such as en or en-GB",
    );
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
            profile: ProfileChange {
                display_name: body.display_name.map(|d| d.trim().into()),
                locale: body.locale.map(|l| l.trim().into()),
                marketing_emails: body.preferences.as_ref().and_then(|p| p.marketing_emails),
                order_updates: body.preferences.as_ref().and_then(|p| p.order_updates),
            },
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
    require_user(&app, &id)?;
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
        let cursor = |row: &&UserRow| row.user_id.to_string();
        let view = |row| json::UserView::of(snapshot, row);
        Ok(json::Page::of(found, limit, cursor, view).render())
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

//! `POST /oauth2/token` (RFC 6749 3.2): access tokens for every grant tidemark takes.
//!
//! - `password` (RFC 6749 4.3), for the first-party client `tidemark-cli` only: a user's
//!   email and password (and `mfa_code` for accounts with two-factor sign-in), checked
//!   as `POST /users/authenticate` checks them, lockout included.
//! - `authorization_code` (4.1) with PKCE (RFC 7636, S256): the code the authorization
//!   endpoint granted, once, with its client, redirect URI and verifier.
//! - `refresh_token` (6): the session's live refresh token for a new access token and
//!   the next refresh token; a spent one revokes the whole session.
//! - `client_credentials` (4.4), for service accounts: `client_id` is the API key's id
//!   and `client_secret` the key, by HTTP Basic or in the body; no refresh token.
//!
//! The password and code grants open a session (`sid` in the access tokens) and answer
//! a refresh token. Errors are problem documents that also carry RFC 6749 5.2's
//! `error` and `error_description`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use dataflows::auth::sessions::INVALID_GRANT;
use dataflows::model::Command as DomainCommand;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    invalid_request, no_store, secret_digest, session_of, session_secret, Params, CODE_PREFIX,
    REFRESH_PREFIX,
};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::Client;
use crate::api::users::sign_in;
use crate::api::{new_id, run, App};
use crate::auth::clients::CLI_CLIENT;
use crate::auth::{tokens, Principal};

/// The scopes a user's session may ask for: OpenID Connect's. What a user may do
/// follows from who they are, not from scopes.
pub(super) const USER_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

pub async fn token(
    State(app): State<App>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match Params::parse(&headers, &body, None) {
        Ok(params) => grant(&app, &client, &headers, &params).await,
        Err(error) => Err(error),
    };
    let mut response = match answer {
        Ok(tokens) => Json(tokens).into_response(),
        Err(error) => error.into_response(),
    };
    if response.status() == StatusCode::UNAUTHORIZED {
        // Only client authentication fails with 401 here, and it is HTTP Basic's.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="tidemark""#),
        );
    }
    no_store(response)
}

async fn grant(
    app: &App,
    client: &Client,
    headers: &HeaderMap,
    params: &Params,
) -> ApiResult<Value> {
    match params.require("grant_type")? {
        "password" => password(app, client, params).await,
        "refresh_token" => refresh(app, params).await,
        "authorization_code" => redeem(app, params).await,
        "client_credentials" => client_credentials(app, headers, params),
        other => Err(ApiError::bad_request(
            "unsupported_grant_type",
            format!(
                "grant_type {:?} is not one of authorization_code, refresh_token, client_credentials, password",
                other.chars().take(64).collect::<String>()
            ),
        )
        .oauth("unsupported_grant_type")),
    }
}

/// The password grant: `username` (the email address), `password`, `mfa_code`.
async fn password(app: &App, client: &Client, params: &Params) -> ApiResult<Value> {
    let client_id = public_client(app, params)?;
    if client_id != CLI_CLIENT {
        return Err(ApiError::bad_request(
            "unauthorized_client",
            format!("the password grant is only for the first-party client {CLI_CLIENT}; use the authorization code grant"),
        )
        .oauth("unauthorized_client"));
    }
    let scope = user_scope(params.get("scope"))?;
    let username = params.require("username")?;
    let password = params.require("password")?.to_string();
    let mfa_code = params.get("mfa_code").map(str::to_string);
    let user_id = sign_in(app, client, username, password, mfa_code)
        .await
        .map_err(refused_sign_in)?;
    let session_id = new_id("ses", &None);
    let refresh_token = session_secret(REFRESH_PREFIX, &session_id);
    run(
        app,
        None,
        DomainCommand::OpenSession {
            session_id: session_id.clone().into(),
            user_id: user_id.clone(),
            client_id: client_id.into(),
            scope: scope.clone().into(),
            refresh_hash: secret_digest(&refresh_token).into(),
            ttl_ms: refresh_ttl_ms(app),
        },
    )
    .await?;
    session_answer(app, &session_id, refresh_token, None, "")
}

/// The refresh grant: the session's live `refresh_token`, by the client it was issued to.
async fn refresh(app: &App, params: &Params) -> ApiResult<Value> {
    let client_id = params.require("client_id")?;
    let presented = params.require("refresh_token")?;
    let Some(session_id) = session_of(REFRESH_PREFIX, presented) else {
        return Err(invalid_grant("the refresh token is not valid"));
    };
    let next = session_secret(REFRESH_PREFIX, session_id);
    run(
        app,
        None,
        DomainCommand::RefreshSession {
            session_id: session_id.into(),
            client_id: client_id.into(),
            refresh_hash: secret_digest(presented).into(),
            new_refresh_hash: secret_digest(&next).into(),
            ttl_ms: refresh_ttl_ms(app),
        },
    )
    .await
    .map_err(grant_refused)?;
    session_answer(
        app,
        session_id,
        next,
        params.get("scope"),
        "the refresh token was used before: its session is revoked; sign in again",
    )
}

/// The authorization-code grant: `code`, `redirect_uri`, `client_id`, `code_verifier`.
async fn redeem(app: &App, params: &Params) -> ApiResult<Value> {
    let client_id = public_client(app, params)?;
    let code = params.require("code")?;
    // Compared as the authorization endpoint kept it: parsed and normalised.
    let redirect_uri = url::Url::parse(params.require("redirect_uri")?)
        .map_err(|_| invalid_grant("redirect_uri differs from the one the code was issued for"))?;
    let verifier = params.require("code_verifier")?;
    // RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~].
    let shaped = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !shaped {
        return Err(invalid_request(
            "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' (RFC 7636)",
        ));
    }
    let Some(session_id) = session_of(CODE_PREFIX, code) else {
        return Err(invalid_grant("the authorization code is not valid"));
    };
    let refresh_token = session_secret(REFRESH_PREFIX, session_id);
    run(
        app,
        None,
        DomainCommand::RedeemAuthorizationCode {
            session_id: session_id.into(),
            client_id: client_id.into(),
            code_hash: secret_digest(code).into(),
            redirect_uri: redirect_uri.as_str().into(),
            verifier_digest: s256(verifier).into(),
            refresh_hash: secret_digest(&refresh_token).into(),
            ttl_ms: refresh_ttl_ms(app),
        },
    )
    .await
    .map_err(grant_refused)?;
    session_answer(
        app,
        session_id,
        refresh_token,
        None,
        "the authorization code was used before: the session it opened is revoked",
    )
}

/// The client-credentials grant: a service account's key id and key.
fn client_credentials(app: &App, headers: &HeaderMap, params: &Params) -> ApiResult<Value> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, encoded) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then_some(encoded.trim())
        });
    let (client_id, secret) = match basic {
        Some(encoded) => {
            let decoded = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    invalid_client("the Basic credentials are not base64 of id:secret", true)
                })?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| invalid_client("the Basic credentials are not id:secret", true))?;
            // RFC 6749 2.3.1: each is form-encoded before it is joined.
            let unescape = |text: &str| {
                form_urlencoded::parse(format!("x={text}").as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default()
            };
            (unescape(id), unescape(secret))
        }
        None => (
            params.get("client_id").unwrap_or("").to_string(),
            params.get("client_secret").unwrap_or("").to_string(),
        ),
    };
    if client_id.is_empty() || secret.is_empty() {
        return Err(invalid_client(
            "client credentials need the service account's key id as client_id and its API key as client_secret",
            basic.is_some(),
        ));
    }
    let scopes = match app.auth.service_account(app, &secret) {
        Some(Principal::Key {
            key_id,
            owner: None,
            scopes,
        }) if *key_id == *client_id => scopes,
        _ => {
            return Err(invalid_client(
                "the client is not a live service account with this secret",
                basic.is_some(),
            ))
        }
    };
    let granted: Vec<&str> = match params.get("scope") {
        None => scopes.iter().map(|scope| &**scope).collect(),
        Some(asked) => {
            let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(extra) = asked
                .iter()
                .find(|s| !scopes.iter().any(|had| &**had == **s))
            {
                return Err(invalid_scope(&format!(
                    "the service account does not have the scope {:?}",
                    extra.chars().take(64).collect::<String>()
                )));
            }
            asked
        }
    };
    let (token, claims) = app.auth.tokens.issue_in(
        &client_id,
        &granted,
        None,
        Some(&client_id),
        tokens::unix_seconds(),
    );
    Ok(Tokens {
        access_token: token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
        refresh_token: None,
        id_token: None,
    }
    .into())
}

/// The registered public client a request names in `client_id`.
fn public_client<'a>(app: &App, params: &'a Params) -> ApiResult<&'a str> {
    let client_id = params.require("client_id")?;
    match app.auth.clients.get(client_id) {
        Some(_) => Ok(client_id),
        None => Err(invalid_client("the client is not registered", false)),
    }
}

/// The scopes a user asks for, checked: OpenID Connect's only.
pub(super) fn user_scope(asked: Option<&str>) -> ApiResult<String> {
    let mut scopes: Vec<&str> = asked
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(other) = scopes.iter().find(|s| !USER_SCOPES.contains(s)) {
        return Err(invalid_scope(&format!(
            "a user's session takes only the scopes {}; {:?} is not one",
            USER_SCOPES.join(", "),
            other.chars().take(64).collect::<String>()
        )));
    }
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes.join(" "))
}

/// The answer of a grant that opened or refreshed a session: an access token for the
/// session's user and scope (or the narrower `asked` scope, RFC 6749 6), the refresh
/// token, and with the `openid` scope an ID token. Refused when the grant found a
/// spent credential and revoked the session (`reused` says so), or the user is gone.
fn session_answer(
    app: &App,
    session_id: &str,
    refresh_token: String,
    asked: Option<&str>,
    reused: &str,
) -> ApiResult<Value> {
    let snapshot = app.views.read();
    let session = snapshot
        .sessions
        .get(session_id)
        .ok_or_else(|| ApiError::internal(format!("session {session_id} left no row")))?;
    if session.is_revoked() {
        return Err(invalid_grant(reused));
    }
    let user = snapshot
        .users
        .get(&session.user_id)
        .ok_or_else(|| invalid_grant("the user of this session no longer exists"))?;
    let had: Vec<&str> = session.scope.split(' ').filter(|s| !s.is_empty()).collect();
    let scopes: Vec<&str> = match asked {
        None => had,
        Some(asked) => {
            let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
            if asked.iter().any(|scope| !had.contains(scope)) {
                return Err(invalid_scope(
                    "a refresh may not ask for scopes the session does not have",
                ));
            }
            asked
        }
    };
    let now = tokens::unix_seconds();
    let (token, claims) = app.auth.tokens.issue_in(
        &session.user_id,
        &scopes,
        Some(session_id),
        Some(&session.client_id),
        now,
    );
    let mut answer = Tokens {
        access_token: token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: scopes.join(" "),
        refresh_token: Some(refresh_token),
        id_token: None,
    };
    if scopes.contains(&"openid") {
        let mut id = json!({
            "iss": app.auth.tokens.issuer(),
            "sub": session.user_id,
            "aud": session.client_id,
            "iat": now,
            "exp": claims.exp,
            "auth_time": session.created_at / 1000,
            "sid": session_id,
        });
        if let Some(nonce) = &session.nonce {
            id["nonce"] = json!(nonce);
        }
        if scopes.contains(&"email") {
            id["email"] = json!(user.email);
            id["email_verified"] = json!(false);
        }
        if scopes.contains(&"profile") {
            id["name"] = json!(user.name);
            if !user.profile.locale.is_empty() {
                id["locale"] = json!(user.profile.locale);
            }
        }
        answer.id_token = Some(app.auth.tokens.sign(&id));
    }
    Ok(answer.into())
}

/// A token endpoint's answer (RFC 6749 section 5.1).
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Tokens")]
pub struct Tokens {
    /// A signed JWT; send it as `Authorization: Bearer`.
    access_token: String,
    token_type: &'static str,
    /// Seconds the access token is good for.
    expires_in: u64,
    scope: String,
    /// For the `refresh_token` grant; rotated at each use.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// An OpenID Connect ID token, when `openid` was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl From<Tokens> for Value {
    fn from(tokens: Tokens) -> Value {
        crate::api::json::to_value(tokens)
    }
}

fn refresh_ttl_ms(app: &App) -> u64 {
    app.config.auth.refresh_token_ttl_s * 1000
}

/// BASE64URL(SHA-256(verifier)): PKCE's S256 (RFC 7636 4.2).
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn invalid_grant(detail: &str) -> ApiError {
    ApiError::bad_request(INVALID_GRANT, detail).oauth(INVALID_GRANT)
}

fn invalid_scope(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_scope", detail).oauth("invalid_scope")
}

/// RFC 6749 5.2: 401 with a `Basic` challenge when the client authenticated that way.
fn invalid_client(detail: &str, basic: bool) -> ApiError {
    let status = match basic {
        true => StatusCode::UNAUTHORIZED,
        false => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, "invalid_client", detail).oauth("invalid_client")
}

/// A refusal of the log's session aggregate, as the grant's error.
fn grant_refused(error: ApiError) -> ApiError {
    match error.code.as_str() {
        INVALID_GRANT => invalid_grant(&error.detail),
        _ => error,
    }
}

/// A failed sign-in in a grant: RFC 6749's `invalid_grant` (400), keeping the sign-in's
/// own code (`invalid_credentials`, `account_locked`, `mfa_required`, ...) and
/// `Retry-After`. A malformed address or password is `invalid_request`.
fn refused_sign_in(mut error: ApiError) -> ApiError {
    match error.status {
        StatusCode::UNAUTHORIZED | StatusCode::LOCKED => {
            error.status = StatusCode::BAD_REQUEST;
            error.oauth(INVALID_GRANT)
        }
        StatusCode::UNPROCESSABLE_ENTITY => {
            error.status = StatusCode::BAD_REQUEST;
            error.code = "invalid_request".into();
            error.oauth("invalid_request")
        }
        _ => error,
    }
}

//! OAuth 2.0 and OpenID Connect endpoints under `/oauth2` and `/.well-known`.
//!
//! - `POST /oauth2/token` (`token`): the password grant (for `tidemark-cli` only), the
//!   authorization-code grant with PKCE, refresh with rotation and reuse detection, and
//!   client credentials for service accounts.
//! - `GET|POST /oauth2/authorize` (`authorize`): the sign-in page that grants a code.
//! - `POST /oauth2/revoke` (RFC 7009): an access token, or a refresh token and its
//!   whole session, refused from the next request on, by every server.
//! - `GET|POST /oauth2/userinfo` (OpenID Connect Core 5.3), and the discovery document.
//!
//! Sessions, codes and refresh tokens are decided in the log
//! (`dataflows::auth::sessions`); this layer makes the secrets and keeps only their
//! digests there. Refresh tokens and codes name their session (`tmr_<session>.<secret>`,
//! `tmc_<session>.<secret>`), so that the log finds the session's worker by key.

mod authorize;
mod token;

pub(super) use token::Tokens;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dataflows::auth::sessions::SIGNED_OUT;
use dataflows::model::Command as DomainCommand;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

pub use authorize::authorize;
pub use token::token;

use super::error::{ApiError, ApiResult};
use super::{run, App};
use crate::auth::{Caller, Principal};

/// The longest parameter value taken; access tokens are a few hundred bytes.
const MAX_VALUE_BYTES: usize = 4096;
/// The prefixes of refresh tokens and authorization codes.
const REFRESH_PREFIX: &str = "tmr_";
const CODE_PREFIX: &str = "tmc_";

/// The parameters of an OAuth request: form-encoded (as RFC 6749 has them) or a JSON
/// object of strings, each at most once (RFC 6749 3.1, 3.2); an empty value counts as
/// absent.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// The body's parameters, after those of `query` (the authorization endpoint's).
    fn parse(headers: &HeaderMap, body: &[u8], query: Option<&str>) -> ApiResult<Params> {
        let mut params = BTreeMap::new();
        let mut add = |name: String, value: String| -> ApiResult<()> {
            if value.len() > MAX_VALUE_BYTES || name.len() > 64 {
                return Err(invalid_request(&format!(
                    "parameter {:?} is longer than {MAX_VALUE_BYTES} bytes",
                    name.chars().take(64).collect::<String>()
                )));
            }
            match params.insert(name.clone(), value) {
                None => Ok(()),
                Some(_) => Err(invalid_request(&format!(
                    "parameter {name:?} is sent twice"
                ))),
            }
        };
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            add(name.into_owned(), value.into_owned())?;
        }
        if !body.is_empty() {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            if content_type.starts_with("application/x-www-form-urlencoded") {
                for (name, value) in form_urlencoded::parse(body) {
                    add(name.into_owned(), value.into_owned())?;
                }
            } else if content_type.starts_with("application/json") {
                let fields: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(body)
                        .map_err(|_| invalid_request("the body is not a JSON object"))?;
                for (name, value) in fields {
                    let serde_json::Value::String(value) = value else {
                        return Err(invalid_request(&format!("{name} must be a string")));
                    };
                    add(name, value)?;
                }
            } else {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the parameters as application/x-www-form-urlencoded (RFC 6749), or as JSON",
                )
                .oauth("invalid_request"));
            }
        }
        params.retain(|_, value| !value.is_empty());
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn require(&self, name: &str) -> ApiResult<&str> {
        self.get(name)
            .ok_or_else(|| invalid_request(&format!("the parameter `{name}` is missing")))
    }
}

/// RFC 6749's `invalid_request`, as a problem document.
fn invalid_request(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_request", detail).oauth("invalid_request")
}

/// A new refresh token or code for `session_id`: the prefix, the session, and 256
/// random bits.
fn session_secret(prefix: &str, session_id: &str) -> String {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the OS random source works");
    format!("{prefix}{session_id}.{}", hex::encode(secret))
}

/// The session a refresh token or code names, if it has the shape of one.
fn session_of<'a>(prefix: &str, secret: &'a str) -> Option<&'a str> {
    let (session_id, random) = secret.strip_prefix(prefix)?.split_once('.')?;
    let shaped = (1..=64).contains(&session_id.len())
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && random.len() == 64
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    shaped.then_some(session_id)
}

/// What the log keeps of a refresh token or code.
fn secret_digest(secret: &str) -> String {
    hex::encode(crate::auth::digest(secret))
}

/// `Cache-Control: no-store` (and `Pragma: no-cache`), as RFC 6749 5.1 asks of every
/// answer holding a token.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth2/revoke` with `token=...` (form-encoded, as RFC 7009 has it, or JSON):
/// an access token is refused from the next request on; a refresh token ends its whole
/// session, with every access token issued in it. 200 whether or not the token was
/// valid, as RFC 7009 2.2 asks: an expired, foreign or already revoked token has
/// nothing left to revoke, and the answer tells a prober nothing.
/// `token_type_hint` is only a hint and is not needed.
pub async fn revoke(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let params = Params::parse(&headers, &body, None)?;
    let token = params.require("token")?;
    let command = match session_of(REFRESH_PREFIX, token) {
        Some(session_id) => DomainCommand::RevokeSession {
            session_id: session_id.into(),
            reason: SIGNED_OUT.into(),
            refresh_hash: Some(secret_digest(token).into()),
        },
        None => {
            let Ok(claims) = app.auth.verify_token(&app, token) else {
                return Ok(StatusCode::OK);
            };
            DomainCommand::RevokeAccessToken {
                token_id: claims.jti.into(),
                user_id: claims.sub.into(),
                expires_at: claims.exp.saturating_mul(1000),
            }
        }
    };
    match run(&app, None, command).await {
        Ok(_) => Ok(StatusCode::OK),
        // Nothing (more) to revoke.
        Err(error)
            if matches!(
                error.code.as_str(),
                "token_revoked" | "session_revoked" | "invalid_grant" | "not_found"
            ) =>
        {
            Ok(StatusCode::OK)
        }
        Err(error) => Err(error),
    }
}

/// `GET|POST /oauth2/userinfo`: `sub`, `email`, `name`, `preferred_username` (the
/// display name, or the name), `locale` and `updated_at` (Unix seconds) of the user the
/// caller acts for: a user's access token, or a key a user owns. A service's key acts
/// for no user: 403. Never cached (`Cache-Control: no-store`).
pub async fn userinfo(State(app): State<App>, Caller(caller): Caller) -> ApiResult<Response> {
    let user_id = match &caller {
        Principal::User { user_id } => user_id.clone(),
        Principal::Key {
            owner: Some(owner), ..
        } => owner.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "userinfo describes a user: call it with a user's access token or key",
            ))
        }
    };
    let snapshot = app.views.read();
    // A deleted user's token is still signed, but describes no one.
    let user = snapshot.users.get(&user_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the user this token was issued to no longer exists",
        )
    })?;
    let preferred: &str = match user.profile.display_name.is_empty() {
        true => &user.name,
        false => &user.profile.display_name,
    };
    let claims = UserInfo {
        sub: &user.user_id,
        email: &user.email,
        email_verified: false,
        name: &user.name,
        preferred_username: preferred,
        updated_at: user.updated_at / 1000,
        locale: (!user.profile.locale.is_empty()).then_some(&*user.profile.locale),
    };
    let mut response = Json(claims).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The standard claims about a user (OpenID Connect Core 5.1).
#[derive(Serialize, JsonSchema)]
pub struct UserInfo<'a> {
    sub: &'a str,
    email: &'a str,
    /// tidemark does not verify addresses.
    email_verified: bool,
    name: &'a str,
    /// The display name, else the name.
    preferred_username: &'a str,
    /// Unix seconds.
    updated_at: u64,
    /// Only when the user chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
}

/// `GET /.well-known/openid-configuration`: where the endpoints are and what they take
/// (OpenID Connect Discovery 1.0, RFC 8414). The URLs are this server's as the request
/// reached it.
pub async fn discovery(State(app): State<App>, headers: HeaderMap) -> Response {
    let scheme = match app.config.tls_cert.is_some() {
        true => "https",
        false => "http",
    };
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host.len() <= 255
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map_or_else(|| app.config.listen.to_string(), str::to_string);
    let base = format!("{scheme}://{host}");
    let mut scopes: Vec<&str> = token::USER_SCOPES.to_vec();
    scopes.extend(crate::auth::principal::SCOPES.iter().map(|(name, _)| *name));
    let document = json!({
        "issuer": app.auth.tokens.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "password"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "scopes_supported": scopes,
        "claims_supported": ["sub", "email", "email_verified", "name", "preferred_username", "locale", "updated_at"],
        "authorization_response_iss_parameter_supported": true,
    });
    Json(document).into_response()
}

//! OAuth 2.0 endpoints under `/oauth2`. Token revocation (RFC 7009): whoever holds an
//! access token may revoke it (signing out), and it is refused from the next request
//! on, by every server, through the log (`dataflows::auth::tokens`). UserInfo (OpenID
//! Connect Core 5.3): the claims about the user a token or a user's key acts for.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dataflows::model::Command as DomainCommand;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::{run, App};
use crate::auth::{Caller, Principal};

/// The longest token taken; access tokens are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 4096;

/// `POST /oauth2/revoke` with `token=...` (form-encoded, as RFC 7009 has it, or JSON).
/// 200 whether or not the token was valid, as RFC 7009 2.2 asks: an expired, foreign or
/// already revoked token has nothing left to revoke, and the answer tells a prober
/// nothing. `token_type_hint` is only a hint and is not needed.
pub async fn revoke(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let token = token_of(&headers, &body)?;
    let Ok(claims) = app.auth.tokens.verify(&token) else {
        return Ok(StatusCode::OK);
    };
    let command = DomainCommand::RevokeAccessToken {
        token_id: claims.jti.into(),
        user_id: claims.sub.into(),
        expires_at: claims.exp.saturating_mul(1000),
    };
    match run(&app, None, command).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(error) if error.code == "token_revoked" => Ok(StatusCode::OK),
        Err(error) => Err(error),
    }
}

/// The one `token` field of the request body.
fn token_of(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let tokens: Vec<String> = if content_type.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(body)
            .filter(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
            .collect()
    } else if content_type.starts_with("application/json") {
        let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|_| invalid_request("the body is not a JSON object"))?;
        match fields.get("token") {
            None => Vec::new(),
            Some(serde_json::Value::String(token)) => vec![token.clone()],
            Some(_) => return Err(invalid_request("token must be a string")),
        }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send token=... as application/x-www-form-urlencoded (RFC 7009), or as JSON",
        ));
    };
    match tokens.as_slice() {
        [token] if !token.is_empty() && token.len() <= MAX_TOKEN_BYTES => Ok(token.clone()),
        [] => Err(invalid_request("the token to revoke is missing: token=...")),
        [_] => Err(invalid_request(
            "the token is empty or longer than 4096 bytes",
        )),
        _ => Err(invalid_request("send one token")),
    }
}

/// RFC 6749's `invalid_request`, as a problem document.
fn invalid_request(detail: &str) -> ApiError {
    ApiError::bad_request("invalid_request", detail)
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
    let preferred = match user.profile.display_name.is_empty() {
        true => &user.name,
        false => &user.profile.display_name,
    };
    let mut claims = json!({
        "sub": user.user_id,
        "email": user.email,
        "email_verified": false,
        "name": user.name,
        "preferred_username": preferred,
        "updated_at": user.updated_at / 1000,
    });
    if !user.profile.locale.is_empty() {
        claims["locale"] = json!(user.profile.locale);
    }
    let mut response = Json(claims).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

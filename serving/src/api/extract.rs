//! Extractors that turn bad input into problem documents, and the idempotency key.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use dataflows::model::IdempotencyKey;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::error::{ApiError, FieldError};
use super::App;

/// The client's network address: the peer the server loop accepted the connection
/// from (`server::serve`), none where there is no connection (a router called in
/// process).
#[derive(Clone, Copy, Debug)]
pub struct Client(pub Option<IpAddr>);

impl Client {
    pub fn of(extensions: &axum::http::Extensions) -> Client {
        Client(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip()),
        )
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client::of(&parts.extensions))
    }
}

/// The longest request body the API reads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON body: malformed JSON is 400, a wrong shape or type is 422 naming the field,
/// a wrong content type is 415. Also carries the `Idempotency-Key`, if any, with a
/// fingerprint of method, path and body.
pub struct Command<T> {
    pub body: T,
    pub idempotency: Option<IdempotencyKey>,
}

impl<T: DeserializeOwned> FromRequest<App> for Command<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &App) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let idempotency_header = idempotency_header(&parts)?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let request = Request::from_parts(parts.clone(), body);
        // The whole body within the deadline: a client dripping a byte at a time holds a
        // connection no longer than one sending nothing.
        let deadline = Duration::from_millis(state.config.http.body_read_timeout_ms);
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the body did not arrive within {deadline:?}"),
                )
            })?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body exceeds {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    ApiError::bad_request("unreadable_body", rejection.body_text())
                }
            })?;
        let body_text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if !bytes.iter().all(u8::is_ascii_whitespace) && !content_type.is_empty() {
            let mime = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as application/json",
                ));
            }
        }
        let body = parse_json(body_text)?;
        let idempotency = idempotency_header.map(|key| IdempotencyKey {
            fingerprint: fingerprint(&parts.method, parts.uri.path(), &bytes).into(),
            key: key.into(),
        });
        Ok(Command { body, idempotency })
    }
}

/// Parses JSON, telling a syntax error (400) from a body of the wrong shape (422,
/// naming the field by its path, e.g. `items[0].quantity`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        use serde_json::error::Category;
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            ),
            Category::Data => {
                let message = strip_position(&inner.to_string());
                let field = match (field_in_message(&message), path.as_str()) {
                    (Some(name), "." | "") => name.to_string(),
                    (Some(name), parent) => format!("{parent}.{name}"),
                    (None, "." | "") => "body".to_string(),
                    (None, _) => path,
                };
                ApiError::invalid(vec![FieldError::new(field, message)])
            }
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {error}"),
        )
    })?;
    Ok(value)
}

/// A missing field is reported at its parent; take its name from the message.
fn field_in_message(message: &str) -> Option<&str> {
    message
        .split("missing field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}

fn idempotency_header(parts: &Parts) -> Result<Option<String>, ApiError> {
    let mut values = parts.headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "send one Idempotency-Key header, not several",
        ));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|key| !key.bytes().any(|b| b.is_ascii_control()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be visible ASCII",
            )
        })?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(&hasher.finalize()[..16])
}

/// The raw query string as `(key, value)` pairs, repeated keys kept.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        Ok(QueryPairs(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl QueryPairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A `limit` between 1 and 100 (default 20).
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(20),
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=100).contains(&limit) => Ok(limit),
                _ => Err(ApiError::invalid_field(
                    "limit",
                    "must be an integer from 1 to 100",
                )),
            },
        }
    }

    pub fn u64(&self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(value) if value <= max => Ok(Some(value)),
                _ => Err(ApiError::invalid_field(
                    key,
                    format!("must be an integer from 0 to {max}"),
                )),
            },
        }
    }
}

/// A path parameter. axum's own answers a bad one (say, invalid UTF-8 in an id) with
/// plain text; this one with a problem document like every other error.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

//! `ApiError`: every failure as an RFC 9457 problem document. 5xx never leak internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dataflows::model::{Rejection, RejectionKind};
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (`Retry-After`): 503s say 1 by default.
    pub retry_after_s: Option<u64>,
    /// For the OAuth endpoints: the RFC 6749 5.2 error code, answered as `error` (and
    /// the detail as `error_description`) beside the problem's members, so that OAuth
    /// client libraries read it.
    pub oauth_error: Option<&'static str>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_s: None,
            oauth_error: None,
        }
    }

    /// The same error, telling the client when to come back.
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    /// The same error, naming its OAuth error code (RFC 6749 5.2).
    pub fn oauth(mut self, error: &'static str) -> ApiError {
        self.oauth_error = Some(error);
        self
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id:?} does not exist"),
        )
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn invalid(errors: Vec<FieldError>) -> ApiError {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed".into(),
            detail,
            errors,
            retry_after_s: None,
            oauth_error: None,
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid(vec![FieldError::new(field, message)])
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// A failure on our side: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request",
        )
    }
}

impl From<&Rejection> for ApiError {
    fn from(rejection: &Rejection) -> ApiError {
        match &rejection.kind {
            RejectionKind::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                rejection.detail.to_string(),
            ),
            RejectionKind::Conflict { code } => {
                ApiError::conflict(code, rejection.detail.to_string())
            }
            RejectionKind::Invalid { field } => {
                ApiError::invalid_field(field, rejection.detail.to_string())
            }
            RejectionKind::Duplicate { .. } => ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
        }
    }
}

impl From<crate::runtime::Error> for ApiError {
    fn from(error: crate::runtime::Error) -> ApiError {
        use crate::runtime::Error;
        match error {
            Error::Views(queries::Error::Timeout { .. }) => ApiError::unavailable(
                "the command is durable but its effects are not visible yet; retry the read",
            ),
            Error::Log(connectors::Error::TooLarge(_)) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the command is too large",
            ),
            Error::Log(connectors::Error::Closed)
            | Error::Views(queries::Error::Stopped)
            | Error::Engine(_) => ApiError::unavailable("the server is shutting down"),
            Error::Log(error @ connectors::Error::NotWritten { .. }) => {
                tracing::warn!(%error, "a command was not written");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_unavailable",
                    "the command log could not write; nothing of this request was kept, so retrying it is safe",
                )
            }
            Error::Log(error @ connectors::Error::OutcomeUnknown { .. }) => {
                tracing::error!(%error, "a command's outcome is unknown");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "the command log failed while writing this request and cannot tell whether it was kept; retry with the same Idempotency-Key once the service is ready",
                )
            }
            Error::Log(connectors::Error::Poisoned(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the command log failed earlier and takes no commands until the service restarts",
            ),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let problem = Problem {
            kind: format!("/problems/{}", self.code),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: &self.code,
            errors: &self.errors,
            error: self.oauth_error,
            error_description: self.oauth_error.map(|_| self.detail.as_str()),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = self
            .retry_after_s
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

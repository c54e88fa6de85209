//! Who is calling, and what they may do.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use dataflows::model::Str;

use crate::api::error::ApiError;

/// The scope that allows everything.
pub const ADMIN: &str = "admin";

/// Every scope a key or token can carry, with what it allows. `admin` implies the rest.
pub const SCOPES: &[(&str, &str)] = &[
    (ADMIN, "everything, on behalf of any user"),
    ("inventory:read", "reservations"),
    (
        "inventory:write",
        "create and change products, adjust stock, reserve and release",
    ),
    (
        "orders:read",
        "read any user's orders and carts, and their payments and shipments",
    ),
    (
        "orders:write",
        "place, change and cancel orders and carts for any user, set order status",
    ),
    ("payment:read", "read any payment"),
    ("payment:write", "pay for any order, refund payments"),
    (
        "shipping:write",
        "report deliveries (the carrier's webhook)",
    ),
    ("users:read", "read and search users"),
    ("users:write", "change and delete any user"),
    (
        "analytics:read",
        "SQL over every table, the KPIs, the dashboards",
    ),
    ("dashboards:write", "save, change and delete dashboards"),
    (
        "reports:read",
        "report templates, runs, files and schedules",
    ),
    (
        "reports:write",
        "generate reports, create and delete schedules",
    ),
    ("support:read", "read every support ticket"),
    (
        "support:write",
        "answer, assign and change any support ticket, open one for anyone",
    ),
    ("notification:publish", "send notifications"),
    ("service:internal", "an internal service's key"),
    ("service:external", "an external integration's key"),
    (
        crate::gateway::PREMIUM,
        "the premium rate-limit tier (10,000 requests a minute by default)",
    ),
];

pub fn is_scope(scope: &str) -> bool {
    SCOPES.iter().any(|(name, _)| *name == scope)
}

/// The caller of a request, as its credentials say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials: public routes only.
    Anonymous,
    /// A signed-in user (an access token).
    User { user_id: Str },
    /// An API key: a service's (no owner) or a user's, with its scopes.
    Key {
        key_id: Str,
        owner: Option<Str>,
        scopes: Vec<Str>,
    },
    /// The bootstrap administrator key (`TIDEMARK_BOOTSTRAP_ADMIN_KEY`).
    Bootstrap,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            Principal::Bootstrap => true,
            Principal::Key { scopes, .. } => scopes.iter().any(|s| &**s == ADMIN || &**s == scope),
            Principal::Anonymous | Principal::User { .. } => false,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.has_scope(ADMIN)
    }

    /// The user this caller is, if any: a token's user, a user's key's owner.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::User { user_id } => Some(user_id),
            Principal::Key { owner, .. } => owner.as_deref(),
            Principal::Anonymous | Principal::Bootstrap => None,
        }
    }

    /// A name for logs and audit trails: never a secret.
    /// The user a request is about: `given`, else the caller's own; 422 on `user_id`
    /// for a caller that acts for no user and names none.
    pub fn user_or(&self, given: Option<&str>) -> Result<String, ApiError> {
        match (given, self.user_id()) {
            (Some(user), _) => Ok(user.to_string()),
            (None, Some(own)) => Ok(own.to_string()),
            (None, None) => Err(ApiError::invalid_field(
                "user_id",
                "is required for a caller that acts for no user",
            )),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { user_id } => format!("user:{user_id}"),
            Principal::Key { key_id, .. } => format!("key:{key_id}"),
            Principal::Bootstrap => "bootstrap-admin".into(),
        }
    }

    /// Allowed when the caller has `scope`: 401 for anonymous callers, 403 for others.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            return Ok(());
        }
        Err(self.refusal(format!("this needs the `{scope}` scope")))
    }

    /// Allowed when the caller is `owner` (the user a resource belongs to) or has
    /// `scope`, which lets services and operators act for any user.
    pub fn require_owner_or(&self, owner: &str, scope: &str) -> Result<(), ApiError> {
        if self.user_id() == Some(owner) || self.has_scope(scope) {
            return Ok(());
        }
        Err(self.refusal(format!(
            "this belongs to another user; acting for others needs the `{scope}` scope"
        )))
    }

    /// Any caller with credentials.
    pub fn require_signed_in(&self) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous => Err(self.refusal("sign in first".into())),
            _ => Ok(()),
        }
    }

    pub(crate) fn refusal(&self, detail: String) -> ApiError {
        match self {
            Principal::Anonymous => unauthenticated(
                "credentials_required",
                "this endpoint needs credentials: `Authorization: Bearer <token or API key>` or `X-API-Key: <key>`",
            ),
            _ => ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail),
        }
    }
}

/// 401 with the `WWW-Authenticate` challenge (RFC 6750) that says how to authenticate.
pub fn unauthenticated(code: &str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

/// The challenge every 401 carries, unless its handler made its own.
pub fn challenge(response: &mut Response) {
    if response.status() == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="tidemark""#),
        );
    }
}

/// The caller, as the authentication layer found it (anonymous where no layer ran).
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        Ok(Caller(
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
        ))
    }
}

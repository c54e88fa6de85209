//! Which routes need what: one table, read by the authentication layer before any
//! handler runs. A route missing from it needs `admin`, so a new route is closed until
//! someone decides who may call it. Rules that depend on the resource (a customer's own
//! orders) are checked again by the handler, which knows the owner.

use axum::http::Method;

/// What a route asks of its caller before the handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without credentials (catalog reads, sign-up, sign-in).
    Public,
    /// Any caller with valid credentials; the handler checks ownership or a scope.
    SignedIn,
    /// Callers with this scope (or `admin`).
    Scope(&'static str),
}

/// The rule of a route: `path` is its pattern below `/api/v1` (`/orders/{id}`).
pub fn rule(method: &Method, path: &str) -> Rule {
    use Rule::*;
    let get = method == Method::GET || method == Method::HEAD;
    match (path, get) {
        ("/products" | "/products/search" | "/products/{id}" | "/inventory/availability", true) => {
            Public
        }
        ("/products" | "/products/{id}", false)
        | ("/inventory/adjust" | "/inventory/reserve" | "/inventory/release", false) => {
            Scope("inventory:write")
        }
        ("/inventory/reservations/{id}", true) => Scope("inventory:read"),
        ("/users" | "/users/authenticate", false) => Public,
        // Holding the token is the right to revoke it (RFC 7009); the token endpoint
        // checks each grant's own credentials; the authorization endpoint signs in.
        ("/oauth2/revoke" | "/oauth2/token", false) => Public,
        ("/oauth2/authorize", _) => Public,
        ("/oauth2/userinfo", _) => SignedIn,
        ("/users/search", true) => Scope("users:read"),
        (
            "/users/{id}"
            | "/users/{id}/orders"
            | "/users/{id}/sign-ins"
            | "/users/{id}/loyalty"
            | "/users/{id}/sessions"
            | "/users/{id}/sessions/{session_id}"
            | "/users/{id}/mfa/enable"
            | "/users/{id}/mfa",
            _,
        ) => SignedIn,
        ("/users/{id}/unlock", false) => Scope("users:write"),
        ("/carts" | "/carts/{id}" | "/carts/{id}/items", _) => SignedIn,
        ("/orders" | "/orders/{id}" | "/orders/{id}/cancel", _) => SignedIn,
        ("/orders/{id}/status", false) => Scope("orders:write"),
        ("/payments" | "/payments/{id}", _) => SignedIn,
        ("/payment-methods" | "/payment-methods/{id}", _) => SignedIn,
        (
            "/support/tickets"
            | "/support/tickets/{id}"
            | "/support/tickets/{id}/comments"
            | "/support/tickets/{id}/chat/stream",
            _,
        ) => SignedIn,
        ("/payments/{id}/refund", false) => Scope("payment:write"),
        ("/shipments/{id}", true) => SignedIn,
        ("/shipments/{id}/deliver", false) => Scope("shipping:write"),
        ("/sql" | "/kpis", _) => Scope("analytics:read"),
        ("/dashboards" | "/dashboards/{id}" | "/dashboards/{id}/stream", true) => {
            Scope("analytics:read")
        }
        ("/dashboards" | "/dashboards/{id}", false) => Scope("dashboards:write"),
        // The catalog's feeds are public; the handler checks the others' as their GETs.
        ("/views/{name}/changes", true) => Public,
        (
            "/reports"
            | "/reports/templates"
            | "/reports/schedules"
            | "/reports/schedules/{id}"
            | "/reports/{id}"
            | "/reports/{id}/download",
            true,
        ) => Scope("reports:read"),
        ("/reports/generate" | "/reports/schedule" | "/reports/schedules/{id}", false) => {
            Scope("reports:write")
        }
        _ => Scope(super::principal::ADMIN),
    }
}

//! Who may call what: the authorization matrix over every route, and the lifecycle of
//! API keys and access tokens.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::orders::wait_for_status;
use crate::support::{card, Reply, TestApp, ADMIN_KEY};

/// The callers of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// Customer A (an access token): owns the resources the routes name.
    CustomerA,
    /// Customer B (an access token): owns nothing there.
    CustomerB,
    /// The bootstrap administrator key.
    Admin,
    /// A key with the `admin` scope, sent as `Authorization: Bearer`.
    AdminKey,
    /// The order service's permission set: `inventory:read payment:write notification:publish`.
    Service,
    /// A key whose scope fits no route but the report reads.
    WrongScope,
    /// Customer A's token, expired.
    ExpiredToken,
    /// An admin key, revoked.
    RevokedKey,
    /// Customer A's token, revoked (RFC 7009).
    RevokedToken,
    /// The order service's access token from the client-credentials grant.
    ServiceToken,
}

const EVERYONE: [Who; 11] = [
    Who::Anonymous,
    Who::CustomerA,
    Who::CustomerB,
    Who::Admin,
    Who::AdminKey,
    Who::Service,
    Who::WrongScope,
    Who::ExpiredToken,
    Who::RevokedKey,
    Who::RevokedToken,
    Who::ServiceToken,
];

const SERVICE_SCOPES: [&str; 3] = ["inventory:read", "payment:write", "notification:publish"];
const WRONG_SCOPES: [&str; 1] = ["reports:read"];

/// What a route asks of its caller.
#[derive(Clone, Copy, Debug)]
enum Needs {
    /// Nothing; credentials sent are still checked.
    Public,
    /// Customer A, or a caller with this scope.
    OwnerOr(&'static str),
    /// This scope.
    Scope(&'static str),
    /// Nothing, and credentials are not looked at (probes, static documents).
    Open,
    /// A user's own credentials, whoever the user (OpenID Connect's userinfo).
    AnyUser,
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthenticated,
    Forbidden,
}

fn scopes_of(who: Who) -> &'static [&'static str] {
    match who {
        Who::Admin | Who::AdminKey => &["admin"],
        Who::Service | Who::ServiceToken => &SERVICE_SCOPES,
        Who::WrongScope => &WRONG_SCOPES,
        _ => &[],
    }
}

fn expected(who: Who, needs: Needs) -> Expect {
    use Expect::*;
    let has = |scope: &str| scopes_of(who).iter().any(|s| *s == scope || *s == "admin");
    match (needs, who) {
        (Needs::Open, _) => Allowed,
        (_, Who::ExpiredToken | Who::RevokedKey | Who::RevokedToken) => Unauthenticated,
        (Needs::Public, _) => Allowed,
        (_, Who::Anonymous) => Unauthenticated,
        (Needs::AnyUser, Who::CustomerA | Who::CustomerB) => Allowed,
        (Needs::AnyUser, _) => Forbidden,
        (Needs::OwnerOr(_), Who::CustomerA) => Allowed,
        (Needs::OwnerOr(scope) | Needs::Scope(scope), _) if has(scope) => Allowed,
        _ => Forbidden,
    }
}

struct World {
    t: TestApp,
    user_a: String,
    token_a: String,
    token_b: String,
    admin_key: String,
    service_key: String,
    wrong_key: String,
    revoked_key: String,
    revoked_token: String,
    expired_token: String,
    service_token: String,
    product: String,
    reservation: String,
    cart_a: String,
    order_a: String,
    unpaid_order_a: String,
    payment_a: String,
    shipment_a: String,
    spare_key: String,
    /// Two cards customer A saved: one to read, one to remove.
    card_a: String,
    spare_card_a: String,
    /// Customer A's support ticket.
    ticket_a: String,
    /// An OAuth session of customer A's (the password grant).
    session_a: String,
}

impl World {
    fn headers(&self, who: Who) -> Vec<(&'static str, String)> {
        let bearer = |token: &str| vec![("authorization", format!("Bearer {token}"))];
        match who {
            Who::Anonymous => vec![],
            Who::CustomerA => bearer(&self.token_a),
            Who::CustomerB => bearer(&self.token_b),
            Who::Admin => vec![("x-api-key", ADMIN_KEY.to_string())],
            Who::AdminKey => bearer(&self.admin_key),
            Who::Service => vec![("x-api-key", self.service_key.clone())],
            Who::WrongScope => bearer(&self.wrong_key),
            Who::ExpiredToken => bearer(&self.expired_token),
            Who::RevokedKey => vec![("x-api-key", self.revoked_key.clone())],
            Who::RevokedToken => bearer(&self.revoked_token),
            Who::ServiceToken => bearer(&self.service_token),
        }
    }

    async fn call(&self, who: Who, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let headers = self.headers(who);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = body.map(Value::to_string);
        self.t
            .send_raw(method, path, body.as_deref(), &headers)
            .await
    }
}

pub async fn sign_in(t: &TestApp, email: &str) -> String {
    let reply = t
        .send_raw(
            "POST",
            "/api/v1/users/authenticate",
            Some(&json!({"email": email, "password": "correct horse battery"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["token_type"], "Bearer");
    reply.body["access_token"].as_str().unwrap().to_string()
}

async fn new_key(t: &TestApp, scopes: &[&str]) -> (String, String) {
    let reply = t
        .post(
            "/api/v1/api-keys",
            json!({"name": format!("{scopes:?}"), "scopes": scopes}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    (
        reply.body["id"].as_str().unwrap().to_string(),
        reply.body["key"].as_str().unwrap().to_string(),
    )
}

async fn world() -> World {
    let t = TestApp::new().await;
    let product = t.product("MUG", 1200, 1000).await;
    let user_a = t.user("ann@example.com").await;
    t.user("bob@example.com").await;
    let token_a = sign_in(&t, "ann@example.com").await;
    let token_b = sign_in(&t, "bob@example.com").await;
    let (_, admin_key) = new_key(&t, &["admin"]).await;
    let (service_id, service_key) = new_key(&t, &SERVICE_SCOPES).await;
    let granted = t
        .send_raw(
            "POST",
            "/oauth2/token",
            Some(&json!({"grant_type": "client_credentials", "client_id": service_id, "client_secret": service_key}).to_string()),
            &[],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.body);
    let service_token = granted.body["access_token"].as_str().unwrap().to_string();
    let (_, wrong_key) = new_key(&t, &WRONG_SCOPES).await;
    let (revoked_id, revoked_key) = new_key(&t, &["admin"]).await;
    let (spare_key, _) = new_key(&t, &["orders:read"]).await;
    let revoked = t
        .send(
            "DELETE",
            &format!("/api/v1/api-keys/{revoked_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let revoked_token = sign_in(&t, "ann@example.com").await;
    assert_eq!(revoke(&t, &revoked_token).await.status, StatusCode::OK);
    let (expired_token, _) =
        t.app
            .auth
            .tokens
            .issue(&user_a, &[], serving::auth::tokens::unix_seconds() - 86_400);

    let reserved = t
        .post(
            "/api/v1/inventory/reserve",
            json!({"items": [{"product_id": product, "quantity": 1}]}),
        )
        .await;
    assert_eq!(reserved.status, StatusCode::CREATED, "{:?}", reserved.body);
    let cart = t.post("/api/v1/carts", json!({"user_id": user_a})).await;
    assert_eq!(cart.status, StatusCode::CREATED, "{:?}", cart.body);
    let paid = t.paid_order(&user_a, &product, 1, "4242424242424242").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    let order_a = paid.body["id"].as_str().unwrap().to_string();
    let shipped = wait_for_status(&t, &order_a, "shipped").await;
    let unpaid = t.order(&user_a, &product, 1).await;
    assert_eq!(unpaid.status, StatusCode::CREATED, "{:?}", unpaid.body);
    let granted = t
        .send_raw(
            "POST",
            "/oauth2/token",
            Some("grant_type=password&client_id=tidemark-cli&username=ann%40example.com&password=correct+horse+battery"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.body);
    let mut cards = Vec::new();
    for _ in 0..2 {
        let saved = t
            .post(
                "/api/v1/payment-methods",
                json!({"user_id": user_a, "type": "card", "card_number": "4242424242424242",
                       "exp_month": 12, "exp_year": 2031, "cvc": "123"}),
            )
            .await;
        assert_eq!(saved.status, StatusCode::CREATED, "{:?}", saved.body);
        cards.push(saved.body["id"].as_str().unwrap().to_string());
    }
    let [card_a, spare_card_a] = <[String; 2]>::try_from(cards).unwrap();
    let ticket = t
        .post(
            "/api/v1/support/tickets",
            json!({"user_id": user_a, "subject": "Late", "body": "Where is it?"}),
        )
        .await;
    assert_eq!(ticket.status, StatusCode::CREATED, "{:?}", ticket.body);
    let ticket_a = ticket.body["id"].as_str().unwrap().to_string();
    let sessions = t.get(&format!("/api/v1/users/{user_a}/sessions")).await;
    let session_a = sessions.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    World {
        ticket_a,
        card_a,
        spare_card_a,
        session_a,
        service_token,
        user_a,
        token_a,
        token_b,
        admin_key,
        service_key,
        wrong_key,
        revoked_key,
        revoked_token,
        expired_token,
        reservation: reserved.body["id"].as_str().unwrap().to_string(),
        cart_a: cart.body["id"].as_str().unwrap().to_string(),
        unpaid_order_a: unpaid.body["id"].as_str().unwrap().to_string(),
        payment_a: shipped["payment_id"].as_str().unwrap().to_string(),
        shipment_a: shipped["shipment_id"].as_str().unwrap().to_string(),
        order_a,
        product,
        spare_key,
        t,
    }
}

/// Every route, with what it needs. Routes that destroy what later rows use come last.
fn routes(w: &World) -> Vec<(&'static str, String, Option<Value>, Needs)> {
    use Needs::*;
    let a = &w.user_a;
    let p = &w.product;
    let items = json!([{"product_id": p, "quantity": 1}]);
    vec![
        ("GET", "/api/v1/products".into(), None, Public),
        ("GET", "/api/v1/products/search?q=mug".into(), None, Public),
        ("GET", format!("/api/v1/products/{p}"), None, Public),
        (
            "GET",
            format!("/api/v1/inventory/availability?product_id={p}"),
            None,
            Public,
        ),
        (
            "POST",
            "/api/v1/products".into(),
            Some(json!({"sku": "MUG", "name": "Mug", "price_cents": 1, "currency": "USD"})),
            Scope("inventory:write"),
        ),
        (
            "PUT",
            format!("/api/v1/products/{p}"),
            Some(json!({"name": "Mug"})),
            Scope("inventory:write"),
        ),
        (
            "POST",
            "/api/v1/inventory/adjust".into(),
            Some(json!({"product_id": p, "delta": 1})),
            Scope("inventory:write"),
        ),
        (
            "POST",
            "/api/v1/inventory/reserve".into(),
            Some(json!({"items": items})),
            Scope("inventory:write"),
        ),
        (
            "POST",
            "/api/v1/inventory/release".into(),
            Some(json!({"reservation_id": w.reservation})),
            Scope("inventory:write"),
        ),
        (
            "GET",
            format!("/api/v1/inventory/reservations/{}", w.reservation),
            None,
            Scope("inventory:read"),
        ),
        (
            "POST",
            "/api/v1/users".into(),
            Some(
                json!({"email": "cy@example.com", "password": "correct horse battery", "name": "Cy"}),
            ),
            Public,
        ),
        (
            "POST",
            "/api/v1/users/authenticate".into(),
            Some(json!({"email": "ann@example.com", "password": "correct horse battery"})),
            Public,
        ),
        (
            "GET",
            "/api/v1/users/search?q=example".into(),
            None,
            Scope("users:read"),
        ),
        (
            "GET",
            format!("/api/v1/users/{a}"),
            None,
            OwnerOr("users:read"),
        ),
        (
            "PUT",
            format!("/api/v1/users/{a}"),
            Some(json!({"name": "Ann"})),
            OwnerOr("users:write"),
        ),
        (
            "GET",
            format!("/api/v1/users/{a}/orders"),
            None,
            OwnerOr("orders:read"),
        ),
        (
            "GET",
            format!("/api/v1/users/{a}/sign-ins"),
            None,
            OwnerOr("users:read"),
        ),
        (
            "POST",
            format!("/api/v1/users/{a}/unlock"),
            None,
            Scope("users:write"),
        ),
        (
            "POST",
            "/api/v1/carts".into(),
            Some(json!({"user_id": a})),
            OwnerOr("orders:write"),
        ),
        (
            "GET",
            format!("/api/v1/carts/{}", w.cart_a),
            None,
            OwnerOr("orders:read"),
        ),
        (
            "PUT",
            format!("/api/v1/carts/{}/items", w.cart_a),
            Some(json!({"product_id": p, "quantity": 1})),
            OwnerOr("orders:write"),
        ),
        (
            "POST",
            "/api/v1/orders".into(),
            Some(json!({"user_id": a, "items": items})),
            OwnerOr("orders:write"),
        ),
        (
            "GET",
            format!("/api/v1/orders/{}", w.order_a),
            None,
            OwnerOr("orders:read"),
        ),
        (
            "PUT",
            format!("/api/v1/orders/{}/status", w.order_a),
            Some(json!({"status": "delivered"})),
            Scope("orders:write"),
        ),
        (
            "POST",
            "/api/v1/payments".into(),
            Some(json!({"order_id": w.unpaid_order_a, "payment_method": card("4242424242424242")})),
            OwnerOr("payment:write"),
        ),
        (
            "POST",
            "/api/v1/support/tickets".into(),
            Some(json!({"user_id": a, "subject": "Hello", "body": "A question."})),
            OwnerOr("support:write"),
        ),
        (
            "GET",
            format!("/api/v1/support/tickets?user_id={a}"),
            None,
            OwnerOr("support:read"),
        ),
        (
            "GET",
            format!("/api/v1/support/tickets/{}", w.ticket_a),
            None,
            OwnerOr("support:read"),
        ),
        (
            "GET",
            format!("/api/v1/support/tickets/{}/chat/stream", w.ticket_a),
            None,
            OwnerOr("support:read"),
        ),
        (
            "POST",
            format!("/api/v1/support/tickets/{}/comments", w.ticket_a),
            Some(json!({"body": "Any news?"})),
            OwnerOr("support:write"),
        ),
        (
            "PUT",
            format!("/api/v1/support/tickets/{}", w.ticket_a),
            Some(json!({"status": "resolved"})),
            OwnerOr("support:write"),
        ),
        (
            "POST",
            "/api/v1/payment-methods".into(),
            Some(
                json!({"user_id": a, "type": "card", "card_number": "4242424242424242",
                        "exp_month": 12, "exp_year": 2031, "cvc": "123"}),
            ),
            OwnerOr("payment:write"),
        ),
        (
            "GET",
            format!("/api/v1/payment-methods?user_id={a}"),
            None,
            OwnerOr("payment:read"),
        ),
        (
            "GET",
            format!("/api/v1/payment-methods/{}", w.card_a),
            None,
            OwnerOr("payment:read"),
        ),
        (
            "DELETE",
            format!("/api/v1/payment-methods/{}", w.spare_card_a),
            None,
            OwnerOr("payment:write"),
        ),
        (
            "GET",
            format!("/api/v1/payments/{}", w.payment_a),
            None,
            OwnerOr("payment:read"),
        ),
        (
            "POST",
            format!("/api/v1/payments/{}/refund", w.payment_a),
            Some(json!({"amount_cents": 1})),
            Scope("payment:write"),
        ),
        (
            "GET",
            format!("/api/v1/shipments/{}", w.shipment_a),
            None,
            OwnerOr("orders:read"),
        ),
        (
            "POST",
            format!("/api/v1/shipments/{}/deliver", w.shipment_a),
            Some(json!({})),
            Scope("shipping:write"),
        ),
        (
            "POST",
            format!("/api/v1/orders/{}/cancel", w.unpaid_order_a),
            Some(json!({})),
            OwnerOr("orders:write"),
        ),
        (
            "POST",
            "/api/v1/sql".into(),
            Some(json!({"sql": "SELECT count(*) FROM orders"})),
            Scope("analytics:read"),
        ),
        ("GET", "/api/v1/kpis".into(), None, Scope("analytics:read")),
        (
            "GET",
            "/api/v1/dashboards".into(),
            None,
            Scope("analytics:read"),
        ),
        (
            "GET",
            "/api/v1/dashboards/payments".into(),
            None,
            Scope("analytics:read"),
        ),
        (
            "GET",
            "/api/v1/dashboards/operations/stream".into(),
            None,
            Scope("analytics:read"),
        ),
        (
            "POST",
            "/api/v1/dashboards".into(),
            Some(json!({"id": "desk", "title": "Desk", "panels": [
                {"id": "orders", "title": "Orders", "chart": "stat",
                 "source": {"sql": "SELECT count(*) FROM orders"}}
            ]})),
            Scope("dashboards:write"),
        ),
        (
            "PUT",
            "/api/v1/dashboards/desk".into(),
            Some(json!({"title": "Desk", "panels": [
                {"id": "p99", "title": "p99", "chart": "stat",
                 "source": {"process": "p99_latency_ms"}, "unit": "ms"}
            ]})),
            Scope("dashboards:write"),
        ),
        (
            "DELETE",
            "/api/v1/dashboards/none".into(),
            None,
            Scope("dashboards:write"),
        ),
        ("GET", "/dashboard".into(), None, Open),
        ("GET", "/dashboard/assets/dashboard.js".into(), None, Open),
        ("GET", "/api/v1/views/products/changes".into(), None, Public),
        (
            "GET",
            "/api/v1/views/orders_per_minute/changes".into(),
            None,
            Scope("analytics:read"),
        ),
        (
            "GET",
            format!("/api/v1/views/orders/changes?user_id={a}"),
            None,
            OwnerOr("orders:read"),
        ),
        (
            "GET",
            format!("/api/v1/views/payments/changes?user_id={a}"),
            None,
            OwnerOr("payment:read"),
        ),
        ("GET", "/api/v1/reports".into(), None, Scope("reports:read")),
        (
            "GET",
            "/api/v1/reports/templates".into(),
            None,
            Scope("reports:read"),
        ),
        (
            "GET",
            "/api/v1/reports/schedules".into(),
            None,
            Scope("reports:read"),
        ),
        (
            "GET",
            "/api/v1/reports/schedules/sch_none".into(),
            None,
            Scope("reports:read"),
        ),
        (
            "GET",
            "/api/v1/reports/rpt_none".into(),
            None,
            Scope("reports:read"),
        ),
        (
            "GET",
            "/api/v1/reports/rpt_none/download".into(),
            None,
            Scope("reports:read"),
        ),
        (
            "POST",
            "/api/v1/reports/generate".into(),
            Some(json!({"template": "kpis", "format": "json"})),
            Scope("reports:write"),
        ),
        (
            "POST",
            "/api/v1/reports/schedule".into(),
            Some(json!({"template": "kpis", "cron": "0 0 6 * * *"})),
            Scope("reports:write"),
        ),
        (
            "DELETE",
            "/api/v1/reports/schedules/sch_none".into(),
            None,
            Scope("reports:write"),
        ),
        (
            "POST",
            "/api/v1/api-keys".into(),
            Some(json!({"name": "ci", "scopes": ["orders:read"]})),
            Scope("admin"),
        ),
        ("GET", "/api/v1/api-keys".into(), None, Scope("admin")),
        (
            "GET",
            format!("/api/v1/api-keys/{}", w.spare_key),
            None,
            Scope("admin"),
        ),
        (
            "POST",
            format!("/api/v1/api-keys/{}/rotate", w.spare_key),
            Some(json!({"grace_period_hours": 1})),
            Scope("admin"),
        ),
        (
            "DELETE",
            format!("/api/v1/api-keys/{}", w.spare_key),
            None,
            Scope("admin"),
        ),
        (
            "GET",
            format!("/api/v1/users/{a}/loyalty"),
            None,
            OwnerOr("users:read"),
        ),
        (
            "POST",
            format!("/api/v1/users/{a}/mfa/enable"),
            None,
            OwnerOr("users:write"),
        ),
        (
            "DELETE",
            format!("/api/v1/users/{a}/mfa"),
            None,
            OwnerOr("users:write"),
        ),
        ("GET", "/api/v1/events/schemas".into(), None, Open),
        ("GET", "/health/live".into(), None, Open),
        ("GET", "/.well-known/jwks.json".into(), None, Open),
        (
            "POST",
            "/oauth2/revoke".into(),
            Some(json!({"token": "not-a-token"})),
            Public,
        ),
        ("GET", "/oauth2/userinfo".into(), None, AnyUser),
        (
            "GET",
            format!("/api/v1/users/{a}/sessions"),
            None,
            OwnerOr("users:read"),
        ),
        (
            "DELETE",
            format!("/api/v1/users/{a}/sessions/{}", w.session_a),
            None,
            OwnerOr("users:write"),
        ),
        (
            "POST",
            "/oauth2/token".into(),
            Some(json!({"grant_type": "client_credentials"})),
            Public,
        ),
        ("GET", "/oauth2/authorize".into(), None, Public),
        (
            "GET",
            "/.well-known/openid-configuration".into(),
            None,
            Open,
        ),
        (
            "DELETE",
            format!("/api/v1/users/{a}"),
            None,
            OwnerOr("users:write"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_matrix_says() {
    let w = world().await;
    let mut wrong = Vec::new();
    for (method, path, body, needs) in routes(&w) {
        // The refused callers first, while what a destructive route names still exists:
        // once it is gone, a caller who may not see it is told 404, like anyone.
        let mut callers = EVERYONE.to_vec();
        callers.sort_by_key(|who| expected(*who, needs) == Expect::Allowed);
        for who in callers {
            let reply = w.call(who, method, &path, body.as_ref()).await;
            let want = expected(who, needs);
            let got = match reply.status {
                StatusCode::UNAUTHORIZED => Expect::Unauthenticated,
                StatusCode::FORBIDDEN => Expect::Forbidden,
                _ => Expect::Allowed,
            };
            assert!(
                !reply.status.is_server_error(),
                "{method} {path} as {who:?}: {:?}",
                reply.body
            );
            if got != want {
                wrong.push(format!(
                    "{method} {path} as {who:?}: want {want:?}, got {} {}",
                    reply.status, reply.body
                ));
                continue;
            }
            match got {
                Expect::Unauthenticated => {
                    assert_eq!(
                        reply
                            .headers
                            .get("www-authenticate")
                            .map(|v| v.to_str().unwrap()),
                        Some(r#"Bearer realm="tidemark""#),
                        "{method} {path} as {who:?}"
                    );
                    assert_eq!(reply.content_type, "application/problem+json");
                }
                Expect::Forbidden => assert_eq!(reply.body["code"], "forbidden"),
                Expect::Allowed => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() {
    let w = world().await;
    let path = format!("/api/v1/orders/{}", w.order_a);
    for (headers, code) in [
        (vec![], "credentials_required"),
        (
            vec![("authorization", "Basic YTpi")],
            "unsupported_credentials",
        ),
        (vec![("authorization", "Bearer")], "invalid_credentials"),
        (vec![("x-api-key", "tmk_0000")], "invalid_credentials"),
        (vec![("authorization", "Bearer a.b.c")], "invalid_token"),
        (
            vec![("x-api-key", ADMIN_KEY), ("authorization", "Bearer x")],
            "ambiguous_credentials",
        ),
        (vec![("x-api-key", w.revoked_key.as_str())], "key_revoked"),
    ] {
        let reply = w.t.send_raw("GET", &path, None, &headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply.body["code"], code, "{headers:?}: {:?}", reply.body);
    }
    // The same key in both headers is one credential.
    let bearer = format!("Bearer {ADMIN_KEY}");
    let both =
        w.t.send_raw(
            "GET",
            &path,
            None,
            &[("x-api-key", ADMIN_KEY), ("authorization", &bearer)],
        )
        .await;
    assert_eq!(both.status, StatusCode::OK, "{:?}", both.body);
    let expired = format!("Bearer {}", w.expired_token);
    let reply =
        w.t.send_raw("GET", &path, None, &[("authorization", &expired)])
            .await;
    assert_eq!(reply.body["code"], "token_expired");
    // A token signed by another server's key is refused.
    let other = TestApp::new().await;
    let (foreign, _) =
        other
            .app
            .auth
            .tokens
            .issue(&w.user_a, &[], serving::auth::tokens::unix_seconds());
    let foreign = format!("Bearer {foreign}");
    let reply =
        w.t.send_raw("GET", &path, None, &[("authorization", &foreign)])
            .await;
    assert_eq!(reply.body["code"], "invalid_token");
    // Wrong password and unknown address are refused alike.
    for (email, password) in [
        ("ann@example.com", "wrong password!"),
        ("nobody@example.com", "correct horse battery"),
    ] {
        let reply =
            w.t.send_raw(
                "POST",
                "/api/v1/users/authenticate",
                Some(&json!({"email": email, "password": password}).to_string()),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        assert_eq!(reply.body["code"], "invalid_credentials");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_orders_only_as_themselves() {
    let w = world().await;
    let b_user = w.t.user("cy@example.com").await;
    let order = json!({"user_id": b_user, "items": [{"product_id": w.product, "quantity": 1}]});
    let a = format!("Bearer {}", w.token_a);
    let reply =
        w.t.send_raw(
            "POST",
            "/api/v1/orders",
            Some(&order.to_string()),
            &[("authorization", &a)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    // Nothing was placed for the other user.
    let theirs = w.t.get(&format!("/api/v1/users/{b_user}/orders")).await;
    assert_eq!(theirs.body["items"], json!([]));
    // A customer may cancel their own order, but not with an operator's reason.
    let cancel = format!("/api/v1/orders/{}/cancel", w.unpaid_order_a);
    let reply =
        w.t.send_raw(
            "POST",
            &cancel,
            Some(&json!({"reason": "admin_request"}).to_string()),
            &[("authorization", &a)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    let reply =
        w.t.send_raw("POST", &cancel, Some("{}"), &[("authorization", &a)])
            .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_shown_once_rotated_with_grace_and_revoked_at_once() {
    let t = TestApp::new().await;
    let created = t
        .send(
            "POST",
            "/api/v1/api-keys",
            Some(&json!({"name": "warehouse", "scopes": ["inventory:write", "inventory:read"], "expires_in_days": 30}).to_string()),
            &[("idempotency-key", "key-1")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let key = created.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("tmk_") && key.len() == 68, "{key}");
    assert_eq!(
        created.body["scopes"],
        json!(["inventory:read", "inventory:write"])
    );
    assert_eq!(created.body["status"], "active");
    // A retried request is answered with the same key, and creates nothing new.
    let retried = t
        .send(
            "POST",
            "/api/v1/api-keys",
            Some(&json!({"name": "warehouse", "scopes": ["inventory:write", "inventory:read"], "expires_in_days": 30}).to_string()),
            &[("idempotency-key", "key-1")],
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert_eq!(retried.body["key"], key.as_str());
    assert_eq!(retried.body["id"], id.as_str());

    // Listed and read without the secret or its digest.
    let listed = t.get("/api/v1/api-keys").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let text = listed.raw.clone();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains(&key[4..]), "{text}");
    assert!(listed.body["items"][0].get("key").is_none());
    let read = t.get(&format!("/api/v1/api-keys/{id}")).await;
    assert!(read.body.get("key").is_none() && read.body.get("key_hash").is_none());

    let as_key = |key: &str| vec![("x-api-key".to_string(), key.to_string())];
    let adjust = json!({"product_id": "nope", "delta": 1}).to_string();
    let try_key = |key: String| {
        let t = &t;
        let adjust = adjust.clone();
        async move {
            let headers = as_key(&key);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            t.send_raw("POST", "/api/v1/inventory/adjust", Some(&adjust), &headers)
                .await
        }
    };
    // The key works (a 404 or 422 is the handler's answer, past the checks).
    let reply = try_key(key.clone()).await;
    assert!(
        ![401, 403].contains(&reply.status.as_u16()),
        "{:?}",
        reply.body
    );

    // Rotation: a new key; the old one works through its grace period.
    let rotated = t
        .post(
            &format!("/api/v1/api-keys/{id}/rotate"),
            json!({"grace_period_hours": 1}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    let new_id = rotated.body["id"].as_str().unwrap().to_string();
    let new_key = rotated.body["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(rotated.body["name"], "warehouse");
    assert_eq!(
        rotated.body["scopes"],
        json!(["inventory:read", "inventory:write"])
    );
    let old = t.get(&format!("/api/v1/api-keys/{id}")).await;
    assert_eq!(old.body["status"], "active");
    assert!(old.body["expires_at"].as_str() < created.body["expires_at"].as_str());
    for key in [&key, &new_key] {
        let reply = try_key(key.clone()).await;
        assert!(
            ![401, 403].contains(&reply.status.as_u16()),
            "{:?}",
            reply.body
        );
    }
    // Rotating again with no grace ends the new key's predecessor... of the new key, at once.
    let again = t
        .post(
            &format!("/api/v1/api-keys/{new_id}/rotate"),
            json!({"grace_period_hours": 0}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    let reply = try_key(new_key.clone()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["code"], "key_expired");
    let newest = again.body["key"].as_str().unwrap().to_string();

    // Revocation is at once, and revoking twice is fine.
    let newest_id = again.body["id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let reply = t
            .send(
                "DELETE",
                &format!("/api/v1/api-keys/{newest_id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let reply = try_key(newest).await;
    assert_eq!(reply.body["code"], "key_revoked");
    let read = t.get(&format!("/api/v1/api-keys/{newest_id}")).await;
    assert_eq!(read.body["status"], "revoked");
    let rotate_revoked = t
        .post(&format!("/api/v1/api-keys/{newest_id}/rotate"), json!({}))
        .await;
    assert_eq!(
        rotate_revoked.status,
        StatusCode::CONFLICT,
        "{:?}",
        rotate_revoked.body
    );

    // Bad requests are named.
    for body in [
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["admin"], "expires_in_days": 0}),
        json!({"name": "", "scopes": ["admin"]}),
        json!({"name": "x", "scopes": ["admin"], "owner_id": "usr_nobody"}),
    ] {
        let reply = t.post("/api/v1/api-keys", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
    }
    assert_eq!(
        t.get("/api/v1/api-keys/key_nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_owned_by_a_user_acts_as_that_user_and_survives_a_restart() {
    let t = TestApp::new().await;
    let ann = t.user("ann@example.com").await;
    let bob = t.user("bob@example.com").await;
    let created = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "ann's script", "owner_id": ann}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let key = created.body["key"].as_str().unwrap().to_string();
    let token = sign_in(&t, "ann@example.com").await;
    let t = t.restart(2).await;
    for (name, value) in [
        ("x-api-key", key.clone()),
        ("authorization", format!("Bearer {key}")),
        ("authorization", format!("Bearer {token}")),
    ] {
        let own = t
            .send_raw(
                "GET",
                &format!("/api/v1/users/{ann}"),
                None,
                &[(name, &value)],
            )
            .await;
        assert_eq!(own.status, StatusCode::OK, "{name}: {:?}", own.body);
        let other = t
            .send_raw(
                "GET",
                &format!("/api/v1/users/{bob}"),
                None,
                &[(name, &value)],
            )
            .await;
        assert_eq!(
            other.status,
            StatusCode::FORBIDDEN,
            "{name}: {:?}",
            other.body
        );
    }
}

#[tokio::test]
async fn the_signing_keys_are_published() {
    let t = TestApp::new().await;
    let reply = t.send_raw("GET", "/.well-known/jwks.json", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let key = &reply.body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].is_string());
    assert!(
        key.get("d").is_none(),
        "the private half is never published"
    );
    let signing = t.dir.path().join("keys").join("signing");
    for entry in std::fs::read_dir(signing).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn with_auth_off_every_caller_is_the_administrator() {
    let t = TestApp::configured(|config| config.auth.enabled = false).await;
    let reply = t.send_raw("GET", "/api/v1/api-keys", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

async fn attempt(t: &TestApp, email: &str, password: &str) -> Reply {
    t.send_raw(
        "POST",
        "/api/v1/users/authenticate",
        Some(&json!({"email": email, "password": password}).to_string()),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_sign_ins_lock_the_account_through_a_restart_until_an_admin_unlocks_it() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let right = "correct horse battery";
    for _ in 0..4 {
        let reply = attempt(&t, "ann@example.com", "wrong password!").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        assert_eq!(reply.body["code"], "invalid_credentials");
    }
    // The fifth failure locks the account; from then on the right password is refused too.
    for password in ["wrong password!", right] {
        let reply = attempt(&t, "ann@example.com", password).await;
        assert_eq!(reply.status, StatusCode::LOCKED, "{:?}", reply.body);
        assert_eq!(reply.body["code"], "account_locked");
        assert!(reply.body["detail"].as_str().unwrap().contains("lock"));
        let wait: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&wait), "{wait}");
    }
    // Addresses no account has never lock, and do not count against others.
    for _ in 0..6 {
        let reply = attempt(&t, "nobody@example.com", right).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let shown = t.get(&format!("/api/v1/users/{user}")).await;
    assert!(shown.body["locked_until"].is_string(), "{:?}", shown.body);

    // The lock is decided in the log: a restart replays it.
    let t = t.restart(2).await;
    let reply = attempt(&t, "ann@example.com", right).await;
    assert_eq!(reply.status, StatusCode::LOCKED, "{:?}", reply.body);

    // Every attempt is in the account's authentication log, newest first.
    let log = t
        .get(&format!("/api/v1/users/{user}/sign-ins?limit=100"))
        .await;
    assert_eq!(log.status, StatusCode::OK, "{:?}", log.body);
    let items = log.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 7, "{items:?}");
    let reasons: Vec<&str> = items
        .iter()
        .map(|item| item["reason"].as_str().unwrap())
        .collect();
    // The fifth failure is logged as what it was, with the lock it brought on.
    assert_eq!(reasons[..2], ["account_locked"; 2]);
    assert_eq!(reasons[2..], ["invalid_credentials"; 5]);
    let failures: Vec<u64> = items[2..]
        .iter()
        .map(|item| item["failures"].as_u64().unwrap())
        .collect();
    assert_eq!(failures, [5, 4, 3, 2, 1]);
    assert!(items[2]["locked_until"].is_string());
    assert!(items[3]["locked_until"].is_null());
    let page = t
        .get(&format!("/api/v1/users/{user}/sign-ins?limit=4"))
        .await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let rest = t
        .get(&format!(
            "/api/v1/users/{user}/sign-ins?limit=4&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(rest.body["items"][0]["id"], items[4]["id"]);

    // An administrator lifts the lock at once.
    let unlocked = t
        .send("POST", &format!("/api/v1/users/{user}/unlock"), None, &[])
        .await;
    assert_eq!(unlocked.status, StatusCode::OK, "{:?}", unlocked.body);
    assert!(unlocked.body["locked_until"].is_null());
    let reply = attempt(&t, "ann@example.com", right).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let shown = t.get(&format!("/api/v1/users/{user}")).await;
    assert!(
        shown.body["last_sign_in_at"].is_string(),
        "{:?}",
        shown.body
    );
    let log = t
        .get(&format!("/api/v1/users/{user}/sign-ins?limit=1"))
        .await;
    assert_eq!(log.body["items"][0]["succeeded"], true);
    let missing = t
        .send("POST", "/api/v1/users/usr_none/unlock", None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn sign_in_with(t: &TestApp, password: &str, code: Option<&str>) -> Reply {
    let mut body = json!({"email": "ann@example.com", "password": password});
    if let Some(code) = code {
        body["mfa_code"] = json!(code);
    }
    t.send_raw(
        "POST",
        "/api/v1/users/authenticate",
        Some(&body.to_string()),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_factors_each_code_signs_in_once_and_recovery_codes_stand_in() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let right = "correct horse battery";
    let bearer = format!("Bearer {}", sign_in(&t, "ann@example.com").await);
    let enable = |body: Value| {
        let (t, path, bearer) = (&t, format!("/api/v1/users/{user}/mfa/enable"), &bearer);
        async move {
            t.send_raw(
                "POST",
                &path,
                Some(&body.to_string()),
                &[("authorization", bearer)],
            )
            .await
        }
    };
    let started = enable(json!({})).await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    assert_eq!(started.body["status"], "pending");
    let uri = started.body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/tidemark:ann%40example.com?secret="),
        "{uri}"
    );
    assert_eq!(
        t.get(&format!("/api/v1/users/{user}")).await.body["mfa"],
        "pending"
    );
    // Until a code confirms it, the password alone signs in.
    assert_eq!(sign_in_with(&t, right, None).await.status, StatusCode::OK);

    let totp = totp_rs::TOTP::from_url(uri).expect("an authenticator app reads the URI");
    let now = serving::auth::tokens::unix_seconds();
    let code = totp.generate(now);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = enable(json!({"code": wrong})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["errors"][0]["field"], "code");
    let confirmed = enable(json!({"code": code})).await;
    assert_eq!(confirmed.status, StatusCode::OK, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["status"], "on");
    let recovery: Vec<String> = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(
        enable(json!({"code": code})).await.body["code"],
        "mfa_not_pending"
    );
    assert_eq!(enable(json!({})).await.body["code"], "mfa_enabled");

    // Now the password needs a code, and a code is good once: the confirming one is used.
    let reply = sign_in_with(&t, right, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body["code"], "mfa_required");
    let reply = sign_in_with(&t, right, Some(&code)).await;
    assert_eq!(reply.body["code"], "invalid_mfa_code", "{:?}", reply.body);
    let next = totp.generate(now + 30);
    let reply = sign_in_with(&t, right, Some(&next)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = sign_in_with(&t, right, Some(&next)).await;
    assert_eq!(reply.body["code"], "invalid_mfa_code");
    // A recovery code, however it is typed, once.
    let typed = recovery[0].to_uppercase();
    let reply = sign_in_with(&t, right, Some(&typed)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = sign_in_with(&t, right, Some(&recovery[0])).await;
    assert_eq!(reply.body["code"], "invalid_mfa_code");
    // A good code does not make up for a wrong password.
    let reply = sign_in_with(&t, "wrong password!", Some(&recovery[1])).await;
    assert_eq!(reply.body["code"], "invalid_credentials");
    let shown = t.get(&format!("/api/v1/users/{user}")).await;
    assert_eq!(shown.body["mfa"], "on");
    assert_eq!(shown.body["recovery_codes_left"], 9);
    let log = t.get(&format!("/api/v1/users/{user}/sign-ins")).await;
    let factors: Vec<&Value> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["succeeded"] == true)
        .map(|item| &item["second_factor"])
        .collect();
    assert_eq!(factors[..2], [&json!("recovery_code"), &json!("totp")]);

    // Turned off, the password is enough again.
    let off = t
        .send_raw(
            "DELETE",
            &format!("/api/v1/users/{user}/mfa"),
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(off.status, StatusCode::NO_CONTENT, "{:?}", off.body);
    assert_eq!(sign_in_with(&t, right, None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_a_profile_and_preferences_of_their_own() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let path = format!("/api/v1/users/{user}");
    let fresh = t.get(&path).await;
    assert_eq!(fresh.body["display_name"], "");
    assert_eq!(
        fresh.body["preferences"],
        json!({"marketing_emails": false, "order_updates": true})
    );
    let bearer = format!("Bearer {}", sign_in(&t, "ann@example.com").await);
    let changed = t
        .send_raw(
            "PUT",
            &path,
            Some(
                &json!({"display_name": "Annie", "locale": "en-GB", "preferences": {"marketing_emails": true}})
                    .to_string(),
            ),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["display_name"], "Annie");
    assert_eq!(changed.body["locale"], "en-GB");
    assert_eq!(
        changed.body["preferences"],
        json!({"marketing_emails": true, "order_updates": true})
    );
    // Fields not sent keep their values; a bad tag names its field.
    let renamed = t.put(&path, json!({"name": "Ann Lee"})).await;
    assert_eq!(renamed.body["display_name"], "Annie");
    let bad = t.put(&path, json!({"locale": "english"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "locale");
    // The profile is state like the rest: a restart replays it.
    let t = t.restart(1).await;
    assert_eq!(t.get(&path).await.body["locale"], "en-GB");
}

/// `POST /oauth2/revoke` (RFC 7009), form-encoded as the RFC has it.
async fn revoke(t: &TestApp, token: &str) -> Reply {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", "access_token")
        .finish();
    t.send_raw(
        "POST",
        "/oauth2/revoke",
        Some(&body),
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_access_token_is_refused_from_the_next_request_on_and_after_a_restart() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let token = sign_in(&t, "ann@example.com").await;
    let other = sign_in(&t, "ann@example.com").await;
    let path = format!("/api/v1/users/{user}");
    let bearer = |token: &str| format!("Bearer {token}");
    let read = t
        .send_raw("GET", &path, None, &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(read.status, StatusCode::OK);

    let revoked = revoke(&t, &token).await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    let refused = t
        .send_raw("GET", &path, None, &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["code"], "token_revoked");
    assert!(refused.headers.contains_key("www-authenticate"));
    // Only that token: the user's other sessions go on.
    let read = t
        .send_raw("GET", &path, None, &[("authorization", &bearer(&other))])
        .await;
    assert_eq!(read.status, StatusCode::OK);
    // Revoking again, or a token that is not ours, is answered the same (RFC 7009 2.2).
    assert_eq!(revoke(&t, &token).await.status, StatusCode::OK);
    assert_eq!(revoke(&t, "eyJ.not.a-token").await.status, StatusCode::OK);
    let as_json = t
        .send_raw(
            "POST",
            "/oauth2/revoke",
            Some(&json!({"token": other}).to_string()),
            &[],
        )
        .await;
    assert_eq!(as_json.status, StatusCode::OK);
    let read = t
        .send_raw("GET", &path, None, &[("authorization", &bearer(&other))])
        .await;
    assert_eq!(read.body["code"], "token_revoked");
    // Requests without a token are refused as problems.
    for (body, content_type, status, code) in [
        (
            "",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        (
            "token=a&token=b",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
        ),
        ("{\"token\": 5}", "application/json", 400, "invalid_request"),
        ("token=a", "text/plain", 415, "unsupported_media_type"),
    ] {
        let reply = t
            .send_raw(
                "POST",
                "/oauth2/revoke",
                Some(body),
                &[("content-type", content_type)],
            )
            .await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {:?}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
        assert_eq!(reply.body["code"], code, "{body}");
    }

    // The revocation is in the log: a restart refuses the token still.
    let t = t.restart(2).await;
    let refused = t
        .send_raw("GET", &path, None, &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(refused.body["code"], "token_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_describes_the_user_a_token_or_a_user_s_key_acts_for() {
    let t = TestApp::new().await;
    let user = t.user("ann@example.com").await;
    let updated = t
        .put(
            &format!("/api/v1/users/{user}"),
            json!({"display_name": "Annie", "locale": "en-GB"}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let token = sign_in(&t, "ann@example.com").await;
    let bearer = format!("Bearer {token}");
    for method in ["GET", "POST"] {
        let info = t
            .send_raw(
                method,
                "/oauth2/userinfo",
                None,
                &[("authorization", &bearer)],
            )
            .await;
        assert_eq!(info.status, StatusCode::OK, "{:?}", info.body);
        assert_eq!(info.body["sub"], user.as_str());
        assert_eq!(info.body["email"], "ann@example.com");
        assert_eq!(info.body["preferred_username"], "Annie");
        assert_eq!(info.body["locale"], "en-GB");
        assert!(info.body["updated_at"].as_u64().unwrap() > 1_000_000_000);
        assert!(info.body.get("password_hash").is_none());
        assert_eq!(info.headers["cache-control"], "no-store");
    }
    // A key a user owns acts for that user.
    let owned = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "ann's script", "scopes": [], "owner_id": user}),
        )
        .await;
    assert_eq!(owned.status, StatusCode::CREATED, "{:?}", owned.body);
    let key = owned.body["key"].as_str().unwrap();
    let info = t
        .send_raw("GET", "/oauth2/userinfo", None, &[("x-api-key", key)])
        .await;
    assert_eq!(info.body["sub"], user.as_str());
    // Deleting the user ends their sessions and keys: still signed, they name no one.
    let deleted = t
        .send("DELETE", &format!("/api/v1/users/{user}"), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    for path in ["/oauth2/userinfo", "/api/v1/products"] {
        let gone = t
            .send_raw("GET", path, None, &[("authorization", &bearer)])
            .await;
        assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(gone.body["code"], "invalid_token");
        assert!(gone.headers.contains_key("www-authenticate"));
    }
    let gone = t
        .send_raw("GET", "/oauth2/userinfo", None, &[("x-api-key", key)])
        .await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    assert_eq!(gone.body["code"], "invalid_credentials");
}

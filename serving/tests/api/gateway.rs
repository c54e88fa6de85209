//! The gateway in front of the routes: rate limits by tier with their headers, CORS,
//! compression.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Reply, TestApp, ADMIN_KEY};

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).map(|value| value.to_str().unwrap())
}

fn allowance(reply: &Reply) -> (Option<&str>, Option<&str>) {
    (
        header(reply, "ratelimit-limit"),
        header(reply, "ratelimit-remaining"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_its_tier_s_quota_and_is_told_what_is_left() {
    let t = TestApp::configured(|config| {
        config.gateway.public_per_minute = 3;
        config.gateway.authenticated_per_minute = 2;
    })
    .await;
    let user = t.user("ann@example.com").await;
    let (token, _) = t
        .app
        .auth
        .tokens
        .issue(&user, &[], serving::auth::tokens::unix_seconds());
    let premium = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "partner", "scopes": ["premium", "users:read"]}),
        )
        .await;
    assert_eq!(premium.status, StatusCode::CREATED, "{:?}", premium.body);
    let premium_key = premium.body["key"].as_str().unwrap().to_string();

    // Callers without credentials share their address's bucket: 3 a minute.
    for left in ["2", "1", "0"] {
        let reply = t.send_raw("GET", "/api/v1/products", None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(allowance(&reply), (Some("3"), Some(left)));
        let reset: u64 = header(&reply, "ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset <= 60, "{reset}");
    }
    let refused = t.send_raw("GET", "/api/v1/products", None, &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.content_type, "application/problem+json");
    assert_eq!(refused.body["code"], "rate_limited");
    assert_eq!(allowance(&refused), (Some("3"), Some("0")));
    let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    // Guessing keys spends the address's bucket too.
    let guess = t
        .send_raw(
            "GET",
            "/api/v1/products",
            None,
            &[("x-api-key", "tmk_guess")],
        )
        .await;
    assert_eq!(guess.status, StatusCode::TOO_MANY_REQUESTS);

    // A signed-in user has a bucket of their own.
    let bearer = format!("Bearer {token}");
    let path = format!("/api/v1/users/{user}");
    for left in ["1", "0"] {
        let reply = t
            .send_raw("GET", &path, None, &[("authorization", &bearer)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(allowance(&reply), (Some("2"), Some(left)));
    }
    let refused = t
        .send_raw("GET", &path, None, &[("authorization", &bearer)])
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);

    // A premium key has the premium quota; administrators are not limited.
    let reply = t
        .send_raw("GET", &path, None, &[("x-api-key", &premium_key)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(allowance(&reply), (Some("10000"), Some("9999")));
    for _ in 0..10 {
        let reply = t
            .send_raw("GET", &path, None, &[("x-api-key", ADMIN_KEY)])
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(allowance(&reply), (None, None));
    }
    // Probes are not behind the limits.
    let live = t.send_raw("GET", "/health/live", None, &[]).await;
    assert_eq!(live.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_may_call_from_the_configured_origins_only() {
    let t = TestApp::configured(|config| {
        config.gateway.cors_origins = vec!["https://shop.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        let t = &t;
        async move {
            t.send_raw(
                "OPTIONS",
                "/api/v1/orders",
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization,content-type,idempotency-key",
                    ),
                ],
            )
            .await
        }
    };
    let allowed = preflight("https://shop.example").await;
    assert!(allowed.status.is_success(), "{}", allowed.status);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(header(&allowed, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert!(header(&allowed, "access-control-allow-headers")
        .unwrap()
        .contains("idempotency-key"));
    let other = preflight("https://elsewhere.example").await;
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    // An actual request from the origin may read the request id.
    let read = t
        .send_raw(
            "GET",
            "/api/v1/products",
            None,
            &[("origin", "https://shop.example")],
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        header(&read, "access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert!(header(&read, "access-control-expose-headers")
        .unwrap()
        .contains("x-request-id"));
    // By default no origin is allowed.
    let closed = TestApp::new().await;
    let reply = closed
        .send_raw(
            "GET",
            "/api/v1/products",
            None,
            &[("origin", "https://shop.example")],
        )
        .await;
    assert_eq!(header(&reply, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_for_clients_that_accept_it() {
    let t = TestApp::new().await;
    for sku in ["MUG", "CUP", "JUG", "BOWL"] {
        t.product(sku, 1200, 10).await;
    }
    let plain = t.send_raw("GET", "/api/v1/products", None, &[]).await;
    assert_eq!(header(&plain, "content-encoding"), None);
    let gzip = t
        .send_raw(
            "GET",
            "/api/v1/products",
            None,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(gzip.status, StatusCode::OK);
    assert_eq!(header(&gzip, "content-encoding"), Some("gzip"));
    assert!(gzip.raw.len() < plain.raw.len());
    // A refusal compressed is still a problem document once inflated; its type says so.
    let missing = t
        .send_raw(
            "GET",
            "/api/v1/nothing-here",
            None,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
}

/// A payment provider that is down while `down` is set.
struct Outage {
    sandbox: connectors::effects::payments::SandboxPayments,
    down: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicU32,
}

impl connectors::effects::payments::PaymentProvider for Outage {
    fn charge(
        &self,
        request: &connectors::effects::payments::ChargeRequest,
    ) -> connectors::Result<dataflows::model::PaymentOutcome> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(connectors::Error::Provider {
                message: "the provider is unavailable".into(),
                retryable: true,
            });
        }
        self.sandbox.charge(request)
    }

    fn refund(
        &self,
        request: &connectors::effects::payments::RefundRequest,
    ) -> connectors::Result<bool> {
        self.sandbox.refund(request)
    }
}

async fn providers(t: &TestApp) -> serde_json::Value {
    t.send_raw("GET", "/health/ready", None, &[]).await.body["providers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_wait_pending_while_the_payment_circuit_is_open_and_complete_after() {
    let dir = tempfile::tempdir().unwrap();
    let outage = std::sync::Arc::new(Outage {
        sandbox: connectors::effects::payments::SandboxPayments::open(
            dir.path().join("sandbox-payments.jsonl"),
        )
        .unwrap(),
        down: true.into(),
        calls: 0.into(),
    });
    let mut config = crate::support::test_config();
    config.data_dir = dir.path().to_path_buf();
    config.gateway.breaker_failures = 2;
    config.gateway.breaker_cool_down_ms = 300;
    let t = TestApp::open_with(dir, config, Some(outage.clone())).await;
    let product = t.product("MUG", 1200, 5).await;
    let user = t.user("ann@example.com").await;
    let placed = t.paid_order(&user, &product, 1, "4242424242424242").await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order = placed.body["id"].as_str().unwrap().to_string();
    // The provider keeps failing: the circuit opens, and the order waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while providers(&t).await["payment"] != "open" {
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never opened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let waiting = t.get(&format!("/api/v1/orders/{order}")).await;
    assert_eq!(waiting.body["status"], "reserved", "{:?}", waiting.body);
    assert!(outage.calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    // Back up: a probe after the cool-down closes the circuit and the order goes on.
    outage
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Retries back off (up to 30 s apart): wait on the order, not on a set time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = t.get(&format!("/api/v1/orders/{order}")).await.body["status"].clone();
        if status == "shipped" || status == "completed" {
            break;
        }
        assert!(
            status == "reserved" || status == "confirmed",
            "the order must wait, not fail: {status}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the order never went on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(providers(&t).await["payment"], "closed");
}

/// Public catalog reads come from memory while the catalog stands still, and never
/// after a change has been acknowledged: the writer reads its write, and so does
/// everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_are_cached_until_the_catalog_changes_and_revalidate_with_etags() {
    let t = TestApp::new().await;
    let product = t.product("TEA-1", 450, 10).await;
    let path = format!("/api/v1/products/{product}");
    // The product's forecast comes with the metric views, a step behind its stock: a
    // change to the catalog too.
    let views = &t.app.views;
    views
        .wait_for_metrics(views.frontier(), Duration::from_secs(30))
        .await
        .unwrap();
    let first = t.send_raw("GET", &path, None, &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(header(&first, "x-cache"), Some("miss"));
    assert_eq!(header(&first, "cache-control"), Some("no-cache"));
    let tag = header(&first, "etag").unwrap().to_string();
    assert!(tag.starts_with("W/\""), "{tag}");
    let again = t.send_raw("GET", &path, None, &[]).await;
    assert_eq!(header(&again, "x-cache"), Some("hit"));
    assert_eq!(header(&again, "etag"), Some(tag.as_str()));
    assert_eq!(again.raw, first.raw);
    let revalidated = t
        .send_raw("GET", &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert!(revalidated.raw.is_empty());
    // Each read has a tag of its own.
    let list = t.send_raw("GET", "/api/v1/products", None, &[]).await;
    assert_ne!(header(&list, "etag"), Some(tag.as_str()));
    let other = t
        .send_raw("GET", "/api/v1/products", None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(other.status, StatusCode::OK);

    // What is not the catalog leaves it cached.
    t.user("ann@example.com").await;
    views
        .wait_for_metrics(views.frontier(), Duration::from_secs(30))
        .await
        .unwrap();
    let unmoved = t.send_raw("GET", &path, None, &[]).await;
    assert_eq!(
        header(&unmoved, "x-cache"),
        Some("hit"),
        "{:?} then {:?}",
        header(&again, "etag"),
        header(&unmoved, "etag")
    );

    // A change to the product, and one to its stock, each show at once.
    let renamed = t.put(&path, json!({"name": "Green tea"})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
    let fresh = t
        .send_raw("GET", &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.body["name"], "Green tea");
    assert_eq!(header(&fresh, "x-cache"), Some("miss"));
    let tag = header(&fresh, "etag").unwrap().to_string();
    let adjusted = t
        .post(
            "/api/v1/inventory/adjust",
            json!({"product_id": product, "delta": -4}),
        )
        .await;
    assert_eq!(adjusted.status, StatusCode::OK, "{:?}", adjusted.body);
    let fresh = t
        .send_raw("GET", &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.body["stock"]["on_hand"], 6);
    let availability = format!("/api/v1/inventory/availability?product_id={product}");
    let stock = t.send_raw("GET", &availability, None, &[]).await;
    assert_eq!(stock.body["items"][0]["available"], 6);
    let user = t.user("bob@example.com").await;
    let order = t.order(&user, &product, 2).await;
    assert!(order.status.is_success(), "{:?}", order.body);
    let stock = t.send_raw("GET", &availability, None, &[]).await;
    assert_eq!(header(&stock, "x-cache"), Some("miss"));
    assert_eq!(stock.body["items"][0]["available"], 4);
    // Misses are not kept: a product created after a 404 is found.
    let missing = t
        .send_raw("GET", "/api/v1/products/prd_later", None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(header(&missing, "etag").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_cache_can_be_turned_off() {
    let t = TestApp::configured(|config| config.gateway.catalog_cache = false).await;
    let product = t.product("TEA-1", 450, 10).await;
    let path = format!("/api/v1/products/{product}");
    for _ in 0..2 {
        let reply = t.send_raw("GET", &path, None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(header(&reply, "etag").is_none());
        assert!(header(&reply, "x-cache").is_none());
    }
}

/// A version being retired says so on every answer, and past its sunset answers 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_version_announces_its_sunset_and_then_answers_gone() {
    let retire = |sunset_at: &str| serving::gateway::Retirement {
        prefix: "/api/v1".into(),
        deprecated_at: "2026-01-01T00:00:00Z".into(),
        sunset_at: Some(sunset_at.into()),
        link: Some("https://docs.example/migrate".into()),
    };
    let t = TestApp::configured(|config| {
        config.gateway.retired = vec![retire("2999-06-30T12:00:00Z")];
    })
    .await;
    let reply = t.send_raw("GET", "/api/v1/products", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "deprecation"), Some("@1767225600"));
    assert_eq!(
        header(&reply, "sunset"),
        Some("Sun, 30 Jun 2999 12:00:00 GMT")
    );
    assert_eq!(
        header(&reply, "link"),
        Some("<https://docs.example/migrate>; rel=\"deprecation\"")
    );
    // Other paths are not that version.
    let probe = t.send_raw("GET", "/health/live", None, &[]).await;
    assert_eq!(header(&probe, "deprecation"), None);

    let t = TestApp::configured(|config| {
        config.gateway.retired = vec![retire("2026-06-30T00:00:00Z")];
    })
    .await;
    let gone = t.send_raw("GET", "/api/v1/products", None, &[]).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.content_type, "application/problem+json");
    assert_eq!(gone.body["code"], "version_retired");
    assert!(gone.request_id.is_some());
    assert_eq!(
        header(&gone, "sunset"),
        Some("Tue, 30 Jun 2026 00:00:00 GMT")
    );
}

/// A request's id (`X-Correlation-Id` when the caller sends one) goes into the commands
/// it sends, so a command in the log leads back to its request and its log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_the_log_carry_the_id_of_the_request_that_sent_them() {
    let t = TestApp::new().await;
    let created = t
        .send(
            "POST",
            "/api/v1/products",
            Some(r#"{"sku": "TEA-1", "name": "Tea", "price_cents": 450, "currency": "EUR"}"#),
            &[("x-correlation-id", "checkout-7f3a")],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.request_id.as_deref(), Some("checkout-7f3a"));
    let minted = t.user("ann@example.com").await;
    let logged: Vec<dataflows::model::Envelope> = t
        .app
        .log
        .read_from(0)
        .unwrap()
        .map(|record| serde_json::from_slice(&record.unwrap().payload).unwrap())
        .collect();
    let product = logged
        .iter()
        .find(|envelope| {
            matches!(
                envelope.command,
                dataflows::model::Command::CreateProduct { .. }
            )
        })
        .unwrap();
    assert_eq!(product.request_id.as_deref(), Some("checkout-7f3a"));
    // Without one from the caller, the id the server made and answered with.
    let user = logged
        .iter()
        .find(|envelope| {
            matches!(&envelope.command, dataflows::model::Command::CreateUser { user_id, .. } if **user_id == *minted)
        })
        .unwrap();
    let id = user.request_id.as_deref().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    // A caller's own `X-Request-Id` is kept too; an unusable one is replaced.
    let kept = t
        .send_raw(
            "GET",
            "/api/v1/products",
            None,
            &[("x-request-id", "edge-91")],
        )
        .await;
    assert_eq!(kept.request_id.as_deref(), Some("edge-91"));
    let long = "x".repeat(201);
    let replaced = t
        .send_raw("GET", "/api/v1/products", None, &[("x-request-id", &long)])
        .await;
    let made = replaced.request_id.as_deref().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_describes_itself_and_serves_its_docs_without_a_cdn() {
    let t = TestApp::new().await;
    let document = t.send_raw("GET", "/api/v1/openapi.json", None, &[]).await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/orders/{id}") && paths.contains_key("/oauth2/token"));
    let schemes = &document.body["components"]["securitySchemes"];
    assert!(schemes["bearer"].is_object() && schemes["apiKey"].is_object());
    let docs = t.send_raw("GET", "/docs", None, &[]).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.content_type.starts_with("text/html"));
    let page = String::from_utf8(docs.raw.clone()).unwrap();
    assert!(page.contains("/api/v1/openapi.json"));
    // Everything it needs is in the page: no scripts or styles from elsewhere.
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "self-contained"
    );
    assert!(!page.contains("https://") && !page.contains("http://"));
}

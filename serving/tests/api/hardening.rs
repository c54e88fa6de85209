//! Defects found in review, each pinned by the test that failed before its fix: answers
//! that describe the wrong resource, limits a client could step past, input that reached
//! the log unchecked, and clients that could hold the server.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use serving::config::{Config, HttpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{all_at_once, Reply, TestApp, ADMIN_KEY};

fn assert_problem(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(
        reply.content_type, "application/problem+json",
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["code"], code, "{:?}", reply.body);
    assert!(reply.request_id.is_some());
}

/// A paid order of `cents`, settled; returns its payment id.
async fn paid_order(t: &TestApp, cents: i64) -> String {
    let product = t.product(&format!("PAID-{cents}"), cents, 10).await;
    let user = t.user(&format!("paid{cents}@example.com")).await;
    let order = t.paid_order(&user, &product, 1, "4242424242424242").await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
    let id = order.body["id"].as_str().unwrap();
    let settled = t.get(&format!("/api/v1/orders/{id}?wait=settled")).await;
    assert!(
        matches!(
            settled.body["status"].as_str(),
            Some("confirmed" | "shipped")
        ),
        "{:?}",
        settled.body
    );
    settled.body["payment_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_each_answer_the_refund_they_created() {
    let t = TestApp::new().await;
    let payment = paid_order(&t, 10_000).await;
    let path = format!("/api/v1/payments/{payment}/refund");
    let replies = all_at_once(20, |n| {
        let (t, path) = (&t, path.clone());
        async move {
            t.post(
                &path,
                json!({"amount_cents": 1 + n as i64, "reason": format!("refund {n}")}),
            )
            .await
        }
    })
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        assert_eq!(reply.body["amount_cents"], 1 + n as i64, "{:?}", reply.body);
        ids.insert(reply.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20, "every refund answered once: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_refund_answers_the_original_refund() {
    let t = TestApp::new().await;
    let payment = paid_order(&t, 5_000).await;
    let path = format!("/api/v1/payments/{payment}/refund");
    let body = json!({"amount_cents": 100}).to_string();
    let key = [("idempotency-key", "refund-once")];
    let first = t.send("POST", &path, Some(&body), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let later = t.post(&path, json!({"amount_cents": 200})).await;
    assert_eq!(later.status, StatusCode::CREATED, "{:?}", later.body);
    let replay = t.send("POST", &path, Some(&body), &key).await;
    assert_eq!(replay.status, StatusCode::CREATED, "{:?}", replay.body);
    assert_eq!(replay.body["id"], first.body["id"]);
    assert_eq!(replay.body["amount_cents"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_takes_at_most_a_hundred_refunds() {
    let t = TestApp::new().await;
    let payment = paid_order(&t, 1_000).await;
    let path = format!("/api/v1/payments/{payment}/refund");
    for _ in 0..100 {
        let reply = t.post(&path, json!({"amount_cents": 1})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    let refused = t.post(&path, json!({"amount_cents": 1})).await;
    assert_problem(&refused, StatusCode::CONFLICT, "too_many_refunds");
    let row = t.get(&format!("/api/v1/payments/{payment}")).await;
    assert_eq!(
        row.body["refunds"].as_array().map(Vec::len),
        Some(100),
        "{:?}",
        row.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_domain_cancels_for_fraud_or_a_declined_payment() {
    let t = TestApp::new().await;
    let product = t.product("CANCEL", 100, 5).await;
    let user = t.user("cancel@example.com").await;
    let order = t.order(&user, &product, 1).await;
    let id = order.body["id"].as_str().unwrap();
    let path = format!("/api/v1/orders/{id}/cancel");
    for reason in [
        "fraud_suspected",
        "payment_declined",
        "out_of_stock",
        "invalid_items",
    ] {
        let reply = t.post(&path, json!({"reason": reason})).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(
            reply.body["errors"][0]["field"], "reason",
            "{:?}",
            reply.body
        );
    }
    assert_eq!(
        t.get(&format!("/api/v1/orders/{id}")).await.body["cancel_reason"],
        Value::Null
    );
    let cancelled = t.post(&path, json!({"reason": "customer_request"})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["cancel_reason"], "customer_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_at_the_edges_of_its_bounds_is_refused() {
    let t = TestApp::new().await;
    let product = t.product("EDGE", 100, 5).await;
    let euro = t
        .post("/api/v1/products", json!({"sku": "EURO", "name": "Euro product", "price_cents": 100, "currency": "EUR", "initial_stock": 5}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let user = t.user("edge@example.com").await;

    let adjust = t
        .post(
            "/api/v1/inventory/adjust",
            json!({"product_id": product, "delta": i64::MIN}),
        )
        .await;
    assert_problem(
        &adjust,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(t.stock(&product).await["on_hand"], 5);

    // Two lines of one product add up past the per-line bound.
    let merged = t
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "items": [{"product_id": product, "quantity": 600_000}, {"product_id": product, "quantity": 600_000}]}),
        )
        .await;
    assert_problem(
        &merged,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(
        merged.body["errors"][0]["field"], "items[0].quantity",
        "{:?}",
        merged.body
    );
    // Within the bound they merge into one line.
    let ok = t
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}, {"product_id": product, "quantity": 2}]}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    assert_eq!(
        ok.body["items"].as_array().map(Vec::len),
        Some(1),
        "{:?}",
        ok.body
    );
    assert_eq!(ok.body["items"][0]["quantity"], 3);

    // A cart holds one currency.
    let cart = t.post("/api/v1/carts", json!({"user_id": user})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let items = format!("/api/v1/carts/{cart}/items");
    assert_eq!(
        t.put(&items, json!({"product_id": product, "quantity": 1}))
            .await
            .status,
        StatusCode::OK
    );
    let mixed = t
        .put(&items, json!({"product_id": euro, "quantity": 1}))
        .await;
    assert_problem(
        &mixed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let view = t.get(&format!("/api/v1/carts/{cart}")).await.body;
    assert_eq!(
        (view["currency"].as_str(), view["subtotal_cents"].as_i64()),
        (Some("USD"), Some(100)),
        "{view:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_one_header_of_visible_text() {
    let t = TestApp::new().await;
    let body =
        json!({"sku": "KEYS", "name": "Keys", "price_cents": 1, "currency": "USD"}).to_string();
    let two = t
        .send(
            "POST",
            "/api/v1/products",
            Some(&body),
            &[("idempotency-key", "a"), ("idempotency-key", "b")],
        )
        .await;
    assert_problem(&two, StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    let tab = t
        .send(
            "POST",
            "/api/v1/products",
            Some(&body),
            &[("idempotency-key", "a\tb")],
        )
        .await;
    assert_problem(&tab, StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    assert_eq!(
        t.get("/api/v1/products/search?q=KEYS").await.body["items"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_are_compared_as_people_read_them_and_text_is_visible() {
    let t = TestApp::new().await;
    t.user("Straße@Example.com").await;
    for same in ["strasse@example.com", "ＳＴＲＡＳＳＥ@example.com"] {
        let reply = t
            .post(
                "/api/v1/users",
                json!({"email": same, "password": "long enough", "name": "Twin"}),
            )
            .await;
        assert_problem(&reply, StatusCode::CONFLICT, "email_taken");
    }
    for (email, name) in [
        ("x@a..b", "Fine"),
        ("ok@example.com", "evil\u{202E}txt.exe"),
        ("ok@example.com", "zero\u{200B}width"),
    ] {
        let reply = t
            .post(
                "/api/v1/users",
                json!({"email": email, "password": "long enough", "name": name}),
            )
            .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let sku = t
        .post(
            "/api/v1/products",
            json!({"sku": "A\u{2066}B", "name": "N", "price_cents": 1, "currency": "USD"}),
        )
        .await;
    assert_problem(&sku, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_path_parameters_get_problem_documents() {
    let t = TestApp::new().await;
    for path in [
        "/api/v1/orders/%FF%FE",
        "/api/v1/users/%C3%28/orders",
        "/api/v1/products/%80",
    ] {
        let reply = t.get(path).await;
        assert_problem(&reply, StatusCode::BAD_REQUEST, "invalid_path");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_past_the_hashing_pool_are_asked_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        http: HttpConfig {
            password_hashes: 1,
            password_hash_queue: 1,
            ..HttpConfig::default()
        },
        ..Config::default()
    };
    let t = TestApp::open_config(dir, config).await;
    let replies = all_at_once(12, |n| {
        let t = &t;
        async move {
            t.post("/api/v1/users", json!({"email": format!("burst{n}@example.com"), "password": "long enough", "name": "Burst"}))
                .await
        }
    })
    .await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let busy: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(created + busy.len(), 12, "only 201 or 503");
    assert!(
        created >= 1 && !busy.is_empty(),
        "{created} created, {} busy",
        busy.len()
    );
    for reply in busy {
        assert_problem(reply, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    // Once the burst is over the pool takes sign-ups again.
    t.user("after@example.com").await;
}

/// The real server loop on a loopback port, with `limits`.
async fn serve(t: &TestApp, limits: HttpConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    serve_with(t, limits, None).await
}

/// `serve`, over TLS when given an acceptor.
async fn serve_with(
    t: &TestApp,
    limits: HttpConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = t.router.clone();
    tokio::spawn(async move {
        serving::server::serve(listener, router, &limits, tls, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop)
}

/// The test certificate authority, a certificate it signed for `localhost` and
/// 127.0.0.1, and that certificate's key (`fixtures/`, valid until 2126).
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/api/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_with_the_configured_certificate_and_plain_http_is_not() {
    use std::sync::Arc;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let t = TestApp::new().await;
    let acceptor =
        serving::tls::acceptor(&fixture("localhost.crt"), &fixture("localhost.key")).unwrap();
    let (addr, _stop) = serve_with(&t, HttpConfig::default(), Some(acceptor)).await;
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(fixture("ca.crt")).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake verifies the server's certificate");
    tls.write_all(b"GET /api/v1/products HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"items\""), "{answer}");

    // Plain HTTP on the HTTPS port is not served.
    let mut plain = send_raw(&addr, b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let seen = read_to_close(&mut plain).await;
    assert!(!seen.contains("HTTP/1.1 200"), "{seen}");

    // Files that are not a certificate and its key are refused, saying which.
    let error = serving::tls::acceptor(&fixture("localhost.crt"), &fixture("ca.crt"))
        .err()
        .expect("a certificate is not a key");
    assert!(error.contains("holds no PEM private key"), "{error}");
    let error = serving::tls::acceptor(&fixture("missing.crt"), &fixture("localhost.key"))
        .err()
        .expect("no such file");
    assert!(error.contains("cannot read"), "{error}");
}

/// Opens a connection to `addr` and sends `bytes` on it.
async fn send_raw(addr: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Reads until the server closes the connection (bounded, so a server that never does
/// fails the test rather than hanging it).
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut seen))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&seen).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let t = TestApp::new().await;
    let (addr, _stop) = serve(
        &t,
        HttpConfig {
            header_read_timeout_ms: 300,
            body_read_timeout_ms: 300,
            ..HttpConfig::default()
        },
    )
    .await;
    // Half a request head, then nothing: closed without a response.
    let mut slow_head = send_raw(&addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await;
    let answer = read_to_close(&mut slow_head).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A whole head and part of the body: 408, as a problem document.
    let head = format!("POST /api/v1/products HTTP/1.1\r\nHost: x\r\nX-API-Key: {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"sku\":");
    let mut slow_body = send_raw(&addr, head.as_bytes()).await;
    let answer = read_to_close(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // A prompt client is served as ever.
    let mut prompt = send_raw(
        &addr,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(read_to_close(&mut prompt).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_for_a_free_one() {
    let t = TestApp::new().await;
    let (addr, _stop) = serve(
        &t,
        HttpConfig {
            max_connections: 1,
            ..HttpConfig::default()
        },
    )
    .await;
    // The one slot is taken by a keep-alive connection that has been answered once.
    let mut first = send_raw(&addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buffer = [0u8; 1024];
    let read = first.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    // A second client connects (the kernel queues it) and asks.
    let mut second = send_raw(
        &addr,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    // The first still works; when it leaves, the second is served.
    first
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(read_to_close(&mut second).await.starts_with("HTTP/1.1 200"));
}

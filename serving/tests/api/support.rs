use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use serving::config::Config;
use serving::runtime::Quiet;
use serving::{api, executors, reports, Tidemark};
use tower::ServiceExt;

/// The bootstrap administrator key of every test instance: requests sent without
/// credentials of their own carry it (`send`); `send_raw` sends exactly what it is given.
pub const ADMIN_KEY: &str = "test-bootstrap-admin-key-0123456789";

pub struct TestApp {
    pub app: Arc<Tidemark>,
    pub router: Router,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
    pub request_id: Option<String>,
    pub headers: axum::http::HeaderMap,
    /// The body as it came, for answers that are not JSON.
    pub raw: Vec<u8>,
}

/// The defaults, but for the public rate limit: every request a test sends without
/// credentials comes from one address ("unknown": the router is called in process), and
/// the matrix alone sends more than the default 100 a minute.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.gateway.public_per_minute = 100_000;
    config
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_workers(1).await
    }

    pub async fn with_workers(workers: usize) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, workers).await
    }

    pub async fn open(dir: tempfile::TempDir, workers: usize) -> TestApp {
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            workers,
            ..test_config()
        };
        Self::open_config(dir, config).await
    }

    /// An instance on a fresh data directory, with the defaults as `configure` leaves them.
    pub async fn configured(configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..test_config()
        };
        configure(&mut config);
        Self::open_config(dir, config).await
    }

    /// An instance with `config`, whose data directory is `dir`.
    pub async fn open_config(dir: tempfile::TempDir, config: Config) -> TestApp {
        Self::open_with(dir, config, None).await
    }

    /// `open_config`, with a payment provider of the test's own.
    pub async fn open_with(
        dir: tempfile::TempDir,
        mut config: Config,
        payments: Option<Arc<dyn connectors::effects::payments::PaymentProvider>>,
    ) -> TestApp {
        log_to_test_output();
        if config.auth.bootstrap_admin_key.is_none() {
            config.auth.bootstrap_admin_key = Some(serving::config::Secret::new(ADMIN_KEY));
        }
        let app = Tidemark::open_with(config, payments).expect("open");
        let recovering = app.clone();
        tokio::task::spawn_blocking(move || recovering.recover(&mut Quiet))
            .await
            .expect("join")
            .expect("recover");
        serving::auth::Authenticator::publish_signing_keys(&app)
            .await
            .expect("the signing keys are published");
        // As the binary: a follower's leader calls the providers.
        if !app.config.kafka.follow {
            executors::spawn(app.clone());
            reports::spawn(app.clone());
        }
        let router = api::app(app.clone());
        TestApp { app, router, dir }
    }

    /// Stops this instance and opens a new one on the same data directory.
    pub async fn restart(self, workers: usize) -> TestApp {
        let TestApp { app, dir, .. } = self;
        let config = Config {
            workers,
            ..app.config.clone()
        };
        app.shutdown();
        drop(app);
        Self::open_config(dir, config).await
    }

    /// A request as the administrator, unless `headers` carry credentials of their own.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let own = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("x-api-key")
        });
        if own {
            return self.send_raw(method, path, body, headers).await;
        }
        let mut with_key = headers.to_vec();
        with_key.push(("x-api-key", ADMIN_KEY));
        self.send_raw(method, path, body, &with_key).await
    }

    /// The router's response to a request with exactly these headers (and a JSON
    /// content type for a body, unless they name one).
    async fn respond(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> axum::response::Response {
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some()
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible")
    }

    /// A request with exactly these headers (no credentials unless they hold some).
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let response = self.respond(method, path, body, headers).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = response.headers().clone();
        if content_type.starts_with("text/event-stream") {
            // A changefeed never ends: `stream` reads it.
            return Reply {
                status,
                body: Value::Null,
                content_type,
                request_id,
                headers,
                raw: Vec::new(),
            };
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            body,
            content_type,
            request_id,
            headers,
            raw: bytes.to_vec(),
        }
    }

    /// `Authorization: Bearer` with an access token for `user`.
    pub fn bearer(&self, user: &str) -> String {
        let (token, _) =
            self.app
                .auth
                .tokens
                .issue(user, &[], serving::auth::tokens::unix_seconds());
        format!("Bearer {token}")
    }

    /// A request with `credential` (`(header, value)`) and a JSON body.
    pub async fn send_as(
        &self,
        credential: &(&str, String),
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|body| body.to_string());
        let headers = [(credential.0, credential.1.as_str())];
        self.send(method, path, body.as_deref(), &headers).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(&body.to_string()), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send("PUT", path, Some(&body.to_string()), &[]).await
    }

    pub async fn product(&self, sku: &str, price_cents: i64, stock: i64) -> String {
        let reply = self.post("/api/v1/products", json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents, "currency": "USD", "initial_stock": stock})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    pub async fn user(&self, email: &str) -> String {
        let reply = self
            .post(
                "/api/v1/users",
                json!({"email": email, "password": "correct horse battery", "name": "Test User"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    /// Places an order of one line, without a payment method (it waits, reserved).
    pub async fn order(&self, user_id: &str, product_id: &str, quantity: i64) -> Reply {
        let items = json!([{"product_id": product_id, "quantity": quantity}]);
        self.post(
            "/api/v1/orders",
            json!({"user_id": user_id, "items": items}),
        )
        .await
    }

    /// An order paid with the test card `number`.
    pub async fn paid_order(
        &self,
        user_id: &str,
        product_id: &str,
        quantity: i64,
        number: &str,
    ) -> Reply {
        let items = json!([{"product_id": product_id, "quantity": quantity}]);
        self.post(
            "/api/v1/orders",
            json!({"user_id": user_id, "items": items, "payment_method": card(number)}),
        )
        .await
    }

    /// A product's stock levels: `{on_hand, reserved, available}` (without its forecast).
    pub async fn stock(&self, product_id: &str) -> Value {
        let stock = self.product_stock(product_id).await;
        json!({"on_hand": stock["on_hand"], "reserved": stock["reserved"], "available": stock["available"]})
    }

    /// A product's whole `stock` object, its forecast included.
    pub async fn product_stock(&self, product_id: &str) -> Value {
        self.get(&format!("/api/v1/products/{product_id}"))
            .await
            .body["stock"]
            .clone()
    }
}

pub fn card(number: &str) -> Value {
    json!({"type": "card", "card_number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"})
}

/// Warnings and errors (or what `RUST_LOG` asks for) go to the test's captured output,
/// which a failing test prints.
fn log_to_test_output() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Runs `n` requests at once, polled together on this task so that they really are in
/// flight together; answers in the order asked.
pub async fn all_at_once<'a, F, Fut>(n: usize, make: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Reply> + 'a,
{
    let mut pending: Vec<_> = (0..n).map(|i| Box::pin(make(i))).collect();
    let mut replies: Vec<Option<Reply>> = (0..n).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, future) in pending.iter_mut().enumerate() {
            if replies[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(reply) => replies[i] = Some(reply),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    replies.into_iter().map(Option::unwrap).collect()
}

/// One Server-Sent Event.
#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A response body read as Server-Sent Events, as they come.
pub struct EventStream {
    body: Body,
    buffer: String,
}

impl EventStream {
    /// The next event (comments, such as keep-alives, skipped); panics if none comes
    /// within 30 s or the stream ends.
    pub async fn next(&mut self) -> SseEvent {
        let deadline = std::time::Duration::from_secs(30);
        tokio::time::timeout(deadline, self.next_event())
            .await
            .expect("an event within 30 s")
            .expect("the stream goes on")
    }

    /// Waits (up to 30 s) for the stream to end, and panics if an event comes first.
    pub async fn ends(&mut self) {
        let deadline = std::time::Duration::from_secs(30);
        let next = tokio::time::timeout(deadline, self.next_event())
            .await
            .expect("the end within 30 s");
        assert!(next.is_none(), "the stream goes on: {next:?}");
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() && event.id.is_none() {
                    continue; // a comment
                }
                event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(event);
            }
            let frame = self.body.frame().await?.expect("the body reads");
            if let Ok(bytes) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
            }
        }
    }
}

impl TestApp {
    /// Opens a changefeed (`GET` with these headers): its status, and its events if 200.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, EventStream) {
        let response = self.respond("GET", path, None, headers).await;
        let status = response.status();
        (
            status,
            EventStream {
                body: response.into_body(),
                buffer: String::new(),
            },
        )
    }
}

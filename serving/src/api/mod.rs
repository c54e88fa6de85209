//! The HTTP API: `app(state)` builds every route in one place.

mod analytics;
pub mod cache;
mod catalog;
mod changes;
mod dashboards;
pub mod error;
mod events;
pub mod extract;
mod fulfillment;
mod health;
pub mod json;
pub mod keys;
mod oauth;
pub mod openapi;
mod orders;
mod payment_methods;
mod payments;
mod reports;
mod sql;
mod sse;
mod support;
mod users;
pub(crate) mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use axum::Router;
use dataflows::model::{
    log_ts, Command as DomainCommand, Envelope, IdempotencyKey, RejectionKind, Seq,
};
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::runtime::{Submitted, Tidemark};
use error::{ApiError, ApiResult};

pub type App = Arc<Tidemark>;

pub fn app(state: App) -> Router {
    // Public catalog reads, answered from memory while the catalog stands still.
    let cached = middleware::from_fn_with_state(state.clone(), cache::catalog);
    let api = Router::new()
        .route(
            "/products",
            post(catalog::create).merge(get(catalog::list).layer(cached.clone())),
        )
        .route(
            "/products/search",
            get(catalog::search).layer(cached.clone()),
        )
        .route(
            "/products/{id}",
            put(catalog::update).merge(get(catalog::get).layer(cached.clone())),
        )
        .route("/inventory/adjust", post(catalog::adjust))
        .route(
            "/inventory/availability",
            get(catalog::availability).layer(cached),
        )
        .route("/inventory/reserve", post(catalog::reserve))
        .route("/inventory/release", post(catalog::release))
        .route("/inventory/reservations/{id}", get(catalog::reservation))
        .route("/users", post(users::create))
        .route("/users/authenticate", post(users::authenticate))
        .route("/users/search", get(users::search))
        .route(
            "/users/{id}",
            get(users::get).put(users::update).delete(users::delete),
        )
        .route("/users/{id}/orders", get(orders::list_for_user))
        .route("/users/{id}/unlock", post(users::unlock))
        .route("/users/{id}/mfa/enable", post(users::enable_mfa))
        .route("/users/{id}/mfa", axum::routing::delete(users::disable_mfa))
        .route("/users/{id}/sign-ins", get(users::sign_ins))
        .route("/users/{id}/loyalty", get(users::loyalty))
        .route("/support/tickets", get(support::list).post(support::open))
        .route(
            "/support/tickets/{id}",
            get(support::get).put(support::change),
        )
        .route("/support/tickets/{id}/comments", post(support::comment))
        .route("/support/tickets/{id}/chat/stream", get(support::chat))
        .route(
            "/payment-methods",
            get(payment_methods::list).post(payment_methods::create),
        )
        .route(
            "/payment-methods/{id}",
            get(payment_methods::get).delete(payment_methods::delete),
        )
        .route("/users/{id}/sessions", get(users::sessions))
        .route(
            "/users/{id}/sessions/{session_id}",
            axum::routing::delete(users::end_session),
        )
        .route("/carts", post(orders::carts::create))
        .route("/carts/{id}", get(orders::carts::get))
        .route("/carts/{id}/items", put(orders::carts::set_item))
        .route("/orders", post(orders::create))
        .route("/orders/{id}", get(orders::get))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/orders/{id}/status", put(orders::set_status))
        .route("/payments", post(payments::create))
        .route("/payments/{id}", get(payments::get))
        .route("/payments/{id}/refund", post(payments::refund))
        .route("/shipments/{id}", get(fulfillment::get))
        .route("/shipments/{id}/deliver", post(fulfillment::deliver))
        .route("/sql", post(sql::query))
        .route("/kpis", get(analytics::kpis))
        .route("/reports", get(reports::list))
        .route("/reports/templates", get(reports::templates))
        .route("/reports/generate", post(reports::generate))
        .route("/reports/schedule", post(reports::schedule))
        .route("/reports/schedules", get(reports::schedules))
        .route(
            "/reports/schedules/{id}",
            get(reports::get_schedule).delete(reports::delete_schedule),
        )
        .route("/reports/{id}", get(reports::get))
        .route("/reports/{id}/download", get(reports::download))
        .route("/views/{name}/changes", get(changes::changes))
        .route(
            "/dashboards",
            get(dashboards::list).post(dashboards::create),
        )
        .route(
            "/dashboards/{id}",
            get(dashboards::get)
                .put(dashboards::update)
                .delete(dashboards::delete),
        )
        .route("/dashboards/{id}/stream", get(dashboards::stream))
        .route("/api-keys", post(keys::create).get(keys::list))
        .route("/api-keys/{id}", get(keys::get).delete(keys::revoke))
        .route("/api-keys/{id}/rotate", post(keys::rotate))
        // Runs second: the caller and the route's rule (`auth::policy`).
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        // Runs first: keys are in the views, so nothing is decided before replay ends.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ready))
        .route_layer(middleware::from_fn(crate::observability::mark_route))
        // Static: served before start-up has caught up too.
        .route("/events/schemas", get(events::schemas))
        .route("/events/schemas/{type}", get(events::schema))
        .route("/openapi.json", get(openapi::openapi));
    let gateway = state.config.gateway.clone();
    // OAuth 2.0, beside the versioned API as clients expect it, behind the same layers.
    let oauth = Router::new()
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/oauth2/token", post(oauth::token))
        .route(
            "/oauth2/authorize",
            get(oauth::authorize).post(oauth::authorize),
        )
        .route(
            "/oauth2/userinfo",
            get(oauth::userinfo).post(oauth::userinfo),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ready))
        .route_layer(middleware::from_fn(crate::observability::mark_route));
    let mut router = Router::new()
        .nest("/api/v1", api)
        .merge(oauth)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/docs", get(openapi::docs))
        .route("/dashboard", get(dashboards::page))
        .route("/dashboard/{id}", get(dashboards::page))
        .route("/dashboard/assets/{file}", get(dashboards::asset))
        .route("/.well-known/openid-configuration", get(oauth::discovery))
        .route_layer(middleware::from_fn(crate::observability::mark_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(gateway.request_timeout_ms),
        ));
    // Inside the request id layer: a retired version's refusal has an id too.
    if !gateway.retired.is_empty() {
        // Checked when the configuration was loaded.
        let announced = gateway
            .retired
            .iter()
            .filter_map(|retired| retired.announcement().ok())
            .collect();
        router = router.layer(middleware::from_fn_with_state(
            Arc::new(announced),
            crate::gateway::retirements,
        ));
    }
    let mut router = router
        .layer(middleware::from_fn(request_id))
        // Sees each answer as the client gets it, problem documents and refusals too.
        .layer(middleware::from_fn(crate::observability::track));
    // Outside the request id layer, which rewrites plain-text errors and so must read
    // them uncompressed; CORS outermost, so a preflight is answered before anything runs.
    if gateway.compression {
        router = router.layer(CompressionLayer::new());
    }
    if let Some(cors) = crate::gateway::cors(&gateway.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// Every error the application answers is a problem document: an error some layer or
/// extractor of the framework wrote as plain text (or with no body) is rewritten, its
/// text as the detail and its headers (`Allow`, `Retry-After`, ...) kept. JSON bodies
/// (problem documents, the readiness report) pass as they are.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_none_or(|value| value.as_bytes().starts_with(b"text/"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let reason = status.canonical_reason().unwrap_or("error");
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let detail = if text.trim().is_empty() || status.is_server_error() {
        reason.to_string()
    } else {
        text.trim().to_string()
    };
    let mut problem = ApiError::new(status, code, detail).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

/// The public keys access tokens are signed with (RFC 7517).
async fn jwks(State(app): State<App>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(app.auth.jwks(&app))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The API answers 503 until start-up has replayed the log into the views.
async fn require_ready(State(app): State<App>, request: Request, next: Next) -> Response {
    if !app.is_ready() {
        return ApiError::unavailable("tidemark is replaying its log; try again shortly")
            .into_response();
    }
    // Reads are served from the views; commands need the log.
    if request.method() != axum::http::Method::GET && !app.log_available() {
        return ApiError::unavailable(
            "the command log is unreachable; try again shortly (with the same Idempotency-Key)",
        )
        .into_response();
    }
    next.run(request).await
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

tokio::task_local! {
    /// The id of the request the current task serves (`request_id`).
    static REQUEST_ID_OF_TASK: dataflows::model::Str;
}

/// The id of the request being served, on the task that serves it.
pub(crate) fn current_request_id() -> Option<dataflows::model::Str> {
    REQUEST_ID_OF_TASK.try_with(Clone::clone).ok()
}

/// Every response carries `X-Request-Id` (the caller's `X-Correlation-Id`, else its
/// `X-Request-Id`, when sent),
/// and every error is a problem document (`as_problem`). One layer for both: each
/// layer is a boxed future more per request. The id goes with the request: into the
/// log lines written while it is served (a `request` span) and into the commands it
/// sends (`Envelope::request_id`), and from them into their events (the bus envelope's
/// and the history's `request_id`).
async fn request_id(request: Request, next: Next) -> Response {
    let usable = |value: &&HeaderValue| {
        value
            .to_str()
            .is_ok_and(|s| !s.is_empty() && s.len() <= 200)
    };
    let headers = request.headers();
    let id = (headers.get(&CORRELATION_ID).filter(usable))
        .or_else(|| headers.get(&REQUEST_ID).filter(usable))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .expect("a uuid is a valid header")
        });
    let text: dataflows::model::Str = id.to_str().unwrap_or_default().into();
    let span = tracing::info_span!(
        "request",
        request_id = %text,
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = request.uri().path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if crate::telemetry::tracing_on() {
        crate::telemetry::follow_caller(&span, request.headers());
    }
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let served = REQUEST_ID_OF_TASK.scope(text, next.run(request).instrument(span.clone()));
    let mut response = as_problem(served.await).await;
    if let Some(route) = response.extensions().get::<crate::observability::Route>() {
        span.record("http.route", route.0.as_str());
        if crate::telemetry::tracing_on() {
            crate::telemetry::rename(&span, format!("{method} {}", route.0));
        }
    }
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    // The access log: at debug, as a busy server answers thousands a second
    // (`TIDEMARK_LOG=info,tidemark::access=debug`).
    span.in_scope(|| {
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(target: "tidemark::access", status, took_ms, "served");
    });
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

/// Reads a page from the newest snapshot on a blocking thread. A page of a long list
/// takes milliseconds of CPU to render; on an async worker it would hold up every
/// request queued behind it, commands included. At most `http.page_readers` pages
/// render at once, so that scans queue behind each other rather than crowd the
/// dataflow's worker off the cores. The snapshot is an owned `Arc`, so the read needs
/// no lock wherever it runs.
pub(crate) async fn read_page<T: Send + 'static>(
    app: &App,
    read: impl FnOnce(&queries::Snapshot) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let snapshot = app.views.read();
    render(app, move || read(&snapshot)).await?
}

/// Runs `work` (rendering a long list) on a blocking thread, at most
/// `http.page_readers` at once, as `read_page` does.
pub(crate) async fn render<T: Send + 'static>(
    app: &App,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    let turn = app
        .page_readers
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || {
        let done = work();
        drop(turn);
        done
    })
    .await
    .map_err(ApiError::internal)
}

/// The user an order belongs to, if the order exists: the owner of its payment and
/// its shipment too.
pub(crate) fn order_owner(
    snapshot: &queries::Snapshot,
    order_id: &str,
) -> Option<dataflows::model::Str> {
    snapshot
        .orders
        .get(order_id)
        .map(|order| order.user_id.clone())
}

/// An id for a new resource. With an `Idempotency-Key` the id is derived from it, so a
/// retried request names the same resource.
/// `201 Created` with `Location: location` (a path under this server).
pub(crate) fn created(location: String, body: impl IntoResponse) -> Response {
    let mut response = (StatusCode::CREATED, body).into_response();
    let location = HeaderValue::from_str(&location).expect("paths of ids are ASCII");
    response
        .headers_mut()
        .insert(axum::http::header::LOCATION, location);
    response
}

pub(crate) fn new_id(prefix: &str, idempotency: &Option<IdempotencyKey>) -> String {
    match idempotency {
        Some(key) => {
            let digest = Sha256::digest(format!("{prefix}:{}", key.key).as_bytes());
            format!("{prefix}_{}", &hex::encode(digest)[..32])
        }
        None => format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Whether a request is new or repeats an earlier one with the same `Idempotency-Key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Fresh,
    /// The same request was accepted before, as the command at this log position.
    Replay(Seq),
}

/// Checks the `Idempotency-Key` against the keys seen: the same request again is a
/// replay (answered from the views, or with the first request's error); another
/// request under a used key is 409.
pub(crate) fn admit(app: &Tidemark, idempotency: &Option<IdempotencyKey>) -> ApiResult<Admission> {
    let Some(key) = idempotency else {
        return Ok(Admission::Fresh);
    };
    let snapshot = app.views.read();
    let now = log_ts(snapshot.frontier);
    let Some(first) = snapshot
        .idempotency
        .get(&key.key)
        .filter(|first| first.is_live(now))
    else {
        return Ok(Admission::Fresh);
    };
    if first.fingerprint != key.fingerprint {
        return Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ));
    }
    match snapshot.rejection(first.first_seq) {
        Some(rejection) => Err(rejection.into()),
        None => Ok(Admission::Replay(first.first_seq)),
    }
}

/// Appends a command and waits for its effects; a refusal becomes the matching error.
pub(crate) async fn run(
    app: &Tidemark,
    idempotency: Option<IdempotencyKey>,
    command: DomainCommand,
) -> ApiResult<Submitted> {
    let submitted = app
        .submit(Envelope {
            idempotency,
            command,
            request_id: current_request_id(),
        })
        .await?;
    match &submitted.rejection {
        None => Ok(submitted),
        Some(rejection) => match rejection.kind {
            RejectionKind::Duplicate {
                first_seq,
                same_request: true,
            } => match app.views.read().rejection(first_seq) {
                Some(first) => Err(first.into()),
                None => Ok(submitted),
            },
            _ => Err(rejection.into()),
        },
    }
}

/// `run`, unless the request is a replay. Returns the log position of the command that
/// the request's answer describes: this one, or the one a replay repeats.
pub(crate) async fn run_fresh(
    app: &Tidemark,
    admission: Admission,
    idempotency: Option<IdempotencyKey>,
    command: DomainCommand,
) -> ApiResult<Seq> {
    match admission {
        Admission::Fresh => Ok(run(app, idempotency, command).await?.seq),
        Admission::Replay(first_seq) => Ok(first_seq),
    }
}

//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use super::App;

/// The process answers.
#[derive(Serialize, JsonSchema)]
pub struct Live {
    /// `ok`.
    status: &'static str,
}

pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Whether this server serves, and how far it has read.
#[derive(Serialize, JsonSchema)]
pub struct Readiness {
    /// `ready`; `starting` while the views catch up with the log; `log_unavailable`
    /// while the log takes no appends.
    status: &'static str,
    /// The position the next command will get.
    log_end: u64,
    /// How far the views have read (dataflow time).
    frontier: u64,
    /// Calls made whose results could not be logged: a restart retries them.
    effects_unrecorded: u64,
    /// Providers' circuits: `open` while calls are paused after failures.
    providers: Providers,
}

#[derive(Serialize, JsonSchema)]
pub struct Providers {
    /// `closed`, `open` or `half_open`.
    payment: &'static str,
    carrier: &'static str,
}

/// Ready once the views have caught up with the log and the log takes appends.
pub async fn ready(State(app): State<App>) -> (StatusCode, Json<Readiness>) {
    let (status, word) = match (app.is_ready(), app.log_available()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    let body = Readiness {
        status: word,
        log_end: app.log.durable_end(),
        frontier: app.views.frontier(),
        effects_unrecorded: app
            .effects_unrecorded
            .load(std::sync::atomic::Ordering::Acquire) as u64,
        providers: Providers {
            payment: app.payment_breaker.state(),
            carrier: app.carrier_breaker.state(),
        },
    };
    (status, Json(body))
}

//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::App;

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once the views have caught up with the log and the log takes appends.
pub async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let (status, word) = match (app.is_ready(), app.log_available()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": word,
        "log_end": app.log.durable_end(),
        "frontier": app.views.frontier(),
        // Calls made whose results could not be logged: a restart retries them.
        "effects_unrecorded": app.effects_unrecorded.load(std::sync::atomic::Ordering::Acquire),
        // Providers' circuits: `open` while calls are paused after failures.
        "providers": {
            "payment": app.payment_breaker.state(),
            "carrier": app.carrier_breaker.state(),
        },
    });
    (status, Json(body))
}

//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::App;

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once the log is open and the views have caught up with it.
pub async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let body = json!({
        "status": if app.is_ready() { "ready" } else { "starting" },
        "log_end": app.log.durable_end(),
        "frontier": app.views.frontier(),
    });
    let status = if app.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

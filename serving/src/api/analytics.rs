//! Key figures (`GET /api/v1/kpis`), read from the metric views.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{json::rfc3339, ApiResult, App};

/// Orders per minute, average order value, payment success and inventory turnover, now
/// and over the last hour of log time, at the newest frontier.
pub async fn kpis(State(app): State<App>) -> ApiResult<Json<Value>> {
    let timeout = std::time::Duration::from_millis(app.config.command_timeout_ms);
    let snapshot = app
        .views
        .read_settled(timeout)
        .await
        .map_err(crate::runtime::Error::from)?;
    let kpis = snapshot.kpis();
    Ok(Json(json!({
        "as_of": rfc3339(kpis.as_of),
        "frontier": snapshot.frontier,
        "orders_per_minute": kpis.orders_per_minute,
        "average_order_cents": kpis.average_order_cents,
        "payment_success_rate": kpis.payment_success_rate,
        "inventory_turnover": kpis.inventory_turnover,
    })))
}

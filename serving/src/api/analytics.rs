//! Key figures (`GET /api/v1/kpis`), read from the metric views.

use axum::extract::State;
use axum::Json;
use std::collections::BTreeMap;

use dataflows::model::Str;
use queries::{Average, OrderRate, SuccessRate, Turnover};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::json::{to_value, Rfc3339};
use super::{ApiResult, App};

/// Orders per minute, average order value, payment success and inventory turnover, now
/// and over the last hour of log time, at the newest frontier; and the API's service
/// levels over the last hour.
pub async fn kpis(State(app): State<App>) -> ApiResult<Json<Value>> {
    let timeout = std::time::Duration::from_millis(app.config.command_timeout_ms);
    let snapshot = app
        .views
        .read_settled(timeout)
        .await
        .map_err(crate::runtime::Error::from)?;
    let kpis = snapshot.kpis();
    Ok(Json(to_value(KpisView {
        as_of: Rfc3339(kpis.as_of),
        frontier: snapshot.frontier,
        orders_per_minute: kpis.orders_per_minute,
        average_order_cents: kpis.average_order_cents,
        payment_success_rate: kpis.payment_success_rate,
        inventory_turnover: kpis.inventory_turnover,
        sla: crate::pulse::pulse().service_levels(),
    })))
}

/// The business KPIs at one frontier.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Kpis")]
pub struct KpisView {
    /// The log time of the newest command the figures include.
    as_of: Rfc3339,
    /// The views' frontier they were read at.
    frontier: u64,
    orders_per_minute: OrderRate,
    /// By currency, in the currency's minor units.
    average_order_cents: BTreeMap<Str, Average>,
    payment_success_rate: SuccessRate,
    inventory_turnover: Turnover,
    /// The API's service levels over the last hour against the architecture brief's
    /// objectives: availability, p99 latency and error rate, by service. Measured by
    /// this process since it started (the time it was down is Prometheus' to see).
    sla: crate::pulse::ServiceLevels,
}

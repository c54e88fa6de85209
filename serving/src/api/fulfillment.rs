//! Fulfillment: shipments and the carrier's delivery webhook.

use axum::extract::State;
use axum::Json;
use dataflows::model::Command as DomainCommand;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path};
use super::{admit, json, order_owner, run_fresh, App};
use crate::auth::Caller;

pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .shipments
        .get(&id)
        .ok_or_else(|| ApiError::not_found("shipment", &id))?;
    let owner = order_owner(&snapshot, &row.order_id).unwrap_or_default();
    caller.require_owner_or(&owner, "orders:read")?;
    Ok(Json(json::shipment(&snapshot, row)))
}

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deliver {}

/// The carrier reports delivery: the order completes and its stock leaves `on_hand`.
pub async fn deliver(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    command: Command<Deliver>,
) -> ApiResult<Json<Value>> {
    let Command {
        body: Deliver {},
        idempotency,
    } = command;
    let admission = admit(&app, &idempotency)?;
    let order_id = {
        let snapshot = app.views.read();
        snapshot
            .shipments
            .get(&id)
            .map(|s| s.order_id.clone())
            .ok_or_else(|| ApiError::not_found("shipment", &id))?
    };
    run_fresh(
        &app,
        admission,
        idempotency,
        DomainCommand::ShipmentDelivered {
            shipment_id: id.clone().into(),
            order_id,
        },
    )
    .await?;
    get(State(app), caller, Path(id)).await
}

//! The event bus's contract: a JSON Schema per event type (also in docs/events).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::Json;
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};

fn all() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(connectors::kafka::events::event_schemas)
}

/// `GET /events/schemas`: every event type's schema, by type.
pub async fn schemas() -> Json<Value> {
    Json(serde_json::json!({ "schemas": all() }))
}

/// `GET /events/schemas/{type}`: one event type's schema.
pub async fn schema(Path(event_type): Path<String>) -> ApiResult<Json<Value>> {
    all()
        .get(&event_type)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("event type", &event_type))
}

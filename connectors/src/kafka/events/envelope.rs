//! What the bus carries: each event as JSON in an envelope, and a JSON Schema for each
//! event type's envelope, for the systems that read the bus.

use std::time::{Duration, UNIX_EPOCH};

use dataflows::model::{Event, EventBody};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An event as the bus carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Stable across replays: a digest of the event, so consumers can deduplicate.
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The log timestamp of the command that caused the event, as RFC 3339.
    pub occurred_at: String,
    /// The same instant as the logical timestamp (milliseconds since the epoch).
    pub timestamp: u64,
    pub aggregate_id: String,
    pub correlation_id: String,
    /// The HTTP request that sent the command (its `X-Request-Id`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

impl EventEnvelope {
    pub fn of(event: &Event) -> EventEnvelope {
        Self::traced(event, None)
    }

    /// The envelope of `event`, whose command `request_id` sent.
    pub fn traced(event: &Event, request_id: Option<&str>) -> EventEnvelope {
        EventEnvelope {
            event_id: event_id(event),
            event_type: event.body.name().to_string(),
            occurred_at: humantime::format_rfc3339_millis(
                UNIX_EPOCH + Duration::from_millis(event.ts),
            )
            .to_string(),
            timestamp: event.ts,
            aggregate_id: event.body.aggregate_id().to_string(),
            correlation_id: event.body.correlation_id().to_string(),
            request_id: request_id.map(str::to_string),
            data: event_data(event),
        }
    }
}

/// The envelope's `event_id`: a digest of the event, the same on every replay.
pub fn event_id(event: &Event) -> String {
    id_of(&serde_json::to_vec(event).expect("events serialise"))
}

/// The id of an event serialised as `json`.
fn id_of(json: &[u8]) -> String {
    let digest = Sha256::digest(json);
    format!("evt_{}", hex::encode(&digest[..16]))
}

/// The envelope's `event_id`, and its `data` as JSON text written into `data` (the
/// record's fields in declaration order), from one serialisation of the event into
/// `scratch`: the bytes the id digests are `{"seq":..,"phase":..,"sub":..,"ts":..,
/// "body":{"type":"<tag>",<fields>}}`, so the data is `{<fields>}`, cut out of them.
/// For writers of many events (the history): both buffers are reused.
pub fn event_id_and_data(event: &Event, scratch: &mut Vec<u8>, data: &mut Vec<u8>) -> String {
    scratch.clear();
    serde_json::to_writer(&mut *scratch, event).expect("events serialise");
    data.clear();
    match record_fields(scratch) {
        Some(fields) => {
            data.push(b'{');
            data.extend_from_slice(fields);
            data.push(b'}');
        }
        // Not the shape above: serialise the record on its own instead.
        None => event
            .body
            .serialize_record(&mut serde_json::Serializer::new(&mut *data))
            .expect("events serialise"),
    }
    id_of(scratch)
}

/// `<fields>` of an event serialised as `{"seq":..,"ts":..,"body":{"type":"<tag>",<fields>}}`
/// (empty for a record without fields). The fields before `body` are numbers and the tag
/// a plain name, so the first `"body":{"type":"` is the body's and the next `"` ends
/// the tag.
fn record_fields(json: &[u8]) -> Option<&[u8]> {
    const BODY: &[u8] = br#""body":{"type":""#;
    let start = json.windows(BODY.len()).position(|w| w == BODY)? + BODY.len();
    let tag_end = start + json[start..].iter().position(|&b| b == b'"')?;
    let rest = json.get(tag_end + 1..)?;
    match rest {
        [b'}', b'}'] => Some(&[]),
        [b',', fields @ .., b'}', b'}'] => Some(fields),
        _ => None,
    }
}

/// The envelope's `data`: the event's record, without its type.
pub fn event_data(event: &Event) -> serde_json::Value {
    let mut data = serde_json::to_value(&event.body).expect("events serialise");
    if let Some(fields) = data.as_object_mut() {
        fields.remove("type");
    }
    data
}

/// A JSON Schema (draft 2020-12) for each event type's envelope, by type name: the
/// envelope's fields, and `data` as the dataflow's event of that type serialises.
pub fn event_schemas() -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut schemas = serde_json::Map::new();
    for (name, schema) in EventBody::schemas() {
        // `data` is the event's record; its definitions move up beside the envelope's.
        let mut data = serde_json::to_value(schema).expect("schemas serialise");
        let defs = data
            .as_object_mut()
            .and_then(|record| {
                record.remove("$schema");
                record.remove("title");
                record.remove("$defs")
            })
            .unwrap_or_else(|| json!({}));
        let defs_empty = defs.as_object().is_none_or(|defs| defs.is_empty());
        data["additionalProperties"] = json!(false);
        let mut envelope = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": name,
                "type": "object",
                "required": ["event_id", "type", "occurred_at", "timestamp", "aggregate_id", "correlation_id", "data"],
                "additionalProperties": false,
                "properties": {
                    "event_id": {"type": "string", "pattern": "^evt_[0-9a-f]{32}$", "description": "Stable across replays: a digest of the event."},
                    "type": {"const": name},
                    "occurred_at": {"type": "string", "format": "date-time", "description": "The log timestamp of the command that caused the event."},
                    "timestamp": {"type": "integer", "minimum": 0, "description": "The same instant as the logical timestamp, in milliseconds since the epoch."},
                    "aggregate_id": {"type": "string", "description": "The record key on the topic."},
                    "correlation_id": {"type": "string", "description": "The order for everything its saga does, the reservation for a reservation's, else the aggregate."},
                    "request_id": {"type": "string", "description": "The HTTP request that sent the command that caused the event (its X-Request-Id), absent for commands no request sent, such as a provider's reply."},
                    "data": data,
                },
                "$defs": defs,
        });
        if defs_empty {
            envelope
                .as_object_mut()
                .map(|envelope| envelope.remove("$defs"));
        }
        schemas.insert(name.to_string(), envelope);
    }
    schemas
}

//! The JSON Schemas of the event bus: checked into docs/events, and fitting the
//! envelopes the sink writes.

use std::path::PathBuf;

use connectors::kafka::events::{
    event_data, event_id, event_id_and_data, event_schemas, EventEnvelope,
};
use dataflows::events::{
    OrderCancelled, OrderCreated, ReportRequested, StockAdjusted, UserDeleted,
};
use dataflows::model::{CancelReason, Event, EventBody, Line, ReportFormat, ReportRequest};
use serde_json::Value;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/events")
}

#[test]
fn the_schemas_in_docs_are_current() {
    let schemas = event_schemas();
    assert_eq!(schemas.len(), EventBody::NAMES.len());
    if std::env::var_os("TIDEMARK_WRITE_SCHEMAS").is_some() {
        std::fs::create_dir_all(docs()).unwrap();
        for (name, schema) in &schemas {
            let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
            std::fs::write(docs().join(format!("{name}.schema.json")), text).unwrap();
        }
    }
    for (name, schema) in &schemas {
        let file = docs().join(format!("{name}.schema.json"));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let on_disk: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(
            &on_disk, schema,
            "{} is stale: TIDEMARK_WRITE_SCHEMAS=1 cargo test -p tidemark-connectors --test connectors schemas",
            file.display()
        );
    }
    let files = std::fs::read_dir(docs()).unwrap().count();
    assert_eq!(
        files,
        schemas.len(),
        "no schema for an event that no longer exists"
    );
}

/// The envelope has exactly the schema's fields, and `data` only the fields its schema
/// names, with every required one.
fn assert_fits(body: EventBody) {
    let event = Event {
        seq: 7,
        phase: 0,
        sub: 0,
        ts: 1_795_000_000_000,
        body,
    };
    let envelope = serde_json::to_value(EventEnvelope::traced(&event, Some("req-1"))).unwrap();
    let schemas = event_schemas();
    let schema = &schemas[envelope["type"].as_str().unwrap()];
    let fields = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&envelope), fields(&schema["properties"]));
    // Without a request, the envelope has only the required fields.
    let untraced = serde_json::to_value(EventEnvelope::of(&event)).unwrap();
    let required: Vec<String> = (schema["required"].as_array().unwrap().iter())
        .map(|field| field.as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields(&untraced), {
        let mut r = required;
        r.sort();
        r
    });
    let data = &schema["properties"]["data"];
    for key in fields(&envelope["data"]) {
        assert!(
            data["properties"].get(&key).is_some(),
            "{key} is not in the schema"
        );
    }
    for required in data["required"].as_array().unwrap() {
        assert!(envelope["data"].get(required.as_str().unwrap()).is_some());
    }
}

#[test]
fn envelopes_fit_their_schemas() {
    assert_fits(EventBody::OrderCreated(OrderCreated {
        order_id: "ord_1".into(),
        user_id: "usr_1".into(),
        items: vec![Line {
            product_id: "prd_1".into(),
            quantity: 2,
        }],
        shipping_address: None,
        cart_id: Some("crt_1".into()),
    }));
    assert_fits(EventBody::OrderCancelled(OrderCancelled {
        order_id: "ord_1".into(),
        reason: CancelReason::PaymentDeclined,
    }));
    assert_fits(EventBody::UserDeleted(UserDeleted {
        user_id: "usr_1".into(),
    }));
}

/// `event_id_and_data` (one serialisation, the data cut out of it) gives what
/// `event_id` and `event_data` give, for records with and without optional fields,
/// enums, lists and text that JSON escapes.
#[test]
fn ids_and_data_from_one_serialisation_match_the_envelope() {
    let awkward = "a \"quoted\" \\ back\nslash, body\":{\"type\":\"x\", ünïcödé ✓";
    let bodies = [
        EventBody::OrderCreated(OrderCreated {
            order_id: awkward.into(),
            user_id: "usr_1".into(),
            items: vec![
                Line {
                    product_id: "prd_1".into(),
                    quantity: 2,
                },
                Line {
                    product_id: awkward.into(),
                    quantity: i64::MIN,
                },
            ],
            shipping_address: None,
            cart_id: Some("crt_\"1\"".into()),
        }),
        // Flattened: the tagged body holds the request's fields beside the id.
        EventBody::ReportRequested(ReportRequested {
            report_id: "rep_1".into(),
            request: ReportRequest {
                template: Some("daily_sales".into()),
                sql: awkward.into(),
                params: "{\"day\": \"2026-11-30\"}".into(),
                format: ReportFormat::Csv,
                schedule_id: Some("sch_1".into()),
                slot: Some(1_795_000_000_000),
            },
        }),
        EventBody::OrderCancelled(OrderCancelled {
            order_id: "ord_}}".into(),
            reason: CancelReason::PaymentDeclined,
        }),
        EventBody::UserDeleted(UserDeleted {
            user_id: String::new().into(),
        }),
        EventBody::StockAdjusted(StockAdjusted {
            product_id: "prd_1".into(),
            delta: -7,
            reason: awkward.into(),
        }),
    ];
    let (mut scratch, mut data) = (Vec::new(), Vec::new());
    for (n, body) in bodies.into_iter().enumerate() {
        let event = Event {
            seq: u64::MAX - n as u64,
            phase: n as u8,
            sub: u16::MAX,
            ts: 1_795_000_000_000,
            body,
        };
        let id = event_id_and_data(&event, &mut scratch, &mut data);
        assert_eq!(id, event_id(&event));
        let parsed: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            parsed,
            event_data(&event),
            "{}",
            String::from_utf8_lossy(&data)
        );
        let mut alone = Vec::new();
        event
            .body
            .serialize_record(&mut serde_json::Serializer::new(&mut alone))
            .unwrap();
        assert_eq!(data, alone, "the record's own serialisation, byte for byte");
    }
}

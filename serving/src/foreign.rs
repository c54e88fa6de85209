//! Events other systems write to Kafka, in the bus's names and envelope, turned into
//! commands: a carrier's `shipping.dispatched` and `shipping.completed`, a payment
//! provider's `payment.completed` and `payment.failed`, a warehouse's
//! `inventory.adjusted`, a legacy shop's `order.created` during a migration. What does
//! not parse, or what the dataflow refuses, goes to the dead-letter topic with the
//! reason; nothing a foreign system writes can stop the source.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use connectors::kafka::foreign::{spawn_foreign_source, ForeignRecord, Handled};
use connectors::kafka::KafkaCluster;
use dataflows::catalog::{self, MAX_QUANTITY};
use dataflows::model::{
    Command, Envelope, IdempotencyKey, Line, PaymentOutcome, RejectionKind, Seq, Str,
};
use dataflows::orders::{self, LineProblem};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::validate;
use crate::runtime::{self, Submitted};
use crate::Tidemark;

/// Starts consuming `topics`; stops when `stop` is set.
pub fn spawn(
    app: Arc<Tidemark>,
    cluster: &KafkaCluster,
    topics: &[String],
    stop: Arc<AtomicBool>,
) -> connectors::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Handle::current();
    let dead_letters = cluster.topic("tidemark.dead-letter");
    let replication_factor = app.config.kafka.replication_factor;
    spawn_foreign_source(
        cluster,
        topics,
        &dead_letters,
        replication_factor,
        stop,
        move |record| {
            let envelope = match envelope_of(record) {
                Ok(envelope) => envelope,
                Err(reason) => return Handled::Refused(reason),
            };
            let submitted = runtime.block_on(app.submit(envelope));
            handled(submitted, |seq| {
                app.views
                    .read()
                    .rejection(seq)
                    .map(|r| r.detail.to_string())
            })
        },
    )
}

/// What an attempt to submit a foreign record's command came to. A failure that
/// retrying can mend (the log away or full, the views slow to show a command that is
/// durable) is tried again: the record's idempotency key makes a second append of a
/// command already logged a harmless repeat. Only refusals are dead letters.
fn handled(
    submitted: Result<Submitted, runtime::Error>,
    first_refusal: impl Fn(Seq) -> Option<String>,
) -> Handled {
    match submitted {
        Ok(Submitted {
            rejection: None, ..
        }) => Handled::Done,
        // Read again (after a crash, or by a new consumer group): the answer is the one
        // the record got the first time.
        Ok(Submitted {
            rejection: Some(rejection),
            ..
        }) => match rejection.kind {
            RejectionKind::Duplicate {
                first_seq,
                same_request: true,
            } => match first_refusal(first_seq) {
                Some(detail) => Handled::Refused(format!("refused: {detail}")),
                None => Handled::Done,
            },
            _ => Handled::Refused(format!("refused: {}", rejection.detail)),
        },
        Err(
            error @ (runtime::Error::Encode(_)
            | runtime::Error::Log(connectors::Error::TooLarge(_))),
        ) => Handled::Refused(format!("cannot be logged: {error}")),
        Err(error) => Handled::Retry(error.to_string()),
    }
}

/// The bus's envelope; only `type` and `data` matter here.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
}

/// The command a foreign record asks for, keyed by the record so that reading it twice
/// changes nothing.
pub fn envelope_of(record: &ForeignRecord) -> Result<Envelope, String> {
    let incoming: Incoming = parse(&record.payload, "")?;
    let command = command_of(&incoming.event_type, incoming.data, &record.key())?;
    let fingerprint = hex::encode(&Sha256::digest(&record.payload)[..16]);
    Ok(Envelope {
        idempotency: Some(IdempotencyKey {
            key: record.key().into(),
            fingerprint: fingerprint.into(),
        }),
        command,
        request_id: None,
    })
}

/// Decodes `bytes`; a refusal names the field at fault under `root` (`data.items[0]`).
fn parse<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let inner = error.inner();
        if inner.is_syntax() || inner.is_eof() {
            return format!("not JSON: {inner}");
        }
        let path = error.path().to_string();
        let field = match (root, path.as_str()) {
            ("", "." | "?") => "not an event".to_string(),
            (root, "." | "?") => root.to_string(),
            ("", path) => path.to_string(),
            (root, path) => format!("{root}.{path}"),
        };
        format!("{field}: {inner}")
    })
}

fn data<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    parse(
        &serde_json::to_vec(&value).expect("values serialise"),
        "data",
    )
}

fn checked_id(field: &str, value: String) -> Result<Str, String> {
    if validate::id(&value) {
        Ok(value.into())
    } else {
        Err(format!("data.{field}: is not an id"))
    }
}

#[derive(Deserialize)]
struct Dispatched {
    shipment_id: String,
    order_id: String,
    carrier: String,
    tracking_number: String,
}

#[derive(Deserialize)]
struct Delivered {
    shipment_id: String,
    order_id: String,
}

#[derive(Deserialize)]
struct Paid {
    payment_id: String,
    order_id: String,
    charge_id: String,
}

#[derive(Deserialize)]
struct PaymentFailed {
    payment_id: String,
    order_id: String,
    decline_code: String,
}

#[derive(Deserialize)]
struct Adjusted {
    product_id: String,
    delta: i64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct LegacyOrder {
    #[serde(default)]
    order_id: Option<String>,
    user_id: String,
    items: Vec<LegacyLine>,
    #[serde(default)]
    shipping_address: Option<String>,
}

#[derive(Deserialize)]
struct LegacyLine {
    product_id: String,
    quantity: i64,
}

fn command_of(event_type: &str, value: serde_json::Value, key: &str) -> Result<Command, String> {
    Ok(match event_type {
        "shipping.dispatched" => {
            let d: Dispatched = data(value)?;
            if d.carrier.trim().is_empty() || d.tracking_number.trim().is_empty() {
                return Err("data: carrier and tracking_number must not be empty".into());
            }
            Command::ShipmentDispatched {
                shipment_id: checked_id("shipment_id", d.shipment_id)?,
                order_id: checked_id("order_id", d.order_id)?,
                carrier: d.carrier.into(),
                tracking_number: d.tracking_number.into(),
            }
        }
        "shipping.completed" | "shipping.delivered" => {
            let d: Delivered = data(value)?;
            Command::ShipmentDelivered {
                shipment_id: checked_id("shipment_id", d.shipment_id)?,
                order_id: checked_id("order_id", d.order_id)?,
            }
        }
        "payment.completed" => {
            let d: Paid = data(value)?;
            Command::PaymentResult {
                payment_id: checked_id("payment_id", d.payment_id)?,
                order_id: checked_id("order_id", d.order_id)?,
                outcome: PaymentOutcome::Approved {
                    charge_id: d.charge_id.into(),
                },
            }
        }
        "payment.failed" => {
            let d: PaymentFailed = data(value)?;
            Command::PaymentResult {
                payment_id: checked_id("payment_id", d.payment_id)?,
                order_id: checked_id("order_id", d.order_id)?,
                outcome: PaymentOutcome::Declined {
                    decline_code: d.decline_code.into(),
                },
            }
        }
        "inventory.adjusted" => {
            let d: Adjusted = data(value)?;
            if !catalog::adjustment_in_bounds(d.delta) {
                return Err(format!(
                    "data.delta: must be non-zero and at most {} in size",
                    MAX_QUANTITY
                ));
            }
            Command::AdjustStock {
                product_id: checked_id("product_id", d.product_id)?,
                delta: d.delta,
                reason: d.reason.unwrap_or_else(|| "foreign".into()).into(),
            }
        }
        "order.created" => {
            let d: LegacyOrder = data(value)?;
            let mut items = Vec::with_capacity(d.items.len());
            for (index, line) in d.items.into_iter().enumerate() {
                items.push(Line {
                    product_id: checked_id(&format!("items[{index}].product_id"), line.product_id)?,
                    quantity: line.quantity,
                });
            }
            let items = orders::order_lines(items).map_err(|problem| match problem {
                LineProblem::Count => format!("data.items: {}", problem.message()),
                LineProblem::Quantity(index) => {
                    format!("data.items[{index}].quantity: {}", problem.message())
                }
            })?;
            let order_id = match d.order_id {
                Some(id) => checked_id("order_id", id)?,
                None => {
                    let digest = Sha256::digest(format!("ord:{key}").as_bytes());
                    format!("ord_{}", &hex::encode(digest)[..32]).into()
                }
            };
            Command::PlaceOrder {
                order_id,
                user_id: checked_id("user_id", d.user_id)?,
                items,
                payment: None,
                shipping_address: d.shipping_address.map(Str::from),
                cart_id: None,
            }
        }
        other => return Err(format!("type: {other:?} is not an event tidemark consumes")),
    })
}

#[cfg(test)]
mod tests {
    use dataflows::model::{Rejection, RejectionKind};

    use super::*;

    fn refused(kind: RejectionKind) -> Result<Submitted, runtime::Error> {
        Ok(Submitted {
            seq: 9,
            ts: 1,
            rejection: Some(Rejection {
                seq: 9,
                ts: 1,
                kind,
                detail: "no".into(),
            }),
        })
    }

    #[test]
    fn only_refusals_are_dead_letters() {
        let none = |_| None;
        // Durable but slow to show: before, this was dead-lettered as "not logged".
        let slow = Err(runtime::Error::Views(queries::Error::Timeout {
            wanted: 4,
            current: 2,
        }));
        assert!(matches!(handled(slow, none), Handled::Retry(_)));
        let full = Err(runtime::Error::Log(connectors::Error::NotWritten {
            path: "log".into(),
            source: std::io::ErrorKind::StorageFull.into(),
        }));
        assert!(matches!(handled(full, none), Handled::Retry(_)));
        let away = Err(runtime::Error::Log(connectors::Error::Kafka {
            message: "timed out".into(),
            retryable: true,
        }));
        assert!(matches!(handled(away, none), Handled::Retry(_)));
        assert!(matches!(
            handled(refused(RejectionKind::NotFound), none),
            Handled::Refused(_)
        ));
        let repeat = RejectionKind::Duplicate {
            first_seq: 3,
            same_request: true,
        };
        assert_eq!(handled(refused(repeat.clone()), none), Handled::Done);
        assert!(matches!(
            handled(refused(repeat), |_| Some("no".into())),
            Handled::Refused(_)
        ));
        let done = Ok(Submitted {
            seq: 1,
            ts: 1,
            rejection: None,
        });
        assert_eq!(handled(done, none), Handled::Done);
    }
}

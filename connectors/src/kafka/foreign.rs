//! Records other systems write to Kafka (a carrier's `shipping.dispatched`, a legacy
//! shop's `order.created`), handed one at a time to a handler; what the handler refuses
//! goes to a dead-letter topic with the reason. Offsets are committed only after the
//! handler is done, so a crash hands a record again (at least once); the handler makes
//! that harmless with an idempotency key per record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka::{kafka_error, KafkaCluster, TopicSpec};
use crate::{Error, Result};

/// A record of a foreign topic.
#[derive(Clone, Debug)]
pub struct ForeignRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

impl ForeignRecord {
    /// Names this record uniquely and stably: an idempotency key for what it causes.
    pub fn key(&self) -> String {
        format!("kafka:{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// What became of a record in the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Done with (applied, or a repeat of one applied before): its offset is committed.
    Done,
    /// Refused for good (does not parse, or the domain said no): to the dead-letter
    /// topic with the reason.
    Refused(String),
    /// Could not be handled now (the log is away, the views are slow): handed again
    /// after a pause, and nothing after it is read meanwhile.
    Retry(String),
}

/// Longest pause between two tries of a record that could not be handled.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// What the dead-letter topic holds for a refused record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The record as it was (lossy UTF-8).
    pub payload: String,
}

/// Consumes `topics` (as consumer group `{prefix}tidemark-foreign`) until `stop`,
/// handing each record to `handle`: `Refused` sends it to `dead_letter_topic`, `Retry`
/// hands it again after a pause that doubles up to `MAX_RETRY_PAUSE`.
pub fn spawn_foreign_source(
    cluster: &KafkaCluster,
    topics: &[String],
    dead_letter_topic: &str,
    replication_factor: i32,
    stop: Arc<AtomicBool>,
    mut handle: impl FnMut(&ForeignRecord) -> Handled + Send + 'static,
) -> Result<JoinHandle<()>> {
    cluster.ensure_topics(&[TopicSpec {
        name: dead_letter_topic,
        partitions: 1,
        replication_factor,
        config: &[],
    }])?;
    let consumer: BaseConsumer = cluster.read_committed_consumer(
        "tidemark-foreign",
        &[
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1000"),
        ],
    )?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(kafka_error)?;
    let dead_letters: ThreadedProducer<DefaultProducerContext> = cluster
        .idempotent_producer_config(&[])
        .create()
        .map_err(kafka_error)?;
    let dead_letter_topic = dead_letter_topic.to_string();
    std::thread::Builder::new()
        .name("foreign-events".into())
        .spawn(move || {
            let mut last_error: Option<Instant> = None;
            let mut pause = Duration::from_millis(100);
            while !stop.load(Ordering::Acquire) {
                let record = match consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(error)) => {
                        if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(%error, "reading foreign events");
                            last_error = Some(Instant::now());
                        }
                        continue;
                    }
                    Some(Ok(message)) => ForeignRecord {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default().to_vec(),
                    },
                };
                let reason = match handle(&record) {
                    Handled::Done => None,
                    Handled::Refused(reason) => Some(reason),
                    Handled::Retry(reason) => {
                        tracing::warn!(topic = record.topic, offset = record.offset, %reason, ?pause, "a foreign event could not be handled now; trying it again");
                        let _ = consumer.seek(
                            &record.topic,
                            record.partition,
                            Offset::Offset(record.offset),
                            Duration::from_secs(10),
                        );
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(MAX_RETRY_PAUSE);
                        continue;
                    }
                };
                pause = Duration::from_millis(100);
                if let Some(reason) = reason {
                    tracing::warn!(topic = record.topic, offset = record.offset, %reason, "a foreign event goes to the dead-letter topic");
                    let letter = DeadLetter {
                        topic: record.topic.clone(),
                        partition: record.partition,
                        offset: record.offset,
                        reason,
                        payload: String::from_utf8_lossy(&record.payload).into_owned(),
                    };
                    let body = serde_json::to_vec(&letter).expect("dead letters serialise");
                    let key = record.key();
                    let written = dead_letters
                        .send(BaseRecord::to(&dead_letter_topic).key(&key).payload(&body))
                        .map_err(|(error, _)| error)
                        .and_then(|()| dead_letters.flush(Duration::from_secs(30)));
                    if let Err(error) = written {
                        tracing::error!(%error, "could not write a dead letter; reading the record again");
                        let _ = consumer.seek(
                            &record.topic,
                            record.partition,
                            Offset::Offset(record.offset),
                            Duration::from_secs(10),
                        );
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
                let mut done = TopicPartitionList::new();
                if done
                    .add_partition_offset(&record.topic, record.partition, Offset::Offset(record.offset + 1))
                    .is_ok()
                {
                    if let Err(error) = consumer.commit(&done, CommitMode::Async) {
                        tracing::warn!(%error, "committing foreign event offsets");
                    }
                }
            }
        })
        .map_err(|e| Error::io("foreign-events", e))
}

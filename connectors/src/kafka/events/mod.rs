//! The event bus: every domain event, as JSON in an envelope, on a Kafka topic named
//! after it, written exactly once.
//!
//! The sink writes the events of a stretch of dataflow time and a progress record
//! (how far the events go) in one Kafka transaction. After a crash the dataflow replays
//! the log and produces the same events at the same times; the sink reads its last
//! committed progress and writes only what lies beyond it, so a `read_committed`
//! consumer sees every event once.

mod envelope;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataflows::model::{Event, Seq, Str, Time};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

pub use self::envelope::{event_data, event_id, event_id_and_data, event_schemas, EventEnvelope};
use crate::kafka::{kafka_error, KafkaCluster, TopicSpec};
use crate::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    /// Every event at a dataflow time before this is on the bus.
    frontier: Time,
}

pub struct KafkaEventSink {
    cluster: KafkaCluster,
    name: String,
    progress_topic: String,
    producer: ThreadedProducer<DefaultProducerContext>,
    committed: Time,
    /// Ids of the events a `read_committed` consumer saw at the end of each topic when
    /// the sink opened: already published, whatever the committed progress says.
    visible: std::collections::HashSet<String>,
    /// Set when tidemark stops: a transaction that keeps failing is given up (its events
    /// are published again after the next start) instead of holding the shutdown.
    give_up: Arc<AtomicBool>,
}

impl KafkaEventSink {
    /// Creates the event topics and the progress topic where missing, fences any other
    /// writer of this sink, and reads how far it got. `name` tells sinks apart.
    pub fn open(
        cluster: KafkaCluster,
        name: &str,
        partitions: i32,
        replication_factor: i32,
    ) -> Result<KafkaEventSink> {
        cluster.validate()?;
        cluster.wait_until_reachable(Duration::from_secs(30))?;
        let progress_topic = cluster.topic("tidemark.sink-progress");
        let event_topics: Vec<String> = dataflows::model::EventBody::NAMES
            .iter()
            .map(|name| cluster.topic(name))
            .collect();
        let mut specs = vec![TopicSpec {
            name: &progress_topic,
            partitions: 1,
            replication_factor,
            config: &[("cleanup.policy", "compact")],
        }];
        specs.extend(event_topics.iter().map(|name| TopicSpec {
            name,
            partitions,
            replication_factor,
            config: &[],
        }));
        for topic in cluster.ensure_topics(&specs)? {
            tracing::info!(topic, brokers = %cluster.brokers, "created topic");
        }
        let producer = transactional_producer(&cluster, name)?;
        let committed = read_progress(&cluster, &progress_topic, name)?;
        let visible = recent_event_ids(&cluster, &event_topics)?;
        tracing::info!(sink = name, committed, "event sink opened");
        Ok(KafkaEventSink {
            cluster,
            name: name.to_string(),
            progress_topic,
            producer,
            committed,
            visible,
            give_up: Arc::default(),
        })
    }

    /// Setting this flag makes a retrying [`KafkaEventSink::publish`] return
    /// [`Error::Closed`] instead of trying again.
    pub fn give_up_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.give_up)
    }

    /// Every event at a dataflow time before this is on the bus.
    pub fn committed(&self) -> Time {
        self.committed
    }

    /// Writes `events` with their dataflow times (all before `frontier`; those before
    /// the committed frontier are skipped) and the new frontier in one transaction.
    /// Retries until the transaction commits; an error means another writer took over
    /// this sink, or [`Error::Closed`] that the sink was told to give up.
    /// `requests` has the request that sent each command (`EventEnvelope::request_id`),
    /// by position.
    pub fn publish(
        &mut self,
        frontier: Time,
        events: &[(Time, Event)],
        requests: &BTreeMap<Seq, Str>,
    ) -> Result<()> {
        if frontier <= self.committed {
            return Ok(());
        }
        let records: Vec<(String, String, Vec<u8>)> = events
            .iter()
            .filter(|(time, _)| *time >= self.committed)
            .map(|(_, event)| {
                EventEnvelope::traced(event, requests.get(&event.seq).map(|id| &**id))
            })
            .filter(|envelope| !self.visible.contains(&envelope.event_id))
            .map(|envelope| {
                (
                    self.cluster.topic(&envelope.event_type),
                    envelope.aggregate_id.clone(),
                    serde_json::to_vec(&envelope).expect("envelopes serialise"),
                )
            })
            .collect();
        let progress = serde_json::to_vec(&Progress { frontier }).expect("progress serialises");
        let mut backoff = Duration::from_millis(50);
        loop {
            let outcome = self
                .transaction(&records, &progress)
                .or_else(|error| match error {
                    // Whatever part of the transaction got through is aborted (an abort
                    // cut short by an outage is resumed) before the next one begins.
                    TransactionError::Retry(error) => {
                        self.abort().and(Err(TransactionError::Retry(error)))
                    }
                    other => Err(other),
                });
            match outcome {
                Ok(()) => {
                    self.committed = frontier;
                    return Ok(());
                }
                Err(TransactionError::Retry(error)) => {
                    tracing::warn!(%error, sink = self.name, "event transaction failed; retrying");
                }
                Err(TransactionError::Restart(error)) => {
                    tracing::warn!(%error, sink = self.name, "event producer failed; starting a new one");
                    // While the cluster is away the new producer cannot register either;
                    // the next round tries again rather than stopping the sink.
                    match transactional_producer(&self.cluster, &self.name) {
                        Ok(producer) => self.producer = producer,
                        Err(error) => {
                            tracing::warn!(%error, sink = self.name, "could not start a new event producer; retrying")
                        }
                    }
                }
                Err(TransactionError::Fatal(error)) => return Err(error),
            }
            if self.give_up.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn transaction(
        &self,
        records: &[(String, String, Vec<u8>)],
        progress: &[u8],
    ) -> Result<(), TransactionError> {
        let timeout = Duration::from_secs(30);
        self.producer.begin_transaction()?;
        for (topic, key, payload) in records {
            send(
                &self.producer,
                BaseRecord::to(topic).key(key).payload(payload),
            )?;
        }
        // Every event is with the broker before the progress that covers it, so that
        // even a broker that showed an unfinished transaction's records would never
        // show the progress without its events.
        self.producer.flush(timeout)?;
        send(
            &self.producer,
            BaseRecord::to(&self.progress_topic)
                .key(&self.name)
                .payload(progress),
        )?;
        self.producer.commit_transaction(timeout)?;
        Ok(())
    }

    /// Aborts the open transaction, retrying while the cluster does not answer (an
    /// interrupted abort must be called again before a new transaction can begin). An
    /// abort that does not complete within `ABORT_PATIENCE`, or that fails otherwise,
    /// asks for a new producer: its registration aborts whatever this one left open
    /// (seen after a broker restart that forgot this producer's epoch).
    fn abort(&self) -> Result<(), TransactionError> {
        const ABORT_PATIENCE: Duration = Duration::from_secs(10);
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let error = match self.producer.abort_transaction(Duration::from_secs(5)) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let retriable =
                matches!(&error, KafkaError::Transaction(inner) if inner.is_retriable());
            if !retriable
                || started.elapsed() > ABORT_PATIENCE
                || self.give_up.load(Ordering::Acquire)
            {
                return Err(match TransactionError::from(error) {
                    TransactionError::Fatal(error) => TransactionError::Fatal(error),
                    TransactionError::Retry(error) | TransactionError::Restart(error) => {
                        TransactionError::Restart(error)
                    }
                });
            }
            tracing::warn!(%error, sink = self.name, "aborting the event transaction; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

enum TransactionError {
    /// Abort (done) and run the transaction again.
    Retry(Error),
    /// The producer cannot go on; a new one (same transactional id) can.
    Restart(Error),
    /// Another writer took over this sink.
    Fatal(Error),
}

impl From<KafkaError> for TransactionError {
    fn from(error: KafkaError) -> Self {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::ProducerFenced)
                | Some(rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch)
        );
        let fatal = match &error {
            KafkaError::Transaction(inner) => inner.is_fatal(),
            _ => false,
        };
        if fenced {
            TransactionError::Fatal(Error::Kafka {
                message: format!("another process writes this event sink now: {error}"),
                retryable: false,
            })
        } else if fatal {
            TransactionError::Restart(kafka_error(error))
        } else {
            TransactionError::Retry(kafka_error(error))
        }
    }
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, String, [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

fn transactional_producer(
    cluster: &KafkaCluster,
    name: &str,
) -> Result<ThreadedProducer<DefaultProducerContext>> {
    let transactional_id = cluster.topic(&format!("tidemark.sink.{name}"));
    let producer: ThreadedProducer<DefaultProducerContext> = cluster
        .idempotent_producer_config(&[
            ("transactional.id", &transactional_id),
            ("linger.ms", "1"),
            // A transaction left open by a crash holds back read_committed consumers
            // until the broker aborts it; ours last milliseconds, so 10 s is ample.
            // (Kafka also aborts it when the next producer with this id starts.)
            ("transaction.timeout.ms", "10000"),
        ])
        .create()
        .map_err(kafka_error)?;
    // Fences any earlier producer with this id and settles its open transaction.
    producer
        .init_transactions(Duration::from_secs(30))
        .map_err(kafka_error)?;
    Ok(producer)
}

/// Records read from the end of each event topic partition at start-up.
const RECENT_PER_PARTITION: i64 = 2_000;

/// The ids of the last events a `read_committed` consumer sees on `topics`. A crash can
/// leave a transaction unfinished; Kafka aborts it and hides its records, but a broker
/// that does not would show them, and the replay would publish them again. Events
/// already visible are not written twice.
fn recent_event_ids(
    cluster: &KafkaCluster,
    topics: &[String],
) -> Result<std::collections::HashSet<String>> {
    // Only asks where each partition ends; `read_to_end` reads.
    let consumer = cluster.metadata_client()?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka_error)?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|name| name == t.name()))
    {
        for partition in topic.partitions().iter().map(|p| p.id()) {
            let topic = topic.name();
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(30))
                .map_err(kafka_error)?;
            if high > low {
                let from = (high - RECENT_PER_PARTITION).max(low);
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(from))
                    .map_err(kafka_error)?;
            }
        }
    }
    let mut ids = std::collections::HashSet::new();
    cluster.read_to_end(&assignment, |_, payload| {
        if let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(payload) {
            ids.insert(envelope.event_id);
        }
        Ok(())
    })?;
    Ok(ids)
}

/// The last frontier this sink committed (0 if none).
fn read_progress(cluster: &KafkaCluster, topic: &str, name: &str) -> Result<Time> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(kafka_error)?;
    let mut committed = 0;
    cluster.read_to_end(&assignment, |key, payload| {
        if key == Some(name.as_bytes()) {
            let progress: Progress = serde_json::from_slice(payload).map_err(|e| Error::Kafka {
                message: format!("unreadable sink progress in {topic}: {e}"),
                retryable: false,
            })?;
            committed = progress.frontier;
        }
        Ok(())
    })?;
    Ok(committed)
}

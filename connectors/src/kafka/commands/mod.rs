//! The command log on Kafka.
//!
//! Commands are records of the `tidemark.commands` topic, keyed (and so partitioned)
//! by aggregate. Kafka orders records only within a partition, and the dataflow needs
//! one order and one timestamp per batch, so a binder reclocks: it reads what the
//! partitions hold, cuts it into batches, and gives each batch a logical timestamp and
//! consecutive positions. A batch is described by a binding (its timestamp, its first
//! position and, per partition, the range of offsets it covers), and the binding is
//! written to the `tidemark.bindings` topic before the dataflow sees the batch.
//! Replaying the bindings over the same commands rebuilds the same batches, so a
//! restart, or a second process reading the same topics, reaches the same state.
//!
//! The binder need not read back what this process wrote: the producer learns each
//! command's partition and offset when the broker acknowledges it, and those records
//! are bound at once when they continue a partition (see `Delivered`). What others
//! wrote comes from the topic.
//!
//! An append answers once a binding covers each of its records: then its records have
//! positions and a timestamp, exactly as with the embedded log.
//!
//! Each file has one job: `append` sends commands and answers appends once bound;
//! `binder` (the leader) cuts the topic into bindings; `follower` applies the bindings
//! another process writes; `replay` reads bound batches back; `health` watches whether
//! the cluster answers.

mod append;
mod binder;
mod follower;
mod health;
mod replay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dataflows::model::{Seq, Ts};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::append::{Delivered, Deliveries, Waiters};
use self::binder::Binder;
use self::follower::Follower;
use self::replay::{read_bindings, Replay, ReplayIter};
use crate::kafka::{KafkaCluster, TopicSpec};
use crate::log::{Appended, DurableBatch, Log, LogRecord, OnDurable, PendingAppend};
use crate::{Error, Result};

/// Larger records are refused before they reach the broker (Kafka's default limit).
const MAX_RECORD_BYTES: usize = 1 << 20;

/// The record key of a command payload (its aggregate), which picks its partition.
pub type KeyOf = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// Where a record sits in the commands topic: (partition, offset).
type Position = (i32, i64);

pub struct KafkaLogOptions {
    pub cluster: KafkaCluster,
    /// Partitions of the commands topic when tidemark creates it.
    pub partitions: i32,
    pub replication_factor: i32,
    pub key_of: KeyOf,
    /// Most commands in one batch.
    pub max_batch_records: usize,
    /// The commands producer's `linger.ms`.
    pub linger_ms: u32,
    /// Follow the bindings another process writes instead of binding commands here.
    /// A follower's appends still go to the commands topic; the leader binds them.
    pub follow: bool,
}

/// One batch of the log: `count` records with positions from `first_seq`, all at `ts`,
/// being every committed record of each partition within its offset range, in
/// (partition, offset) order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Binding {
    ts: Ts,
    first_seq: Seq,
    count: u64,
    /// (partition, first offset, offset after the last record).
    ranges: Vec<(i32, i64, i64)>,
}

impl Binding {
    fn end_seq(&self) -> Seq {
        self.first_seq + self.count
    }
}

/// A command read from the commands topic.
struct Record {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

pub struct KafkaLog {
    cluster: KafkaCluster,
    commands_topic: String,
    bindings_topic: String,
    partitions: i32,
    max_batch_records: usize,
    follow: bool,
    key_of: KeyOf,
    /// Every binding written so far (read at open; the binder adds the ones it writes).
    bindings: Arc<Mutex<Vec<Binding>>>,
    /// Signalled whenever a binding is added to `bindings`.
    applied: Arc<Condvar>,
    /// Asks the broker how many bindings there are (`sync_point` on a follower).
    watermarks: Mutex<Option<BaseConsumer>>,
    durable_end: Arc<AtomicU64>,
    producer: Mutex<Option<ThreadedProducer<Deliveries>>>,
    waiters: Arc<Waiters>,
    delivered: Arc<Delivered>,
    started: AtomicBool,
    stop: Arc<AtomicBool>,
    binder: Mutex<Option<JoinHandle<()>>>,
    healthy: Arc<AtomicBool>,
    health: Mutex<Option<JoinHandle<()>>>,
}

impl KafkaLog {
    /// Creates the topics that are missing, reads the bindings written so far, and
    /// connects a producer. Call `start` (after replaying `read_from(0)`) to bind new
    /// commands.
    pub fn open(options: KafkaLogOptions) -> Result<KafkaLog> {
        let cluster = options.cluster;
        cluster.validate()?;
        cluster.wait_until_reachable(Duration::from_secs(30))?;
        let commands_topic = cluster.topic("tidemark.commands");
        let bindings_topic = cluster.topic("tidemark.bindings");
        let keep_forever: &[(&str, &str)] = &[("retention.ms", "-1"), ("retention.bytes", "-1")];
        let created = cluster.ensure_topics(&[
            TopicSpec {
                name: &commands_topic,
                partitions: options.partitions,
                replication_factor: options.replication_factor,
                config: keep_forever,
            },
            TopicSpec {
                name: &bindings_topic,
                partitions: 1,
                replication_factor: options.replication_factor,
                config: keep_forever,
            },
        ])?;
        for topic in &created {
            tracing::info!(topic, brokers = %cluster.brokers, "created topic");
        }
        let partitions = match cluster.partitions_of(&commands_topic)? {
            0 => {
                return Err(Error::Kafka {
                    message: format!("topic {commands_topic} has no partitions"),
                    // Metadata can lag behind a topic just created.
                    retryable: true,
                });
            }
            count => count as i32,
        };
        let bindings = read_bindings(&cluster, &bindings_topic)?;
        let durable_end = bindings.last().map_or(0, Binding::end_seq);
        tracing::info!(
            brokers = %cluster.brokers,
            commands_topic,
            partitions,
            bindings = bindings.len(),
            durable_end,
            "opened the Kafka log"
        );
        let waiters = Arc::new(Waiters::default());
        let delivered = Arc::new(Delivered::default());
        let producer = append::producer(
            &cluster,
            options.linger_ms,
            Deliveries {
                waiters: Arc::clone(&waiters),
                // A follower's records are bound by its leader, which reads them back.
                delivered: (!options.follow).then(|| Arc::clone(&delivered)),
            },
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(true));
        let health = health::watch_health(&cluster, &commands_topic, &healthy, &stop)?;
        Ok(KafkaLog {
            cluster,
            commands_topic,
            bindings_topic,
            partitions,
            max_batch_records: options.max_batch_records.max(1),
            follow: options.follow,
            key_of: options.key_of,
            bindings: Arc::new(Mutex::new(bindings)),
            applied: Arc::new(Condvar::new()),
            watermarks: Mutex::new(None),
            durable_end: Arc::new(AtomicU64::new(durable_end)),
            producer: Mutex::new(Some(producer)),
            waiters,
            delivered,
            started: AtomicBool::new(false),
            stop,
            binder: Mutex::new(None),
            healthy,
            health: Mutex::new(Some(health)),
        })
    }

    /// The offset after a partition's last record, as the broker says now.
    fn high_watermark(&self, topic: &str, partition: i32, timeout: Duration) -> Result<i64> {
        let mut consumer = self.watermarks.lock();
        if consumer.is_none() {
            *consumer = Some(self.cluster.read_committed_consumer("tidemark-sync", &[])?);
        }
        let consumer = consumer.as_ref().expect("set above");
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(crate::kafka::kafka_error)?;
        Ok(high.max(0))
    }

    fn bound(&self) -> Bound {
        Bound {
            bindings: Arc::clone(&self.bindings),
            applied: Arc::clone(&self.applied),
            durable_end: Arc::clone(&self.durable_end),
            waiters: Arc::clone(&self.waiters),
        }
    }

    pub fn commands_topic(&self) -> &str {
        &self.commands_topic
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        Log::close(self);
    }
}

impl Log for KafkaLog {
    fn append(&self, payloads: Vec<Vec<u8>>) -> PendingAppend {
        if let Some(refused) = PendingAppend::refuse_larger_than(&payloads, MAX_RECORD_BYTES) {
            return refused;
        }
        let (reply, rx) = oneshot::channel();
        if payloads.is_empty() {
            let _ = reply.send(Ok(Appended {
                ts: 0,
                seqs: Vec::new(),
            }));
            return PendingAppend(rx);
        }
        let producer = self.producer.lock();
        let Some(producer) = producer
            .as_ref()
            .filter(|_| self.started.load(Ordering::Acquire))
        else {
            let _ = reply.send(Err(Error::Closed));
            return PendingAppend(rx);
        };
        append::send(
            producer,
            &self.commands_topic,
            &self.key_of,
            &payloads,
            &self.waiters,
            reply,
        );
        PendingAppend(rx)
    }

    fn read_from(&self, seq: Seq) -> Result<Box<dyn Iterator<Item = Result<LogRecord>> + Send>> {
        let bindings: Vec<Binding> = self.bindings.lock().clone();
        let first = bindings.partition_point(|binding| binding.end_seq() <= seq);
        // Where each partition stands before the first binding to read.
        let mut starts: HashMap<i32, i64> = HashMap::new();
        for binding in &bindings[..first] {
            for &(partition, _, end) in &binding.ranges {
                starts.insert(partition, end);
            }
        }
        let reader = Replay::new(
            &self.cluster,
            &self.commands_topic,
            self.partitions,
            &starts,
        )?;
        Ok(Box::new(ReplayIter::new(
            reader,
            bindings.into_iter().skip(first).collect(),
            seq,
        )))
    }

    fn durable_end(&self) -> Seq {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Asks the broker how many bindings the topic holds (one record each) and waits
    /// until this process has applied that many. The leader asks too: a binding it has
    /// written may be acknowledged to a follower's appender a moment before the leader
    /// applies it itself.
    fn sync_point(&self, timeout: Duration) -> Result<Option<Ts>> {
        let deadline = std::time::Instant::now() + timeout;
        let count = self.high_watermark(&self.bindings_topic, 0, timeout)? as usize;
        let mut bindings = self.bindings.lock();
        while bindings.len() < count {
            if self.applied.wait_until(&mut bindings, deadline).timed_out() {
                return Err(Error::Kafka {
                    message: format!(
                        "applied {} of the {count} bindings the broker holds within {timeout:?}",
                        bindings.len()
                    ),
                    retryable: true,
                });
            }
        }
        Ok(count.checked_sub(1).map(|last| bindings[last].ts))
    }

    /// Commands in the topic beyond the bindings this process has applied: what the
    /// leader has yet to bind, and a follower to read.
    fn unapplied(&self, timeout: Duration) -> Result<Option<u64>> {
        let ends = bound_ends(&self.bindings.lock());
        let mut behind = 0;
        for partition in 0..self.partitions {
            let high = self.high_watermark(&self.commands_topic, partition, timeout)?;
            let bound = ends.get(&partition).copied().unwrap_or(0);
            behind += (high - bound).max(0) as u64;
        }
        Ok(Some(behind))
    }

    fn start(&self, consumer: OnDurable) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let (ends, next_seq, last_ts) = {
            let bindings = self.bindings.lock();
            (
                bound_ends(&bindings),
                bindings.last().map_or(0, Binding::end_seq),
                bindings.last().map_or(0, |binding| binding.ts),
            )
        };
        let thread = if self.follow {
            Follower::spawn(self, ends, next_seq, consumer)?
        } else {
            Binder::spawn(self, ends, next_seq, last_ts, consumer)?
        };
        *self.binder.lock() = Some(thread);
        Ok(())
    }

    fn close(&self) {
        self.started.store(false, Ordering::Release);
        if let Some(producer) = self.producer.lock().take() {
            // Appends already handed to the producer still reach the broker.
            let _ = producer.flush(Duration::from_secs(10));
        }
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.binder.lock().take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.health.lock().take() {
            let _ = thread.join();
        }
        self.waiters.fail_all(|| Error::Closed);
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// Per partition, the offset after the last record `bindings` cover.
fn bound_ends(bindings: &[Binding]) -> HashMap<i32, i64> {
    let mut ends = HashMap::new();
    for binding in bindings {
        for &(partition, _, end) in &binding.ranges {
            ends.insert(partition, end);
        }
    }
    ends
}

/// Where a bound batch goes: the dataflow, the log's readers, the waiting appenders.
struct Bound {
    bindings: Arc<Mutex<Vec<Binding>>>,
    applied: Arc<Condvar>,
    durable_end: Arc<AtomicU64>,
    waiters: Arc<Waiters>,
}

impl Bound {
    fn hand_on(&self, binding: Binding, records: &[Record], consumer: &mut OnDurable) {
        consumer(DurableBatch {
            ts: binding.ts,
            records: records
                .iter()
                .enumerate()
                .map(|(index, record)| (binding.first_seq + index as Seq, &record.payload[..]))
                .collect(),
        });
        let bound: Vec<(Position, (Ts, Seq))> = records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                (
                    (record.partition, record.offset),
                    (binding.ts, binding.first_seq + index as Seq),
                )
            })
            .collect();
        // Readable (read_from, durable_end) before any appender hears of it.
        let end = binding.end_seq();
        self.bindings.lock().push(binding);
        self.applied.notify_all();
        self.durable_end.store(end, Ordering::Release);
        self.waiters.bound(bound.into_iter());
    }
}

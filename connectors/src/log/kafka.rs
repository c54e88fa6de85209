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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataflows::model::{Seq, Ts};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Appended, DurableBatch, Log, LogRecord, OnDurable, PendingAppend};
use crate::kafka::{kafka_error, KafkaCluster, TopicSpec};
use crate::{Error, Result};

/// Larger records are refused before they reach the broker (Kafka's default limit).
const MAX_RECORD_BYTES: usize = 1 << 20;
/// How long a replay waits for records a binding names before calling the log broken.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

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
                return Err(Error::Kafka(format!(
                    "topic {commands_topic} has no partitions"
                )))
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
        let producer: ThreadedProducer<Deliveries> = cluster
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // A few milliseconds of commands share one batch (Kafka 4's default is
                // 5). Fewer, larger batches cost the broker less to write and the
                // binder less to fetch (a broker that lists a partition's batches on
                // every fetch slows down with their count).
                ("linger.ms", &options.linger_ms.to_string()),
                ("partitioner", "murmur2_random"),
            ])
            .create_with_context(Deliveries {
                waiters: Arc::clone(&waiters),
                // A follower's records are bound by its leader, which reads them back.
                delivered: (!options.follow).then(|| Arc::clone(&delivered)),
            })
            .map_err(kafka_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(true));
        let health = watch_health(&cluster, &commands_topic, &healthy, &stop)?;
        Ok(KafkaLog {
            cluster,
            commands_topic,
            bindings_topic,
            partitions,
            max_batch_records: options.max_batch_records.max(1),
            follow: options.follow,
            key_of: options.key_of,
            bindings: Arc::new(Mutex::new(bindings)),
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

    fn bound(&self) -> Bound {
        Bound {
            bindings: Arc::clone(&self.bindings),
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
        let append = Arc::new(PendingDelivery {
            remaining: AtomicUsize::new(payloads.len()),
            positions: Mutex::new(vec![None; payloads.len()]),
            failure: Mutex::new(None),
            reply: Mutex::new(Some(reply)),
        });
        for (index, payload) in payloads.iter().enumerate() {
            let key = (self.key_of)(payload);
            let mut record = BaseRecord::with_opaque_to(
                &self.commands_topic,
                Box::new((Arc::clone(&append), index)),
            )
            .key(&key)
            .payload(payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue drains as the broker acknowledges.
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => {
                        append.fail(kafka_error(error));
                        // The records not sent count as done so that the append answers.
                        for _ in index..payloads.len() {
                            append.done(&self.waiters);
                        }
                        return PendingAppend(rx);
                    }
                }
            }
        }
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
        Ok(Box::new(ReplayIter {
            reader,
            bindings: bindings.into_iter().skip(first).collect(),
            current: VecDeque::new(),
            from: seq,
            failed: false,
        }))
    }

    fn durable_end(&self) -> Seq {
        self.durable_end.load(Ordering::Acquire)
    }

    fn start(&self, consumer: OnDurable) -> Result<()> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let (next_seq, last_ts) = {
            let bindings = self.bindings.lock();
            for binding in bindings.iter() {
                for &(partition, _, end) in &binding.ranges {
                    ends.insert(partition, end);
                }
            }
            (
                bindings.last().map_or(0, Binding::end_seq),
                bindings.last().map_or(0, |binding| binding.ts),
            )
        };
        if self.follow {
            let bindings_consumer: BaseConsumer = self
                .cluster
                .client_config(&[
                    ("group.id", "tidemark-follower"),
                    ("enable.auto.commit", "false"),
                    ("isolation.level", "read_committed"),
                    ("fetch.wait.max.ms", "5"),
                ])
                .create()
                .map_err(kafka_error)?;
            let mut assignment = TopicPartitionList::new();
            // One binding per record of the bindings topic, so the next is at this offset.
            let next = self.bindings.lock().len() as i64;
            assignment
                .add_partition_offset(&self.bindings_topic, 0, Offset::Offset(next))
                .map_err(kafka_error)?;
            bindings_consumer.assign(&assignment).map_err(kafka_error)?;
            let follower = Follower {
                bindings_consumer,
                replay: Replay::new(&self.cluster, &self.commands_topic, self.partitions, &ends)?,
                next_seq,
                pending: None,
                bound: self.bound(),
                stop: Arc::clone(&self.stop),
            };
            let thread = std::thread::Builder::new()
                .name("kafka-follower".into())
                .spawn(move || follower.run(consumer))
                .map_err(|e| Error::io("kafka-follower", e))?;
            *self.binder.lock() = Some(thread);
            return Ok(());
        }
        let source: BaseConsumer = self
            .cluster
            .client_config(&[
                ("group.id", "tidemark-binder"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "false"),
                // How long the broker may hold a fetch that found nothing: the floor of
                // an idle log's command latency (some brokers hold it this long even
                // when records arrive meanwhile).
                ("fetch.wait.max.ms", "5"),
            ])
            .create()
            .map_err(kafka_error)?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.partitions {
            let offset = ends
                .get(&partition)
                .map_or(Offset::Beginning, |end| Offset::Offset(*end));
            assignment
                .add_partition_offset(&self.commands_topic, partition, offset)
                .map_err(kafka_error)?;
        }
        source.assign(&assignment).map_err(kafka_error)?;
        let sink: BaseProducer<BindingDelivery> = self
            .cluster
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "0"),
            ])
            .create_with_context(BindingDelivery::default())
            .map_err(kafka_error)?;
        let binder = Binder {
            source,
            sink,
            bindings_topic: self.bindings_topic.clone(),
            ends,
            next_seq,
            last_ts,
            max_batch_records: self.max_batch_records,
            carry: VecDeque::new(),
            delivered: Arc::clone(&self.delivered),
            bound: self.bound(),
            stop: Arc::clone(&self.stop),
        };
        let thread = std::thread::Builder::new()
            .name("kafka-binder".into())
            .spawn(move || binder.run(consumer))
            .map_err(|e| Error::io("kafka-binder", e))?;
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

/// An append whose records are on their way to the broker.
struct PendingDelivery {
    remaining: AtomicUsize,
    positions: Mutex<Vec<Option<Position>>>,
    failure: Mutex<Option<Error>>,
    reply: Mutex<Option<oneshot::Sender<Result<Appended>>>>,
}

impl PendingDelivery {
    fn fail(&self, error: Error) {
        self.failure.lock().get_or_insert(error);
    }

    /// One record delivered (or failed); the last one hands the append to the waiters.
    fn done(&self, waiters: &Waiters) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(reply) = self.reply.lock().take() else {
            return;
        };
        if let Some(error) = self.failure.lock().take() {
            let _ = reply.send(Err(error));
            return;
        }
        let positions = self.positions.lock().iter().flatten().copied().collect();
        waiters.wait(positions, reply);
    }
}

/// Producer callbacks: record where each command landed.
struct Deliveries {
    waiters: Arc<Waiters>,
    /// The leader's binder, which can bind its own records without reading them back.
    delivered: Option<Arc<Delivered>>,
}

/// Commands this process wrote, by partition and offset, until the binder takes them.
/// The binder binds a partition's records in offset order from where it stands; when
/// the next offset is one of these (as it is while this process is the only writer), it
/// need not wait for the topic to be read back, which costs a fetch (several
/// milliseconds on some brokers) per batch. Records anyone else wrote still come from
/// the topic, as do gaps; those read back after being bound here are skipped.
#[derive(Default)]
struct Delivered {
    records: Mutex<HashMap<i32, BTreeMap<i64, Vec<u8>>>>,
}

/// More records than this waiting in one partition means the binder is not taking
/// them (stopped, or far behind a gap); the topic still has them.
const MOST_DELIVERED_WAITING: usize = 1 << 16;

impl Delivered {
    fn add(&self, partition: i32, offset: i64, payload: &[u8]) {
        let mut records = self.records.lock();
        let waiting = records.entry(partition).or_default();
        if waiting.len() < MOST_DELIVERED_WAITING {
            waiting.insert(offset, payload.to_vec());
        }
    }

    /// Moves into `batch` every record that continues a partition from `next`,
    /// advancing `next`, and forgets those before it.
    fn take_next(&self, next: &mut HashMap<i32, i64>, batch: &mut Vec<Record>, limit: usize) {
        let mut records = self.records.lock();
        for (partition, waiting) in records.iter_mut() {
            let at = next.entry(*partition).or_insert(0);
            // Bound from the topic meanwhile.
            while let Some(stale) = waiting.first_entry().filter(|first| first.key() < at) {
                stale.remove();
            }
            while batch.len() < limit {
                let Some(payload) = waiting.remove(at) else {
                    break;
                };
                batch.push(Record {
                    partition: *partition,
                    offset: *at,
                    payload,
                });
                *at += 1;
            }
        }
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<(Arc<PendingDelivery>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (append, index) = *opaque;
        match result {
            Ok(message) => {
                append.positions.lock()[index] = Some((message.partition(), message.offset()));
                if let Some(delivered) = &self.delivered {
                    delivered.add(
                        message.partition(),
                        message.offset(),
                        message.payload().unwrap_or_default(),
                    );
                }
            }
            Err((error, _)) => append.fail(kafka_error(error.clone())),
        }
        append.done(&self.waiters);
    }
}

/// Appends waiting for a binding to cover their records, and where recent records were
/// bound (a record may be bound before its producer hears that it was delivered).
#[derive(Default)]
struct Waiters {
    state: Mutex<WaitState>,
}

#[derive(Default)]
struct WaitState {
    bound: HashMap<Position, (Ts, Seq)>,
    bound_order: VecDeque<Position>,
    waiting: Vec<(Vec<Position>, oneshot::Sender<Result<Appended>>)>,
    failed: Option<String>,
}

/// Bound positions remembered for appends still to hear of their delivery.
const REMEMBERED_POSITIONS: usize = 1 << 20;

impl WaitState {
    fn answer(&self, positions: &[Position]) -> Option<Appended> {
        let mut ts = 0;
        let mut seqs = Vec::with_capacity(positions.len());
        for position in positions {
            let (at, seq) = self.bound.get(position)?;
            ts = ts.max(*at);
            seqs.push(*seq);
        }
        Some(Appended { ts, seqs })
    }
}

impl Waiters {
    fn wait(&self, positions: Vec<Position>, reply: oneshot::Sender<Result<Appended>>) {
        let mut state = self.state.lock();
        if let Some(reason) = &state.failed {
            let _ = reply.send(Err(Error::Poisoned(reason.clone())));
        } else if let Some(appended) = state.answer(&positions) {
            let _ = reply.send(Ok(appended));
        } else {
            state.waiting.push((positions, reply));
        }
    }

    fn bound(&self, records: impl Iterator<Item = (Position, (Ts, Seq))>) {
        let mut state = self.state.lock();
        for (position, at) in records {
            state.bound.insert(position, at);
            state.bound_order.push_back(position);
        }
        while state.bound_order.len() > REMEMBERED_POSITIONS {
            if let Some(old) = state.bound_order.pop_front() {
                state.bound.remove(&old);
            }
        }
        let waiting = std::mem::take(&mut state.waiting);
        for (positions, reply) in waiting {
            match state.answer(&positions) {
                Some(appended) => {
                    let _ = reply.send(Ok(appended));
                }
                None => state.waiting.push((positions, reply)),
            }
        }
    }

    fn fail_all(&self, error: impl Fn() -> Error) {
        let mut state = self.state.lock();
        for (_, reply) in state.waiting.drain(..) {
            let _ = reply.send(Err(error()));
        }
    }

    fn poison(&self, reason: String) {
        let mut state = self.state.lock();
        for (_, reply) in state.waiting.drain(..) {
            let _ = reply.send(Err(Error::Poisoned(reason.clone())));
        }
        state.failed = Some(reason);
    }
}

/// A command read from the commands topic.
struct Record {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// Cuts what the commands topic holds into batches, binds them, and hands them on.
struct Binder {
    source: BaseConsumer,
    sink: BaseProducer<BindingDelivery>,
    bindings_topic: String,
    /// Offset after the last bound record, per partition.
    ends: HashMap<i32, i64>,
    next_seq: Seq,
    last_ts: Ts,
    max_batch_records: usize,
    /// Records read but left for the next batch.
    carry: VecDeque<Record>,
    delivered: Arc<Delivered>,
    bound: Bound,
    stop: Arc<AtomicBool>,
}

/// Where a bound batch goes: the dataflow, the log's readers, the waiting appenders.
struct Bound {
    bindings: Arc<Mutex<Vec<Binding>>>,
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
        self.durable_end.store(end, Ordering::Release);
        self.waiters.bound(bound.into_iter());
    }
}

impl Binder {
    fn run(mut self, mut consumer: OnDurable) {
        let mut last_error: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            let mut batch = self.read(&mut last_error);
            if batch.is_empty() {
                continue;
            }
            batch.sort_by_key(|record| (record.partition, record.offset));
            if batch.len() > self.max_batch_records {
                let rest = batch.split_off(self.max_batch_records);
                for record in rest.into_iter().rev() {
                    self.carry.push_front(record);
                }
            }
            let binding = self.binding(&batch);
            if let Err(error) = self.write(&binding) {
                // Nothing was handed on: the records stay unbound and no one is answered.
                let reason = format!("could not write binding {}: {error}", binding.first_seq);
                tracing::error!(%reason, "the Kafka log stops binding commands");
                self.bound.waiters.poison(reason);
                return;
            }
            for &(partition, _, end) in &binding.ranges {
                self.ends.insert(partition, end);
            }
            self.next_seq = binding.end_seq();
            self.last_ts = binding.ts;
            self.bound.hand_on(binding, &batch, &mut consumer);
        }
    }

    /// Whatever the partitions hold now past what is bound (waiting a little for the
    /// first record): this process's own records as soon as they are delivered, and
    /// what the topic is read to hold.
    fn read(&mut self, last_error: &mut Option<Instant>) -> Vec<Record> {
        let mut batch: Vec<Record> = self.carry.drain(..).collect();
        // The next offset to bind in each partition, past the records in `batch`.
        let mut next = self.ends.clone();
        for record in &batch {
            let at = next.entry(record.partition).or_insert(0);
            *at = (*at).max(record.offset + 1);
        }
        let idle_until = Instant::now() + Duration::from_millis(100);
        loop {
            self.delivered
                .take_next(&mut next, &mut batch, self.max_batch_records);
            // Wait for the topic only while there is nothing to bind, and briefly, so
            // that records delivered meanwhile are bound soon.
            let mut wait = if batch.is_empty() && Instant::now() < idle_until {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            };
            while batch.len() < self.max_batch_records {
                let polled = self.source.poll(wait);
                wait = Duration::ZERO;
                match polled {
                    Some(Ok(message)) => {
                        let at = next.entry(message.partition()).or_insert(0);
                        // Bound already, from the records this process delivered.
                        if message.offset() < *at {
                            continue;
                        }
                        *at = message.offset() + 1;
                        batch.push(Record {
                            partition: message.partition(),
                            offset: message.offset(),
                            payload: message.payload().unwrap_or_default().to_vec(),
                        });
                    }
                    Some(Err(error)) => {
                        if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(%error, "reading the commands topic");
                            *last_error = Some(Instant::now());
                        }
                        break;
                    }
                    None => break,
                }
            }
            if !batch.is_empty() || Instant::now() >= idle_until {
                // Delivered records that continue what the topic gave.
                self.delivered
                    .take_next(&mut next, &mut batch, self.max_batch_records);
                return batch;
            }
        }
    }

    fn binding(&self, batch: &[Record]) -> Binding {
        let mut ranges: Vec<(i32, i64, i64)> = Vec::new();
        for record in batch {
            match ranges.last_mut() {
                Some((partition, _, end)) if *partition == record.partition => {
                    *end = record.offset + 1
                }
                _ => {
                    let start = self.ends.get(&record.partition).copied().unwrap_or(0);
                    ranges.push((record.partition, start, record.offset + 1));
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as Ts);
        Binding {
            ts: now.max(self.last_ts + 1),
            first_seq: self.next_seq,
            count: batch.len() as u64,
            ranges,
        }
    }

    /// Writes a binding and waits until the broker has it, retrying while the broker is
    /// unreachable.
    fn write(&self, binding: &Binding) -> Result<()> {
        let payload = serde_json::to_vec(binding).map_err(|e| Error::Kafka(e.to_string()))?;
        let key = binding.first_seq.to_string();
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let record = BaseRecord::to(&self.bindings_topic)
                .key(&key)
                .payload(&payload);
            let sent = self
                .sink
                .send(record)
                .map_err(|(error, _)| kafka_error(error));
            match sent.and_then(|()| self.delivered()) {
                Ok(()) => return Ok(()),
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "writing a binding; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Binder {
    /// Waits for the delivery report of the one binding in flight. (The producer's
    /// `flush` polls in steps of 100 ms, which would be the latency of every command.)
    fn delivered(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(result) = self.sink.context().result.lock().take() {
                return result;
            }
            if Instant::now() > deadline {
                return Err(Error::Kafka(
                    "no delivery report for a binding within 30 s".into(),
                ));
            }
            self.sink.poll(Duration::from_millis(1));
        }
    }
}

/// The delivery report of the binding being written.
#[derive(Default)]
struct BindingDelivery {
    result: Mutex<Option<Result<()>>>,
}

impl ClientContext for BindingDelivery {}

impl ProducerContext for BindingDelivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        *self.result.lock() = Some(match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(kafka_error(error.clone())),
        });
    }
}

/// Applies the bindings another process writes, in order, with their records.
struct Follower {
    bindings_consumer: BaseConsumer,
    replay: Replay,
    next_seq: Seq,
    /// A binding read whose records are not all here yet.
    pending: Option<Binding>,
    bound: Bound,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self, mut consumer: OnDurable) {
        let mut last_error: Option<Instant> = None;
        let mut warn = |error: &dyn std::fmt::Display| {
            if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(%error, "following the Kafka log");
                last_error = Some(Instant::now());
            }
        };
        while !self.stop.load(Ordering::Acquire) {
            let binding = match self.pending.take() {
                Some(binding) => binding,
                None => match self.bindings_consumer.poll(Duration::from_millis(100)) {
                    None => continue,
                    Some(Err(error)) => {
                        warn(&error);
                        continue;
                    }
                    Some(Ok(message)) => {
                        match serde_json::from_slice::<Binding>(
                            message.payload().unwrap_or_default(),
                        ) {
                            Ok(binding) => binding,
                            Err(error) => {
                                let reason = format!(
                                    "the bindings topic holds a record that is not a binding at offset {}: {error}",
                                    message.offset()
                                );
                                tracing::error!(%reason, "the Kafka log stops following");
                                self.bound.waiters.poison(reason);
                                return;
                            }
                        }
                    }
                },
            };
            if binding.first_seq != self.next_seq {
                let reason = format!(
                    "binding at position {} follows position {}",
                    binding.first_seq, self.next_seq
                );
                tracing::error!(%reason, "the Kafka log stops following");
                self.bound.waiters.poison(reason);
                return;
            }
            let records = match self.replay.batch(&binding) {
                Ok(records) => records,
                Err(error) => {
                    warn(&error);
                    self.pending = Some(binding);
                    continue;
                }
            };
            self.next_seq = binding.end_seq();
            self.bound.hand_on(binding, &records, &mut consumer);
        }
    }
}

/// Asks the cluster for the commands topic's metadata every second; `healthy` says
/// whether the last answer came within two seconds.
fn watch_health(
    cluster: &KafkaCluster,
    topic: &str,
    healthy: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let probe: BaseConsumer = cluster.client_config(&[]).create().map_err(kafka_error)?;
    let (topic, healthy, stop) = (topic.to_string(), Arc::clone(healthy), Arc::clone(stop));
    let brokers = cluster.brokers.clone();
    std::thread::Builder::new()
        .name("kafka-health".into())
        .spawn(move || {
            let mut last_probe: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                if last_probe.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                last_probe = Some(Instant::now());
                let answered = probe
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .is_ok();
                if healthy.swap(answered, Ordering::AcqRel) != answered {
                    if answered {
                        tracing::info!(%brokers, "the Kafka cluster answers again");
                    } else {
                        tracing::warn!(%brokers, "the Kafka cluster does not answer; not ready");
                    }
                }
            }
        })
        .map_err(|e| Error::io("kafka-health", e))
}

/// Every binding in the bindings topic, in order, checked to follow one another.
fn read_bindings(cluster: &KafkaCluster, topic: &str) -> Result<Vec<Binding>> {
    let consumer: BaseConsumer = cluster
        .client_config(&[
            ("group.id", "tidemark-bindings-reader"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ])
        .create()
        .map_err(kafka_error)?;
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(30))
        .map_err(kafka_error)?;
    let mut bindings: Vec<Binding> = Vec::new();
    if high <= 0 {
        return Ok(bindings);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(kafka_error)?;
    consumer.assign(&assignment).map_err(kafka_error)?;
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let binding: Binding =
                    serde_json::from_slice(message.payload().unwrap_or_default()).map_err(|e| {
                        Error::Corrupt {
                            segment: topic.to_string(),
                            offset: message.offset() as u64,
                            reason: format!("not a binding: {e}"),
                        }
                    })?;
                let expected = bindings.last().map_or(0, Binding::end_seq);
                if binding.first_seq != expected {
                    return Err(Error::Corrupt {
                        segment: topic.to_string(),
                        offset: message.offset() as u64,
                        reason: format!(
                            "binding starts at position {}, expected {expected}",
                            binding.first_seq
                        ),
                    });
                }
                bindings.push(binding);
                if message.offset() + 1 >= high {
                    return Ok(bindings);
                }
            }
            Some(Err(error)) => return Err(kafka_error(error)),
            None if Instant::now() > deadline => {
                return Err(Error::Kafka(format!(
                    "the bindings topic {topic} did not deliver its records up to offset {high}"
                )))
            }
            None => {}
        }
    }
}

/// Reads the commands topic from given offsets, one binding's records at a time.
struct Replay {
    consumer: BaseConsumer,
    buffers: HashMap<i32, VecDeque<Record>>,
}

impl Replay {
    fn new(
        cluster: &KafkaCluster,
        topic: &str,
        partitions: i32,
        starts: &HashMap<i32, i64>,
    ) -> Result<Replay> {
        let consumer: BaseConsumer = cluster
            .client_config(&[
                ("group.id", "tidemark-replay"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ])
            .create()
            .map_err(kafka_error)?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            let offset = starts
                .get(&partition)
                .map_or(Offset::Beginning, |start| Offset::Offset(*start));
            assignment
                .add_partition_offset(topic, partition, offset)
                .map_err(kafka_error)?;
        }
        consumer.assign(&assignment).map_err(kafka_error)?;
        Ok(Replay {
            consumer,
            buffers: HashMap::new(),
        })
    }

    /// The records of one binding, in (partition, offset) order.
    fn batch(&mut self, binding: &Binding) -> Result<Vec<Record>> {
        let mut records = Vec::with_capacity(binding.count as usize);
        for &(partition, start, end) in &binding.ranges {
            let deadline = Instant::now() + REPLAY_TIMEOUT;
            loop {
                let buffer = self.buffers.entry(partition).or_default();
                while buffer.front().is_some_and(|record| record.offset < end) {
                    let record = buffer.pop_front().expect("a front record");
                    if record.offset >= start {
                        records.push(record);
                    }
                }
                // The range ends with a record of its own, so its last offset arrives.
                if records
                    .last()
                    .is_some_and(|r| r.partition == partition && r.offset == end - 1)
                    || buffer.front().is_some()
                {
                    break;
                }
                match self.consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(message)) => self
                        .buffers
                        .entry(message.partition())
                        .or_default()
                        .push_back(Record {
                            partition: message.partition(),
                            offset: message.offset(),
                            payload: message.payload().unwrap_or_default().to_vec(),
                        }),
                    Some(Err(error)) => {
                        self.put_back(records);
                        return Err(kafka_error(error));
                    }
                    None if Instant::now() > deadline => {
                        self.put_back(records);
                        return Err(Error::Kafka(format!(
                            "partition {partition} did not deliver offsets {start}..{end} of \
                             the binding at position {}",
                            binding.first_seq
                        )));
                    }
                    None => {}
                }
            }
        }
        if records.len() as u64 != binding.count {
            return Err(Error::Corrupt {
                segment: "tidemark.commands".into(),
                offset: binding.first_seq,
                reason: format!(
                    "the binding at position {} names {} records, the topic holds {}",
                    binding.first_seq,
                    binding.count,
                    records.len()
                ),
            });
        }
        Ok(records)
    }
}

impl Replay {
    /// Returns records taken for a batch that could not be completed, so that trying
    /// the batch again finds them.
    fn put_back(&mut self, records: Vec<Record>) {
        for record in records.into_iter().rev() {
            self.buffers
                .entry(record.partition)
                .or_default()
                .push_front(record);
        }
    }
}

struct ReplayIter {
    reader: Replay,
    bindings: VecDeque<Binding>,
    current: VecDeque<LogRecord>,
    from: Seq,
    failed: bool,
}

impl Iterator for ReplayIter {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(record) = self.current.pop_front() {
                return Some(Ok(record));
            }
            let binding = self.bindings.pop_front()?;
            match self.reader.batch(&binding) {
                Ok(records) => {
                    self.current = records
                        .into_iter()
                        .enumerate()
                        .map(|(index, record)| LogRecord {
                            seq: binding.first_seq + index as Seq,
                            ts: binding.ts,
                            payload: record.payload,
                        })
                        .filter(|record| record.seq >= self.from)
                        .collect();
                }
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

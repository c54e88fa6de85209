//! Sending commands to the commands topic, and answering each append once a binding
//! covers all of its records: the producer learns where each record landed, the
//! leader's binder may bind those records at once (`Delivered`), and `Waiters` match
//! bound positions to the appends waiting for them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataflows::model::{Seq, Ts};
use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::oneshot;

use super::{KeyOf, Position, Record};
use crate::kafka::{kafka_error, KafkaCluster};
use crate::log::Appended;
use crate::{Error, Result};

/// The producer of the commands topic; `deliveries` hears where each record landed.
pub(super) fn producer(
    cluster: &KafkaCluster,
    linger_ms: u32,
    deliveries: Deliveries,
) -> Result<ThreadedProducer<Deliveries>> {
    cluster
        .idempotent_producer_config(&[
            // A few milliseconds of commands share one batch (Kafka 4's default is
            // 5). Fewer, larger batches cost the broker less to write and the
            // binder less to fetch (a broker that lists a partition's batches on
            // every fetch slows down with their count).
            ("linger.ms", &linger_ms.to_string()),
            ("partitioner", "murmur2_random"),
        ])
        .create_with_context(deliveries)
        .map_err(kafka_error)
}

/// Sends `payloads` to `topic`, keyed by `key_of`; `reply` is answered once a binding
/// covers every one of them, or as soon as one cannot be sent.
pub(super) fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    key_of: &KeyOf,
    payloads: &[Vec<u8>],
    waiters: &Waiters,
    reply: oneshot::Sender<Result<Appended>>,
) {
    let append = Arc::new(PendingDelivery {
        remaining: AtomicUsize::new(payloads.len()),
        positions: Mutex::new(vec![None; payloads.len()]),
        failure: Mutex::new(None),
        reply: Mutex::new(Some(reply)),
    });
    for (index, payload) in payloads.iter().enumerate() {
        let key = key_of(payload);
        let mut record = BaseRecord::with_opaque_to(topic, Box::new((Arc::clone(&append), index)))
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
                        append.done(waiters);
                    }
                    return;
                }
            }
        }
    }
}

/// An append whose records are on their way to the broker.
pub(super) struct PendingDelivery {
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
pub(super) struct Deliveries {
    pub(super) waiters: Arc<Waiters>,
    /// The leader's binder, which can bind its own records without reading them back.
    pub(super) delivered: Option<Arc<Delivered>>,
}

/// Commands this process wrote, by partition and offset, until the binder takes them.
/// The binder binds a partition's records in offset order from where it stands; when
/// the next offset is one of these (as it is while this process is the only writer), it
/// need not wait for the topic to be read back, which costs a fetch (several
/// milliseconds on some brokers) per batch. Records anyone else wrote still come from
/// the topic, as do gaps; those read back after being bound here are skipped.
#[derive(Default)]
pub(super) struct Delivered {
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
    pub(super) fn take_next(
        &self,
        next: &mut HashMap<i32, i64>,
        batch: &mut Vec<Record>,
        limit: usize,
    ) {
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
pub(super) struct Waiters {
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

    pub(super) fn bound(&self, records: impl Iterator<Item = (Position, (Ts, Seq))>) {
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

    pub(super) fn fail_all(&self, error: impl Fn() -> Error) {
        let mut state = self.state.lock();
        for (_, reply) in state.waiting.drain(..) {
            let _ = reply.send(Err(error()));
        }
    }

    pub(super) fn poison(&self, reason: String) {
        let mut state = self.state.lock();
        for (_, reply) in state.waiting.drain(..) {
            let _ = reply.send(Err(Error::Poisoned(reason.clone())));
        }
        state.failed = Some(reason);
    }
}

//! The leader's binder: cuts what the commands topic holds into batches, gives each a
//! timestamp and consecutive positions, writes its binding to the bindings topic, and
//! only then hands the batch on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataflows::model::{Seq, Ts};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::append::Delivered;
use super::{Binding, Bound, KafkaLog, Record};
use crate::kafka::kafka_error;
use crate::log::OnDurable;
use crate::{Error, Result};

/// Cuts what the commands topic holds into batches, binds them, and hands them on.
pub(super) struct Binder {
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

impl Binder {
    /// Starts binding `log`'s commands from `ends` (offset after the last bound record,
    /// per partition), handing each batch to `consumer`.
    pub(super) fn spawn(
        log: &KafkaLog,
        ends: HashMap<i32, i64>,
        next_seq: Seq,
        last_ts: Ts,
        consumer: OnDurable,
    ) -> Result<JoinHandle<()>> {
        let source: BaseConsumer = log.cluster.read_committed_consumer(
            "tidemark-binder",
            &[
                ("enable.partition.eof", "false"),
                // How long the broker may hold a fetch that found nothing: the floor of
                // an idle log's command latency (some brokers hold it this long even
                // when records arrive meanwhile).
                ("fetch.wait.max.ms", "5"),
            ],
        )?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..log.partitions {
            let offset = ends
                .get(&partition)
                .map_or(Offset::Beginning, |end| Offset::Offset(*end));
            assignment
                .add_partition_offset(&log.commands_topic, partition, offset)
                .map_err(kafka_error)?;
        }
        source.assign(&assignment).map_err(kafka_error)?;
        let sink: BaseProducer<BindingDelivery> = log
            .cluster
            .idempotent_producer_config(&[("linger.ms", "0")])
            .create_with_context(BindingDelivery::default())
            .map_err(kafka_error)?;
        let binder = Binder {
            source,
            sink,
            bindings_topic: log.bindings_topic.clone(),
            ends,
            next_seq,
            last_ts,
            max_batch_records: log.max_batch_records,
            carry: VecDeque::new(),
            delivered: Arc::clone(&log.delivered),
            bound: log.bound(),
            stop: Arc::clone(&log.stop),
        };
        std::thread::Builder::new()
            .name("kafka-binder".into())
            .spawn(move || binder.run(consumer))
            .map_err(|e| Error::io("kafka-binder", e))
    }

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
        let payload = serde_json::to_vec(binding).map_err(|e| Error::Kafka {
            message: format!("a binding does not serialise: {e}"),
            retryable: false,
        })?;
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
                return Err(Error::Kafka {
                    message: "no delivery report for a binding within 30 s".into(),
                    retryable: true,
                });
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

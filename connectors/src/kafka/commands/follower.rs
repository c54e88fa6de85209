//! A follower applies the bindings another process (the leader) writes, in order,
//! with the records they name; it binds nothing itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataflows::model::Seq;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::replay::Replay;
use super::{Binding, Bound, KafkaLog};
use crate::kafka::kafka_error;
use crate::log::OnDurable;
use crate::{Error, Result};

/// Applies the bindings another process writes, in order, with their records.
pub(super) struct Follower {
    bindings_consumer: BaseConsumer,
    replay: Replay,
    next_seq: Seq,
    /// A binding read whose records are not all here yet.
    pending: Option<Binding>,
    bound: Bound,
    stop: Arc<AtomicBool>,
}

impl Follower {
    /// Starts applying the bindings after those `log` holds, reading their records
    /// from `ends` (offset after the last bound record, per partition).
    pub(super) fn spawn(
        log: &KafkaLog,
        ends: HashMap<i32, i64>,
        next_seq: Seq,
        consumer: OnDurable,
    ) -> Result<JoinHandle<()>> {
        let bindings_consumer: BaseConsumer = log
            .cluster
            .read_committed_consumer("tidemark-follower", &[("fetch.wait.max.ms", "5")])?;
        let mut assignment = TopicPartitionList::new();
        // One binding per record of the bindings topic, so the next is at this offset.
        let next = log.bindings.lock().len() as i64;
        assignment
            .add_partition_offset(&log.bindings_topic, 0, Offset::Offset(next))
            .map_err(kafka_error)?;
        bindings_consumer.assign(&assignment).map_err(kafka_error)?;
        let follower = Follower {
            bindings_consumer,
            replay: Replay::new(&log.cluster, &log.commands_topic, log.partitions, &ends)?,
            next_seq,
            pending: None,
            bound: log.bound(),
            stop: Arc::clone(&log.stop),
        };
        std::thread::Builder::new()
            .name("kafka-follower".into())
            .spawn(move || follower.run(consumer))
            .map_err(|e| Error::io("kafka-follower", e))
    }

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

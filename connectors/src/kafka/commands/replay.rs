//! Reading bound batches back: every binding written so far (at open), and the
//! commands topic from given offsets, one binding's records at a time, in the order the
//! binding gives them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dataflows::model::Seq;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Binding, Record};
use crate::kafka::{kafka_error, KafkaCluster};
use crate::log::LogRecord;
use crate::{Error, Result};

/// How long a replay waits for records a binding names before calling the log broken.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every binding in the bindings topic, in order, checked to follow one another.
pub(super) fn read_bindings(cluster: &KafkaCluster, topic: &str) -> Result<Vec<Binding>> {
    let consumer: BaseConsumer =
        cluster.read_committed_consumer("tidemark-bindings-reader", &[])?;
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
                return Err(Error::Kafka {
                    message: format!(
                        "the bindings topic {topic} did not deliver its records up to offset {high}"
                    ),
                    retryable: true,
                })
            }
            None => {}
        }
    }
}

/// Reads the commands topic from given offsets, one binding's records at a time.
pub(super) struct Replay {
    consumer: BaseConsumer,
    topic: String,
    buffers: HashMap<i32, VecDeque<Record>>,
}

impl Replay {
    pub(super) fn new(
        cluster: &KafkaCluster,
        topic: &str,
        partitions: i32,
        starts: &HashMap<i32, i64>,
    ) -> Result<Replay> {
        let consumer: BaseConsumer = cluster.read_committed_consumer("tidemark-replay", &[])?;
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
            topic: topic.to_string(),
            buffers: HashMap::new(),
        })
    }

    /// The records of one binding, in (partition, offset) order.
    pub(super) fn batch(&mut self, binding: &Binding) -> Result<Vec<Record>> {
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
                        return Err(Error::Kafka {
                            message: format!(
                                "partition {partition} did not deliver offsets {start}..{end} \
                                 of the binding at position {}",
                                binding.first_seq
                            ),
                            retryable: true,
                        });
                    }
                    None => {}
                }
            }
        }
        if records.len() as u64 != binding.count {
            return Err(Error::Corrupt {
                segment: self.topic.clone(),
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

/// The records of a run of bindings, from position `from` on.
pub(super) struct ReplayIter {
    reader: Replay,
    bindings: VecDeque<Binding>,
    current: VecDeque<LogRecord>,
    from: Seq,
    failed: bool,
}

impl ReplayIter {
    pub(super) fn new(reader: Replay, bindings: VecDeque<Binding>, from: Seq) -> ReplayIter {
        ReplayIter {
            reader,
            bindings,
            current: VecDeque::new(),
            from,
            failed: false,
        }
    }
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

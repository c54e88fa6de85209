//! The command log: an ordered, durable sequence of records, each with a position
//! (`seq`) and the logical timestamp (`ts`) of the batch it was appended in. The
//! embedded segment log lives here; the Kafka backend in `crate::kafka`.

mod embedded;
mod record;

pub use crate::kafka::{KafkaLog, KafkaLogOptions, KeyOf};
pub use embedded::{EmbeddedLog, EmbeddedLogOptions};
pub use record::{decode_record, encode_record, RECORD_HEADER_BYTES};

use std::time::Duration;

use dataflows::model::{Seq, Ts};
use tokio::sync::oneshot;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: Seq,
    pub ts: Ts,
    pub payload: Vec<u8>,
}

/// Where an append landed: the position of each record, in the order given, and the
/// timestamp at which all of them are in the dataflow. (The embedded log keeps an
/// append's records together; Kafka may spread them over partitions and batches.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub ts: Ts,
    pub seqs: Vec<Seq>,
}

/// A batch that has just become durable, in log order. Handed to the log's consumer
/// (the dataflow feeder) before any appender is answered.
pub struct DurableBatch<'a> {
    pub ts: Ts,
    pub records: Vec<(Seq, &'a [u8])>,
}

/// Called once per durable batch, on the log's writer, in log order.
pub type OnDurable = Box<dyn FnMut(DurableBatch<'_>) + Send>;

/// The answer to an append; resolves once the batch is durable (or failed).
pub struct PendingAppend(pub(crate) oneshot::Receiver<Result<Appended>>);

impl PendingAppend {
    /// The answer for an append with a record over `max` bytes, if it has one.
    pub(crate) fn refuse_larger_than(payloads: &[Vec<u8>], max: usize) -> Option<PendingAppend> {
        let size = payloads.iter().map(Vec::len).find(|len| *len > max)?;
        let (reply, rx) = oneshot::channel();
        let _ = reply.send(Err(Error::TooLarge(size)));
        Some(PendingAppend(rx))
    }

    pub async fn durable(self) -> Result<Appended> {
        self.0.await.unwrap_or(Err(Error::Closed))
    }

    pub fn wait(self) -> Result<Appended> {
        self.0.blocking_recv().unwrap_or(Err(Error::Closed))
    }
}

/// A durable, ordered log of records. The embedded segment log implements it; so does
/// the Kafka backend.
pub trait Log: Send + Sync + 'static {
    /// Appends `payloads` as one batch. Concurrent appends may share a batch (and its
    /// fsync); the answer comes only once the bytes are durable.
    fn append(&self, payloads: Vec<Vec<u8>>) -> PendingAppend;

    /// Reads every durable record at or after `seq`, in order.
    fn read_from(&self, seq: Seq) -> Result<Box<dyn Iterator<Item = Result<LogRecord>> + Send>>;

    /// The position the next record will get: every record before it is durable.
    fn durable_end(&self) -> Seq;

    /// The timestamp of the last batch that any process sharing the log had made
    /// durable when the call began, returned once this process has handed that batch to
    /// its consumer too: waiting for the views to settle it then shows every write
    /// acknowledged anywhere before the call. `None` when there is nothing to wait for:
    /// the log is empty, or this process makes every batch itself (the embedded log has
    /// one writer). Blocking; a Kafka follower asks the broker.
    fn sync_point(&self, _timeout: Duration) -> Result<Option<Ts>> {
        Ok(None)
    }

    /// Records others wrote to the log that this process has not applied yet (a Kafka
    /// consumer's lag); `None` for a log only this process writes. Blocking.
    fn unapplied(&self, _timeout: Duration) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Starts delivering durable batches to `consumer`. Appends made before this are
    /// refused, so no batch can reach the dataflow out of order.
    fn start(&self, consumer: OnDurable) -> Result<()>;

    /// Stops taking appends; those in flight finish first. Drops the consumer.
    fn close(&self);

    /// Whether the log can take appends now (a remote log's brokers answer).
    fn is_healthy(&self) -> bool {
        true
    }
}

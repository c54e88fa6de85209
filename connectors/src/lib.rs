//! The edges of tidemark: the durable command log and the providers that effects call.
//!
//! `log` holds the `Log` trait with its embedded segment-log backend (the default);
//! `kafka` everything done with Kafka (the command log's Kafka backend, the event bus
//! sink, the source of other systems' events, what their clients share); `effects`
//! holds payment and carrier providers with sandbox implementations; `testkit` (with
//! the `testkit` feature) a local Kafka broker for tests.
//! Must not: hold domain rules. Those live in `dataflows`.

pub mod effects;
pub mod files;
pub mod history;
pub mod kafka;
pub mod log;
#[cfg(feature = "testkit")]
pub mod testkit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt log record in segment {segment} at byte {offset}: {reason}")]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("the log is closed")]
    Closed,
    #[error("the log failed earlier and refuses appends until restarted: {0}")]
    Poisoned(String),
    /// Writing a batch failed and it was cut back out: none of it is in the log, and
    /// the same append can be tried again.
    #[error("the log could not write on {path} and kept nothing of the batch: {source}")]
    NotWritten {
        path: String,
        source: std::io::Error,
    },
    /// Writing a batch failed and cutting it back out failed too: whether its records
    /// are in the log is not known until the log is opened again.
    #[error(
        "the log could not write on {path} and cannot tell whether the batch is kept: {reason}"
    )]
    OutcomeUnknown { path: String, reason: String },
    #[error("record of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("provider error: {message}")]
    Provider { message: String, retryable: bool },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Kafka client or the cluster failed; `retryable` says whether the same operation
    /// can succeed later (an outage, a leader moving) or not until something changes
    /// (configuration, authorisation, a record too large, a fenced producer).
    #[error("kafka: {message}")]
    Kafka { message: String, retryable: bool },
    /// The event history on disk is not what it should be.
    #[error("history: {0}")]
    History(String),
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// The same error for another waiter of one failed operation (`io::Error` is not
    /// `Clone`).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::NotWritten { path, source } => Error::NotWritten {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::OutcomeUnknown { path, reason } => Error::OutcomeUnknown {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Corrupt {
                segment,
                offset,
                reason,
            } => Error::Corrupt {
                segment: segment.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            Error::Poisoned(reason) => Error::Poisoned(reason.clone()),
            Error::TooLarge(bytes) => Error::TooLarge(*bytes),
            Error::Provider { message, retryable } => Error::Provider {
                message: message.clone(),
                retryable: *retryable,
            },
            Error::Config(message) => Error::Config(message.clone()),
            Error::Kafka { message, retryable } => Error::Kafka {
                message: message.clone(),
                retryable: *retryable,
            },
            Error::History(reason) => Error::History(reason.clone()),
        }
    }

    /// Whether trying the same operation again can help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Provider {
                retryable: true,
                ..
            } | Error::Io { .. }
                | Error::NotWritten { .. }
                | Error::Kafka {
                    retryable: true,
                    ..
                }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The edges of tidemark: the durable command log and the providers that effects call.
//!
//! `log` holds the `Log` trait with its embedded segment-log backend (the default) and
//! its Kafka backend; `kafka` what every Kafka client shares (and a local test broker);
//! `effects` holds payment and carrier providers with sandbox implementations.
//! Must not: hold domain rules. Those live in `dataflows`.

pub mod effects;
pub mod events;
pub mod foreign;
pub mod kafka;
pub mod log;

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
    #[error("record of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("provider error: {message}")]
    Provider { message: String, retryable: bool },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
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
                | Error::Kafka(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! tidemark's domain and its dataflows: commands in, events and live views out.
//!
//! Pure and deterministic: no clocks, no I/O, no randomness. One folder per bounded
//! context (`catalog`, `orders`, `payments`, `fulfillment`, `users`, `auth`,
//! `analytics`, `reporting`), each with its
//! aggregates, read models and rules; `views` holds what every read model shares,
//! `shared` the operator machinery. Start reading at `dataflow.rs` (the wiring).

pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod dataflow;
pub mod engine;
pub mod events;
pub mod fulfillment;
pub mod idempotency;
pub mod model;
pub mod oracle;
pub mod orders;
pub mod payments;
pub mod reporting;
pub mod shared;
pub mod support;
pub mod users;
pub mod views;

pub use engine::{Batch, Engine, Features, Feeder, MetricsReport, Sink, WorkerReport};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("timely runtime failed: {0}")]
    Timely(String),
    #[error("the engine has stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

//! tidemark's domain and its dataflows: commands in, events and live views out.
//!
//! Pure and deterministic: no clocks, no I/O, no randomness. Start reading at
//! `dataflow.rs` (the wiring), then the aggregates: `catalog.rs`, `orders.rs`,
//! `users.rs`, `carts.rs`, then the read models in `views.rs`.

pub mod carts;
pub mod catalog;
pub mod dataflow;
pub mod engine;
pub mod intern;
pub mod model;
pub mod oracle;
pub mod ordered;
pub mod orders;
pub mod reservations;
pub mod rules;
pub mod sharded;
pub mod users;
pub mod views;

pub use engine::{Batch, Engine, Feeder, Sink, WorkerReport};

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

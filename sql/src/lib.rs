//! SQL over the live views (DataFusion): every view is a table, every query reads one
//! snapshot, and only queries run.
//!
//! `SqlEngine::run` takes the snapshot a request may see (every command acknowledged
//! before it arrived is in it), plans the SQL against tables over that snapshot
//! (`tables.rs`), refuses anything that would write, and runs it within the engine's
//! limits on threads of its own (`engine.rs`). `params.rs` turns JSON parameters into
//! SQL values; `history.rs` reads the Parquet history as `events`; `output.rs` writes an answer as JSON, CSV, Arrow IPC or Parquet.

mod engine;
mod erasure;
mod history;
pub mod output;
pub mod params;
pub mod pg;
mod pg_compat;
mod pg_functions;
pub mod reports;
mod tables;

/// The Arrow and Parquet this crate answers in, for readers of its answers.
pub use datafusion::{arrow, parquet};
pub use engine::{Answer, Params, QueryError, SqlConfig, SqlEngine};
pub use erasure::ERASED;
pub use tables::LiveTable;

//! The `tidemark` binary's library: HTTP API, configuration, start-up and executors.
//! The only composition root: it wires the log, the dataflows and the views together
//! and holds no business rules of its own.

pub mod admin;
pub mod allocator;
pub mod api;
pub mod auth;
pub mod breaker;
pub mod changefeed;
pub mod config;
pub mod dashboards;
pub mod demo;
pub mod executors;
pub mod foreign;
pub mod gateway;
pub mod hashing;
pub mod observability;
pub mod progress;
pub mod pulse;
pub mod reports;
pub mod runtime;
pub mod server;
pub mod shell;
pub mod sinks;
pub mod telemetry;
pub mod tls;

pub use runtime::Tidemark;

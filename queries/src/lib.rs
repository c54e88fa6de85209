//! Live views: the dataflow's output, published as one consistent snapshot per frontier.
//!
//! `ViewStore` is the dataflow's `Sink`. Workers report updates and frontiers; the store
//! holds updates until every worker has passed their time, then applies all of them to
//! the snapshot under one write lock and advances the published frontier. A reader
//! therefore sees every update of a timestamp or none of it. Only even frontiers are
//! published: the saga's second round (`2t + 1`) is never visible on its own.
//!
//! Must not: decide anything. Domain rules live in `dataflows`.

mod changes;
mod kpis;
mod scan;
mod snapshot;
mod store;

pub use changes::{Changes, Start, Subscription, DEFAULT_CAPACITY as CHANGEFEED_CAPACITY};
pub use kpis::{Average, Kpis, OrderRate, SuccessRate, Turnover};
pub use scan::{View, ViewScan};
pub use snapshot::{OrderCursor, Rows, Snapshot, StockLevel};
pub use store::{EventFeed, ViewStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("timed out waiting for the views to reach frontier {wanted} (at {current})")]
    Timeout { wanted: u64, current: u64 },
    #[error("the dataflow has stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "testkit")]
pub mod testkit;

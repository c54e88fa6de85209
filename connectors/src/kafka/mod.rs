//! Everything tidemark does with Kafka, one module per job: what every client shares
//! (`cluster`), the command log reclocked through a bindings topic (`commands`), the
//! event bus sink (`events`), and the source of other systems' events (`foreign`).

mod cluster;
mod commands;
mod error;
pub mod events;
pub mod foreign;

pub use cluster::{KafkaCluster, TopicSpec};
pub use commands::{KafkaLog, KafkaLogOptions, KeyOf};

pub(crate) use error::kafka_error;

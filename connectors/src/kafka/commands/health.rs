//! Whether the cluster answers: the log is not ready while it does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use crate::kafka::KafkaCluster;
use crate::{Error, Result};

/// Asks the cluster for the commands topic's metadata every second; `healthy` says
/// whether the last answer came within two seconds.
pub(super) fn watch_health(
    cluster: &KafkaCluster,
    topic: &str,
    healthy: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let probe = cluster.metadata_client()?;
    let (topic, healthy, stop) = (topic.to_string(), Arc::clone(healthy), Arc::clone(stop));
    let brokers = cluster.brokers.clone();
    std::thread::Builder::new()
        .name("kafka-health".into())
        .spawn(move || {
            let mut last_probe: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                if last_probe.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                last_probe = Some(Instant::now());
                let answered = probe
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .is_ok();
                if healthy.swap(answered, Ordering::AcqRel) != answered {
                    if answered {
                        tracing::info!(%brokers, "the Kafka cluster answers again");
                    } else {
                        tracing::warn!(%brokers, "the Kafka cluster does not answer; not ready");
                    }
                }
            }
        })
        .map_err(|e| Error::io("kafka-health", e))
}

//! Sinks: where the dataflow's output leaves tidemark.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use connectors::events::KafkaEventSink;
use queries::EventFeed;

/// Shortest time between two event transactions (events wait at most this long).
const TRANSACTION_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Publishes every event of `feed` through `sink`, one transaction per drain of the
/// feed (all that was published meanwhile), until the feed closes.
pub fn spawn_event_sink(
    mut sink: KafkaEventSink,
    feed: Receiver<EventFeed>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("event-sink".into())
        .spawn(move || {
            let mut last_publish: Option<std::time::Instant> = None;
            while let Ok(first) = feed.recv() {
                // At most one transaction per interval: each costs the broker a round of
                // requests and a commit marker in every partition it wrote to.
                if let Some(wait) = last_publish
                    .map(|at| TRANSACTION_INTERVAL.saturating_sub(at.elapsed()))
                    .filter(|wait| !wait.is_zero())
                {
                    std::thread::sleep(wait);
                }
                last_publish = Some(std::time::Instant::now());
                let mut frontier = first.frontier;
                let mut events = first.events;
                while let Ok(more) = feed.try_recv() {
                    frontier = frontier.max(more.frontier);
                    events.extend(more.events);
                }
                if let Err(error) = sink.publish(frontier, &events) {
                    tracing::error!(%error, "the event sink stops; events are no longer published");
                    return;
                }
            }
        })
}

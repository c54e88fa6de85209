//! Sinks: where the dataflow's output leaves tidemark.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use connectors::events::KafkaEventSink;
use queries::EventFeed;

/// Publishes every event of `feed` through `sink`, one transaction per drain of the
/// feed (all that was published meanwhile), until the feed closes.
pub fn spawn_event_sink(
    mut sink: KafkaEventSink,
    feed: Receiver<EventFeed>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("event-sink".into())
        .spawn(move || {
            while let Ok(first) = feed.recv() {
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

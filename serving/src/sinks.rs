//! Sinks: where the dataflow's output leaves tidemark.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use connectors::kafka::events::KafkaEventSink;
use queries::EventFeed;

/// Shortest time between two event transactions (events wait at most this long).
const TRANSACTION_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Publishes every event of `feed` through `sink`, one transaction per drain of the
/// feed (all that was published meanwhile), until the feed closes.
pub fn spawn_event_sink(
    mut sink: KafkaEventSink,
    feed: Receiver<EventFeed>,
) -> std::io::Result<EventSinkThread> {
    let give_up = sink.give_up_flag();
    let thread = std::thread::Builder::new()
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
                let mut published = first;
                while let Ok(more) = feed.try_recv() {
                    published.extend(more);
                }
                match sink.publish(published.frontier, &published.events, &published.requests) {
                    Ok(()) => {}
                    Err(connectors::Error::Closed) => {
                        tracing::warn!(
                            committed = sink.committed(),
                            "stopping with events not yet published; the next start publishes them"
                        );
                        return;
                    }
                    Err(error) => {
                        tracing::error!(%error, "the event sink stops; events are no longer published");
                        return;
                    }
                }
            }
        })?;
    Ok(EventSinkThread { thread, give_up })
}

/// The thread publishing events, and how to tell it to stop retrying.
pub struct EventSinkThread {
    thread: JoinHandle<()>,
    give_up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EventSinkThread {
    /// Waits until the sink has published what its (closed) feed held, giving up on a
    /// transaction that fails, as it does while the cluster is away.
    pub fn join(self) {
        self.give_up
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.thread.join();
    }
}

/// Writes every event of `feed` to the Parquet history: a flush at most every
/// `flush_every`, sooner when `flush_rows` events wait, and a last one when the feed
/// closes.
pub fn spawn_history_sink(
    mut history: connectors::history::HistoryWriter,
    feed: Receiver<EventFeed>,
    flush_every: std::time::Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("history".into())
        .spawn(move || {
            let mut waiting_since: Option<std::time::Instant> = None;
            loop {
                let timeout = waiting_since
                    .map_or(flush_every, |since| flush_every.saturating_sub(since.elapsed()));
                let closed = match feed.recv_timeout(timeout) {
                    Ok(published) => {
                        history.add_traced(published.frontier, published.events, &published.requests);
                        waiting_since.get_or_insert_with(std::time::Instant::now);
                        false
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => true,
                };
                let due = waiting_since.is_some_and(|since| since.elapsed() >= flush_every);
                if closed || due || history.should_flush() {
                    if let Err(error) = history.flush() {
                        tracing::error!(%error, "the history stops; the next start writes what it missed");
                        return;
                    }
                    waiting_since = None;
                }
                if closed {
                    return;
                }
            }
        })
}

//! `ViewStore`: collects worker reports and publishes consistent snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dataflows::engine::{Sink, WorkerReport};
use dataflows::model::{Event, Rejection, Time};
use dataflows::views::Row;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::{Error, Result};

#[derive(Default)]
struct Recorded {
    events: Vec<Event>,
    rejections: Vec<Rejection>,
}

#[derive(Default)]
struct Pending {
    /// The next snapshot, built beside the published one; shares every node it has not
    /// changed since.
    next: Snapshot,
    frontiers: Vec<Option<Option<Time>>>,
    rows: BTreeMap<Time, Vec<(Row, isize)>>,
    events: BTreeMap<Time, Vec<Event>>,
    rejections: BTreeMap<Time, Vec<Rejection>>,
}

/// Events published together, with their dataflow times, in publication order: every
/// event at a time before `frontier` not handed on before.
#[derive(Clone, Debug)]
pub struct EventFeed {
    pub frontier: Time,
    pub events: Vec<(Time, Event)>,
}

pub struct ViewStore {
    /// Workers' reports, for the publisher thread: applying rows and publishing
    /// snapshots happens beside the dataflow, never on a worker's time.
    reports: std::sync::mpsc::Sender<ToPublisher>,
    pending: Mutex<Pending>,
    /// The newest published snapshot. Readers take a reference and never wait.
    published_snapshot: ArcSwap<Snapshot>,
    frontier_tx: watch::Sender<Time>,
    /// For blocking waits (tests, executors on plain threads).
    published: (Mutex<Time>, Condvar),
    /// Every event and refusal, in publication order, when asked for (tests, replays).
    recorded: Option<Mutex<Recorded>>,
    /// Lossless event subscribers (sinks): unbounded, so a slow sink costs memory, never
    /// events.
    feeds: Mutex<Vec<std::sync::mpsc::Sender<EventFeed>>>,
}

impl ViewStore {
    pub fn new(workers: usize) -> Arc<ViewStore> {
        Self::build(workers, false)
    }

    /// A store that also keeps every published event (for tests and replay checks).
    pub fn recording(workers: usize) -> Arc<ViewStore> {
        Self::build(workers, true)
    }

    fn build(workers: usize, record: bool) -> Arc<ViewStore> {
        let (frontier_tx, _) = watch::channel(0);
        let (reports, received) = std::sync::mpsc::channel();
        let store = Arc::new(ViewStore {
            reports,
            pending: Mutex::new(Pending {
                frontiers: vec![None; workers],
                ..Default::default()
            }),
            published_snapshot: ArcSwap::from_pointee(Snapshot::default()),
            frontier_tx,
            published: (Mutex::new(0), Condvar::new()),
            recorded: record.then(|| Mutex::new(Recorded::default())),
            feeds: Mutex::new(Vec::new()),
        });
        let publisher = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publish_reports(&publisher, &received))
            .expect("spawning the publisher thread");
        store
    }

    /// The newest published snapshot: all views at one frontier. It never changes, and
    /// holding it, for a scan or across an `.await`, delays nobody.
    pub fn read(&self) -> Arc<Snapshot> {
        self.published_snapshot.load_full()
    }

    pub fn frontier(&self) -> Time {
        *self.frontier_tx.borrow()
    }

    pub fn subscribe_frontier(&self) -> watch::Receiver<Time> {
        self.frontier_tx.subscribe()
    }

    /// Every event published from now on, in order and without loss.
    pub fn event_feed(&self) -> std::sync::mpsc::Receiver<EventFeed> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.feeds.lock().push(tx);
        rx
    }

    /// Ends every feed once every report sent so far is published: its receiver gets
    /// what the dataflow produced, then a disconnect.
    pub fn close_feeds(&self) {
        self.flush();
        self.feeds.lock().clear();
    }

    /// Waits until every report sent before this call is applied and published.
    pub fn flush(&self) {
        let (done, published) = std::sync::mpsc::channel();
        if self.reports.send(ToPublisher::Flush(done)).is_ok() {
            let _ = published.recv();
        }
    }

    pub fn recorded_events(&self) -> Vec<Event> {
        self.recorded
            .as_ref()
            .map(|recorded| recorded.lock().events.clone())
            .unwrap_or_default()
    }

    /// Every refusal published, when the store records.
    pub fn recorded_rejections(&self) -> Vec<Rejection> {
        self.recorded
            .as_ref()
            .map(|recorded| recorded.lock().rejections.clone())
            .unwrap_or_default()
    }

    /// Waits until the published frontier is at least `frontier`.
    pub async fn wait_for(&self, frontier: Time, timeout: Duration) -> Result<()> {
        let mut rx = self.frontier_tx.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|published| *published >= frontier))
            .await
            .map(|result| result.is_ok());
        match waited {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout {
                wanted: frontier,
                current: self.frontier(),
            }),
        }
    }

    /// Blocking form of `wait_for`, for plain threads.
    pub fn wait_for_blocking(&self, frontier: Time, timeout: Duration) -> Result<()> {
        let (lock, condvar) = &self.published;
        let deadline = std::time::Instant::now() + timeout;
        let mut published = lock.lock();
        while *published < frontier {
            if condvar.wait_until(&mut published, deadline).timed_out() {
                return Err(Error::Timeout {
                    wanted: frontier,
                    current: *published,
                });
            }
        }
        Ok(())
    }

    fn publish(&self, pending: &mut Pending) {
        // Frontier of all workers; a stopped worker (None) no longer holds anyone back.
        let mut global: Option<Time> = None;
        for frontier in &pending.frontiers {
            match frontier {
                None => return,
                Some(Some(time)) => global = Some(global.map_or(*time, |g: Time| g.min(*time))),
                Some(None) => {}
            }
        }
        let upto = global.unwrap_or(Time::MAX) & !1;
        let current = self.frontier();
        if upto <= current {
            return;
        }
        let rows = split_before(&mut pending.rows, upto);
        let events = split_before(&mut pending.events, upto);
        let rejections = split_before(&mut pending.rejections, upto);
        let next = &mut pending.next;
        for (_, updates) in rows {
            next.apply_time(updates);
        }
        for (_, rejections) in rejections {
            if let Some(recorded) = &self.recorded {
                recorded
                    .lock()
                    .rejections
                    .extend(rejections.iter().cloned());
            }
            for rejection in rejections {
                next.record_rejection(rejection);
            }
        }
        next.frontier = upto;
        self.published_snapshot.store(Arc::new(next.clone()));
        let mut feed = Vec::new();
        let mut feeds = self.feeds.lock();
        for (time, mut events) in events {
            events.sort();
            if let Some(recorded) = &self.recorded {
                recorded.lock().events.extend(events.iter().cloned());
            }
            if !feeds.is_empty() {
                feed.extend(events.into_iter().map(|event| (time, event)));
            }
        }
        if !feed.is_empty() {
            feeds.retain(|tx| {
                tx.send(EventFeed {
                    frontier: upto,
                    events: feed.clone(),
                })
                .is_ok()
            });
        }
        drop(feeds);
        self.frontier_tx.send_replace(upto);
        let (lock, condvar) = &self.published;
        *lock.lock() = upto;
        condvar.notify_all();
    }
}

fn split_before<V>(map: &mut BTreeMap<Time, V>, upto: Time) -> BTreeMap<Time, V> {
    let later = map.split_off(&upto);
    std::mem::replace(map, later)
}

impl Sink for ViewStore {
    fn wants_events(&self) -> bool {
        self.recorded.is_some() || !self.feeds.lock().is_empty()
    }

    fn report(&self, report: WorkerReport) {
        // The store outlives its workers' reports; a send fails only once it is gone.
        let _ = self.reports.send(ToPublisher::Report(report));
    }
}

/// What the publisher thread is sent.
enum ToPublisher {
    Report(WorkerReport),
    /// Answer once everything sent before is published.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The publisher thread: takes every report waiting, then publishes once. It holds the
/// store only while it works, and ends when the store is dropped (its sender with it).
fn publish_reports(
    store: &std::sync::Weak<ViewStore>,
    received: &std::sync::mpsc::Receiver<ToPublisher>,
) {
    while let Ok(first) = received.recv() {
        let Some(store) = store.upgrade() else {
            return;
        };
        let mut pending = store.pending.lock();
        let mut flushed = Vec::new();
        for message in std::iter::once(first).chain(received.try_iter().take(1024)) {
            match message {
                ToPublisher::Report(report) => pending.take(report),
                ToPublisher::Flush(done) => flushed.push(done),
            }
        }
        store.publish(&mut pending);
        drop(pending);
        for done in flushed {
            let _ = done.send(());
        }
    }
}

impl Pending {
    fn take(&mut self, report: WorkerReport) {
        for (row, time, diff) in report.rows {
            self.rows.entry(time).or_default().push((row, diff));
        }
        for (event, time) in report.events {
            self.events.entry(time).or_default().push(event);
        }
        for (rejection, time) in report.rejections {
            self.rejections.entry(time).or_default().push(rejection);
        }
        if let Some(slot) = self.frontiers.get_mut(report.worker) {
            *slot = Some(report.frontier);
        }
    }
}

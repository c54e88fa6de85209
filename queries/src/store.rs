//! `ViewStore`: collects worker reports and publishes consistent snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dataflows::analytics::Metric;
use dataflows::engine::{MetricsReport, Sink, WorkerReport};
use dataflows::model::{Event, Rejection, Seq, Str, Time};
use dataflows::views::Row;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::changes::{ChangeLog, Subscription};
use crate::snapshot::Snapshot;
use crate::{Error, Result};

#[derive(Default)]
struct Recorded {
    events: Vec<Event>,
    rejections: Vec<Rejection>,
}

#[derive(Default)]
struct Pending {
    /// The next snapshot of the read models, built beside the published one; shares
    /// every node it has not changed since.
    next: Snapshot,
    frontiers: Vec<Option<Option<Time>>>,
    rows: BTreeMap<Time, Vec<(Row, isize)>>,
    events: BTreeMap<Time, Vec<Event>>,
    rejections: BTreeMap<Time, Vec<Rejection>>,
    /// Frontiers the metrics will stop at (`WorkerReport::metrics_bound`), not yet reached
    /// by the read models.
    bounds: std::collections::BTreeSet<Time>,
    /// The read models' state at bounds reached since the last publication, for `states`.
    kept: Vec<(Time, Snapshot)>,
}

/// The metric views' side, owned by their publisher thread.
struct MetricsPending {
    frontiers: Vec<Option<Option<Time>>>,
    rows: BTreeMap<Time, Vec<(Row, isize)>>,
    /// The metric views (only they are ever applied here).
    views: Snapshot,
}

/// Events published together, with their dataflow times, in publication order: every
/// event at a time before `frontier` not handed on before.
#[derive(Clone, Debug)]
pub struct EventFeed {
    pub frontier: Time,
    pub events: Vec<(Time, Event)>,
    /// The HTTP request that sent each command whose events these are, by the command's
    /// position, for those sent with one (`Envelope::request_id`).
    pub requests: BTreeMap<Seq, Str>,
}

impl EventFeed {
    /// The request that caused `event`, if a request sent its command.
    pub fn request_id(&self, event: &Event) -> Option<&Str> {
        self.requests.get(&event.seq)
    }

    /// Takes in the feed published after this one.
    pub fn extend(&mut self, later: EventFeed) {
        self.frontier = self.frontier.max(later.frontier);
        self.events.extend(later.events);
        self.requests.extend(later.requests);
    }
}

pub struct ViewStore {
    /// Workers' reports, for the publisher thread: applying rows and publishing
    /// snapshots happens beside the dataflow, never on a worker's time.
    reports: std::sync::mpsc::Sender<ToPublisher>,
    pending: Mutex<Pending>,
    /// The metrics' reports, for a publisher thread of their own: applying them never
    /// delays the read models, which commands wait for.
    metric_reports: std::sync::mpsc::Sender<ToMetricsPublisher>,
    /// The read models as they were at each bound the metrics may still reach, oldest
    /// first: `(f, state)` holds every update before `f` and none after. The read
    /// models' publisher adds to the back, the metrics' takes from the front.
    states: Mutex<VecDeque<(Time, Snapshot)>>,
    /// The newest metric views, for `read()`'s snapshots. Whoever stores one of those
    /// holds this lock, so neither publisher undoes the other's.
    metric_views: Mutex<Snapshot>,
    /// The newest published snapshot. Readers take a reference and never wait.
    published_snapshot: ArcSwap<Snapshot>,
    frontier_tx: watch::Sender<Time>,
    /// For blocking waits (tests, executors on plain threads).
    published: (Mutex<Time>, Condvar),
    /// The newest snapshot with every view at the metrics' frontier.
    consistent_snapshot: ArcSwap<Snapshot>,
    metrics_tx: watch::Sender<Time>,
    metrics_published: (Mutex<Time>, Condvar),
    /// Every event and refusal, in publication order, when asked for (tests, replays).
    recorded: Option<Mutex<Recorded>>,
    /// The read models' changefeed (`subscribe`).
    changes: Mutex<ChangeLog>,
    /// The metric views' changefeed (`subscribe_metrics`), at the metrics' frontiers.
    metric_changes: Mutex<ChangeLog>,
    /// Lossless event subscribers (sinks): unbounded, so a slow sink costs memory, never
    /// events.
    feeds: Mutex<Vec<std::sync::mpsc::Sender<EventFeed>>>,
    /// The request ids of the commands whose events have not all been handed on, by the
    /// time their batch entered the dataflow (`trace_requests`).
    requests: Mutex<BTreeMap<Time, Vec<(Seq, Str)>>>,
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
        let (metrics_tx, _) = watch::channel(0);
        let (reports, received) = std::sync::mpsc::channel();
        let (metric_reports, metrics_received) = std::sync::mpsc::channel();
        let store = Arc::new(ViewStore {
            reports,
            pending: Mutex::new(Pending {
                frontiers: vec![None; workers],
                ..Default::default()
            }),
            metric_reports,
            states: Mutex::new(VecDeque::from([(0, Snapshot::default())])),
            metric_views: Mutex::new(Snapshot::default()),
            published_snapshot: ArcSwap::from_pointee(Snapshot::default()),
            frontier_tx,
            published: (Mutex::new(0), Condvar::new()),
            consistent_snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics_tx,
            metrics_published: (Mutex::new(0), Condvar::new()),
            recorded: record.then(|| Mutex::new(Recorded::default())),
            changes: Mutex::new(ChangeLog::new(crate::changes::DEFAULT_CAPACITY)),
            metric_changes: Mutex::new(ChangeLog::new(crate::changes::DEFAULT_CAPACITY)),
            feeds: Mutex::new(Vec::new()),
            requests: Mutex::new(BTreeMap::new()),
        });
        let publisher = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publish_reports(&publisher, &received))
            .expect("spawning the publisher thread");
        let publisher = Arc::downgrade(&store);
        let metrics = MetricsPending {
            frontiers: vec![None; workers],
            rows: BTreeMap::new(),
            views: Snapshot::default(),
        };
        std::thread::Builder::new()
            .name("metrics-publisher".into())
            .spawn(move || publish_metric_reports(&publisher, &metrics_received, metrics))
            .expect("spawning the metrics' publisher thread");
        store
    }

    /// Follows the read models: their snapshot now, then what each publication changes;
    /// or, with `resume_from` a frontier this reader reached before, what changed since,
    /// when every change since is still kept.
    pub fn subscribe(&self, resume_from: Option<Time>) -> Subscription {
        self.changes.lock().subscribe(self.read(), resume_from)
    }

    /// Follows the metric views as `subscribe` does the read models: their consistent
    /// snapshot (`read_consistent`) now, then what each of their publications changes.
    pub fn subscribe_metrics(&self, resume_from: Option<Time>) -> Subscription {
        self.metric_changes
            .lock()
            .subscribe(self.read_consistent(), resume_from)
    }

    /// How many publications a reader may fall behind by (and how many are kept for
    /// readers that resume), for both changefeeds: at least one.
    pub fn set_changefeed_capacity(&self, capacity: usize) {
        *self.changes.lock() = ChangeLog::new(capacity);
        *self.metric_changes.lock() = ChangeLog::new(capacity);
    }

    /// How many publications a reader may fall behind by.
    pub fn changefeed_capacity(&self) -> usize {
        self.changes.lock().capacity()
    }

    /// The newest published snapshot: all views at one frontier. It never changes, and
    /// holding it, for a scan or across an `.await`, delays nobody.
    pub fn read(&self) -> Arc<Snapshot> {
        self.published_snapshot.load_full()
    }

    pub fn frontier(&self) -> Time {
        *self.frontier_tx.borrow()
    }

    /// The newest snapshot in which every view, the metric views included, is at one
    /// frontier: the metrics' (`metrics_frontier()`), a little behind `read()`'s.
    /// For readers that join metrics with other views (SQL).
    pub fn read_consistent(&self) -> Arc<Snapshot> {
        self.consistent_snapshot.load_full()
    }

    /// For readers of the metric views: waits until they have caught up with every
    /// command published so far (so a reader sees what it was told happened), then the
    /// consistent snapshot.
    pub async fn read_settled(&self, timeout: Duration) -> Result<Arc<Snapshot>> {
        // The published snapshot's frontier, not `frontier()`: a reader may have seen
        // that snapshot a moment before the frontier's watchers hear of it.
        self.wait_for_metrics(self.read().frontier, timeout).await?;
        Ok(self.read_consistent())
    }

    /// How far the metric views have got.
    pub fn metrics_frontier(&self) -> Time {
        *self.metrics_tx.borrow()
    }

    /// Waits until the metric views are at least at `frontier`.
    pub async fn wait_for_metrics(&self, frontier: Time, timeout: Duration) -> Result<()> {
        wait_until(&self.metrics_tx, frontier, timeout).await
    }

    /// Blocking form of `wait_for_metrics`, for plain threads.
    pub fn wait_for_metrics_blocking(&self, frontier: Time, timeout: Duration) -> Result<()> {
        wait_blocking(&self.metrics_published, frontier, timeout)
    }

    /// The metric views' frontier, for readers that follow them (dashboards).
    pub fn subscribe_metrics_frontier(&self) -> watch::Receiver<Time> {
        self.metrics_tx.subscribe()
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

    /// Notes which requests sent the commands of the batch entering the dataflow at
    /// `time` (before it enters), so that the feeds carry each event's request id.
    /// Nothing is kept while nobody takes the feed.
    pub fn trace_requests(&self, time: Time, requests: impl IntoIterator<Item = (Seq, Str)>) {
        if self.feeds.lock().is_empty() {
            return;
        }
        let requests: Vec<(Seq, Str)> = requests.into_iter().collect();
        if !requests.is_empty() {
            self.requests
                .lock()
                .entry(time)
                .or_default()
                .extend(requests);
        }
    }

    /// Ends every feed once every report sent so far is published: its receiver gets
    /// what the dataflow produced, then a disconnect.
    pub fn close_feeds(&self) {
        self.flush();
        self.feeds.lock().clear();
    }

    /// Waits until every report sent before this call is applied and published.
    pub fn flush(&self) {
        // The read models first: they hand the metrics their bounds.
        let (done, published) = std::sync::mpsc::channel();
        if self.reports.send(ToPublisher::Flush(done)).is_ok() {
            let _ = published.recv();
        }
        let (done, published) = std::sync::mpsc::channel();
        if self
            .metric_reports
            .send(ToMetricsPublisher::Flush(done))
            .is_ok()
        {
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
        wait_until(&self.frontier_tx, frontier, timeout).await
    }

    /// Blocking form of `wait_for`, for plain threads.
    pub fn wait_for_blocking(&self, frontier: Time, timeout: Duration) -> Result<()> {
        wait_blocking(&self.published, frontier, timeout)
    }

    /// Publishes the read models at the least frontier every worker has reported.
    fn publish(&self, pending: &mut Pending) {
        let Some(upto) = least(&pending.frontiers) else {
            return;
        };
        if upto > self.frontier() {
            // Held until the snapshot is out, so that a new reader's snapshot and the
            // changes it is sent next meet exactly.
            let mut changefeed = self.changes.lock();
            let since = pending.next.frontier;
            let mut changes = changefeed.wanted().then(Vec::new);
            self.apply_views(pending, upto, changes.as_mut());
            pending.next.frontier = upto;
            self.publish_read_models(&pending.next);
            if let Some(changes) = changes {
                changefeed.publish(since, upto, changes);
            }
            drop(changefeed);
            self.frontier_tx.send_replace(upto);
            let (lock, condvar) = &self.published;
            *lock.lock() = upto;
            condvar.notify_all();
        }
        if !pending.kept.is_empty() {
            self.states.lock().extend(pending.kept.drain(..));
            // The metrics may be waiting for one of these bounds.
            let _ = self.metric_reports.send(ToMetricsPublisher::Bounds);
        }
    }

    /// `read()`'s snapshot: these read models, with the newest metric views.
    fn publish_read_models(&self, next: &Snapshot) {
        let views = self.metric_views.lock();
        let snapshot = next.clone().with_metrics_of(&views);
        self.published_snapshot.store(Arc::new(snapshot));
    }

    /// `read()`'s snapshot: the newest read models, with these metric views.
    fn publish_metric_views(&self, metrics: &Snapshot) {
        let mut views = self.metric_views.lock();
        views.clone_from(metrics);
        let read_models = Snapshot::clone(&self.published_snapshot.load());
        let snapshot = read_models.with_metrics_of(&views);
        self.published_snapshot.store(Arc::new(snapshot));
    }

    /// Applies the metric views' updates up to the newest bound they have reached whose
    /// read models' state is kept, and publishes the consistent snapshot there.
    fn publish_metrics(&self, pending: &mut MetricsPending) {
        let Some(reached) = least(&pending.frontiers) else {
            return;
        };
        // The metrics count only at the bounds the read models' state was kept at: their
        // report may come before the order path's that names the bound.
        let (upto, state) = {
            let mut states = self.states.lock();
            while states.len() > 1 && states[1].0 <= reached {
                states.pop_front();
            }
            match states.front() {
                Some((bound, state)) if *bound <= reached && *bound > self.metrics_frontier() => {
                    (*bound, state.clone())
                }
                _ => return,
            }
        };
        // Held until the consistent snapshot is out, so that a new reader's snapshot and
        // the changes it is sent next meet exactly.
        let mut changefeed = self.metric_changes.lock();
        let since = self.metrics_frontier();
        let mut changes = changefeed.wanted().then(Vec::new);
        let top_before = pending.views.metric(Metric::TopProducts).clone();
        let rows = split_before(&mut pending.rows, upto);
        let changed = !rows.is_empty();
        for (time, updates) in rows {
            if let Some(changes) = changes.as_mut() {
                changes.extend(updates.iter().cloned());
            }
            pending.views.apply_at(time, updates);
        }
        if let Some(changes) = changes.as_mut() {
            // `top_products` is ranked here, not in the dataflow: its changes are the
            // difference between the ranking before and after.
            let top_after = pending.views.metric(Metric::TopProducts);
            changes.extend(
                top_before
                    .shared_rows()
                    .map(|row| (Row::Metric(row.clone()), -1)),
            );
            changes.extend(
                top_after
                    .shared_rows()
                    .map(|row| (Row::Metric(row.clone()), 1)),
            );
        }
        if changed {
            self.publish_metric_views(&pending.views);
        }
        let mut consistent = state.with_metrics_of(&pending.views);
        consistent.frontier = upto;
        self.consistent_snapshot.store(Arc::new(consistent));
        if let Some(changes) = changes {
            changefeed.publish(since, upto, changes);
        }
        drop(changefeed);
        self.metrics_tx.send_replace(upto);
        let (lock, condvar) = &self.metrics_published;
        *lock.lock() = upto;
        condvar.notify_all();
    }

    /// Applies the read models' updates before `upto`, a time at a time, keeping the
    /// state after each for the metrics to catch up with; hands on the events.
    fn apply_views(
        &self,
        pending: &mut Pending,
        upto: Time,
        mut changes: Option<&mut Vec<(Row, isize)>>,
    ) {
        let mut rows = split_before(&mut pending.rows, upto);
        let mut rejections = split_before(&mut pending.rejections, upto);
        let events = split_before(&mut pending.events, upto);
        let times: std::collections::BTreeSet<Time> =
            rows.keys().chain(rejections.keys()).copied().collect();
        let next = &mut pending.next;
        for time in times {
            // The state at each bound up to this time is the state now.
            keep_states(&mut pending.bounds, &mut pending.kept, next, time);
            if let Some(updates) = rows.remove(&time) {
                if let Some(changes) = changes.as_deref_mut() {
                    changes.extend(updates.iter().cloned());
                }
                next.apply_at(time, updates);
            }
            for rejection in rejections.remove(&time).unwrap_or_default() {
                if let Some(recorded) = &self.recorded {
                    recorded.lock().rejections.push(rejection.clone());
                }
                next.record_rejection(rejection);
            }
        }
        keep_states(&mut pending.bounds, &mut pending.kept, next, upto);
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
        // A batch entering at `t` has its events at `t` (the commands') and `t + 1`
        // (the replies to them): its requests are needed until `upto` passes both.
        let mut traced = self.requests.lock();
        let mut requests = BTreeMap::new();
        if !feed.is_empty() {
            let seqs: std::collections::BTreeSet<Seq> =
                feed.iter().map(|(_, event)| event.seq).collect();
            requests.extend(
                traced
                    .range(..upto)
                    .flat_map(|(_, batch)| batch)
                    .filter(|(seq, _)| seqs.contains(seq))
                    .cloned(),
            );
        }
        *traced = traced.split_off(&upto.saturating_sub(1));
        drop(traced);
        if !feed.is_empty() {
            feeds.retain(|tx| {
                tx.send(EventFeed {
                    frontier: upto,
                    events: feed.clone(),
                    requests: requests.clone(),
                })
                .is_ok()
            });
        }
    }
}

/// Keeps `next` as the state at every bound up to `upto`: nothing at or past them is
/// applied yet.
fn keep_states(
    bounds: &mut std::collections::BTreeSet<Time>,
    states: &mut Vec<(Time, Snapshot)>,
    next: &mut Snapshot,
    upto: Time,
) {
    while let Some(bound) = bounds.first().copied().filter(|bound| *bound <= upto) {
        bounds.pop_first();
        next.frontier = bound;
        states.push((bound, next.clone()));
    }
}

/// The least frontier of all workers, even (a command round), once every worker has
/// reported; a stopped worker (`None`) no longer holds anyone back.
fn least(frontiers: &[Option<Option<Time>>]) -> Option<Time> {
    let mut global: Option<Time> = None;
    for frontier in frontiers {
        match frontier {
            None => return None,
            Some(Some(time)) => global = Some(global.map_or(*time, |g: Time| g.min(*time))),
            Some(None) => {}
        }
    }
    Some(global.unwrap_or(Time::MAX) & !1)
}

async fn wait_until(
    published: &watch::Sender<Time>,
    frontier: Time,
    timeout: Duration,
) -> Result<()> {
    let mut rx = published.subscribe();
    let waited = tokio::time::timeout(timeout, rx.wait_for(|published| *published >= frontier))
        .await
        .map(|result| result.is_ok());
    match waited {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Stopped),
        Err(_) => Err(Error::Timeout {
            wanted: frontier,
            current: *published.borrow(),
        }),
    }
}

fn wait_blocking(
    published: &(Mutex<Time>, Condvar),
    frontier: Time,
    timeout: Duration,
) -> Result<()> {
    let (lock, condvar) = published;
    let deadline = std::time::Instant::now() + timeout;
    let mut current = lock.lock();
    while *current < frontier {
        if condvar.wait_until(&mut current, deadline).timed_out() {
            return Err(Error::Timeout {
                wanted: frontier,
                current: *current,
            });
        }
    }
    Ok(())
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

    fn report_metrics(&self, report: MetricsReport) {
        let _ = self.metric_reports.send(ToMetricsPublisher::Report(report));
    }
}

/// What the read models' publisher thread is sent.
enum ToPublisher {
    Report(WorkerReport),
    /// Answer once everything sent before is published.
    Flush(std::sync::mpsc::Sender<()>),
}

/// What the metrics' publisher thread is sent.
enum ToMetricsPublisher {
    Report(MetricsReport),
    /// The read models kept their state at more bounds.
    Bounds,
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

/// The metrics' publisher thread, like `publish_reports`.
fn publish_metric_reports(
    store: &std::sync::Weak<ViewStore>,
    received: &std::sync::mpsc::Receiver<ToMetricsPublisher>,
    mut pending: MetricsPending,
) {
    while let Ok(first) = received.recv() {
        let Some(store) = store.upgrade() else {
            return;
        };
        let mut flushed = Vec::new();
        for message in std::iter::once(first).chain(received.try_iter().take(1024)) {
            match message {
                ToMetricsPublisher::Report(report) => pending.take(report),
                ToMetricsPublisher::Bounds => {}
                ToMetricsPublisher::Flush(done) => flushed.push(done),
            }
        }
        store.publish_metrics(&mut pending);
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
        if let Some(bound) = report.metrics_bound {
            if bound == self.next.frontier {
                // Already there: nothing is applied past a worker's own frontier.
                self.kept.push((bound, self.next.clone()));
            } else {
                self.bounds.insert(bound);
            }
        }
    }
}

impl MetricsPending {
    fn take(&mut self, report: MetricsReport) {
        for (row, time, diff) in report.rows {
            self.rows.entry(time).or_default().push((row, diff));
        }
        if let Some(slot) = self.frontiers.get_mut(report.worker) {
            *slot = Some(report.frontier);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::analytics::{Dim, Metric, MetricRow};

    /// A row of `payment_declines`, for the day `n`.
    fn metric_row(n: i64) -> Row {
        let key = vec![Dim::Day(n), Dim::Text("card_declined".into())];
        Row::Metric(Arc::new(MetricRow::new(
            Metric::PaymentDeclines,
            key,
            vec![1],
        )))
    }

    /// A read model's row: an idempotency key first used at `n`.
    fn view_row(n: u64) -> Row {
        Row::Idempotency(Arc::new(dataflows::views::IdempotencyRow {
            key: format!("k{n}").into(),
            fingerprint: "f".into(),
            first_seq: n,
            ts: n,
        }))
    }

    /// A metrics report may come before the order path's that names its bound: until
    /// then the metrics stay at the bound before, with the read models as they were there.
    #[test]
    fn the_metrics_count_only_at_bounds_the_store_has_heard_of() {
        let store = ViewStore::new(1);
        store.report(WorkerReport {
            frontier: Some(10),
            rows: vec![(view_row(1), 5, 1)],
            metrics_bound: Some(10),
            ..Default::default()
        });
        store.report_metrics(MetricsReport {
            worker: 0,
            frontier: Some(10),
            rows: vec![(metric_row(1), 9, 1)],
        });
        // The order path moves on without a bound, then the metrics report their next.
        store.report(WorkerReport {
            frontier: Some(14),
            rows: vec![(view_row(2), 12, 1)],
            ..Default::default()
        });
        store.report_metrics(MetricsReport {
            worker: 0,
            frontier: Some(20),
            rows: vec![(metric_row(2), 19, 1)],
        });
        store.flush();
        let consistent = store.read_consistent();
        assert_eq!((consistent.frontier, store.metrics_frontier()), (10, 10));
        assert_eq!(consistent.idempotency.len(), 1);
        assert_eq!(consistent.metric(Metric::PaymentDeclines).len(), 1);

        store.report(WorkerReport {
            frontier: Some(20),
            rows: vec![(view_row(3), 15, 1)],
            metrics_bound: Some(20),
            ..Default::default()
        });
        store.flush();
        let consistent = store.read_consistent();
        assert_eq!((consistent.frontier, store.metrics_frontier()), (20, 20));
        assert_eq!(consistent.idempotency.len(), 3);
        assert_eq!(consistent.metric(Metric::PaymentDeclines).len(), 2);
    }

    /// An event at `time` of the command at `seq`.
    fn event(seq: Seq, time: Time) -> (Event, Time) {
        let body = dataflows::events::OrderCompleted {
            order_id: format!("o{seq}").into(),
        };
        let event = Event {
            seq,
            phase: (time % 2) as u8,
            sub: 0,
            ts: time / 2,
            body: body.into(),
        };
        (event, time)
    }

    /// The feeds name the request behind each event's command, for both rounds of its
    /// batch (`t` and `t + 1`), and the store forgets a batch's requests once its events
    /// have all gone out.
    #[test]
    fn feeds_carry_the_requests_of_their_events_commands() {
        let store = ViewStore::new(1);
        let feed = store.event_feed();
        store.trace_requests(10, [(1, Str::from("req-a"))]);
        store.trace_requests(12, [(2, Str::from("req-b")), (3, Str::from("req-c"))]);
        let request = |feed: &EventFeed, at: usize| {
            let event = &feed.events[at].1;
            feed.request_id(event).map(|id| id.to_string())
        };
        // The batch at 10, and the first event of the batch at 12, which is not yet done.
        store.report(WorkerReport {
            frontier: Some(12),
            events: vec![event(1, 10), event(1, 11), event(2, 12)],
            ..Default::default()
        });
        store.flush();
        let first = feed.try_recv().unwrap();
        assert_eq!(first.events.len(), 2);
        assert_eq!(request(&first, 0).as_deref(), Some("req-a"));
        assert_eq!(request(&first, 1).as_deref(), Some("req-a"));
        assert_eq!(first.requests.len(), 1, "only its events' commands");
        assert_eq!(
            store.requests.lock().len(),
            1,
            "the batch at 10 is forgotten"
        );
        store.report(WorkerReport {
            frontier: Some(14),
            events: vec![event(3, 13)],
            ..Default::default()
        });
        store.flush();
        let second = feed.try_recv().unwrap();
        assert_eq!(second.events.len(), 2);
        assert_eq!(request(&second, 0).as_deref(), Some("req-b"));
        assert_eq!(request(&second, 1).as_deref(), Some("req-c"));
        assert!(store.requests.lock().is_empty());
    }
}

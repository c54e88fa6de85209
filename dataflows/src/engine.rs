//! Runs the dataflows on `workers` timely worker threads and moves data across their
//! edges: command batches in (through worker 0), per-worker reports out.
//!
//! The engine does no I/O of its own: it receives batches that the log made durable and
//! hands its outputs to a `Sink`. A report carries the worker's frontiers; a consumer that
//! takes the minimum over all workers knows that every update before it has arrived.
//!
//! There are two timely computations. The order path (`dataflow::build`) decides commands
//! and keeps the read models; a command is answered once its frontier passes. The metric
//! views (`analytics`) run beside it on threads of their own, as many as the order path
//! has: each order-path worker hands its events, refusals and rows to its metrics worker.
//! The metrics have a frontier of their own, which follows the order path's in steps of
//! at most `Features::metrics_every` of wall-clock time: everything the order path settled
//! since the last step enters the metrics at one time, so under load they step once per
//! interval over many orders instead of once per log batch, on the other core, and the
//! order path never waits for them. Which frontiers the metrics stop at depends on
//! timing; what they hold at each is the same on every run: the metrics of every event
//! before it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::analytics;
use crate::dataflow::{build, Record};
use crate::model::*;
use crate::views::Row;
use crate::{Error, Result};

/// The commands of one log batch, all at one timestamp, in log order.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ts: Ts,
    pub records: Vec<(Seq, Envelope)>,
}

/// What one order-path worker produced since its last report, and how far it has got.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub worker: usize,
    /// `None` once the order path has shut down.
    pub frontier: Option<Time>,
    pub rows: Vec<(Row, Time, isize)>,
    pub events: Vec<(Event, Time)>,
    pub rejections: Vec<(Rejection, Time)>,
    /// A frontier the metrics will stop at: the store keeps the views as they were
    /// there until the metrics get there too. The metrics' frontier counts only at
    /// these; without metrics, every frontier of the order path is one.
    pub metrics_bound: Option<Time>,
}

/// What one metrics worker produced since its last report, and how far it has got.
#[derive(Debug, Default)]
pub struct MetricsReport {
    pub worker: usize,
    /// Never past the order path's; `None` once the metrics have shut down. Without
    /// metrics, the order path's own.
    pub frontier: Option<Time>,
    /// Rows of the metric views (`Row::Metric`).
    pub rows: Vec<(Row, Time, isize)>,
}

/// Receives worker reports; called on worker threads, so it must be quick.
pub trait Sink: Send + Sync + 'static {
    fn report(&self, report: WorkerReport);

    fn report_metrics(&self, report: MetricsReport);

    /// Whether reports should carry the events (copying them costs; views do not need them).
    fn wants_events(&self) -> bool {
        true
    }
}

/// The optional parts of the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// The metric views and anomaly events (`analytics`). Without them the metric tables
    /// stay empty and the order path does less work per command.
    pub metrics: bool,
    /// The longest wall-clock time the metrics wait before taking what the order path
    /// settled since their last step. Longer: fewer, larger steps and staler metrics.
    pub metrics_every: Duration,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            metrics: true,
            metrics_every: Duration::from_millis(20),
        }
    }
}

pub struct Engine {
    feed: Option<Sender<Batch>>,
    /// Set on shutdown: worker 0 closes the input even while feeders are still around.
    closing: Arc<AtomicBool>,
    worker0: Thread,
    runner: Option<JoinHandle<()>>,
    metrics_runner: Option<JoinHandle<()>>,
}

/// What an order-path worker hands its metrics worker: what it produced before `bound`,
/// a frontier of its own; `None` once it has ended, with everything left.
struct ToMetrics {
    feed: MetricFeed,
    bound: Option<Time>,
}

impl Engine {
    /// Starts the whole dataflow, metrics included, on `workers` threads.
    pub fn start(workers: usize, sink: Arc<dyn Sink>) -> Result<Engine> {
        Self::start_with(workers, sink, Features::default())
    }

    /// Starts the dataflow with the optional parts `features` asks for.
    pub fn start_with(workers: usize, sink: Arc<dyn Sink>, features: Features) -> Result<Engine> {
        if workers == 0 {
            return Err(Error::Config("at least one worker is needed".into()));
        }
        let (to_metrics, metrics_runner) = if features.metrics {
            let (channels, runner) = start_metrics(workers, Arc::clone(&sink))?;
            (Some(channels), Some(runner))
        } else {
            (None, None)
        };
        let to_metrics = Arc::new(to_metrics);
        let (feed, receiver) = mpsc::channel::<Batch>();
        let receiver = Arc::new(Mutex::new(Some(receiver)));
        let (thread_tx, thread_rx) = mpsc::channel::<Thread>();
        let thread_tx = Mutex::new(thread_tx);
        let closing = Arc::new(AtomicBool::new(false));
        let closing_seen = Arc::clone(&closing);
        // The last bound each worker cut the metrics' feed at (`Cut`).
        let cuts: Arc<Vec<CutAt>> = Arc::new((0..workers).map(|_| CutAt::default()).collect());
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let buffers = Rc::new(RefCell::new(WorkerReport {
                worker: index,
                ..Default::default()
            }));
            let fed = Rc::new(RefCell::new(MetricFeed::default()));
            let probe = ProbeHandle::new();
            let sink_for_events = Arc::clone(&sink);
            let input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, commands) = scope.new_input::<Vec<Record>>();
                let outputs = build(scope, commands, features);
                let (sink, feed) = (Rc::clone(&buffers), Rc::clone(&fed));
                outputs
                    .rows
                    .inner
                    .inspect(move |(row, time, diff)| {
                        if features.metrics && analytics::reads_row(row) {
                            feed.borrow_mut().rows.push((row.clone(), *time, *diff));
                        }
                        sink.borrow_mut().rows.push((row.clone(), *time, *diff))
                    })
                    .probe_with(&probe);
                let (sink, feed) = (Rc::clone(&buffers), Rc::clone(&fed));
                let wanted = Arc::clone(&sink_for_events);
                outputs
                    .events
                    .inspect_core(move |batch| {
                        let Ok((stamp, events)) = batch else { return };
                        let time = stamp.least().copied().unwrap_or_default();
                        if features.metrics {
                            feed.borrow_mut()
                                .events
                                .extend(events.iter().map(|event| (event.clone(), time)));
                        }
                        if wanted.wants_events() {
                            sink.borrow_mut()
                                .events
                                .extend(events.iter().map(|event| (event.clone(), time)));
                        }
                    })
                    .probe_with(&probe);
                let (sink, feed) = (Rc::clone(&buffers), Rc::clone(&fed));
                outputs
                    .rejections
                    .inspect_core(move |batch| {
                        let Ok((stamp, rejections)) = batch else {
                            return;
                        };
                        let time = stamp.least().copied().unwrap_or_default();
                        if features.metrics {
                            feed.borrow_mut().rejections.extend(
                                rejections.iter().map(|rejection| (rejection.clone(), time)),
                            );
                        }
                        sink.borrow_mut()
                            .rejections
                            .extend(rejections.iter().map(|rejection| (rejection.clone(), time)));
                    })
                    .probe_with(&probe);
                input
            });
            // This worker's metrics worker: a channel to it, and its thread to wake.
            let metrics = (*to_metrics).as_ref().map(|(senders, threads)| {
                let sender = senders[index].lock().ok().and_then(|mut slot| slot.take());
                (sender, threads[index].clone())
            });
            let (mut input, mut receiver): (_, Option<Receiver<Batch>>) = if index == 0 {
                let _ = thread_tx.lock().map(|tx| tx.send(std::thread::current()));
                let taken = receiver.lock().ok().and_then(|mut slot| slot.take());
                (Some(input), taken)
            } else {
                // Only worker 0 introduces commands; the others hold no input capability.
                drop(input);
                (None, None)
            };
            let mut reported: Option<Option<Time>> = None;
            let _ = cuts[index].thread.set(std::thread::current());
            let mut cut = Cut {
                worker: index,
                cuts: Arc::clone(&cuts),
                ..Cut::default()
            };
            let mut park = None;
            loop {
                if let Some(rx) = receiver.as_ref() {
                    loop {
                        match rx.try_recv() {
                            Ok(batch) => {
                                if let Some(handle) = input.as_mut() {
                                    let time = command_time(batch.ts);
                                    if time >= *handle.time() {
                                        handle.advance_to(time);
                                        for (seq, envelope) in batch.records {
                                            handle.send((seq, batch.ts, envelope));
                                        }
                                        handle.advance_to(time + 2);
                                    }
                                }
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                input = None;
                                receiver = None;
                                break;
                            }
                        }
                    }
                }
                // Batches already handed over are applied before the input closes.
                if receiver.is_some() && closing_seen.load(Ordering::Acquire) {
                    input = None;
                    receiver = None;
                }
                worker.step_or_park(park);
                let frontier = probe.with_frontier(|frontier| frontier.first().copied());
                park = None;
                // Every `metrics_every` at most, what this worker settled goes to its
                // metrics worker, up to a frontier the store keeps the views' state at.
                let mut bound = None;
                if let Some((sender, thread)) = &metrics {
                    match cut.due(frontier, features.metrics_every) {
                        Due::Now(next) => {
                            let feed = match next {
                                Some(next) => fed.borrow_mut().split_before(next),
                                None => std::mem::take(&mut *fed.borrow_mut()),
                            };
                            if let Some(sender) = sender {
                                // A metrics worker that has stopped wants nothing more.
                                let _ = sender.send(ToMetrics { feed, bound: next });
                                thread.unpark();
                            }
                            bound = next;
                        }
                        Due::In(wait) => park = Some(wait),
                        Due::Never => {}
                    }
                }
                let mut report = buffers.borrow_mut();
                let has_data = !report.rows.is_empty()
                    || !report.events.is_empty()
                    || !report.rejections.is_empty();
                if has_data || bound.is_some() || reported != Some(frontier) {
                    if metrics.is_none() && reported != Some(frontier) {
                        // No metrics: they are wherever the order path is, and every
                        // frontier of it is a bound.
                        bound = frontier.map(|frontier| frontier & !1);
                        sink.report_metrics(MetricsReport {
                            worker: index,
                            frontier,
                            rows: Vec::new(),
                        });
                    }
                    report.frontier = frontier;
                    report.metrics_bound = bound;
                    let out = std::mem::replace(
                        &mut *report,
                        WorkerReport {
                            worker: index,
                            ..Default::default()
                        },
                    );
                    drop(report);
                    sink.report(out);
                    reported = Some(frontier);
                }
                if frontier.is_none() {
                    break;
                }
            }
        })
        .map_err(Error::Timely)?;
        let worker0 = thread_rx
            .recv()
            .map_err(|_| Error::Timely("worker 0 did not start".into()))?;
        let runner = std::thread::Builder::new()
            .name("timely-join".into())
            .spawn(move || drop(guards.join()))
            .map_err(|error| Error::Timely(error.to_string()))?;
        Ok(Engine {
            feed: Some(feed),
            closing,
            worker0,
            runner: Some(runner),
            metrics_runner,
        })
    }

    /// Hands a durable batch to the dataflow. Batches must come in timestamp order.
    pub fn feed(&self, batch: Batch) -> Result<()> {
        let feed = self.feed.as_ref().ok_or(Error::Stopped)?;
        feed.send(batch).map_err(|_| Error::Stopped)?;
        self.worker0.unpark();
        Ok(())
    }

    /// A handle other threads can use to feed batches.
    pub fn feeder(&self) -> Feeder {
        Feeder {
            feed: self.feed.clone(),
            worker0: self.worker0.clone(),
        }
    }

    /// Closes the input and waits for the workers to drain and stop.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.feed = None;
        self.closing.store(true, Ordering::Release);
        self.worker0.unpark();
        if let Some(runner) = self.runner.take() {
            let _ = runner.join();
        }
        // The order path's workers have said their last; the metrics finish after them.
        if let Some(runner) = self.metrics_runner.take() {
            let _ = runner.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cloneable way to feed batches into the engine from another thread.
#[derive(Clone)]
pub struct Feeder {
    feed: Option<Sender<Batch>>,
    worker0: Thread,
}

impl Feeder {
    pub fn feed(&self, batch: Batch) -> Result<()> {
        let feed = self.feed.as_ref().ok_or(Error::Stopped)?;
        feed.send(batch).map_err(|_| Error::Stopped)?;
        self.worker0.unpark();
        Ok(())
    }
}

/// When an order-path worker hands its metrics worker what it settled.
///
/// Every worker cuts at the same bounds: a metrics worker feeds what it was handed at
/// the time just before its bound, so were the bounds each worker's own, what one
/// worker settled before another's bound would count only past it, and the metrics
/// at that bound would miss it. Worker 0 chooses each bound once every worker has cut
/// at the one before; the others follow.
#[derive(Default)]
struct Cut {
    /// The last bound handed over, and when.
    last: Time,
    at: Option<Instant>,
    /// The order path has ended and everything went.
    done: bool,
    worker: usize,
    /// Where each worker cut last (worker 0's: the newest bound chosen).
    cuts: Arc<Vec<CutAt>>,
}

/// The last bound a worker cut at, and its thread, which worker 0 wakes when it chooses
/// the next.
#[derive(Default)]
struct CutAt {
    bound: AtomicU64,
    thread: std::sync::OnceLock<Thread>,
}

/// Whether a cut is due.
enum Due {
    /// Now, up to this bound (`None`: everything, the order path has ended).
    Now(Option<Time>),
    In(Duration),
    Never,
}

impl Cut {
    fn due(&mut self, frontier: Option<Time>, every: Duration) -> Due {
        let Some(frontier) = frontier else {
            if std::mem::replace(&mut self.done, true) {
                return Due::Never;
            }
            return Due::Now(None);
        };
        // Even times are command rounds: a bound there cuts no log batch in two.
        let bound = frontier & !1;
        if bound <= self.last {
            return Due::Never;
        }
        // Chosen but not yet reached here, or not yet cut everywhere: look again soon.
        let soon = Due::In(Duration::from_millis(1));
        if self.worker != 0 {
            let chosen = self.cuts[0].bound.load(Ordering::Acquire);
            if chosen <= self.last {
                // Worker 0 wakes this one when it chooses the next.
                return Due::Never;
            }
            if chosen <= frontier {
                self.last = chosen;
                self.cuts[self.worker]
                    .bound
                    .store(chosen, Ordering::Release);
                return Due::Now(Some(chosen));
            }
            return soon;
        }
        if (self.cuts.iter()).any(|cut| cut.bound.load(Ordering::Acquire) < self.last) {
            return soon;
        }
        if let Some(since) = self.at.map(|at| at.elapsed()) {
            if since < every {
                return Due::In(every - since);
            }
        }
        self.last = bound;
        self.at = Some(Instant::now());
        self.cuts[0].bound.store(bound, Ordering::Release);
        for follower in &self.cuts[1..] {
            if let Some(thread) = follower.thread.get() {
                thread.unpark();
            }
        }
        Due::Now(Some(bound))
    }
}

/// One sender per order-path worker, and the metrics workers' threads to wake.
type MetricChannels = (Vec<Mutex<Option<Sender<ToMetrics>>>>, Vec<Thread>);

/// Starts the metric dataflow on `workers` threads of its own.
fn start_metrics(workers: usize, sink: Arc<dyn Sink>) -> Result<(MetricChannels, JoinHandle<()>)> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<ToMetrics>();
            (Mutex::new(Some(tx)), Mutex::new(Some(rx)))
        })
        .unzip();
    let (thread_tx, thread_rx) = mpsc::channel::<(usize, Thread)>();
    let thread_tx = Mutex::new(thread_tx);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        lower_priority();
        let mut receiver = receivers[index]
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        let _ = thread_tx
            .lock()
            .map(|tx| tx.send((index, std::thread::current())));
        let rows = Rc::new(RefCell::new(Vec::new()));
        let probe = ProbeHandle::new();
        let mut inputs = Some(worker.dataflow::<Time, _, _>(|scope| {
            let (events_in, events) = scope.new_input::<Vec<Event>>();
            let (rejections_in, rejections) = scope.new_input::<Vec<Rejection>>();
            let (rows_in, views) = scope.new_input::<Vec<(Row, Time, isize)>>();
            let sink = Rc::clone(&rows);
            analytics::metrics(events, rejections, views.as_collection())
                .inner
                .inspect(move |(row, time, diff)| {
                    sink.borrow_mut().push((row.clone(), *time, *diff))
                })
                .probe_with(&probe);
            MetricInputs {
                events: events_in,
                rejections: rejections_in,
                rows: rows_in,
                bounds: VecDeque::new(),
                reached: 0,
            }
        }));
        let mut reached = Some(0);
        let mut reported: Option<Option<Time>> = None;
        loop {
            if let Some(rx) = receiver.as_ref() {
                loop {
                    match rx.try_recv() {
                        Ok(ToMetrics { feed, bound }) => {
                            if let Some(handles) = inputs.as_mut() {
                                handles.take(feed, bound);
                            }
                            if bound.is_none() {
                                inputs = None;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            inputs = None;
                            receiver = None;
                            break;
                        }
                    }
                }
            }
            worker.step_or_park(None);
            let dataflow = probe.with_frontier(|frontier| frontier.first().copied());
            let frontier = match inputs.as_mut() {
                Some(handles) => {
                    reached = handles.frontier(dataflow);
                    reached
                }
                // Closed: at the last bound reached until the dataflow is done.
                None => dataflow.and(reached),
            };
            let rows = std::mem::take(&mut *rows.borrow_mut());
            if !rows.is_empty() || reported != Some(frontier) {
                sink.report_metrics(MetricsReport {
                    worker: index,
                    frontier,
                    rows,
                });
                reported = Some(frontier);
            }
            if frontier.is_none() {
                break;
            }
        }
    })
    .map_err(Error::Timely)?;
    let mut threads: Vec<Option<Thread>> = vec![None; workers];
    for _ in 0..workers {
        let (index, thread) = thread_rx
            .recv()
            .map_err(|_| Error::Timely("a metrics worker did not start".into()))?;
        threads[index] = Some(thread);
    }
    let threads = threads.into_iter().flatten().collect();
    let runner = std::thread::Builder::new()
        .name("metrics-join".into())
        .spawn(move || drop(guards.join()))
        .map_err(|error| Error::Timely(error.to_string()))?;
    Ok(((senders, threads), runner))
}

/// Lowers the calling thread's priority: the metrics are background work, so on a busy
/// machine the order path's threads, which commands wait for, go first. (On Linux a
/// thread has a niceness of its own.) What the metrics have not taken yet waits on the
/// order path's side and goes in the next, larger step: a lag, bounded by the load.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: `setpriority` only reads its arguments; `0` names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// What the order path produced on one worker that the metrics have not taken yet.
#[derive(Debug, Default)]
struct MetricFeed {
    events: Vec<(Event, Time)>,
    rejections: Vec<(Rejection, Time)>,
    rows: Vec<(Row, Time, isize)>,
}

impl MetricFeed {
    /// What is held from before `bound`; the rest stays.
    fn split_before(&mut self, bound: Time) -> MetricFeed {
        MetricFeed {
            events: take_before(&mut self.events, bound, |(_, time)| *time),
            rejections: take_before(&mut self.rejections, bound, |(_, time)| *time),
            rows: take_before(&mut self.rows, bound, |(_, time, _)| *time),
        }
    }
}

/// An input of `D`s.
type Inputs<D> = InputHandle<Time, CapacityContainerBuilder<Vec<D>>>;

/// The metric dataflow's inputs on one worker, all three at one time.
struct MetricInputs {
    events: Inputs<Event>,
    rejections: Inputs<Rejection>,
    rows: Inputs<(Row, Time, isize)>,
    /// Where the inputs moved to, oldest first, until the metrics get there.
    bounds: VecDeque<Time>,
    /// The newest bound the metrics have reached.
    reached: Time,
}

impl MetricInputs {
    /// Takes what the order path settled before `bound`, all at the one time just before
    /// it, and moves the inputs to `bound`; with no bound (the order path has ended),
    /// takes everything left at once.
    fn take(&mut self, feed: MetricFeed, bound: Option<Time>) {
        let current = *self.events.time();
        match bound {
            Some(bound) if bound > current => {
                self.send(feed, bound - 1);
                self.events.advance_to(bound);
                self.rejections.advance_to(bound);
                self.rows.advance_to(bound);
                self.bounds.push_back(bound);
            }
            Some(_) => {}
            None => {
                let last = (feed.events.iter().map(|(_, time)| *time))
                    .chain(feed.rejections.iter().map(|(_, time)| *time))
                    .chain(feed.rows.iter().map(|(_, time, _)| *time))
                    .fold(current, Time::max);
                self.send(feed, last);
            }
        }
    }

    /// The metrics' frontier, given their dataflow's: only the bounds the inputs moved
    /// to count. In between, the dataflow's frontier says nothing of the order path's
    /// times, whose updates all wait at the time just before the next bound.
    fn frontier(&mut self, dataflow: Option<Time>) -> Option<Time> {
        let dataflow = dataflow?;
        while let Some(&bound) = self.bounds.front().filter(|bound| **bound <= dataflow) {
            self.reached = bound;
            self.bounds.pop_front();
        }
        Some(self.reached)
    }

    /// Sends all of `feed` (the order-path worker cut it at the bound), at time `at`.
    fn send(&mut self, feed: MetricFeed, at: Time) {
        self.events.advance_to(at);
        self.rejections.advance_to(at);
        self.rows.advance_to(at);
        for (event, _) in feed.events {
            self.events.send(event);
        }
        for (rejection, _) in feed.rejections {
            self.rejections.send(rejection);
        }
        for (row, _, diff) in feed.rows {
            self.rows.send((row, at, diff));
        }
    }
}

/// The items of `items` whose time is before `bound`, in order; the rest stay.
fn take_before<D>(items: &mut Vec<D>, bound: Time, time: impl Fn(&D) -> Time) -> Vec<D> {
    if items.iter().all(|item| time(item) < bound) {
        return std::mem::take(items);
    }
    let (before, after): (Vec<D>, Vec<D>) = items.drain(..).partition(|item| time(item) < bound);
    *items = after;
    before
}

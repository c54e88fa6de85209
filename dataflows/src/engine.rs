//! Runs the dataflows on `workers` timely worker threads and moves data across their
//! edges: command batches in (through worker 0), per-worker reports out.
//!
//! The engine does no I/O of its own: it receives batches that the log made durable and
//! hands its outputs to a `Sink`. A report carries the worker's frontiers; a consumer that
//! takes the minimum over all workers knows that every update before it has arrived.
//!
//! There are two dataflows. The order path (`dataflow::build`) decides commands and keeps
//! the read models; a command is answered once its frontier passes. The metric views
//! (`analytics`) are a second dataflow on the same workers, fed with the first one's
//! events, refusals and rows. It has a frontier of its own, which follows the first one
//! in steps of at most `Features::metrics_every` of wall-clock time: everything the first
//! dataflow settled since the last step enters the metrics at one time, so under load the
//! metrics step once per interval over many orders instead of once per log batch, and
//! the order path never waits for them. Which frontiers the metrics stop at depends on
//! timing; what they hold at each is the same on every run: the metrics of every event
//! before it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What one worker produced since its last report, and how far it has got.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub worker: usize,
    /// The order path's frontier; `None` once it has shut down.
    pub frontier: Option<Time>,
    pub rows: Vec<(Row, Time, isize)>,
    pub events: Vec<(Event, Time)>,
    pub rejections: Vec<(Rejection, Time)>,
    /// The metric dataflow's frontier, never past `frontier`; `None` once it has shut
    /// down. Without metrics, the same as `frontier`.
    pub metrics_frontier: Option<Time>,
    /// Rows of the metric views (`Row::Metric`).
    pub metric_rows: Vec<(Row, Time, isize)>,
}

/// Receives worker reports; called on worker threads, so it must be quick.
pub trait Sink: Send + Sync + 'static {
    fn report(&self, report: WorkerReport);

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
            metrics_every: Duration::from_millis(10),
        }
    }
}

pub struct Engine {
    feed: Option<Sender<Batch>>,
    /// Set on shutdown: worker 0 closes the input even while feeders are still around.
    closing: Arc<AtomicBool>,
    worker0: Thread,
    runner: Option<JoinHandle<()>>,
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
        let (feed, receiver) = mpsc::channel::<Batch>();
        let receiver = Arc::new(Mutex::new(Some(receiver)));
        let (thread_tx, thread_rx) = mpsc::channel::<Thread>();
        let thread_tx = Mutex::new(thread_tx);
        let closing = Arc::new(AtomicBool::new(false));
        let closing_seen = Arc::clone(&closing);
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
            let metrics_probe = ProbeHandle::new();
            let mut metrics = features.metrics.then(|| {
                worker.dataflow::<Time, _, _>(|scope| {
                    let (events_in, events) = scope.new_input::<Vec<Event>>();
                    let (rejections_in, rejections) = scope.new_input::<Vec<Rejection>>();
                    let (rows_in, rows) = scope.new_input::<Vec<(Row, Time, isize)>>();
                    let sink = Rc::clone(&buffers);
                    analytics::metrics(events, rejections, rows.as_collection())
                        .inner
                        .inspect(move |(row, time, diff)| {
                            sink.borrow_mut()
                                .metric_rows
                                .push((row.clone(), *time, *diff))
                        })
                        .probe_with(&metrics_probe);
                    MetricInputs {
                        events: events_in,
                        rejections: rejections_in,
                        rows: rows_in,
                        stepped: None,
                        bounds: VecDeque::new(),
                        reached: 0,
                    }
                })
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
            let mut reported: Option<(Option<Time>, Option<Time>)> = None;
            let mut park = None;
            let mut reached = Some(0);
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
                if let Some(inputs) = metrics.as_mut() {
                    match inputs.step(&mut fed.borrow_mut(), frontier, features.metrics_every) {
                        Step::Wait(left) => park = Some(left),
                        Step::Idle => {}
                        Step::Closed => metrics = None,
                    }
                }
                let dataflow = metrics_probe.with_frontier(|frontier| frontier.first().copied());
                let metrics_frontier = match metrics.as_mut() {
                    Some(inputs) => {
                        reached = inputs.frontier(dataflow);
                        reached
                    }
                    // Closed: at the last bound reached until the dataflow is done.
                    None if features.metrics => dataflow.and(reached),
                    None => frontier,
                };
                let mut report = buffers.borrow_mut();
                let has_data = !report.rows.is_empty()
                    || !report.events.is_empty()
                    || !report.rejections.is_empty()
                    || !report.metric_rows.is_empty();
                if has_data || reported != Some((frontier, metrics_frontier)) {
                    report.frontier = frontier;
                    report.metrics_frontier = metrics_frontier;
                    let out = std::mem::replace(
                        &mut *report,
                        WorkerReport {
                            worker: index,
                            ..Default::default()
                        },
                    );
                    drop(report);
                    sink.report(out);
                    reported = Some((frontier, metrics_frontier));
                }
                if frontier.is_none() && metrics_frontier.is_none() {
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

/// What the order path produced on this worker that the metrics have not taken yet.
#[derive(Default)]
struct MetricFeed {
    events: Vec<(Event, Time)>,
    rejections: Vec<(Rejection, Time)>,
    rows: Vec<(Row, Time, isize)>,
}

/// The metric dataflow's inputs on one worker, all three at one time.
struct MetricInputs {
    events: InputHandle<Time, CapacityContainerBuilder<Vec<Event>>>,
    rejections: InputHandle<Time, CapacityContainerBuilder<Vec<Rejection>>>,
    rows: InputHandle<Time, CapacityContainerBuilder<Vec<(Row, Time, isize)>>>,
    /// When the inputs last moved on.
    stepped: Option<Instant>,
    /// Where the inputs moved to, oldest first, until the metrics get there.
    bounds: VecDeque<Time>,
    /// The newest bound the metrics have reached.
    reached: Time,
}

/// What the metrics' inputs did.
enum Step {
    /// Nothing to take, or taken.
    Idle,
    /// Behind, and due to take in this long.
    Wait(Duration),
    /// The order path has ended and everything is taken: the inputs are to be dropped.
    Closed,
}

impl MetricInputs {
    /// Moves the metrics up to the order path's `frontier`, at most once per `every`:
    /// everything before it enters at the one time just before it.
    fn step(&mut self, feed: &mut MetricFeed, frontier: Option<Time>, every: Duration) -> Step {
        let current = *self.events.time();
        let Some(frontier) = frontier else {
            // The order path is over: the rest enters at once, then the inputs close.
            let last = (feed.events.iter().map(|(_, time)| *time))
                .chain(feed.rejections.iter().map(|(_, time)| *time))
                .chain(feed.rows.iter().map(|(_, time, _)| *time))
                .fold(current, Time::max);
            self.send(feed, Time::MAX, last);
            return Step::Closed;
        };
        // Even times are command rounds: a bound there cuts no log batch in two.
        let bound = frontier & !1;
        if bound <= current {
            return Step::Idle;
        }
        if let Some(since) = self.stepped.map(|at| at.elapsed()) {
            if since < every {
                return Step::Wait(every - since);
            }
        }
        self.send(feed, bound, bound - 1);
        self.events.advance_to(bound);
        self.rejections.advance_to(bound);
        self.rows.advance_to(bound);
        self.bounds.push_back(bound);
        self.stepped = Some(Instant::now());
        Step::Idle
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

    /// Sends what `feed` holds from before `bound`, all at time `at`.
    fn send(&mut self, feed: &mut MetricFeed, bound: Time, at: Time) {
        self.events.advance_to(at);
        self.rejections.advance_to(at);
        self.rows.advance_to(at);
        for (event, _) in take_before(&mut feed.events, bound, |(_, time)| *time) {
            self.events.send(event);
        }
        for (rejection, _) in take_before(&mut feed.rejections, bound, |(_, time)| *time) {
            self.rejections.send(rejection);
        }
        for (row, _, diff) in take_before(&mut feed.rows, bound, |(_, time, _)| *time) {
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

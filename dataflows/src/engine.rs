//! Runs the dataflow on `workers` timely worker threads and moves data across its edge:
//! command batches in (through worker 0), per-worker reports out.
//!
//! The engine does no I/O of its own: it receives batches that the log made durable and
//! hands its outputs to a `Sink`. A report carries the worker's frontier; a consumer that
//! takes the minimum over all workers knows that every update before it has arrived.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::ProbeHandle;

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
    /// `None` once the dataflow has shut down.
    pub frontier: Option<Time>,
    pub rows: Vec<(Row, Time, isize)>,
    pub events: Vec<(Event, Time)>,
    pub rejections: Vec<(Rejection, Time)>,
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
}

impl Default for Features {
    fn default() -> Self {
        Features { metrics: true }
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
            let probe = ProbeHandle::new();
            let sink_for_events = Arc::clone(&sink);
            let input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, commands) = scope.new_input::<Vec<Record>>();
                let outputs = build(scope, commands, features);
                let sink = Rc::clone(&buffers);
                outputs
                    .rows
                    .inner
                    .inspect(move |(row, time, diff)| {
                        sink.borrow_mut().rows.push((row.clone(), *time, *diff))
                    })
                    .probe_with(&probe);
                let sink = Rc::clone(&buffers);
                let wanted = Arc::clone(&sink_for_events);
                outputs
                    .events
                    .inspect_core(move |batch| {
                        if let (Ok((stamp, events)), true) = (batch, wanted.wants_events()) {
                            let time = stamp.least().copied().unwrap_or_default();
                            sink.borrow_mut()
                                .events
                                .extend(events.iter().map(|event| (event.clone(), time)));
                        }
                    })
                    .probe_with(&probe);
                let sink = Rc::clone(&buffers);
                outputs
                    .rejections
                    .inspect_core(move |batch| {
                        if let Ok((stamp, rejections)) = batch {
                            let time = stamp.least().copied().unwrap_or_default();
                            sink.borrow_mut().rejections.extend(
                                rejections.iter().map(|rejection| (rejection.clone(), time)),
                            );
                        }
                    })
                    .probe_with(&probe);
                input
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
                worker.step_or_park(None);
                let frontier = probe.with_frontier(|frontier| frontier.first().copied());
                let mut report = buffers.borrow_mut();
                let has_data = !report.rows.is_empty()
                    || !report.events.is_empty()
                    || !report.rejections.is_empty();
                if has_data || reported != Some(frontier) {
                    report.frontier = frontier;
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

//! The running system: the log, the dataflow engine, the views and the providers,
//! wired together. Start-up replays the log before the API reports ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectors::effects::payments::{PaymentProvider, SandboxPayments};
use connectors::effects::shipping::{Carrier, SandboxCarrier};
use connectors::kafka::events::KafkaEventSink;
use connectors::log::{EmbeddedLog, EmbeddedLogOptions, KafkaLog, KafkaLogOptions, Log};
use dataflows::model::{command_time, settled_frontier, Envelope, Rejection, Seq, Ts};
use dataflows::shared::intern::Interner;
use dataflows::{Batch, Engine};
use parking_lot::Mutex;
use queries::ViewStore;
use tracing::Instrument;

use crate::config::{Config, LogBackend};
use crate::hashing::HashingPool;

/// Longest a durable batch waits for the dataflow to take it (see the pacing in
/// `Tidemark::recover`); past this it is handed over regardless.
const PACING_LIMIT: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Log(#[from] connectors::Error),
    #[error(transparent)]
    Engine(#[from] dataflows::Error),
    #[error(transparent)]
    Views(#[from] queries::Error),
    #[error("log record {seq} is not a command: {reason}")]
    Decode { seq: Seq, reason: String },
    #[error("a command could not be serialised: {0}")]
    Encode(String),
    #[error("the log answered an append of {sent} commands with {answered} positions")]
    Unanswered { sent: usize, answered: usize },
    #[error("another tidemark process is using {} (it holds {}); stop it first", data_dir.display(), data_dir.join(LOCK_FILE).display())]
    InUse { data_dir: std::path::PathBuf },
}

/// The file in the data directory a running process holds locked.
pub const LOCK_FILE: &str = "lock";

/// Takes the data directory for this process: two processes appending to one embedded
/// log, or running one sandbox ledger, would interleave their records. The kernel drops
/// the lock when the process ends, however it ends.
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| connectors::Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse {
            data_dir: data_dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(connectors::Error::io(&path, e).into()),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What became of a command: where it landed and whether the dataflow refused it.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub seq: Seq,
    pub ts: Ts,
    pub rejection: Option<Rejection>,
}

pub struct Tidemark {
    pub config: Config,
    pub log: Arc<dyn Log>,
    pub views: Arc<ViewStore>,
    pub payments: Arc<dyn PaymentProvider>,
    pub carrier: Arc<dyn Carrier>,
    /// Pause calls to a provider that keeps failing (`gateway.breaker_*`).
    pub payment_breaker: crate::breaker::Breaker,
    pub carrier_breaker: crate::breaker::Breaker,
    /// Where password hashes are computed, a bounded number at a time.
    pub password_hashing: HashingPool,
    /// API keys, access tokens and the route rules.
    pub auth: crate::auth::Authenticator,
    /// Requests each caller may still make (`gateway.rate_limits`).
    pub rate_limits: Option<crate::gateway::RateLimits>,
    /// Catalog answers by request, while the catalog stands still (`gateway.catalog_cache`).
    pub catalog_cache: Option<crate::api::cache::CatalogCache>,
    /// Turns to render a page of a list (`api::read_page`).
    pub page_readers: Arc<tokio::sync::Semaphore>,
    /// Runs SQL over the views, on threads of its own.
    pub sql: Arc<sql::SqlEngine>,
    /// Effect results that could not be appended after every attempt (they are
    /// retried at the next start); shown by `/health/ready`.
    pub effects_unrecorded: std::sync::atomic::AtomicUsize,
    /// Reports the report executor is running now (the views say `queued`).
    pub reports_running: Mutex<std::collections::HashSet<String>>,
    /// The dashboards being followed (`GET /api/v1/dashboards/{id}/stream`).
    pub dashboards: crate::dashboards::Boards,
    /// The readers of the views' changefeeds (`GET /api/v1/views/{name}/changes`).
    pub changefeeds: crate::changefeed::Changefeeds,
    engine: Mutex<Option<Engine>>,
    event_sink: Mutex<Option<crate::sinks::EventSinkThread>>,
    /// The thread writing the Parquet history, when it is on.
    history: Mutex<Option<std::thread::JoinHandle<()>>>,
    ready: AtomicBool,
    /// Set by `shutdown`; background sources stop when they see it.
    stopping: Arc<AtomicBool>,
    /// Held until `shutdown` has stopped every writer (`lock_data_dir`).
    data_dir_lock: Mutex<Option<std::fs::File>>,
    /// Set when the server stops taking requests: open changefeeds end, so that the
    /// connections they hold can drain.
    closing: tokio::sync::watch::Sender<bool>,
}

/// How start-up reports replay progress.
pub trait Progress: Send {
    fn start(&mut self, total: u64);
    fn advance(&mut self, done: u64);
    fn finish(&mut self, done: u64, elapsed: Duration);
}

/// No progress output (tests).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _total: u64) {}
    fn advance(&mut self, _done: u64) {}
    fn finish(&mut self, _done: u64, _elapsed: Duration) {}
}

impl Tidemark {
    /// Opens the log and starts the engine; call `recover` next.
    pub fn open(config: Config) -> Result<Arc<Tidemark>> {
        Tidemark::open_with(config, None)
    }

    /// `open`, calling `payments` instead of the sandbox payment provider.
    pub fn open_with(
        config: Config,
        payments: Option<Arc<dyn PaymentProvider>>,
    ) -> Result<Arc<Tidemark>> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| connectors::Error::io(&config.data_dir, e))?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let log: Arc<dyn Log> = match config.log_backend().map_err(connectors::Error::Config)? {
            LogBackend::Embedded => Arc::new(EmbeddedLog::open(
                config.data_dir.join("log"),
                EmbeddedLogOptions {
                    segment_bytes: config.segment_bytes,
                    ..Default::default()
                },
            )?),
            LogBackend::Kafka(cluster) => Arc::new(KafkaLog::open(KafkaLogOptions {
                cluster,
                partitions: config.kafka.partitions,
                replication_factor: config.kafka.replication_factor,
                key_of: Arc::new(aggregate_key),
                max_batch_records: config.kafka.max_batch_records,
                linger_ms: config.kafka.linger_ms,
                follow: config.kafka.follow,
            })?),
        };
        let payments: Arc<dyn PaymentProvider> = match payments {
            Some(payments) => payments,
            None => Arc::new(SandboxPayments::open(
                config.data_dir.join("sandbox-payments.jsonl"),
            )?),
        };
        let views = ViewStore::new(config.workers);
        // Subscribed before the replay, so that events the sink has not committed yet
        // (the replay produces them again) reach it.
        let event_sink = match config.events_cluster().map_err(connectors::Error::Config)? {
            Some(cluster) => Some(
                crate::sinks::spawn_event_sink(
                    KafkaEventSink::open(
                        cluster,
                        "events",
                        config.kafka.partitions,
                        config.kafka.replication_factor,
                    )?,
                    views.event_feed(),
                )
                .map_err(|e| connectors::Error::io("event-sink thread", e))?,
            ),
            None => None,
        };
        let history_location = config.history_location()?;
        let history = if let Some(location) = history_location.clone() {
            let writer = connectors::history::HistoryWriter::open(
                location,
                connectors::history::HistoryOptions {
                    flush_rows: config.history.flush_rows,
                    compact_files: config.history.compact_files,
                    ..Default::default()
                },
            )?;
            let thread = crate::sinks::spawn_history_sink(
                writer,
                views.event_feed(),
                Duration::from_millis(config.history.flush_ms.max(1)),
            )
            .map_err(|e| connectors::Error::io("history thread", e))?;
            Some(thread)
        } else {
            None
        };
        let features = dataflows::Features {
            metrics: config.analytics.enabled,
            metrics_every: Duration::from_millis(config.analytics.step_ms),
        };
        let engine = Engine::start_with(config.workers, views.clone(), features)?;
        let auth = crate::auth::Authenticator::open(&config.auth, &config.data_dir)
            .map_err(|e| connectors::Error::io(config.data_dir.join("keys"), e))?;
        let password_hashing =
            HashingPool::new(config.http.password_hashes, config.http.password_hash_queue);
        let page_readers = Arc::new(tokio::sync::Semaphore::new(config.http.page_readers));
        let mut sql = sql::SqlEngine::new(config.sql.clone())
            .map_err(|e| connectors::Error::io("sql threads", e))?;
        if let Some(location) = history_location {
            sql = sql.with_history(location);
        }
        let breaker = |name| {
            crate::breaker::Breaker::new(
                name,
                config.gateway.breaker_failures,
                Duration::from_millis(config.gateway.breaker_cool_down_ms),
            )
        };
        let (payment_breaker, carrier_breaker) = (breaker("payment"), breaker("carrier"));
        Ok(Arc::new(Tidemark {
            sql: Arc::new(sql),
            password_hashing,
            auth,
            catalog_cache: config
                .gateway
                .catalog_cache
                .then(crate::api::cache::CatalogCache::default),
            rate_limits: config
                .gateway
                .rate_limits
                .then(|| crate::gateway::RateLimits::new(&config.gateway)),
            page_readers,
            effects_unrecorded: std::sync::atomic::AtomicUsize::new(0),
            reports_running: Mutex::default(),
            dashboards: Default::default(),
            changefeeds: Default::default(),
            config,
            log,
            views,
            payment_breaker,
            carrier_breaker,
            payments,
            carrier: Arc::new(SandboxCarrier),
            engine: Mutex::new(Some(engine)),
            event_sink: Mutex::new(event_sink),
            history: Mutex::new(history),
            ready: AtomicBool::new(false),
            stopping: Arc::new(AtomicBool::new(false)),
            data_dir_lock: Mutex::new(Some(data_dir_lock)),
            closing: tokio::sync::watch::channel(false).0,
        }))
    }

    /// Replays the log into the dataflow, starts taking new commands, and waits until the
    /// views have caught up with everything replayed. Blocking: run it off the runtime.
    pub fn recover(&self, progress: &mut dyn Progress) -> Result<()> {
        let started = Instant::now();
        let feeder = self
            .engine
            .lock()
            .as_ref()
            .map(Engine::feeder)
            .ok_or(dataflows::Error::Stopped)?;
        let total = self.log.durable_end();
        progress.start(total);
        let mut batch: Option<Batch> = None;
        let mut done = 0;
        let mut last_ts = None;
        let mut interner = Interner::default();
        for record in self.log.read_from(0)? {
            let record = record?;
            let mut envelope = decode(record.seq, &record.payload)?;
            interner.command(&mut envelope.command);
            match batch.as_mut() {
                Some(current) if current.ts == record.ts => {
                    current.records.push((record.seq, envelope))
                }
                _ => {
                    if let Some(full) = batch.replace(Batch {
                        ts: record.ts,
                        records: vec![(record.seq, envelope)],
                    }) {
                        trace_requests(&self.views, &full);
                        feeder.feed(full)?;
                    }
                }
            }
            last_ts = Some(record.ts);
            done += 1;
            if done % 4096 == 0 {
                progress.advance(done);
            }
        }
        if let Some(full) = batch {
            trace_requests(&self.views, &full);
            feeder.feed(full)?;
        }
        let live_feeder = feeder.clone();
        let views = self.views.clone();
        let mut fed: [Option<Ts>; 2] = [None, None];
        let batch_spans = batch_spans(&self.views);
        self.log.start(Box::new(move |durable| {
            let records = durable
                .records
                .iter()
                .filter_map(|(seq, payload)| match decode(*seq, payload) {
                    Ok(mut envelope) => {
                        interner.command(&mut envelope.command);
                        Some((*seq, envelope))
                    }
                    Err(error) => {
                        // Only this process writes the log, so this is a bug, and replay
                        // skips the record the same way.
                        tracing::error!(%error, "skipping a log record that is not a command");
                        None
                    }
                })
                .collect();
            // Pacing: at most two batches in the dataflow. While it works through them the
            // log goes on collecting appends, so under load each timestamp carries more
            // commands (the dataflow's cost is mostly per timestamp); an idle dataflow
            // adds no wait. The commands waiting here would wait for the views anyway.
            if let Some(ts) = fed[0] {
                let _ = views.wait_for_blocking(settled_frontier(ts), PACING_LIMIT);
            }
            fed = [fed[1], Some(durable.ts)];
            let batch = Batch {
                ts: durable.ts,
                records,
            };
            if let Some(spans) = &batch_spans {
                // The orders (and other aggregates) the batch's commands are about: the
                // first few, to find a batch by an order's id.
                let mut correlation_ids: Vec<&str> = (batch.records.iter())
                    .map(|(_, envelope)| envelope.command.aggregate_id())
                    .collect();
                correlation_ids.sort_unstable();
                correlation_ids.dedup();
                correlation_ids.truncate(BATCH_SPAN_IDS);
                let span = tracing::info_span!(
                    parent: None,
                    "dataflow.batch",
                    ts = batch.ts,
                    commands = batch.records.len(),
                    correlation_ids = correlation_ids.join(","),
                );
                let _ = spans.send((batch.ts, span));
            }
            trace_requests(&views, &batch);
            if live_feeder.feed(batch).is_err() {
                tracing::error!("the dataflow has stopped; a durable batch was not applied");
            }
        }))?;
        if let Some(ts) = last_ts {
            self.views
                .wait_for_blocking(settled_frontier(ts), Duration::from_secs(24 * 3600))?;
        }
        progress.finish(done, started.elapsed());
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends every open changefeed (the server is stopping): a stream that never ends
    /// would hold its connection, and so the server's drain, to the last second.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once `close_streams` has been called.
    pub fn streams_closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|closing| *closing).await;
        }
    }

    /// Set once `shutdown` has begun.
    pub fn stopping(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stopping)
    }

    /// Whether start-up has caught up with the log.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the command log takes appends now (Kafka: the cluster answers).
    pub fn log_available(&self) -> bool {
        self.log.is_healthy()
    }

    /// Appends a command, waits until the views show its effects, and says whether the
    /// dataflow accepted it.
    pub async fn submit(&self, envelope: Envelope) -> Result<Submitted> {
        let mut submitted = self.submit_all(vec![envelope]).await?;
        submitted.pop().ok_or(Error::Unanswered {
            sent: 1,
            answered: 0,
        })
    }

    /// Appends commands as one log batch (one fsync, one dataflow timestamp), waits once
    /// until the views show their effects, and says which the dataflow refused.
    pub async fn submit_all(&self, envelopes: Vec<Envelope>) -> Result<Vec<Submitted>> {
        // The first command names the span: a batch is one saga step or one request's.
        let first = envelopes.first().map(|envelope| &envelope.command);
        if let Some(command) = first {
            // The request's own span, when a request sends it: its log lines carry it.
            tracing::Span::current().record("correlation_id", command.aggregate_id());
        }
        let span = tracing::info_span!(
            "command",
            command = first.map_or("", |command| command.name()),
            correlation_id = first.map_or("", |command| command.aggregate_id()),
            commands = envelopes.len(),
            seq = tracing::field::Empty,
        );
        self.submit_all_in(envelopes, &span)
            .instrument(span.clone())
            .await
    }

    async fn submit_all_in(
        &self,
        envelopes: Vec<Envelope>,
        span: &tracing::Span,
    ) -> Result<Vec<Submitted>> {
        let payloads = envelopes
            .iter()
            .map(|envelope| serde_json::to_vec(envelope).map_err(|e| Error::Encode(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let appended = (self.log.append(payloads).durable())
            .instrument(tracing::info_span!("log.append"))
            .await?;
        let durable = Instant::now();
        if let Some(seq) = appended.seqs.first() {
            span.record("seq", seq);
        }
        metrics::histogram!("tidemark_log_append_duration_seconds")
            .record(durable.duration_since(started).as_secs_f64());
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        (self.views.wait_for(settled_frontier(appended.ts), timeout))
            .instrument(tracing::info_span!("views.wait", ts = appended.ts))
            .await?;
        metrics::histogram!("tidemark_command_visible_duration_seconds")
            .record(durable.elapsed().as_secs_f64());
        let snapshot = self.views.read();
        Ok(appended
            .seqs
            .into_iter()
            .map(|seq| Submitted {
                seq,
                ts: appended.ts,
                rejection: snapshot.rejection(seq).cloned(),
            })
            .collect())
    }

    /// Waits until the views show every write that any server sharing the log had
    /// acknowledged when the call began, and says whether they moved meanwhile. For
    /// what a client may have just done on another server (signed in, created a key):
    /// a Kafka follower asks the broker how far the log goes; the embedded log has
    /// nothing to wait for.
    pub async fn catch_up_with_log(&self) -> Result<bool> {
        let before = self.views.frontier();
        let timeout = Duration::from_millis(self.config.command_timeout_ms);
        let log = Arc::clone(&self.log);
        let point = tokio::task::spawn_blocking(move || log.sync_point(timeout))
            .await
            .unwrap_or(Err(connectors::Error::Closed))?;
        if let Some(ts) = point {
            self.views.wait_for(settled_frontier(ts), timeout).await?;
        }
        Ok(self.views.frontier() > before)
    }

    /// Stops the log, then the engine; commands still waiting fail with 503.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        self.stopping.store(true, Ordering::Release);
        self.log.close();
        if let Some(engine) = self.engine.lock().take() {
            engine.shutdown();
        }
        // The sink publishes what the dataflow produced, then stops.
        self.views.close_feeds();
        if let Some(sink) = self.event_sink.lock().take() {
            sink.join();
        }
        if let Some(history) = self.history.lock().take() {
            let _ = history.join();
        }
        // Nothing writes to the data directory any more: another process may take it.
        self.data_dir_lock.lock().take();
    }
}

/// The partition key of a logged command: its aggregate. A payload that does not decode
/// (it never reaches the log) keys by its bytes.
fn aggregate_key(payload: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(envelope) => envelope.command.aggregate_id().as_bytes().to_vec(),
        Err(_) => payload.to_vec(),
    }
}

fn decode(seq: Seq, payload: &[u8]) -> Result<Envelope> {
    serde_json::from_slice(payload).map_err(|e| Error::Decode {
        seq,
        reason: e.to_string(),
    })
}

/// Tells the views which requests sent the commands of `batch`, before it enters the
/// dataflow, so that their events leave with their request ids.
/// Correlation ids a batch's span names at most.
const BATCH_SPAN_IDS: usize = 32;

/// Where the spans of the batches entering the dataflow go: each ends when the views
/// settle its batch, so it measures the batch's way through the dataflow. Only while
/// spans go to a collector, and on the async runtime.
fn batch_spans(
    views: &ViewStore,
) -> Option<tokio::sync::mpsc::UnboundedSender<(Ts, tracing::Span)>> {
    if !crate::telemetry::tracing_on() {
        return None;
    }
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (spans, mut entering) = tokio::sync::mpsc::unbounded_channel::<(Ts, tracing::Span)>();
    let mut frontier = views.subscribe_frontier();
    runtime.spawn(async move {
        let mut open = std::collections::VecDeque::new();
        loop {
            tokio::select! {
                batch = entering.recv() => match batch {
                    Some(batch) => open.push_back(batch),
                    None => return,
                },
                moved = frontier.changed() => if moved.is_err() {
                    return;
                },
            }
            let now = *frontier.borrow_and_update();
            while open
                .front()
                .is_some_and(|(ts, _)| settled_frontier(*ts) <= now)
            {
                open.pop_front();
            }
        }
    });
    Some(spans)
}

fn trace_requests(views: &ViewStore, batch: &Batch) {
    views.trace_requests(
        command_time(batch.ts),
        batch.records.iter().filter_map(|(seq, envelope)| {
            envelope
                .request_id
                .as_ref()
                .map(|request| (*seq, request.clone()))
        }),
    );
}

//! Running one read-only query against one snapshot, within limits: a timeout, a memory
//! pool for the query's operators and its result, and threads of its own so that a
//! report cannot crowd out the HTTP workers or the dataflow.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::operator_statistics::StatisticsRegistry;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use queries::{Snapshot, View};
use serde::{Deserialize, Serialize};

use crate::history::{HistoryStatistics, HistoryTable, TypeCounts};
use crate::tables::{LiveTable, Pinned};
use connectors::history::HistoryLocation;
use datafusion::execution::object_store::ObjectStoreUrl;

/// Limits and threads of the SQL engine (`[sql]` in the configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Longest a query may run, planning included (milliseconds).
    pub timeout_ms: u64,
    /// Memory SQL may hold at once (MiB), all running queries together: their sorts,
    /// joins and aggregations, and the rows of their answers until they are sent. A
    /// query that needs more than is left fails with a clear error.
    pub memory_limit_mb: usize,
    /// Most rows a JSON answer carries; the rest are cut off and `truncated` says so.
    pub max_json_rows: usize,
    /// Threads that run queries, apart from the HTTP workers and the dataflow.
    pub threads: usize,
    /// Rows per batch a scan produces.
    pub batch_rows: usize,
    /// PostgreSQL clients connected at once; one more is refused (SQLSTATE 53300).
    pub max_connections: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_ms: 30_000,
            memory_limit_mb: 512,
            max_json_rows: 10_000,
            threads: 1,
            batch_rows: 8192,
            max_connections: 64,
        }
    }
}

impl SqlConfig {
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (self.timeout_ms > 0, "sql.timeout_ms must be positive"),
            (
                (1..=1 << 20).contains(&self.memory_limit_mb),
                "sql.memory_limit_mb must be between 1 and 1048576",
            ),
            (self.max_json_rows > 0, "sql.max_json_rows must be positive"),
            (
                (1..=64).contains(&self.threads),
                "sql.threads must be between 1 and 64",
            ),
            (
                (1..=1 << 20).contains(&self.batch_rows),
                "sql.batch_rows must be between 1 and 1048576",
            ),
            (
                (1..=10_000).contains(&self.max_connections),
                "sql.max_connections must be between 1 and 10000",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, problem)) => Err(problem.to_string()),
            None => Ok(()),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit_mb << 20
    }
}

/// Why a query has no answer. Each says what the client can do about it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan, or fails on the data (a division by zero, a
    /// cast): DataFusion's message.
    #[error("{0}")]
    Invalid(String),
    /// The statement would change something: only queries are run.
    #[error("{0}")]
    ReadOnly(String),
    /// A parameter has no SQL value.
    #[error("{0}")]
    Parameter(String),
    /// The query needs more memory than `sql.memory_limit_mb` leaves it.
    #[error("{0}")]
    TooLarge(String),
    /// The query ran past `sql.timeout`.
    #[error("the query ran longer than {} ms and was stopped", .0.as_millis())]
    Timeout(Duration),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(message) => QueryError::TooLarge(format!(
                "the query needs more memory than SQL may hold at once (sql.memory_limit_mb); \
                 add a LIMIT, aggregate, or export it as a report: {message}"
            )),
            _ => QueryError::Invalid(error.strip_backtrace()),
        }
    }
}

/// A query's answer: its rows, at one frontier.
#[derive(Debug)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The frontier of the snapshot every table was read at.
    pub frontier: u64,
    /// Whether rows were left out to keep within the row cap asked for.
    pub truncated: bool,
    /// The answer's rows, counted in the memory pool until the answer is dropped.
    held: MemoryReservation,
}

impl Answer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The parameters of a query: by name (`$name`) or by position (`$1`).
pub type Params = Option<ParamValues>;

pub struct SqlEngine {
    config: SqlConfig,
    /// The Parquet history, read as the `events` table.
    history: Option<HistoryLocation>,
    memory: Arc<RuntimeEnv>,
    /// What the history's files hold of each event type, learnt as queries list them.
    type_counts: Arc<TypeCounts>,
    /// Queries run here; taken on drop to shut it down without blocking.
    threads: Option<tokio::runtime::Runtime>,
}

impl SqlEngine {
    pub fn new(config: SqlConfig) -> std::io::Result<SqlEngine> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(config.memory_limit()),
            std::num::NonZeroUsize::new(3).expect("3 is not zero"),
        );
        let memory = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(std::io::Error::other)?;
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("sql")
            // Time for timeouts; I/O for the history in an object store and for
            // PostgreSQL connections.
            .enable_all()
            .build()?;
        Ok(SqlEngine {
            config,
            history: None,
            memory,
            type_counts: Arc::default(),
            threads: Some(threads),
        })
    }

    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// A session whose tables are the views of `snapshot`.
    pub fn session(&self, snapshot: &Arc<Snapshot>) -> SessionContext {
        let session = self.context();
        pin(&session, snapshot.clone());
        session
    }

    /// A session with the views and the history as tables, and no snapshot pinned yet.
    pub(crate) fn context(&self) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_batch_size(self.config.batch_rows)
            .with_target_partitions(self.config.threads.max(1));
        // Late materialisation in the history's Parquet: a filter on `type` is applied
        // as the file is decoded, so the rows it drops never have their `data` (most of
        // the bytes) decoded at all.
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        // Estimates of the rows a filter on `type` keeps of the history, from the files'
        // counts, so that a join of two event types builds on the smaller side. Without
        // the filters a hash join pushes into its probe side's scan: the history's join
        // keys are mostly computed from `data` (`data->>'order_id'`), where such a filter
        // prunes nothing and costs a second evaluation of the key per row (the top-10
        // report ran 1.71x and 1.88x DuckDB's time with them, 1.48x and 1.39x without;
        // BENCHMARKS.md).
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.use_statistics_registry = true;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        let mut statistics = StatisticsRegistry::default_with_builtin_providers();
        statistics.register(Arc::new(HistoryStatistics::new(self.type_counts.clone())));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.memory.clone())
            .with_default_features()
            .with_statistics_registry(statistics)
            .build();
        let mut session = SessionContext::new_with_state(state);
        datafusion_functions_json::register_all(&mut session)
            .expect("the JSON functions register once, into a fresh session");
        // The catalog functions psql's `\d+` calls, so both doors speak the same SQL.
        crate::pg_functions::register(&session);
        for view in View::all() {
            session
                .register_table(view.name(), Arc::new(LiveTable::new(view)))
                .expect("view names are distinct");
        }
        session
            .register_table(
                "events",
                Arc::new(HistoryTable::new(
                    self.history.clone(),
                    self.type_counts.clone(),
                )),
            )
            .expect("no view is called events");
        session
    }

    /// Runs `task` on the engine's threads (a PostgreSQL connection's queries).
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.threads
            .as_ref()
            .expect("running until dropped")
            .spawn(task)
    }

    /// Reads the Parquet history at `location` as the `events` table.
    pub fn with_history(mut self, location: HistoryLocation) -> SqlEngine {
        if let Some((root, store)) = location.store() {
            match ObjectStoreUrl::parse(&root) {
                Ok(url) => {
                    self.memory.register_object_store(url.as_ref(), store);
                }
                Err(error) => {
                    tracing::error!(%error, %root, "the history's store cannot be registered")
                }
            }
        }
        self.history = Some(location);
        self
    }

    /// Plans `sql` without running it, on the engine's threads: the error it would
    /// fail with before reading anything (bad SQL, an unknown table, a write).
    pub async fn check(&self, snapshot: Arc<Snapshot>, sql: String) -> Result<(), QueryError> {
        let session = self.session(&snapshot);
        let timeout = self.config.timeout();
        let plan = async move {
            let plan = session.state().create_logical_plan(&sql).await?;
            refuse_writes(&plan)
        };
        match AbortOnDrop(self.spawn(tokio::time::timeout(timeout, plan))).await {
            Ok(Ok(checked)) => checked,
            Ok(Err(_elapsed)) => Err(QueryError::Timeout(timeout)),
            Err(_) => Err(QueryError::Invalid(
                "the query could not be planned (the planner failed on it)".into(),
            )),
        }
    }

    /// Runs `sql` over `snapshot` on the engine's threads. At most `max_rows` rows are
    /// kept (the answer says whether more were cut off); the answer's rows count against
    /// the memory limit as the query's operators do.
    pub async fn run(
        &self,
        snapshot: Arc<Snapshot>,
        sql: String,
        params: Params,
        max_rows: Option<usize>,
    ) -> Result<Answer, QueryError> {
        let session = self.session(&snapshot);
        let frontier = snapshot.frontier;
        let held = MemoryConsumer::new("sql answer").register(&self.memory.memory_pool);
        let timeout = self.config.timeout();
        let query = async move {
            let plan = session.state().create_logical_plan(&sql).await?;
            refuse_writes(&plan)?;
            let mut frame = session.execute_logical_plan(plan).await?;
            if let Some(params) = params {
                frame = frame
                    .with_param_values(params)
                    .map_err(|error| QueryError::Parameter(error.strip_backtrace()))?;
            }
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame.execute_stream().await?;
            let mut answer = Answer {
                schema,
                batches: Vec::new(),
                frontier,
                truncated: false,
                held,
            };
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let mut batch = batch?;
                if let Some(max) = max_rows {
                    if rows + batch.num_rows() > max {
                        batch = batch.slice(0, max - rows);
                        answer.truncated = true;
                    }
                }
                rows += batch.num_rows();
                // The same pool as the operators': a large answer fails as they do.
                answer.held.try_grow(batch.get_array_memory_size())?;
                answer.batches.push(batch);
                if answer.truncated {
                    break;
                }
            }
            Ok(answer)
        };
        let threads = self.threads.as_ref().expect("running until dropped");
        let running = AbortOnDrop(threads.spawn(tokio::time::timeout(timeout, query)));
        match running.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_elapsed)) => Err(QueryError::Timeout(timeout)),
            Err(failed) if failed.is_panic() => Err(QueryError::Invalid(
                "the query could not be run (the planner failed on it)".into(),
            )),
            Err(failed) => Err(QueryError::Invalid(failed.to_string())),
        }
    }
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        if let Some(threads) = self.threads.take() {
            threads.shutdown_background();
        }
    }
}

/// Makes every live table of `session` read `snapshot` from its next scan on.
pub(crate) fn pin(session: &SessionContext, snapshot: Arc<Snapshot>) {
    session
        .state_ref()
        .write()
        .config_mut()
        .set_extension(Arc::new(Pinned(snapshot)));
}

/// Only queries (and `EXPLAIN` of one) are run: anything that would create, change or
/// write something is refused before it runs.
fn refuse_writes(plan: &LogicalPlan) -> Result<(), QueryError> {
    let what = match plan {
        LogicalPlan::Ddl(_) => "creates or drops objects",
        LogicalPlan::Dml(_) => "changes rows",
        LogicalPlan::Copy(_) => "writes files",
        LogicalPlan::Statement(_) => "changes the session",
        LogicalPlan::Explain(explain) => return refuse_writes(&explain.plan),
        LogicalPlan::Analyze(analyze) => return refuse_writes(&analyze.input),
        _ => return Ok(()),
    };
    Err(QueryError::ReadOnly(format!(
        "the statement {what}; SQL here is read-only: the views change only through the API"
    )))
}

/// Stops a query whose caller has gone (a client that hung up).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The PostgreSQL wire protocol (`--pg-listen`): psql, BI tools and drivers run the same
//! read-only SQL as `POST /api/v1/sql`, over the same tables, within the same limits.
//!
//! The protocol, the `pg_catalog` tables and functions clients ask for, and the encoding
//! of Arrow values as PostgreSQL's are `datafusion-postgres`'s. What is tidemark's:
//! - each connection keeps one DataFusion session, and every statement pins the snapshot
//!   published when it arrived, so a statement sees every command acknowledged before it
//!   and one frontier from its first row to its last (an extended-protocol statement
//!   pins at Execute, not at Parse);
//! - only queries run: a statement that would create, change or write anything is
//!   refused with SQLSTATE 25006 before it is planned;
//! - a statement stops after `sql.timeout_ms` (SQLSTATE 57014), its operators draw on the
//!   engine's memory pool, and connections run on the engine's threads.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, SendableRowStream};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireConnectionState, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::{Authentication, Startup as StartupMessage};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{SinkExt, StreamExt};
use queries::ViewStore;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::engine::pin;
use crate::SqlEngine;

/// Whether the views are whole (start-up has replayed the log); until then statements
/// are refused with SQLSTATE 57P03, as PostgreSQL refuses clients while it starts.
pub type Ready = Arc<dyn Fn() -> bool + Send + Sync>;

/// Who may connect: `(user name, password)` is accepted or refused with the reason.
/// The password is a credential of the HTTP API (an API key or an access token), asked
/// for in clear text, as PostgreSQL's `password` method does (put TLS or a trusted
/// network in front). `None` lets everyone in (authentication is off).
pub type Login = Option<Arc<dyn Fn(&str, &str) -> Result<(), String> + Send + Sync>>;

/// Accepts PostgreSQL connections on `listener` until `shutdown` resolves. Connections
/// already open keep running until their clients leave or the engine is dropped.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<SqlEngine>,
    views: Arc<ViewStore>,
    ready: Ready,
    login: Login,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let connections = Arc::new(ConnectionManager::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(engine.config().max_connections));
    tokio::pin!(shutdown);
    loop {
        let socket = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    // Out of descriptors, or a connection reset before accept: the
                    // listener itself is fine; pause so that a persistent error does
                    // not spin.
                    tracing::warn!(%error, "could not accept a PostgreSQL connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        // Past the bound the client is still answered, with PostgreSQL's error.
        let slot = slots.clone().try_acquire_owned().ok();
        let connection = match Connection::open(&engine, &views, &ready, &login, &connections, slot)
        {
            Ok(connection) => connection,
            Err(error) => {
                tracing::error!(%error, "could not open a PostgreSQL session");
                continue;
            }
        };
        engine.spawn(async move {
            if let Err(error) =
                datafusion_postgres::pgwire::tokio::process_socket(socket, None, connection).await
            {
                tracing::debug!(%error, "PostgreSQL connection ended");
            }
        });
    }
}

/// The handlers of one client connection.
struct Connection {
    session: Arc<PgSession>,
    startup: Arc<Gate>,
    cancel: Arc<DefaultCancelHandler>,
    /// Its place among `sql.max_connections`; `None` when there was none left.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Connection {
    fn open(
        engine: &SqlEngine,
        views: &Arc<ViewStore>,
        ready: &Ready,
        login: &Login,
        connections: &Arc<ConnectionManager>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Connection, datafusion::error::DataFusionError> {
        let context = engine.context();
        setup_pg_catalog(&context, "datafusion", EmptyContextProvider).map_err(|error| *error)?;
        let context = Arc::new(context);
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnly),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        Ok(Connection {
            session: Arc::new(PgSession {
                inner: DfSessionService::new_with_hooks(context.clone(), hooks),
                context,
                views: views.clone(),
                ready: ready.clone(),
                timeout: engine.config().timeout(),
            }),
            startup: Arc::new(Gate {
                admitted: slot.is_some(),
                max_connections: engine.config().max_connections,
                login: login.clone(),
                pending: std::sync::Mutex::new(None),
                startup: Startup {
                    connections: connections.clone(),
                },
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            _slot: slot,
        })
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// What follows authentication: the connection is registered so that a client can
/// cancel its running statement.
struct Startup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

/// Lets a connection start if it has a slot and its password is accepted; otherwise
/// refuses it as PostgreSQL does.
struct Gate {
    admitted: bool,
    max_connections: usize,
    login: Login,
    /// The client's startup message, kept while its password is asked for.
    pending: std::sync::Mutex<Option<StartupMessage>>,
    startup: Startup,
}

#[async_trait]
impl StartupHandler for Gate {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: datafusion_postgres::pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if !self.admitted {
            return Err(pg_error(
                "FATAL",
                "53300",
                format!(
                    "sorry, too many clients already: {} are connected (sql.max_connections)",
                    self.max_connections
                ),
            ));
        }
        let Some(login) = &self.login else {
            return self.startup.on_startup(client, message).await;
        };
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                *self.pending.lock().expect("not poisoned") = Some(startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let Some(startup) = self.pending.lock().expect("not poisoned").take() else {
                    return Err(pg_error(
                        "FATAL",
                        "08P01",
                        "a password message before the startup message",
                    ));
                };
                let user = startup.parameters.get("user").cloned().unwrap_or_default();
                if let Err(reason) = login(&user, &password.password) {
                    return Err(pg_error(
                        "FATAL",
                        "28P01",
                        format!("password authentication failed for user \"{user}\": {reason}"),
                    ));
                }
                self.startup
                    .on_startup(client, PgWireFrontendMessage::Startup(startup))
                    .await
            }
            other => self.startup.on_startup(client, other).await,
        }
    }
}

/// One connection's session: `datafusion-postgres`'s, with a fresh snapshot pinned and a
/// deadline set for every statement.
struct PgSession {
    inner: DfSessionService,
    context: Arc<SessionContext>,
    views: Arc<ViewStore>,
    ready: Ready,
    timeout: Duration,
}

impl PgSession {
    /// Pins the snapshot published now (every command acknowledged so far is in it) and
    /// returns when the statement must have finished.
    async fn begin(&self) -> PgWireResult<Instant> {
        if !(self.ready)() {
            return Err(pg_error(
                "ERROR",
                "57P03",
                "the database system is starting up: tidemark is replaying its log",
            ));
        }
        // Every command acknowledged so far is in the snapshot: the metric views are
        // waited for, then every view is read at their frontier.
        let snapshot = self
            .views
            .read_settled(self.timeout)
            .await
            .map_err(|_| self.timed_out())?;
        pin(&self.context, snapshot);
        Ok(Instant::now() + self.timeout)
    }

    fn timed_out(&self) -> PgWireError {
        pg_error(
            "ERROR",
            "57014",
            format!(
                "canceling statement due to statement timeout: it ran longer than \
                 sql.timeout_ms ({} ms)",
                self.timeout.as_millis()
            ),
        )
    }

    /// `response` with its rows cut off by an error at `deadline`: the rows are computed
    /// as they are sent, so the deadline must hold while they stream.
    fn until(&self, deadline: Instant, response: Response) -> Response {
        let Response::Query(mut query) = response else {
            return response;
        };
        let timed_out = self.timed_out();
        let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
        let rows: SendableRowStream = Box::pin(futures::stream::unfold(
            Some((rows, timed_out)),
            move |state| async move {
                let (mut rows, timed_out) = state?;
                match tokio::time::timeout_at(deadline, rows.next()).await {
                    Ok(Some(row)) => Some((row, Some((rows, timed_out)))),
                    Ok(None) => None,
                    Err(_) => Some((Err(timed_out), None)),
                }
            },
        ));
        query.data_rows = rows;
        Response::Query(query)
    }
}

#[async_trait]
impl SimpleQueryHandler for PgSession {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let deadline = self.begin().await?;
        let rewritten = crate::pg_compat::rewrite(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let responses = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(&self.inner, client, query),
        )
        .await
        .map_err(|_| self.timed_out())??;
        Ok(responses
            .into_iter()
            .map(|response| self.until(deadline, response))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgSession {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        // The statement was planned at Parse; its tables read the snapshot pinned when
        // it runs.
        let deadline = self.begin().await?;
        let response = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows),
        )
        .await
        .map_err(|_| self.timed_out())??;
        Ok(self.until(deadline, response))
    }
}

/// Refuses, before planning, every statement that is not a query, an `EXPLAIN` of one,
/// or session bookkeeping (`SET`, `SHOW`, transactions, cursors, prepared statements).
struct ReadOnly;

impl ReadOnly {
    /// The error a statement that is not read-only is refused with.
    fn refusal(statement: &Statement) -> Option<PgWireError> {
        if reads_only(statement) {
            return None;
        }
        Some(pg_error(
            "ERROR",
            "25006",
            "cannot execute this statement: SQL here is read-only (queries, EXPLAIN, SHOW, and \
             SET of session settings); the views change only through the API, and \
             DataFusion's settings (datafusion.*) are the server's, under [sql] in its \
             configuration",
        ))
    }
}

/// An error as PostgreSQL sends it: severity, SQLSTATE and message.
fn pg_error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.into(),
        code.into(),
        message.into(),
    )))
}

fn reads_only(statement: &Statement) -> bool {
    match statement {
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            reads_only(statement)
        }
        Statement::Set(set) => !sets_engine_option(set),
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::Reset(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCreate { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. } => true,
        _ => false,
    }
}

/// Whether `set` changes one of DataFusion's own settings. The session hook hands any
/// `SET` it does not know to DataFusion, and `datafusion.runtime.memory_limit` there
/// would give the connection a memory pool of its own, outside `sql.memory_limit_mb`;
/// the others (threads, batch sizes) are the server's to choose too.
fn sets_engine_option(set: &Set) -> bool {
    matches!(set, Set::SingleAssignment { variable, .. }
        if variable.to_string().to_ascii_lowercase().starts_with("datafusion."))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        ReadOnly::refusal(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        ReadOnly::refusal(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _session: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    use super::reads_only;

    fn statement(sql: &str) -> datafusion::sql::sqlparser::ast::Statement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn queries_and_session_statements_read_only() {
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT * FROM orders",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "SET extra_float_digits = 3",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "PREPARE top AS SELECT * FROM top_products",
        ] {
            assert!(reads_only(&statement(sql)), "{sql} is refused");
        }
    }

    #[test]
    fn writes_are_refused() {
        for sql in [
            "INSERT INTO orders VALUES (1)",
            "UPDATE stock SET available = 0",
            "DELETE FROM users",
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE orders",
            "COPY orders TO '/tmp/orders.csv'",
            "TRUNCATE orders",
            "EXPLAIN INSERT INTO orders VALUES (1)",
            "PREPARE wipe AS DELETE FROM users",
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET DataFusion.Execution.Batch_Size = 1",
        ] {
            assert!(!reads_only(&statement(sql)), "{sql} is run");
        }
    }
}

//! Configuration: defaults < `tidemark.toml` < `TIDEMARK_*` environment < CLI flags,
//! merged into one struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use connectors::kafka::KafkaCluster;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_FILE: &str = "tidemark.toml";

/// Where commands are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogBackend {
    Embedded,
    Kafka(KafkaCluster),
}

#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    about = "A commerce backend built on incrementally maintained dataflows over a durable log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server: replays the log, then serves the HTTP API.
    Serve(ServeArgs),
    /// An SQL shell against a running server (`-e` runs one statement and exits).
    Sql(crate::shell::SqlArgs),
    /// Drives shop-like traffic (catalog, shoppers, carts, orders, declines, fraud,
    /// cancellations, deliveries) through a running server's API, for the dashboards.
    Demo(crate::demo::DemoArgs),
    /// Administration of a stopped server's data directory.
    #[command(subcommand)]
    Admin(crate::admin::AdminCommand),
}

/// Flags of `tidemark serve`. Every flag is optional so that it overrides the file and
/// the environment only when given.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
    #[serde(skip)]
    pub config: PathBuf,
    /// Directory of the embedded log and the sandbox providers' ledgers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Address of the PostgreSQL wire protocol (psql, BI tools), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_listen: Option<String>,
    /// Address of the Prometheus exposition (`GET /metrics`), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The command log: `embedded` (a segment log in the data directory) or
    /// `kafka://host:port[,host:port]`.
    #[arg(long, value_name = "embedded|kafka://HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Where domain events are published: `auto` (the log's cluster in Kafka mode,
    /// nowhere with the embedded log), `none`, or `kafka://host:port[,host:port]`.
    #[arg(long, value_name = "auto|none|kafka://HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// Timely worker threads in this process.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Log output: `auto` is pretty on a terminal and JSON otherwise.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, value_name = "PEM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Send traces over OTLP/HTTP to this collector (`http://host:4318`; traces go to
    /// its `/v1/traces` unless the URL names a path).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces kept (0 to 1): a request's trace is kept or dropped whole,
    /// and a caller's `traceparent` decides for its own.
    #[arg(long, value_name = "RATIO")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_sample_ratio: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Address of the PostgreSQL wire protocol, or `off`.
    pub pg_listen: String,
    /// Address of the Prometheus exposition, or `off`.
    pub metrics_listen: String,
    pub workers: usize,
    pub log_format: LogFormat,
    /// Bytes after which the embedded log starts a new segment.
    pub segment_bytes: u64,
    /// Longest a command waits for its views before answering 503 (milliseconds).
    pub command_timeout_ms: u64,
    /// The command log: `embedded` or `kafka://host:port[,host:port]`.
    pub log: String,
    /// Where domain events go: `auto`, `none` or `kafka://host:port[,host:port]`.
    pub events: String,
    /// Kafka settings, used when `log` or `events` is a `kafka://` URL.
    pub kafka: KafkaConfig,
    /// Limits of the HTTP server.
    pub http: HttpConfig,
    /// Limits and threads of SQL queries.
    pub sql: sql::SqlConfig,
    /// The event history in Parquet.
    pub history: HistoryConfig,
    /// The metric views.
    pub analytics: AnalyticsConfig,
    /// Credentials: API keys, access tokens, the bootstrap administrator.
    pub auth: AuthConfig,
    /// Rate limits, CORS, request deadlines, compression.
    pub gateway: GatewayConfig,
    /// HTTPS: the certificate chain and its key (PEM files). Both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Where traces go (OTLP over HTTP, protobuf), or nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces kept, from 0 to 1.
    #[serde(default = "default_trace_sample_ratio")]
    pub trace_sample_ratio: f64,
}

fn default_trace_sample_ratio() -> f64 {
    0.1
}

/// A secret from the configuration: never printed, in logs or in errors.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who may call what. Every `/api/v1` route but the public ones (catalog reads,
/// sign-up, sign-in, event schemas) needs an API key or an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `false` lets every caller act as an administrator: only for benchmarks or behind
    /// a gateway that authenticates.
    pub enabled: bool,
    /// An administrator API key accepted as is (`TIDEMARK_BOOTSTRAP_ADMIN_KEY`), so a
    /// fresh install can be administered; at least 16 characters.
    pub bootstrap_admin_key: Option<Secret>,
    /// The `iss` of access tokens.
    pub issuer: String,
    /// How long an access token is accepted (seconds).
    pub access_token_ttl_s: u64,
    /// How long an API key lives when its request does not say (days).
    pub api_key_ttl_days: u64,
    /// How long a refresh token is good for after it is issued (seconds); each refresh
    /// issues the next one.
    pub refresh_token_ttl_s: u64,
    /// Days after which the token signing key is replaced at start-up (0: never); the
    /// replaced key verifies until the tokens it signed have expired, then is deleted.
    pub signing_key_rotation_days: u64,
    /// How long an authorization code can be redeemed (seconds).
    pub authorization_code_ttl_s: u64,
    /// OAuth clients that may use the authorization endpoint, besides the built-in
    /// `tidemark-cli`.
    pub clients: Vec<ClientConfig>,
    /// Named permission sets for service accounts' keys (`service_account` on
    /// `POST /api/v1/api-keys`): the brief's `order_service`, and any added here.
    pub service_accounts: std::collections::BTreeMap<String, Vec<String>>,
}

/// A registered OAuth client: a public client (a browser or native app, no secret),
/// which must use PKCE, redirected only to one of its registered URIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// Shown on the sign-in page.
    #[serde(default)]
    pub name: String,
    /// Exact redirect URIs: `https://...`, or `http://` on a loopback address.
    pub redirect_uris: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            bootstrap_admin_key: None,
            issuer: "tidemark".into(),
            access_token_ttl_s: 900,
            api_key_ttl_days: 90,
            refresh_token_ttl_s: 30 * 24 * 3600,
            signing_key_rotation_days: 30,
            authorization_code_ttl_s: 60,
            clients: Vec::new(),
            service_accounts: [(
                "order_service".to_string(),
                ["inventory:read", "payment:write", "notification:publish"]
                    .map(String::from)
                    .to_vec(),
            )]
            .into(),
        }
    }
}

/// What the gateway layers in front of every route do (`crate::gateway`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Whether requests are rate-limited at all.
    pub rate_limits: bool,
    /// Requests a minute for callers without credentials, per client address.
    pub public_per_minute: u32,
    /// Requests a minute per signed-in user or API key.
    pub authenticated_per_minute: u32,
    /// Requests a minute per API key with the `premium` scope.
    pub premium_per_minute: u32,
    /// Whether administrators are limited too (as `authenticated`).
    pub limit_admins: bool,
    /// Origins browsers may call from: `*`, or origins such as `https://shop.example`.
    /// Empty: no cross-origin calls.
    pub cors_origins: Vec<String>,
    /// Longest a request may take until its answer starts (milliseconds); 503 after.
    pub request_timeout_ms: u64,
    /// Whether answers are gzip-compressed for clients that accept it.
    pub compression: bool,
    /// Retired API versions, announced on their answers (`gateway::Retirement`).
    pub retired: Vec<crate::gateway::Retirement>,
    /// Whether public catalog reads are answered from memory while the catalog has not
    /// changed, with `ETag`s for revalidation (`api::cache`).
    pub catalog_cache: bool,
    /// Consecutive failures of a provider (payment, carrier) that open its circuit.
    pub breaker_failures: u32,
    /// How long an open circuit pauses calls before one probe (milliseconds).
    pub breaker_cool_down_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            rate_limits: true,
            public_per_minute: 100,
            authenticated_per_minute: 1_000,
            premium_per_minute: 10_000,
            limit_admins: false,
            cors_origins: Vec::new(),
            request_timeout_ms: 60_000,
            compression: true,
            retired: Vec::new(),
            catalog_cache: true,
            breaker_failures: 5,
            breaker_cool_down_ms: 30_000,
        }
    }
}

impl GatewayConfig {
    fn validate(&self) -> Result<(), String> {
        for (name, per_minute) in [
            ("public_per_minute", self.public_per_minute),
            ("authenticated_per_minute", self.authenticated_per_minute),
            ("premium_per_minute", self.premium_per_minute),
        ] {
            if !(1..=10_000_000).contains(&per_minute) {
                return Err(format!(
                    "gateway.{name} must be between 1 and 10000000, not {per_minute}"
                ));
            }
        }
        if let Some(origin) = self
            .cors_origins
            .iter()
            .find(|origin| !crate::gateway::valid_origin(origin))
        {
            return Err(format!(
                "gateway.cors_origins: {origin:?} is not `*` or an origin such as https://shop.example (scheme, host and port, no path)"
            ));
        }
        if !(1..=1_000).contains(&self.breaker_failures)
            || !(1..=3_600_000).contains(&self.breaker_cool_down_ms)
        {
            return Err(format!(
                "gateway.breaker_failures must be 1 to 1000 and gateway.breaker_cool_down_ms 1 to 3600000, not {} and {}",
                self.breaker_failures, self.breaker_cool_down_ms
            ));
        }
        for retired in &self.retired {
            retired
                .check()
                .map_err(|error| format!("gateway.retired: {error}"))?;
        }
        if !(100..=3_600_000).contains(&self.request_timeout_ms) {
            return Err(format!(
                "gateway.request_timeout_ms must be between 100 and 3600000, not {}",
                self.request_timeout_ms
            ));
        }
        Ok(())
    }
}

/// Whether the dataflow maintains the metric views (`orders_per_minute`, `sales_daily`,
/// ..., `/api/v1/kpis`) and emits `analytics.anomaly` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    pub enabled: bool,
    /// The longest the metric views wait (milliseconds) before taking in what the order
    /// path has settled since their last step: under load they step once per interval
    /// over many orders, and lag the order path by about this much. Each step costs the
    /// metrics, their publisher and the order path a few milliseconds of CPU whatever it
    /// holds, so shorter steps cost throughput under load (BENCHMARKS.md).
    pub step_ms: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            step_ms: 20,
        }
    }
}

/// Where and how often events go to the Parquet history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Whether events are written to the history at all.
    pub enabled: bool,
    /// Where: empty for `<data_dir>/history`, or `s3://bucket/prefix`.
    pub url: String,
    /// The object store's settings (object_store's S3 keys: `aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// ...), over the `AWS_*` environment.
    pub options: std::collections::BTreeMap<String, String>,
    /// Longest an event waits before it is written (milliseconds).
    pub flush_ms: u64,
    /// Events that make a flush without waiting for `flush_ms`.
    pub flush_rows: usize,
    /// Files of one day, of about one size, that are merged into one.
    pub compact_files: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let writer = connectors::history::HistoryOptions::default();
        HistoryConfig {
            enabled: true,
            url: String::new(),
            options: Default::default(),
            flush_ms: 1000,
            flush_rows: writer.flush_rows,
            compact_files: writer.compact_files,
        }
    }
}

/// What one client can hold of the server: time, connections, hashing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Longest a client may take to send a request's head, and longest an idle
    /// keep-alive connection is kept (milliseconds).
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request's whole body (milliseconds); 408
    /// after that.
    pub body_read_timeout_ms: u64,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Password hashes computed at once (each Argon2id hash holds 19 MiB while it runs).
    pub password_hashes: usize,
    /// Sign-ups that may wait for a hashing slot; beyond, 503 with `Retry-After`.
    pub password_hash_queue: usize,
    /// Pages of lists rendered at once; more wait their turn.
    pub page_readers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 15_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4096,
            password_hashes: std::thread::available_parallelism().map_or(2, usize::from),
            password_hash_queue: 64,
            page_readers: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Prepended to every topic and consumer group tidemark names
    /// (`tidemark.commands`, `order.created`, ...); foreign topics keep their names.
    pub topic_prefix: String,
    /// Partitions of the commands topic when tidemark creates it.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Most commands bound into one log batch.
    pub max_batch_records: usize,
    /// How long the commands producer waits to fill a batch (librdkafka's `linger.ms`):
    /// a little latency for fewer, larger batches.
    pub linger_ms: u32,
    /// Follow another tidemark process on the same topics: replay the bindings it
    /// writes (serving the same views, taking commands it will bind) rather than bind,
    /// publish events, call providers or read foreign topics here.
    pub follow: bool,
    /// Topics other systems write events to (`shipping.dispatched`, `order.created`,
    /// ...) that tidemark turns into commands; refused ones go to
    /// `tidemark.dead-letter`.
    pub foreign_topics: Vec<String>,
    /// librdkafka properties passed through, e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism" = "SCRAM-SHA-512"`, `"sasl.username"`, `"ssl.ca.location"`.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            topic_prefix: String::new(),
            partitions: 6,
            replication_factor: 1,
            max_batch_records: 4096,
            linger_ms: 5,
            follow: false,
            foreign_topics: Vec::new(),
            properties: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tidemark-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pg_listen: "127.0.0.1:6875".into(),
            metrics_listen: "127.0.0.1:9090".into(),
            workers: 1,
            log_format: LogFormat::Auto,
            segment_bytes: 64 << 20,
            command_timeout_ms: 10_000,
            log: "embedded".into(),
            events: "auto".into(),
            kafka: KafkaConfig::default(),
            http: HttpConfig::default(),
            sql: sql::SqlConfig::default(),
            history: HistoryConfig::default(),
            analytics: AnalyticsConfig::default(),
            auth: AuthConfig::default(),
            gateway: GatewayConfig::default(),
            tls_cert: None,
            tls_key: None,
            otlp_endpoint: None,
            trace_sample_ratio: default_trace_sample_ratio(),
        }
    }
}

impl Config {
    /// Merges the layers for `serve`.
    pub fn load(args: &ServeArgs) -> Result<Config, Box<figment::Error>> {
        // The default file is optional; a file named on the command line must exist.
        if args.config != std::path::Path::new(DEFAULT_CONFIG_FILE) && !args.config.exists() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                args.config.display()
            ))));
        }
        let config: Config = Figment::new()
            .merge(Serialized::defaults(Config::default()))
            .merge(Toml::file(&args.config))
            // TIDEMARK_LOG is the log filter, not a field of this struct. The command log
            // is TIDEMARK_LOG_URL, TIDEMARK_BOOTSTRAP_ADMIN_KEY is auth.bootstrap_admin_key;
            // nested keys use `__` (TIDEMARK_KAFKA__PARTITIONS).
            .merge(
                Env::prefixed("TIDEMARK_")
                    .ignore(&["log", "api_key"])
                    .map(|key| match key.as_str().to_ascii_lowercase().as_str() {
                        "log_url" => "log".into(),
                        "bootstrap_admin_key" => "auth.bootstrap_admin_key".into(),
                        other => other.replace("__", ".").into(),
                    }),
            )
            .merge(Serialized::defaults(args))
            .extract()
            .map_err(Box::new)?;
        config
            .validate()
            .map_err(|message| Box::new(figment::Error::from(message)))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let Config {
            data_dir,
            listen: _,
            pg_listen: _,
            metrics_listen: _,
            workers,
            log_format: _,
            segment_bytes,
            command_timeout_ms,
            log: _,
            events: _,
            kafka,
            http,
            sql,
            history,
            analytics,
            auth,
            gateway,
            tls_cert,
            tls_key,
            otlp_endpoint: _,
            trace_sample_ratio,
        } = self;
        if !(0.0..=1.0).contains(trace_sample_ratio) {
            return Err(format!(
                "trace_sample_ratio must be between 0 and 1, not {trace_sample_ratio}"
            ));
        }
        self.traces_url()?;
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(
                "tls_cert and tls_key (--tls-cert, --tls-key) go together: give both or neither"
                    .into(),
            );
        }
        if data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        if !(1..=64).contains(workers) {
            return Err(format!("workers must be between 1 and 64, not {workers}"));
        }
        if *segment_bytes < 4096 {
            return Err(format!(
                "segment_bytes must be at least 4096, not {segment_bytes}"
            ));
        }
        if analytics.step_ms == 0 || analytics.step_ms > 60_000 {
            return Err(format!(
                "analytics.step_ms must be between 1 and 60000, not {}",
                analytics.step_ms
            ));
        }
        if *command_timeout_ms == 0 {
            return Err("command_timeout_ms must be positive".into());
        }
        http.validate()?;
        sql.validate()?;
        auth.validate()?;
        gateway.validate()?;
        self.pg_listen()?;
        self.metrics_listen()?;
        if !(1..=3_600_000).contains(&history.flush_ms) {
            return Err(format!(
                "history.flush_ms must be between 1 and 3600000, not {}",
                history.flush_ms
            ));
        }
        // The history's URL and store settings, checked as start-up will use them.
        self.history_location().map_err(reason)?;
        if history.flush_rows == 0 || history.compact_files < 2 {
            return Err(
                "history.flush_rows must be positive and history.compact_files at least 2".into(),
            );
        }
        let kafka_clusters: Vec<KafkaCluster> = [
            match self.log_backend()? {
                LogBackend::Kafka(cluster) => Some(cluster),
                LogBackend::Embedded => None,
            },
            self.events_cluster()?,
        ]
        .into_iter()
        .flatten()
        .collect();
        for cluster in &kafka_clusters {
            cluster.validate().map_err(reason)?;
        }
        if kafka.follow && !matches!(self.log_backend()?, LogBackend::Kafka(_)) {
            return Err("kafka.follow needs a Kafka log".into());
        }
        if kafka.follow && (!kafka.foreign_topics.is_empty() || self.events_cluster()?.is_some()) {
            return Err(
                "a follower neither publishes events nor reads foreign topics; its leader does"
                    .into(),
            );
        }
        if !kafka.foreign_topics.is_empty() && kafka_clusters.is_empty() {
            return Err("kafka.foreign_topics needs a Kafka log or --events kafka://...".into());
        }
        if !kafka_clusters.is_empty() {
            if !(1..=10_000).contains(&kafka.partitions) {
                return Err(format!(
                    "kafka.partitions must be between 1 and 10000, not {}",
                    kafka.partitions
                ));
            }
            if kafka.replication_factor < 1 {
                return Err("kafka.replication_factor must be at least 1".into());
            }
            if kafka.max_batch_records == 0 {
                return Err("kafka.max_batch_records must be positive".into());
            }
            if kafka.linger_ms > 1000 {
                return Err(format!(
                    "kafka.linger_ms must be at most 1000, not {}",
                    kafka.linger_ms
                ));
            }
        }
        Ok(())
    }

    /// Where the event history is kept, when it is on.
    pub fn history_location(
        &self,
    ) -> Result<Option<connectors::history::HistoryLocation>, connectors::Error> {
        if !self.history.enabled {
            return Ok(None);
        }
        if self.history.url.is_empty() {
            return Ok(Some(self.data_dir.join("history").into()));
        }
        connectors::history::HistoryLocation::object_store(&self.history.url, &self.history.options)
            .map(Some)
    }

    /// Where the PostgreSQL wire protocol listens, if anywhere.
    pub fn pg_listen(&self) -> Result<Option<SocketAddr>, String> {
        address_or_off("pg_listen", &self.pg_listen, "127.0.0.1:6875")
    }

    /// Where the Prometheus exposition listens, if anywhere.
    /// Where the OTLP exporter posts traces: `otlp_endpoint`, with `/v1/traces` when it
    /// names no path. Plain HTTP only: the exporter carries no TLS stack, so a remote
    /// collector is reached through a local agent or sidecar.
    pub fn traces_url(&self) -> Result<Option<String>, String> {
        let Some(endpoint) = self.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let invalid = |why: &str| {
            Err(format!(
                "otlp_endpoint {endpoint:?} {why}: give http://HOST:PORT (a collector's OTLP/HTTP port, 4318 by default)"
            ))
        };
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return invalid(if endpoint.starts_with("https://") {
                "is HTTPS, which tidemark's exporter does not speak; point it at a local collector or agent"
            } else {
                "is not an http:// URL"
            });
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return invalid("has no usable host");
        }
        let path = match path.trim_end_matches('/') {
            "" => "/v1/traces",
            path => path,
        };
        Ok(Some(format!("http://{authority}{path}")))
    }

    pub fn metrics_listen(&self) -> Result<Option<SocketAddr>, String> {
        address_or_off("metrics_listen", &self.metrics_listen, "127.0.0.1:9090")
    }

    /// Which command log the configuration names.
    pub fn log_backend(&self) -> Result<LogBackend, String> {
        if self.log == "embedded" {
            return Ok(LogBackend::Embedded);
        }
        if self.log.starts_with("kafka://") {
            return self.kafka_cluster(&self.log).map(LogBackend::Kafka);
        }
        Err(format!(
            "log must be `embedded` or kafka://host:port[,host:port], not {:?}",
            self.log
        ))
    }

    /// The cluster foreign events are read from: the log's, else the event bus's.
    pub fn foreign_cluster(&self) -> Result<Option<KafkaCluster>, String> {
        match self.log_backend()? {
            LogBackend::Kafka(cluster) => Ok(Some(cluster)),
            LogBackend::Embedded => self.events_cluster(),
        }
    }

    /// The cluster domain events are published to, if any.
    pub fn events_cluster(&self) -> Result<Option<KafkaCluster>, String> {
        match self.events.as_str() {
            "none" => Ok(None),
            "auto" => match self.log_backend()? {
                LogBackend::Kafka(_) if self.kafka.follow => Ok(None),
                LogBackend::Kafka(cluster) => Ok(Some(cluster)),
                LogBackend::Embedded => Ok(None),
            },
            url if url.starts_with("kafka://") => self.kafka_cluster(url).map(Some),
            other => Err(format!(
                "events must be `auto`, `none` or kafka://host:port[,host:port], not {other:?}"
            )),
        }
    }

    fn kafka_cluster(&self, url: &str) -> Result<KafkaCluster, String> {
        let mut cluster = KafkaCluster::from_url(url).map_err(reason)?;
        cluster.topic_prefix = self.kafka.topic_prefix.clone();
        cluster.properties = self.kafka.properties.clone();
        Ok(cluster)
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.bootstrap_admin_key {
            if key.expose().chars().count() < 16 || key.expose().len() > 512 {
                return Err(
                    "auth.bootstrap_admin_key (TIDEMARK_BOOTSTRAP_ADMIN_KEY) must be 16 to 512 characters"
                        .into(),
                );
            }
        }
        if !(10..=86_400).contains(&self.access_token_ttl_s) {
            return Err(format!(
                "auth.access_token_ttl_s must be between 10 and 86400, not {}",
                self.access_token_ttl_s
            ));
        }
        if !(1..=3650).contains(&self.api_key_ttl_days) {
            return Err(format!(
                "auth.api_key_ttl_days must be between 1 and 3650, not {}",
                self.api_key_ttl_days
            ));
        }
        if self.issuer.is_empty() {
            return Err("auth.issuer must not be empty".into());
        }
        if !(60..=365 * 24 * 3600).contains(&self.refresh_token_ttl_s) {
            return Err(format!(
                "auth.refresh_token_ttl_s must be between 60 and 31536000, not {}",
                self.refresh_token_ttl_s
            ));
        }
        if !(10..=600).contains(&self.authorization_code_ttl_s) {
            return Err(format!(
                "auth.authorization_code_ttl_s must be between 10 and 600, not {}",
                self.authorization_code_ttl_s
            ));
        }
        for (name, scopes) in &self.service_accounts {
            let named = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !named || scopes.is_empty() {
                return Err(format!(
                    "auth.service_accounts.{name}: a name of a-z, 0-9 and '_', with at least one scope"
                ));
            }
            if let Some(scope) = scopes
                .iter()
                .find(|scope| !crate::auth::principal::is_scope(scope))
            {
                return Err(format!(
                    "auth.service_accounts.{name}: {scope:?} is not a scope (see docs/api.md)"
                ));
            }
        }
        crate::auth::clients::Clients::new(&self.clients)
            .map(|_| ())
            .map_err(|error| format!("auth.clients: {error}"))
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<(), String> {
        let HttpConfig {
            header_read_timeout_ms,
            body_read_timeout_ms,
            max_connections,
            password_hashes,
            password_hash_queue: _,
            page_readers,
        } = self;
        if *header_read_timeout_ms == 0 || *body_read_timeout_ms == 0 {
            return Err(
                "http.header_read_timeout_ms and http.body_read_timeout_ms must be positive".into(),
            );
        }
        if !(1..=1_000_000).contains(max_connections) {
            return Err(format!(
                "http.max_connections must be between 1 and 1000000, not {max_connections}"
            ));
        }
        if !(1..=64).contains(page_readers) {
            return Err(format!(
                "http.page_readers must be between 1 and 64, not {page_readers}"
            ));
        }
        if !(1..=256).contains(password_hashes) {
            return Err(format!(
                "http.password_hashes must be between 1 and 256, not {password_hashes}"
            ));
        }
        Ok(())
    }
}

/// A configuration error's message without its kind (the caller says "invalid
/// configuration" once).
fn reason(error: connectors::Error) -> String {
    match error {
        connectors::Error::Config(message) => message,
        other => other.to_string(),
    }
}

/// A listener's setting: an address to listen on, or `off`.
fn address_or_off(setting: &str, value: &str, example: &str) -> Result<Option<SocketAddr>, String> {
    match value {
        "off" => Ok(None),
        address => address.parse().map(Some).map_err(|_| {
            format!("{setting} must be an address ({example}) or `off`, not {address:?}")
        }),
    }
}

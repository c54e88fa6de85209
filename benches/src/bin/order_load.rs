//! Open-loop HTTP load against a real `tidemark serve`: a fixed arrival rate, so time
//! spent queueing counts in the latency (measured from when a request was due, not
//! from when it was sent).
//!
//! The mix, per order placed: four product reads, one cart edit, one order with a test
//! card (which also runs the saga: charge, then dispatch). Products are picked with Zipf
//! popularity (s = 1). Prints Markdown tables for BENCHMARKS.md.
//!
//! cargo build --release --workspace --bin tidemark --bin order-load
//! target/release/order-load --rates 1000,2000,4000 --seconds 10
//! target/release/order-load --rates 1000 --subscribers 1000,100   # changefeed cost and freshness

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{Rng, Zipf};
use clap::Parser;
use connectors::testkit::LocalBroker;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

#[derive(Parser, Debug)]
struct Args {
    /// The tidemark binary to start.
    #[arg(long, default_value = "target/release/tidemark")]
    server: String,
    /// Timely workers of the server.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Order rates to offer, in orders per second (each order brings 5 other requests).
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000")]
    rates: Vec<u64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Products in the catalog.
    #[arg(long, default_value_t = 10_000)]
    products: usize,
    /// Users (each with a cart).
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Open connections the driver keeps.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Place orders without a card: they stop at `reserved` and call no provider.
    #[arg(long)]
    no_card: bool,
    /// Send only the product reads of the mix (a baseline for the HTTP read path).
    #[arg(long)]
    reads_only: bool,
    /// The server's command log: `embedded`, `kafka` (a local tansu broker started for
    /// the run, on the same cores) or a `kafka://host:port` URL.
    #[arg(long, default_value = "embedded")]
    log: String,
    /// Partitions of each topic tidemark creates in Kafka mode. One by default: the
    /// local broker lists a partition's batches on every fetch, so the same load split
    /// six ways costs it more than six times as much.
    #[arg(long, default_value_t = 1)]
    kafka_partitions: u32,
    /// The server's `kafka.linger_ms` in Kafka mode: 10 measured better than the
    /// default 5 against the local broker at 3,000 orders/s, and no worse at 1,000.
    #[arg(long, default_value_t = 10)]
    kafka_linger_ms: u32,
    /// Clients that page through the largest lists while orders are placed: each rate
    /// runs once without them and once with them, side by side (0: no scan runs).
    #[arg(long, default_value_t = 0)]
    scanners: usize,
    /// Pages per second each scanner reads.
    #[arg(long, default_value_t = 25)]
    scan_pages_per_sec: u64,
    /// Rows per page of a scan.
    #[arg(long, default_value_t = 100)]
    scan_limit: usize,
    /// Orders placed for one user before the runs, so that scanners page through a long
    /// list of one user's orders.
    #[arg(long, default_value_t = 20_000)]
    scan_user_orders: usize,
    /// Orders to place, closed loop, for the memory-per-order measurement (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    memory_orders: usize,
    /// Clients of the closed loop, each placing its orders one after another. More
    /// clients put more commands in each log batch.
    #[arg(long, default_value_t = 32)]
    closed_loop_clients: usize,
    /// Measure the freshness of the orders-per-minute metric during each rate: how
    /// long after an order's acknowledgement the metric counts it, read over SQL.
    #[arg(long)]
    freshness: bool,
    /// Changefeed readers of the orders view (`GET /views/orders/changes`) held open
    /// beside the load, as `idle,active`: idle ones follow an order that never exists
    /// (they cost a connection and a filter per publication), active ones follow every
    /// order. Each rate runs once without them and once with them, side by side; the
    /// run with them also measures the freshness of an order's SSE update.
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// How the shoppers authenticate, one fresh server per mode, side by side:
    /// `admin` (the bootstrap administrator key on every request, exempt from rate
    /// limits), `off` (`auth.enabled = false`: no credentials), `key` (each user's own
    /// API key, `X-API-Key`) or `jwt` (each user's access token, `Authorization:
    /// Bearer`). With `key` and `jwt` every request is checked and rate-limited.
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    auth: Vec<Auth>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Auth {
    Admin,
    Off,
    Key,
    Jwt,
}

impl Auth {
    fn name(self) -> &'static str {
        match self {
            Auth::Admin => "admin key",
            Auth::Off => "auth off",
            Auth::Key => "API key per user",
            Auth::Jwt => "JWT per user",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    ProductRead,
    CartEdit,
    PlaceOrder,
    ScanPage,
}

struct Job {
    due: Instant,
    kind: Kind,
    request: Vec<u8>,
}

#[derive(Default)]
struct Results {
    latency: HashMap<Kind, Histogram<u64>>,
    errors: HashMap<Kind, u64>,
    completed_orders: u64,
    /// When the last order was acknowledged.
    last_order_at: Option<Instant>,
    /// Acknowledgement to visibility in `orders_per_minute` (µs), when measured.
    freshness: Option<Histogram<u64>>,
    /// When each order was acknowledged, by id, while a changefeed reader times them.
    acknowledged: Option<HashMap<String, Instant>>,
    /// Acknowledgement to the order's first SSE update (µs; 1 when the update came
    /// first), and how many came before the acknowledgement.
    sse_freshness: Option<(Histogram<u64>, u64)>,
}

/// The orders `orders_per_minute` counts (the last 24 hours of log time: every order
/// of a run).
async fn orders_counted(connection: &mut Connection) -> u64 {
    let body = json!({"sql": "SELECT CAST(coalesce(sum(orders), 0) AS BIGINT) AS n FROM orders_per_minute"});
    let (status, answer) = connection
        .call(&request("POST", "/api/v1/sql", Some(&body)))
        .await
        .expect("the metric query");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    answer["rows"][0]["n"].as_u64().expect("a count")
}

/// Every 20 ms until `stop`: takes the newest acknowledged order and reads the metric
/// until it counts that many orders; records the time from that acknowledgement.
async fn probe_freshness(
    mut connection: Connection,
    before: u64,
    results: Arc<std::sync::Mutex<Results>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let (acknowledged, at) = {
            let results = results.lock().unwrap();
            (results.completed_orders, results.last_order_at)
        };
        let Some(at) = at else { continue };
        while orders_counted(&mut connection).await < before + acknowledged {}
        let _ = histogram.record(at.elapsed().as_micros().max(1) as u64);
    }
    histogram
}

/// Small deterministic generator (xorshift64*), so runs are repeatable.
struct Server {
    child: Child,
    addr: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    fn start(
        binary: &str,
        workers: usize,
        log: &str,
        (kafka_partitions, kafka_linger_ms): (u32, u32),
        auth: Auth,
    ) -> Server {
        let dir = std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--pg-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--workers", &workers.to_string(), "--data-dir"])
            .arg(&dir)
            .args(["--log", log])
            .env("TIDEMARK_LOG", "warn,tidemark=info")
            .env("TIDEMARK_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .env("TIDEMARK_KAFKA__PARTITIONS", kafka_partitions.to_string())
            .env("TIDEMARK_KAFKA__LINGER_MS", kafka_linger_ms.to_string())
            .env("TIDEMARK_AUTH__ENABLED", (auth != Auth::Off).to_string())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e} (build it with cargo build --release --bin tidemark)"));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines.next().expect("server exited").expect("log line");
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if entry["message"] == "tidemark is listening" {
                break entry["listen"].as_str().expect("listen").to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            _dir: TempDir(dir),
        }
    }

    fn rss_bytes(&self) -> u64 {
        benches::rss_bytes(&self.child.id().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The administrator key the benchmark's server is started with, and its requests carry.
const ADMIN_KEY: &str = "bench-bootstrap-admin-key-0123456789";

fn request(method: &str, path: &str, body: Option<&Value>) -> Vec<u8> {
    request_as(Some(&format!("X-API-Key: {ADMIN_KEY}")), method, path, body)
}

/// A request with `credentials`, a header line (`X-API-Key: ...`), or none.
fn request_as(
    credentials: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let credentials = credentials
        .map(|line| format!("{line}\r\n"))
        .unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: tidemark\r\n{credentials}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            stream,
            buffer: Vec::with_capacity(8192),
        }
    }

    /// Sends a request and reads the whole response: `(status, body)`.
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_string();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.fill().await?;
                }
                let body = self.buffer[end + 4..total].to_vec();
                self.buffer.drain(..total);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16384];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

/// What the scanners of a run read.
struct Scan {
    clients: usize,
    pages_per_sec: u64,
    limit: usize,
    /// List paths, each ending where the query's `limit=` can follow.
    lists: Arc<Vec<String>>,
}

struct Catalog {
    /// Whether orders carry a card (and so run the whole saga).
    with_card: bool,
    products: Vec<String>,
    users: Vec<String>,
    carts: Vec<String>,
    /// The header line each user's requests carry, by user.
    credentials: Vec<Option<String>>,
}

async fn setup(addr: &str, products: usize, users: usize, with_card: bool, auth: Auth) -> Catalog {
    let mut connection = Connection::open(addr).await;
    for attempt in 0.. {
        match connection
            .call(&request("GET", "/health/ready", None))
            .await
        {
            Ok((200, _)) => break,
            _ if attempt < 600 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("tidemark did not become ready: {other:?}"),
        }
    }
    let mut catalog = Catalog {
        with_card,
        products: Vec::new(),
        users: Vec::new(),
        carts: Vec::new(),
        credentials: Vec::new(),
    };
    for i in 0..products {
        let body = json!({"sku": format!("SKU-{i:06}"), "name": format!("Product {i}"), "price_cents": 100 + (i % 5000) as i64, "currency": "USD", "initial_stock": 1_000_000});
        let (status, reply) = connection
            .call(&request("POST", "/api/v1/products", Some(&body)))
            .await
            .expect("create product");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
        catalog.products.push(id_of(&reply));
    }
    for i in 0..users {
        let body = json!({"email": format!("user{i}@bench.example"), "password": "benchmark-password", "name": format!("User {i}")});
        let (status, reply) = connection
            .call(&request("POST", "/api/v1/users", Some(&body)))
            .await
            .expect("create user");
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
        let user = id_of(&reply);
        let (_, cart) = connection
            .call(&request(
                "POST",
                "/api/v1/carts",
                Some(&json!({"user_id": user})),
            ))
            .await
            .expect("create cart");
        catalog.carts.push(id_of(&cart));
        let credentials = match auth {
            Auth::Admin => Some(format!("X-API-Key: {ADMIN_KEY}")),
            Auth::Off => None,
            Auth::Key => {
                let (status, key) = connection
                    .call(&request(
                        "POST",
                        "/api/v1/api-keys",
                        Some(&json!({"name": format!("user {i}"), "owner_id": user})),
                    ))
                    .await
                    .expect("create key");
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&key));
                let key: Value = serde_json::from_slice(&key).expect("json");
                Some(format!("X-API-Key: {}", key["key"].as_str().expect("key")))
            }
            Auth::Jwt => {
                let (status, token) = connection
                    .call(&request(
                        "POST",
                        "/api/v1/users/authenticate",
                        Some(&json!({"email": format!("user{i}@bench.example"), "password": "benchmark-password"})),
                    ))
                    .await
                    .expect("sign in");
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&token));
                let token: Value = serde_json::from_slice(&token).expect("json");
                Some(format!(
                    "Authorization: Bearer {}",
                    token["access_token"].as_str().expect("token")
                ))
            }
        };
        catalog.credentials.push(credentials);
        catalog.users.push(user);
    }
    catalog
}

fn id_of(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).expect("json");
    value["id"].as_str().expect("id").to_string()
}

/// An order of a random user, and the user's index.
fn order_body(catalog: &Catalog, zipf: &Zipf, rng: &mut Rng) -> (Value, usize) {
    let lines = 1 + rng.below(3);
    let mut items: Vec<Value> = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..lines {
        let product = zipf.sample(rng);
        if !seen.contains(&product) {
            seen.push(product);
            items.push(
                json!({"product_id": catalog.products[product], "quantity": 1 + rng.below(2)}),
            );
        }
    }
    let user = rng.below(catalog.users.len());
    let mut order = json!({"user_id": catalog.users[user], "items": items});
    if catalog.with_card {
        order["payment_method"] = json!({"type": "card", "card_number": "4242424242424242", "exp_month": 12, "exp_year": 2035, "cvc": "123"});
    }
    (order, user)
}

/// Offers `rate` orders per second (and the mix around them) for `seconds`.
/// How one rate is run, besides the rate.
/// Idle and active changefeed readers.
type Readers = (usize, usize);

struct Run<'a> {
    seconds: u64,
    connections: usize,
    reads_only: bool,
    scan: Option<&'a Scan>,
    freshness: bool,
    /// Idle and active changefeed readers, when the run has them.
    subscribers: Option<Readers>,
}

async fn run_rate(addr: &str, catalog: &Catalog, rate: u64, run: Run<'_>) -> (Results, Duration) {
    let Run {
        seconds,
        connections,
        reads_only,
        scan,
        freshness,
        subscribers,
    } = run;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanners: Vec<_> = scan
        .map(|scan| {
            (0..scan.clients)
                .map(|c| {
                    tokio::spawn(scan_lists(
                        addr.to_string(),
                        scan.lists.clone(),
                        c,
                        scan.pages_per_sec,
                        scan.limit,
                        stop.clone(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let results = Arc::new(std::sync::Mutex::new(Results::default()));
    let mut readers = Vec::new();
    let mut timer = None;
    if let Some((idle, active)) = subscribers {
        results.lock().unwrap().acknowledged = Some(HashMap::new());
        // The readers connect and take their snapshots before the load starts: what is
        // measured is what following costs, not what joining does (reported apart).
        let joined = Arc::new(tokio::sync::Semaphore::new(0));
        let joining = Instant::now();
        for n in 0..idle + active {
            let path = if n < idle {
                "/api/v1/views/orders/changes?id=ord_nobody".to_string()
            } else {
                "/api/v1/views/orders/changes".to_string()
            };
            readers.push(tokio::spawn(follow(
                addr.to_string(),
                path,
                None,
                joined.clone(),
                stop.clone(),
            )));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        timer = Some(rx);
        tokio::spawn(follow(
            addr.to_string(),
            "/api/v1/views/orders/changes".into(),
            Some(tx),
            joined.clone(),
            stop.clone(),
        ));
        let all = u32::try_from(idle + active + 1).expect("readers fit in u32");
        let _ = joined.acquire_many(all).await.expect("open");
        println!(
            "{idle} idle and {} active readers connected and had their snapshots in {:.2} s",
            active + 1,
            joining.elapsed().as_secs_f64()
        );
    }
    let probe = if freshness {
        // Orders of earlier runs, counted before this one places any: the probe's own
        // first reading would count the first orders of this run twice.
        let mut connection = Connection::open(addr).await;
        let before = orders_counted(&mut connection).await;
        Some(tokio::spawn(probe_freshness(
            connection,
            before,
            results.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    let mut workers = Vec::new();
    for _ in 0..connections {
        let rx = rx.clone();
        let results = results.clone();
        let addr = addr.to_string();
        workers.push(tokio::spawn(async move {
            let mut connection = Connection::open(&addr).await;
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let outcome = connection.call(&job.request).await;
                let latency = job.due.elapsed();
                let broken = outcome.is_err();
                {
                    let mut results = results.lock().unwrap();
                    match outcome {
                        Ok((status, _)) if (200..300).contains(&status) => {
                            let histogram = results.latency.entry(job.kind).or_insert_with(|| {
                                Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
                            });
                            let _ = histogram.record(latency.as_micros().max(1) as u64);
                            if job.kind == Kind::PlaceOrder {
                                results.completed_orders += 1;
                                let now = Instant::now();
                                results.last_order_at = Some(now);
                                if let Some(acknowledged) = results.acknowledged.as_mut() {
                                    if let Ok((_, body)) = &outcome {
                                        acknowledged.insert(id_of(body), now);
                                    }
                                }
                            }
                        }
                        _ => *results.errors.entry(job.kind).or_default() += 1,
                    }
                }
                if broken {
                    connection = Connection::open(&addr).await;
                }
            }
        }));
    }
    let zipf = Zipf::new(catalog.products.len());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ rate);
    let per_request = Duration::from_secs_f64(1.0 / (rate as f64 * 6.0));
    let start = Instant::now();
    let total = rate * 6 * seconds;
    for n in 0..total {
        let due = start + per_request.mul_f64(n as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        let slot = if reads_only { 0 } else { n % 6 };
        let as_user = |user: usize| catalog.credentials[user].as_deref();
        let (kind, request) = match slot {
            0..=3 => {
                let product = &catalog.products[zipf.sample(&mut rng)];
                (
                    Kind::ProductRead,
                    request_as(
                        as_user(rng.below(catalog.users.len())),
                        "GET",
                        &format!("/api/v1/products/{product}"),
                        None,
                    ),
                )
            }
            4 => {
                // A shopper changes a few products in their cart, not thousands: each cart
                // draws from 8 products of its own (quantity 0 takes one out).
                let index = rng.below(catalog.carts.len());
                let cart = &catalog.carts[index];
                let product =
                    &catalog.products[(index * 7919 + rng.below(8)) % catalog.products.len()];
                let body = json!({"product_id": product, "quantity": rng.below(4)});
                (
                    Kind::CartEdit,
                    request_as(
                        as_user(index),
                        "PUT",
                        &format!("/api/v1/carts/{cart}/items"),
                        Some(&body),
                    ),
                )
            }
            _ => {
                let (order, user) = order_body(catalog, &zipf, &mut rng);
                (
                    Kind::PlaceOrder,
                    request_as(as_user(user), "POST", "/api/v1/orders", Some(&order)),
                )
            }
        };
        let _ = tx.send(Job { due, kind, request });
    }
    drop(tx);
    for worker in workers {
        let _ = worker.await;
    }
    let elapsed = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let freshness = match probe {
        Some(probe) => Some(probe.await.expect("the freshness probe")),
        None => None,
    };
    let mut results = Arc::try_unwrap(results)
        .ok()
        .expect("workers done")
        .into_inner()
        .unwrap();
    for scanner in scanners {
        let (latency, errors) = scanner.await.expect("scanner");
        let pages = results
            .latency
            .entry(Kind::ScanPage)
            .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"));
        pages.add(latency).expect("histogram");
        *results.errors.entry(Kind::ScanPage).or_default() += errors;
    }
    results.freshness = freshness;
    for reader in readers {
        let _ = reader.await;
    }
    if let Some(timer) = timer {
        let seen = timer.await.unwrap_or_default();
        let acknowledged = results.acknowledged.take().unwrap_or_default();
        let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut early = 0;
        for (order, at) in &acknowledged {
            if let Some(seen) = seen.get(order) {
                if seen < at {
                    early += 1;
                }
                let _ =
                    histogram.record(seen.saturating_duration_since(*at).as_micros().max(1) as u64);
            }
        }
        results.sse_freshness = Some((histogram, early));
    }
    (results, elapsed)
}

/// Reads a changefeed until `stop` (and a little after, for the last updates); with
/// `timer`, notes when each order first comes in, and sends those times at the end.
async fn follow(
    addr: String,
    path: String,
    timer: Option<tokio::sync::oneshot::Sender<HashMap<String, Instant>>>,
    joined: Arc<tokio::sync::Semaphore>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: tidemark\r\nX-API-Key: {ADMIN_KEY}\r\nAccept: text/event-stream\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("a request");
    let mut seen = HashMap::new();
    // The chunked body, de-chunked into `text`.
    let (mut raw, mut text) = (Vec::<u8>::new(), String::new());
    let mut in_body = false;
    let mut chunk = vec![0u8; 65536];
    let mut stopped_at: Option<Instant> = None;
    let (mut snapshot_had, mut last_byte) = (false, None);
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            // The saga's last updates trail the last acknowledgement.
            if at.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let read =
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(read)) => read,
                Err(_) => continue,
            };
        // The first event (the snapshot) ends at the body's first blank line: the
        // headers' end is CRLF CRLF, and the events' JSON has no raw line breaks.
        if !snapshot_had {
            let read = &chunk[..read];
            snapshot_had = (last_byte == Some(b'\n') && read.first() == Some(&b'\n'))
                || read.windows(2).any(|pair| pair == b"\n\n");
            last_byte = read.last().copied();
            if snapshot_had {
                joined.add_permits(1);
            }
        }
        if timer.is_none() {
            // Idle and active readers only drain what they are sent.
            continue;
        }
        raw.extend_from_slice(&chunk[..read]);
        if !in_body {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            raw.drain(..end + 4);
            in_body = true;
        }
        // Chunks: a hex size line, the data, CRLF.
        while let Some(line) = raw.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line]).trim(), 16)
                .unwrap_or(0);
            if raw.len() < line + 2 + size + 2 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&raw[line + 2..line + 2 + size]));
            raw.drain(..line + 2 + size + 2);
        }
        let now = Instant::now();
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if !event.starts_with("event: update") && !event.contains("\nevent: update") {
                continue;
            }
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(update) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            for change in update["changes"].as_array().into_iter().flatten() {
                if change["diff"] == 1 {
                    if let Some(order) = change["row"]["order_id"].as_str() {
                        seen.entry(order.to_string()).or_insert(now);
                    }
                }
            }
        }
    }
    if let Some(timer) = timer {
        let _ = timer.send(seen);
    }
}

/// Pages through the longest lists (the catalog, every user, one user's orders), each
/// scanner at `pages_per_sec` on a fixed schedule, until `stop` is set.
async fn scan_lists(
    addr: String,
    lists: Arc<Vec<String>>,
    first: usize,
    pages_per_sec: u64,
    limit: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Histogram<u64>, u64) {
    let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut connection = Connection::open(&addr).await;
    let interval = Duration::from_secs_f64(1.0 / pages_per_sec as f64);
    let start = Instant::now();
    let mut list = first;
    let mut cursor: Option<String> = None;
    for n in 0u32.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let due = start + interval * n;
        tokio::time::sleep_until(due.into()).await;
        let base = &lists[list % lists.len()];
        let path = match &cursor {
            None => format!("{base}limit={limit}"),
            Some(cursor) => format!("{base}limit={limit}&cursor={cursor}"),
        };
        match connection.call(&request("GET", &path, None)).await {
            Ok((200, body)) => {
                let _ = latency.record(due.elapsed().as_micros().max(1) as u64);
                let page: Value = serde_json::from_slice(&body).expect("json");
                cursor = page["next_cursor"].as_str().map(str::to_string);
            }
            Ok(_) => {
                errors += 1;
                cursor = None;
            }
            Err(_) => {
                errors += 1;
                cursor = None;
                connection = Connection::open(&addr).await;
            }
        }
        if cursor.is_none() {
            list += 1;
        }
    }
    (latency, errors)
}

/// Places `count` small orders for the first user, 16 at a time; returns how many.
async fn place_for_user(addr: &str, catalog: &Catalog, count: usize) -> usize {
    let clients = 16;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = addr.to_string();
        let bodies: Vec<Vec<u8>> = (c..count)
            .step_by(clients)
            .map(|n| {
                let product = &catalog.products[n % catalog.products.len()];
                let body = json!({"user_id": catalog.users[0], "items": [{"product_id": product, "quantity": 1}]});
                request("POST", "/api/v1/orders", Some(&body))
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&addr).await;
            for body in &bodies {
                let (status, reply) = connection.call(body).await.expect("order");
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
            }
            bodies.len()
        }));
    }
    let mut placed = 0;
    for task in tasks {
        placed += task.await.expect("orders for one user");
    }
    placed
}

/// Places `count` orders as fast as `connections` closed-loop clients can.
async fn place_closed_loop(
    addr: &str,
    catalog: &Catalog,
    count: usize,
    connections: usize,
) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = count / connections;
    for c in 0..connections {
        let addr = addr.to_string();
        let bodies: Vec<Vec<u8>> = {
            let zipf = Zipf::new(catalog.products.len());
            let mut rng = Rng(0xDEAD_BEEF ^ c as u64);
            (0..per)
                .map(|_| {
                    let (order, user) = order_body(catalog, &zipf, &mut rng);
                    request_as(
                        catalog.credentials[user].as_deref(),
                        "POST",
                        "/api/v1/orders",
                        Some(&order),
                    )
                })
                .collect()
        };
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&addr).await;
            for body in bodies {
                let (status, reply) = connection.call(&body).await.expect("order");
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&reply));
            }
        }));
    }
    for task in tasks {
        task.await.expect("closed loop");
    }
    start.elapsed()
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = (args.log == "kafka").then(|| LocalBroker::start().expect("a local Kafka broker"));
        let log = broker.as_ref().map_or(args.log.clone(), LocalBroker::url);
        println!("| auth | offered orders/s | scanners | subscribers (idle+active) | achieved orders/s | POST /orders p50 ms | p99 ms | p99.9 ms | max ms | product GET p50 ms | p99 ms | cart PUT p99 ms | scan pages/s | scan page p50 ms | p99 ms | errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut last = None;
        for &auth in &args.auth {
        let server = Server::start(&args.server, args.workers, &log, (args.kafka_partitions, args.kafka_linger_ms), auth);
        let ready = Instant::now();
        let catalog = setup(&server.addr, args.products, args.users, !args.no_card, auth).await;
        eprintln!("{}: setup: {} products, {} users and carts in {:.1}s", auth.name(), args.products, args.users, ready.elapsed().as_secs_f64());
        let setup_rss = server.rss_bytes();
        let mut orders_held = 0u64;

        let scan = (args.scanners > 0).then(|| {
            let heavy = &catalog.users[0];
            Scan {
                clients: args.scanners,
                pages_per_sec: args.scan_pages_per_sec,
                limit: args.scan_limit,
                lists: Arc::new(vec![
                    format!("/api/v1/users/{heavy}/orders?"),
                    "/api/v1/products?".to_string(),
                    "/api/v1/users/search?".to_string(),
                    format!("/api/v1/users/{heavy}/orders?"),
                ]),
            }
        });
        if let Some(scan) = &scan {
            let placed = place_for_user(&server.addr, &catalog, args.scan_user_orders).await;
            orders_held += placed as u64;
            eprintln!("placed {placed} orders for the scanned user; lists: {:?}", scan.lists);
        }

        let subscribers = match args.subscribers[..] {
            [] => None,
            [idle, active] => Some((idle, active)),
            _ => panic!("--subscribers takes idle,active"),
        };
        if let Some((idle, _)) = subscribers {
            // What a reader costs the server: readers of the whole orders view, open and
            // sent their snapshot, against none.
            let before = server.rss_bytes();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let joined = Arc::new(tokio::sync::Semaphore::new(0));
            let readers: Vec<_> = (0..idle)
                .map(|_| {
                    let path = "/api/v1/views/orders/changes".to_string();
                    tokio::spawn(follow(server.addr.clone(), path, None, joined.clone(), stop.clone()))
                })
                .collect();
            let all = u32::try_from(idle).expect("readers fit in u32");
            let _ = joined.acquire_many(all).await.expect("open");
            let after = server.rss_bytes();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for reader in readers {
                let _ = reader.await;
            }
            eprintln!(
                "memory per subscriber: {idle} open readers of the orders view: RSS {:.1} -> {:.1} MiB, {:.0} bytes each",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                after.saturating_sub(before) as f64 / idle.max(1) as f64
            );
        }
        for &rate in &args.rates {
            let mut runs: Vec<(Option<&Scan>, Option<Readers>)> = vec![(None, None)];
            if let Some(scan) = &scan {
                runs.push((Some(scan), None));
            }
            if subscribers.is_some() {
                runs.push((None, subscribers));
            }
            for &(run_scan, run_subscribers) in &runs {
                let (results, elapsed) = run_rate(&server.addr, &catalog, rate, Run {
                    seconds: args.seconds,
                    connections: args.connections,
                    reads_only: args.reads_only,
                    scan: run_scan,
                    freshness: args.freshness,
                    subscribers: run_subscribers,
                }).await;
                if let (Some((histogram, early)), Some((idle, active))) = (&results.sse_freshness, run_subscribers) {
                    eprintln!(
                        "changefeed freshness at {rate} orders/s with {idle} idle and {active} active readers: {} orders, acknowledgement to SSE update p50 {} ms, p99 {} ms, max {} ms ({early} came before the acknowledgement)",
                        histogram.len(),
                        ms(histogram.value_at_quantile(0.5)),
                        ms(histogram.value_at_quantile(0.99)),
                        ms(histogram.max())
                    );
                }
                if let Some(freshness) = &results.freshness {
                    eprintln!(
                        "freshness of orders_per_minute at {rate} orders/s: {} samples, acknowledgement to counted p50 {} ms, p99 {} ms, max {} ms",
                        freshness.len(),
                        ms(freshness.value_at_quantile(0.5)),
                        ms(freshness.value_at_quantile(0.99)),
                        ms(freshness.max())
                    );
                }
                orders_held += results.completed_orders;
                let orders = results.latency.get(&Kind::PlaceOrder);
                let p = |kind: Kind, q: f64| results.latency.get(&kind).map(|h| ms(h.value_at_quantile(q))).unwrap_or_else(|| "-".into());
                let pages = results.latency.get(&Kind::ScanPage).map_or(0, |h| h.len());
                println!(
                    "| {} | {rate} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                    auth.name(),
                    run_scan.map_or(0, |scan| scan.clients),
                    run_subscribers.map_or("0".to_string(), |(idle, active)| format!("{idle}+{active}")),
                    results.completed_orders as f64 / elapsed.as_secs_f64(),
                    p(Kind::PlaceOrder, 0.5),
                    p(Kind::PlaceOrder, 0.99),
                    p(Kind::PlaceOrder, 0.999),
                    orders.map(|h| ms(h.max())).unwrap_or_else(|| "-".into()),
                    p(Kind::ProductRead, 0.5),
                    p(Kind::ProductRead, 0.99),
                    p(Kind::CartEdit, 0.99),
                    pages as f64 / elapsed.as_secs_f64(),
                    p(Kind::ScanPage, 0.5),
                    p(Kind::ScanPage, 0.99),
                    results.errors.values().sum::<u64>(),
                );
            }
        }
        last = Some((server, catalog, setup_rss, orders_held));
        }
        let Some((server, catalog, setup_rss, mut orders_held)) = last else {
            return;
        };

        if args.memory_orders > 0 {
            // Let the saga of the rate runs finish, then measure the growth per order.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let before = server.rss_bytes();
            let elapsed = place_closed_loop(&server.addr, &catalog, args.memory_orders, args.closed_loop_clients).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = server.rss_bytes();
            println!();
            println!("| orders placed (closed loop) | seconds | orders/s | RSS before MiB | RSS after MiB | bytes per order |");
            println!("|---|---|---|---|---|---|");
            println!(
                "| {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} |",
                args.memory_orders,
                elapsed.as_secs_f64(),
                args.memory_orders as f64 / elapsed.as_secs_f64(),
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                after.saturating_sub(before) as f64 / args.memory_orders as f64
            );
            orders_held += args.memory_orders as u64;
            // Over the whole run: averages over the doublings of the hash tables that
            // grow with the orders, which a shorter window may or may not contain.
            println!();
            println!("| orders held (whole run) | RSS after setup MiB | RSS at end MiB | bytes per order |");
            println!("|---|---|---|---|");
            println!(
                "| {orders_held} | {:.1} | {:.1} | {:.0} |",
                setup_rss as f64 / 1048576.0,
                after as f64 / 1048576.0,
                after.saturating_sub(setup_rss) as f64 / orders_held.max(1) as f64
            );
        }
    });
}

//! The real binary: start it, place orders over HTTP, SIGKILL it, start it again on the
//! same data directory (and, in Kafka mode, the same topics), and find every
//! acknowledged order unchanged, every payment charged once and every event published
//! once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectors::testkit::LocalBroker;
use serde_json::{json, Value};

use crate::support::ADMIN_KEY;

struct Server {
    child: Child,
    client: Client,
    /// The Prometheus exposition's address.
    metrics: String,
    /// The PostgreSQL wire protocol's address.
    pg: std::net::SocketAddr,
    /// Every log line the server has written since it listened.
    logs: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Client {
    addr: String,
}

impl Server {
    fn start(data_dir: &std::path::Path, extra: &[String]) -> Server {
        Server::start_with(data_dir, extra, &[])
    }

    fn start_with(data_dir: &std::path::Path, extra: &[String], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--pg-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--workers",
                "2",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("TIDEMARK_LOG", "info")
            .env("TIDEMARK_BOOTSTRAP_ADMIN_KEY", ADMIN_KEY)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("tidemark starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let (addr, pg, metrics) = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("tidemark exited before listening: {seen:#?}")
            };
            seen.push(line.clone());
            let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if entry["message"] == "tidemark is listening" {
                break (
                    entry["listen"].as_str().expect("listen").to_string(),
                    entry["pg_listen"]
                        .as_str()
                        .expect("pg_listen")
                        .parse()
                        .expect("pg address"),
                    entry["metrics_listen"]
                        .as_str()
                        .expect("metrics_listen")
                        .to_string(),
                );
            }
        };
        // Keep draining the logs so the server never blocks on a full pipe.
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let server = Server {
            child,
            client: Client { addr },
            pg,
            metrics,
            logs,
        };
        for _ in 0..600 {
            if let Ok((200, _)) = server.client.try_request("GET", "/health/ready", None) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tidemark did not become ready");
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.client
            .try_request(method, path, body.as_ref())
            .expect("request")
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Client {
    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        self.try_request_as(ADMIN_KEY, method, path, body)
    }

    /// A request with `key` as its `X-API-Key`.
    fn try_request_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: tidemark\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_order() {
    sigkill_during_load(&[], None);
}

#[test]
fn sigkill_in_kafka_mode_loses_no_command_and_publishes_each_event_once() {
    let broker = LocalBroker::start().expect("broker");
    sigkill_during_load(&["--log".into(), broker.url()], Some(&broker));
}

fn sigkill_during_load(extra: &[String], broker: Option<&LocalBroker>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), extra);
    let (status, product) = server.request("POST", "/api/v1/products", Some(json!({"sku": "E2E", "name": "E2E", "price_cents": 250, "currency": "EUR", "initial_stock": 100000})));
    assert_eq!(status, 201);
    let product = product["id"].as_str().unwrap().to_string();
    let (_, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(json!({"email": "e2e@example.com", "password": "password123", "name": "E2E"})),
    );
    let user = user["id"].as_str().unwrap().to_string();

    // Orders without a card stay `reserved`, so after the restart they must be identical.
    let mut acknowledged: Vec<Value> = Vec::new();
    for _ in 0..20 {
        let (status, order) = server.request(
            "POST",
            "/api/v1/orders",
            Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}]})),
        );
        assert_eq!(status, 201, "{order}");
        acknowledged.push(order);
    }
    // Paid orders, to check that no charge is made twice across the crash.
    for _ in 0..5 {
        let body = json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}], "payment_method": {"type": "card", "card_number": "4242424242424242", "exp_month": 1, "exp_year": 2040, "cvc": "999"}});
        assert_eq!(server.request("POST", "/api/v1/orders", Some(body)).0, 201);
    }

    // Load from several threads while the process is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<Vec<Value>>> = Arc::default();
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, during, client, user, product) = (stop.clone(), during.clone(), server.client.clone(), user.clone(), product.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.try_request("POST", "/api/v1/orders", Some(&json!({"user_id": user, "items": [{"product_id": product, "quantity": 2}]}))) {
                        Ok((201, order)) => during.lock().unwrap().push(order),
                        Ok(_) | Err(_) => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.join().expect("loader");
    }
    let during = during.lock().unwrap().clone();
    assert!(
        !during.is_empty(),
        "the kill fell while orders were being placed"
    );

    let server = Server::start(dir.path(), extra);
    for order in &acknowledged {
        let (status, now) = server.request(
            "GET",
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(
            &now, order,
            "an acknowledged order is unchanged after SIGKILL and restart"
        );
    }
    for order in &during {
        let (status, now) = server.request(
            "GET",
            &format!("/api/v1/orders/{}", order["id"].as_str().unwrap()),
            None,
        );
        assert_eq!(status, 200, "order acknowledged during the crash is there");
        assert_eq!(&now, order);
    }
    let (_, stock) = server.request("GET", &format!("/api/v1/products/{product}"), None);
    let held_by_acknowledged = 25 + 2 * during.len() as i64;
    assert!(
        stock["stock"]["reserved"].as_i64().unwrap() >= held_by_acknowledged,
        "{stock}"
    );

    // Every paid order gets exactly one charge, however the crash fell. The paid orders
    // are the oldest; hundreds were placed after them, so page through the whole list.
    let paid: Vec<Value> = all_orders(&server, &user)
        .into_iter()
        .filter(|o| o["payment_id"].is_string())
        .collect();
    assert_eq!(paid.len(), 5, "every paid order is listed");
    for order in &paid {
        let (_, settled) = server.request(
            "GET",
            &format!(
                "/api/v1/orders/{}?wait=settled&timeout_ms=10000",
                order["id"].as_str().unwrap()
            ),
            None,
        );
        assert!(
            matches!(settled["status"].as_str(), Some("confirmed" | "shipped")),
            "{settled}"
        );
    }
    let ledger =
        std::fs::read_to_string(dir.path().join("sandbox-payments.jsonl")).expect("ledger");
    let keys: Vec<String> = ledger
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(keys.len(), unique.len(), "no payment was charged twice");
    let payments: std::collections::BTreeSet<&str> = paid
        .iter()
        .map(|order| order["payment_id"].as_str().unwrap())
        .collect();
    assert_eq!(unique, payments, "each paid order was charged, once");

    if let Some(broker) = broker {
        // Every order in the log, acknowledged or not, has its order.created event on the
        // bus exactly once, however the kill fell between the dataflow and the sink.
        assert!(order_ids(&server, &user).len() >= acknowledged.len() + during.len());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            // Read again each round: commands that reached the topic but were not bound
            // before the kill are bound by the restarted process when it gets to them,
            // after it is ready.
            let orders = order_ids(&server, &user);
            let mut published: Vec<String> = broker
                .cluster()
                .read_topic("order.created")
                .expect("read order.created")
                .iter()
                .map(|payload| {
                    let envelope: Value = serde_json::from_slice(payload).expect("an envelope");
                    envelope["aggregate_id"].as_str().unwrap().to_string()
                })
                .collect();
            published.sort();
            let distinct: std::collections::BTreeSet<&String> = published.iter().collect();
            assert_eq!(
                distinct.len(),
                published.len(),
                "an event was published twice"
            );
            if published == orders {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events missing: {} orders, {} published",
                orders.len(),
                published.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // The Parquet history holds every order's order.created event exactly once, however
    // the kill fell between the dataflow and a flush of the history.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let orders = order_ids(&server, &user);
        let sql = "SELECT aggregate_id, count(*) AS copies FROM events \
                   WHERE type = 'order.created' GROUP BY aggregate_id ORDER BY aggregate_id";
        let (status, answer) = server.request("POST", "/api/v1/sql", Some(json!({ "sql": sql })));
        assert_eq!(status, 200, "{answer}");
        let rows = answer["rows"].as_array().expect("rows");
        assert!(
            rows.iter().all(|row| row["copies"] == 1),
            "an event is twice in the history"
        );
        let written: Vec<String> = rows
            .iter()
            .map(|row| row["aggregate_id"].as_str().unwrap().to_string())
            .collect();
        if written == orders {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history missing events: {} orders, {} in the history",
            orders.len(),
            written.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sql = "SELECT count(*) AS events, count(DISTINCT event_id) AS distinct_events FROM events";
    let (_, answer) = server.request("POST", "/api/v1/sql", Some(json!({ "sql": sql })));
    assert_eq!(
        answer["rows"][0]["events"], answer["rows"][0]["distinct_events"],
        "no event twice in the history: {answer}"
    );
    server.kill();
}

/// The ids of every order of `user`, sorted.
fn order_ids(server: &Server, user: &str) -> Vec<String> {
    let mut ids: Vec<String> = all_orders(server, user)
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Every order of `user`, newest first, following the list's cursors.
fn all_orders(server: &Server, user: &str) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/users/{user}/orders?limit=100&cursor={cursor}"),
            None => format!("/api/v1/users/{user}/orders?limit=100"),
        };
        let (status, page) = server.request("GET", &path, None);
        assert_eq!(status, 200, "{page}");
        orders.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    orders
}

/// `tidemark sql` against the real server: one-shots in each format, a failing query,
/// and a session read from stdin (a backslash command, a statement over two lines).
#[test]
fn the_sql_shell_runs_one_shots_and_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (status, _) = server.request("POST", "/api/v1/products", Some(json!({"sku": "SHELL-1", "name": "Shell", "price_cents": 700, "currency": "EUR", "initial_stock": 3})));
    assert_eq!(status, 201);
    let url = format!("http://{}", server.client.addr);
    let shell = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["sql", "--server", &url])
            .args(args)
            .env("HOME", dir.path())
            .env("TIDEMARK_API_KEY", ADMIN_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tidemark sql starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let output = child.wait_with_output().expect("tidemark sql ends");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, out, err) = shell(&["-e", "SELECT sku, price_cents FROM products"], "");
    assert!(ok, "{err}");
    assert!(out.contains("| sku     | price_cents |"), "{out}");
    assert!(out.contains("| SHELL-1 | 700         |"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");

    let (ok, out, _) = shell(
        &["--format", "csv", "-e", "SELECT sku, available FROM stock"],
        "",
    );
    assert!(ok);
    assert_eq!(out, "sku,available\nSHELL-1,3\n");

    let (ok, out, _) = shell(
        &[
            "--format",
            "json",
            "-e",
            "SELECT count(*) AS n FROM products",
        ],
        "",
    );
    assert!(ok);
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["rows"], json!([{"n": 1}]));

    let (ok, _, err) = shell(&["-e", "SELEC nonsense"], "");
    assert!(!ok, "a failing query exits non-zero");
    assert!(err.starts_with("ERROR: "), "{err}");

    let session = "\\d\nSELECT count(*)\n  AS products FROM products;\n\\timing on\n\\q\n";
    let (ok, out, err) = shell(&[], session);
    assert!(ok, "{err}");
    assert!(
        out.contains("| orders_per_minute "),
        "\\d lists the tables: {out}"
    );
    assert!(out.contains("| products |"), "{out}");
    assert!(out.contains("Timing is on."), "{out}");
}

/// The real `psql` against the PostgreSQL port: queries, `\dt`, `\d` and `\d+`, a refused write,
/// read-your-writes across the two protocols, and a BI tool's catalog query.
#[test]
fn psql_reads_the_live_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (status, product) = server.request("POST", "/api/v1/products", Some(json!({"sku": "PG-1", "name": "Wire", "price_cents": 1250, "currency": "EUR", "initial_stock": 10})));
    assert_eq!(status, 201);
    let product = product["id"].as_str().unwrap().to_string();
    let (_, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(json!({"email": "pg@example.com", "password": "password123", "name": "Pg"})),
    );
    let user = user["id"].as_str().unwrap().to_string();
    let order = || {
        let (status, order) = server.request(
            "POST",
            "/api/v1/orders",
            Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": 2}]})),
        );
        assert_eq!(status, 201, "{order}");
    };
    order();

    let psql = |command: &str| {
        let output = Command::new("psql")
            .args(["-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(server.pg.ip().to_string())
            .arg("-p")
            .arg(server.pg.port().to_string())
            .args([
                "-U", "analyst", "-d", "tidemark", "-A", "-F", ",", "-c", command,
            ])
            .env("PGCONNECT_TIMEOUT", "30")
            .env("PGPASSWORD", ADMIN_KEY)
            .output()
            .expect("psql runs (scripts/setup.sh installs postgresql-client)");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, out, err) = psql("SELECT status, total_cents FROM orders");
    assert!(ok, "{err}");
    assert_eq!(out, "status,total_cents\nreserved,2500\n(1 row)\n");

    // Every command acknowledged before a statement arrives is in what it reads.
    order();
    let (ok, out, err) = psql("SELECT count(*) AS orders, sum(total_cents) AS cents FROM orders");
    assert!(ok, "{err}");
    assert_eq!(out, "orders,cents\n2,5000\n(1 row)\n");
    let (ok, out, err) = psql("SELECT available, reserved FROM stock");
    assert!(ok, "{err}");
    assert_eq!(out, "available,reserved\n6,4\n(1 row)\n");

    let (ok, out, err) = psql("\\dt");
    assert!(ok, "{err}");
    for table in [
        "orders",
        "order_items",
        "products",
        "stock",
        "events",
        "top_products",
    ] {
        assert!(
            out.lines()
                .any(|line| line.split(',').nth(1) == Some(table)),
            "\\dt lists {table}: {out}"
        );
    }
    let (ok, out, err) = psql("\\d orders");
    assert!(ok, "{err}");
    for column in ["id", "user_id", "status", "total_cents"] {
        assert!(
            out.lines()
                .any(|line| line.starts_with(&format!("{column},"))),
            "\\d orders lists {column}: {out}"
        );
    }

    // `\d+`: the tables with their sizes (none: views have no storage) and descriptions.
    let (ok, out, err) = psql("\\d+");
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("public,orders,table,")),
        "\\d+ lists orders: {out}"
    );
    // `\d+ NAME`: the columns with their storage and descriptions (none).
    let (ok, out, err) = psql("\\d+ orders");
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("total_cents,bigint,,not null,,plain,")),
        "\\d+ orders lists total_cents: {out}"
    );
    let (ok, out, err) = psql("SELECT pg_size_pretty(1000000000) AS size");
    assert!(ok, "{err}");
    assert_eq!(out, "size\n954 MB\n(1 row)\n");

    // What a BI tool asks when it connects.
    let (ok, out, err) = psql(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name = 'payments'",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "table_name\npayments\n(1 row)\n");

    for write in [
        "INSERT INTO orders (id) VALUES ('x')",
        "DELETE FROM stock",
        "CREATE TABLE t (a INT)",
        "COPY orders TO '/tmp/orders.csv'",
        "SET datafusion.runtime.memory_limit = '100G'",
    ] {
        let (ok, _, err) = psql(write);
        assert!(!ok, "{write} is refused");
        assert!(err.contains("read-only"), "{write}: {err}");
    }
    let (ok, _, err) = psql("SELEC 1");
    assert!(!ok);
    assert!(err.contains("ERROR"), "{err}");

    // The password is an API key or a token with `analytics:read`; others are refused.
    let (status, signed_in) = server.request(
        "POST",
        "/api/v1/users/authenticate",
        Some(json!({"email": "pg@example.com", "password": "password123"})),
    );
    assert_eq!(status, 200, "{signed_in}");
    let customer = signed_in["access_token"].as_str().unwrap().to_string();
    for (password, reason) in [
        ("", "password"),
        ("not-a-key-0123456789", "not valid"),
        (customer.as_str(), "analytics:read"),
    ] {
        let output = Command::new("psql")
            .args(["-X", "--no-password", "-h"])
            .arg(server.pg.ip().to_string())
            .arg("-p")
            .arg(server.pg.port().to_string())
            .args(["-U", "analyst", "-d", "tidemark", "-c", "SELECT 1"])
            .env("PGPASSWORD", password)
            .output()
            .expect("psql runs");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{password:?} is refused");
        assert!(err.contains(reason), "{password:?}: {err}");
    }

    // Refused statements leave the stock as it was.
    let (ok, out, err) = psql("SELECT available FROM stock");
    assert!(ok, "{err}");
    assert_eq!(out, "available\n6\n(1 row)\n");

    // A driver's prepared statement (the extended protocol): parameters bind, and each
    // execution reads the views as they are when it runs, not when it was prepared.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host={} port={} user=bi dbname=tidemark password={ADMIN_KEY}",
                server.pg.ip(),
                server.pg.port()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("a driver connects");
        tokio::spawn(connection);
        let statement = client
            .prepare("SELECT count(*) AS n FROM orders WHERE total_cents >= $1 AND status = $2")
            .await
            .expect("prepares");
        let count = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>("n");
        let rows = client
            .query(&statement, &[&2500i64, &"reserved"])
            .await
            .unwrap();
        assert_eq!(count(rows), 2);
        let rows = client
            .query(&statement, &[&2501i64, &"reserved"])
            .await
            .unwrap();
        assert_eq!(count(rows), 0);
        order();
        let rows = client
            .query(&statement, &[&2500i64, &"reserved"])
            .await
            .unwrap();
        assert_eq!(
            count(rows),
            3,
            "an execution sees the order placed after prepare"
        );
        let refused = client.query("DELETE FROM orders", &[]).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
        );
        let rows = client.query("SELECT 1 AS one", &[]).await.unwrap();
        assert_eq!(
            rows[0].get::<_, i64>("one"),
            1,
            "the connection is still usable"
        );
    });
}

/// Past `sql.max_connections` a PostgreSQL client is refused as PostgreSQL refuses it,
/// and a slot that frees up takes the next client.
#[test]
fn postgres_clients_beyond_the_bound_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &[], &[("TIDEMARK_SQL__MAX_CONNECTIONS", "1")]);
    let psql = || {
        Command::new("psql")
            .args(["-X", "--no-password", "-h"])
            .arg(server.pg.ip().to_string())
            .arg("-p")
            .arg(server.pg.port().to_string())
            .args([
                "-U", "analyst", "-d", "tidemark", "-A", "-t", "-c", "SELECT 1",
            ])
            .env("PGPASSWORD", ADMIN_KEY)
            .output()
            .expect("psql runs")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = format!(
        "host={} port={} user=bi dbname=tidemark password={ADMIN_KEY}",
        server.pg.ip(),
        server.pg.port()
    );
    let (held, connection) = runtime
        .block_on(tokio_postgres::connect(&config, tokio_postgres::NoTls))
        .expect("the first client connects");
    let connection = runtime.spawn(connection);
    let refused = psql();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("too many clients"), "{message}");
    drop(held);
    runtime.block_on(connection).unwrap().unwrap();
    // The server frees the slot once it sees the connection close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let admitted = loop {
        let attempt = psql();
        if attempt.status.success() || std::time::Instant::now() > deadline {
            break attempt;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        admitted.status.success(),
        "{}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&admitted.stdout), "1\n");
}

/// `tidemark admin create-key`, on the data directory of a stopped server.
fn create_key(data_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "admin",
            "create-key",
            "--scopes",
            "admin",
            "--name",
            "ops",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("TIDEMARK_BOOTSTRAP_ADMIN_KEY")
        .output()
        .expect("tidemark runs")
}

#[test]
fn an_install_is_administered_with_a_key_the_cli_prints_while_the_server_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let created = create_key(dir.path());
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let answer: Value = serde_json::from_slice(&created.stdout).expect("JSON on stdout");
    let key = answer["key"].as_str().expect("the key").to_string();
    let id = answer["id"].as_str().expect("its id").to_string();
    assert_eq!(answer["scopes"], json!(["admin"]));

    let server = Server::start(dir.path(), &[]);
    let (status, shown) = server
        .client
        .try_request_as(&key, "GET", &format!("/api/v1/api-keys/{id}"), None)
        .expect("request");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["name"], "ops");
    // The running server holds the data directory: the CLI refuses rather than
    // interleave its records with the server's.
    let refused = create_key(dir.path());
    assert!(!refused.status.success());
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("another tidemark process"), "{reason}");
    server.kill();
}

/// schemathesis (installed by scripts/setup.sh) fuzzes every operation of the live
/// binary's own OpenAPI document, once as the administrator and once as a customer
/// signed in through the password grant: no answer may be a 5xx, a status, media type,
/// header or body the document does not describe.
#[test]
fn the_live_binary_keeps_to_its_openapi_document_under_fuzzing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &[],
        // Thousands of requests from one address: the public tier would refuse most.
        &[("TIDEMARK_GATEWAY__RATE_LIMITS", "false")],
    );
    // Something to find: a product, a customer and their order.
    let (status, product) = server.request(
        "POST",
        "/api/v1/products",
        Some(json!({"sku": "MUG", "name": "Mug", "price_cents": 1200, "currency": "USD", "initial_stock": 50})),
    );
    assert_eq!(status, 201, "{product}");
    let (status, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(
            json!({"email": "ann@example.com", "password": "correct horse battery", "name": "Ann"}),
        ),
    );
    assert_eq!(status, 201, "{user}");
    let (status, tokens) = server.request(
        "POST",
        "/oauth2/token",
        Some(json!({"grant_type": "password", "client_id": "tidemark-cli", "username": "ann@example.com", "password": "correct horse battery"})),
    );
    assert_eq!(status, 200, "{tokens}");
    let customer = tokens["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let document = format!("http://{}/api/v1/openapi.json", server.client.addr);
    for (caller, credential) in [("admin", ADMIN_KEY), ("customer", customer.as_str())] {
        // The same credential in both headers the document names, which the server
        // takes as one.
        let output = Command::new("python3")
            // Its cache goes to the working directory: the test's, not the checkout.
            .current_dir(dir.path())
            .args(["-m", "schemathesis.cli", "run", &document])
            .args(["-H", &format!("Authorization: Bearer {credential}")])
            .args(["-H", &format!("X-API-Key: {credential}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                "15",
                // One thread: Python 3.11 before 3.11.8 may fail `ast.parse` run on two
                // threads at once ("AST constructor recursion depth mismatch", CPython
                // gh-106905), which hypothesis calls when it describes a strategy.
                "--workers",
                "1",
                // Changefeeds and dashboard streams answer with a stream that never
                // ends, which schemathesis would wait on for good; `changes.rs` and
                // `dashboards.rs` test them, refusals included.
                "--exclude-path-regex",
                "/(changes|stream)$",
                "--seed",
                "1",
                "--no-color",
            ])
            .output()
            .expect("schemathesis runs: scripts/setup.sh installs it (pip install schemathesis)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis as {caller} found failures:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("passed"), "{stdout}");
    }
    drop(server);
}

/// The interactive docs page, loaded in a real browser (headless Chromium, installed by
/// scripts/setup.sh): its script fetches the live OpenAPI document and renders every
/// operation in it, with nothing loaded from anywhere else.
#[test]
fn the_docs_page_renders_every_operation_in_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (status, document) = server.request("GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let page = crate::browser::dump_dom(&format!("http://{}/docs", server.client.addr));
    assert!(
        !page.contains("<main id=\"operations\">Could not load"),
        "{page}"
    );
    assert!(
        page.contains("Commerce state as incrementally maintained dataflows"),
        "{page}"
    );
    let mut rendered = 0;
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().unwrap();
            assert!(
                page.contains(&format!("<details id=\"{id}\">")),
                "{id} is not on the page"
            );
            rendered += 1;
        }
    }
    assert!(rendered > 60, "{rendered}");
    // A request body is filled with an example made from its schema.
    assert!(page.contains("id=\"post_orders-body\""), "{page}");
    drop(server);
}

/// The docs page as a person uses it, in a real browser: paste a key, open an
/// operation, send it, read the answer; then create a product from the page.
#[test]
fn the_docs_page_sends_requests_from_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let browser = crate::browser::Browser::start();
    // The page shows `METHOD url …` while a request is out, then the answer.
    let sent = |text: &str| !text.is_empty() && !text.ends_with('…');
    browser.goto(&format!("http://{}/docs", server.client.addr));
    browser.fill("#credentials", ADMIN_KEY);
    // A read.
    browser.click("#get_products > summary");
    browser.click("#get_products button");
    let answer = browser.text_when("#get_products > .op > pre", sent);
    assert!(answer.starts_with("200 OK"), "{answer}");
    assert!(answer.contains("\"items\": []"), "{answer}");
    // A write, with the body typed into the page.
    browser.click("#post_products > summary");
    browser.fill(
        "#post_products-body",
        r#"{"sku": "DOCS-1", "name": "Docs mug", "price_cents": 900, "currency": "USD", "initial_stock": 3}"#,
    );
    browser.click("#post_products button");
    let answer = browser.text_when("#post_products > .op > pre", sent);
    assert!(answer.starts_with("201 Created"), "{answer}");
    let id = serde_json::from_str::<Value>(answer.split_once("\n\n").unwrap().1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, product) = server.request("GET", &format!("/api/v1/products/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(product["stock"]["available"], 3);
    // Without credentials the page shows the refusal as the API gives it.
    browser.fill("#credentials", "");
    browser.click("#post_products button");
    let answer = browser.text_when("#post_products > .op > pre", |text| {
        sent(text) && !text.starts_with("201")
    });
    assert!(answer.starts_with("401 Unauthorized"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// The dashboard page as an operator uses it, in a real browser: opened with a key in
/// its fragment, it draws the operations board without a console error, and its orders
/// panel moves when an order is placed through the API. The screenshot it takes is the
/// README's (`docs/dashboard.png`; set `DASHBOARD_SCREENSHOT` to write it elsewhere).
#[test]
fn the_dashboard_moves_in_a_browser_when_an_order_is_placed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (status, product) = server.request("POST", "/api/v1/products", Some(json!({"sku": "DASH-1", "name": "Dashboard mug", "price_cents": 1250, "currency": "USD", "initial_stock": 500, "reorder_point": 498})));
    assert_eq!(status, 201, "{product}");
    let product = product["id"].as_str().unwrap().to_string();
    let (status, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(json!({"email": "dash@example.com", "password": "password123", "name": "Dash"})),
    );
    assert_eq!(status, 201, "{user}");
    let user = user["id"].as_str().unwrap().to_string();
    let order = |card: &str| {
        let body = json!({"user_id": user, "items": [{"product_id": product, "quantity": 3}], "payment_method": {"type": "card", "card_number": card, "exp_month": 1, "exp_year": 2040, "cvc": "999"}});
        let (status, order) = server.request("POST", "/api/v1/orders", Some(body));
        assert_eq!(status, 201, "{order}");
    };
    order("4242424242424242");
    order("4000000000000002");

    let browser = crate::browser::Browser::start();
    browser.resize(1280, 900);
    let base = format!("http://{}", server.client.addr);
    browser.goto(&format!("{base}/dashboard#key={ADMIN_KEY}"));
    let orders_today = r#"[data-panel="orders_today"] .figure"#;
    let shown = browser.text_when(orders_today, |text| text == "2");
    assert_eq!(shown, "2");
    // The series are drawn by the vendored chart library.
    browser.find(r#"[data-panel="orders_per_minute"] .uplot canvas"#);
    browser.text_when(r#"[data-panel="payment_success"] .figure"#, |text| {
        text == "50 %"
    });

    let placed = std::time::Instant::now();
    order("4242424242424242");
    browser.text_when(orders_today, |text| text == "3");
    // Measured, not asserted (the benchmarks measure freshness): the page moved.
    eprintln!(
        "the orders panel moved {:?} after the order's acknowledgement",
        placed.elapsed()
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    browser.resize(1280, 1500);
    browser.find(r#"[data-panel="rejections"] .uplot canvas"#);
    let screenshot = browser.screenshot();
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");
    let path = std::env::var_os("DASHBOARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));
    std::fs::write(&path, &screenshot).expect("the screenshot is written");

    // The other boards, from the page's navigation; and on a phone's width.
    browser.resize(390, 844);
    browser.click(r#"nav a[href="/dashboard/inventory"]"#);
    let low = browser.text_when(r#"[data-panel="low_stock"] table"#, |text| {
        text.contains("Dashboard mug")
    });
    assert!(low.contains("reorder_point"), "{low}");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // A wrong key is asked again for, with the API's reason.
    browser.goto(&format!("{base}/dashboard/payments#key=tmk_wrong"));
    browser.text_when("#sign-in-error", |text| !text.is_empty());
    browser.fill("#credential", ADMIN_KEY);
    browser.click("#connect");
    browser.find(r#"[data-panel="decline_reasons"] .bar"#);
}

/// `tidemark demo` seeds a shop and drives its traffic through the API: orders with
/// approved, declined and fraudulent cards across a Zipf-popular catalog, which the
/// dashboards then show.
#[test]
fn the_demo_drives_traffic_the_dashboards_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "demo",
            "--rate",
            "40",
            "--duration",
            "5s",
            "--products",
            "12",
            "--users",
            "3",
        ])
        .arg("--server")
        .arg(format!("http://{}", server.client.addr))
        .env("TIDEMARK_API_KEY", ADMIN_KEY)
        .output()
        .expect("tidemark demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("errors 0"), "{stderr}");
    let (status, answer) = server.request(
        "POST",
        "/api/v1/sql",
        Some(
            json!({"sql": "SELECT count(*) AS orders, count(DISTINCT user_id) AS shoppers, \
            sum(CASE WHEN cancel_reason IS NULL THEN 1 ELSE 0 END) AS kept FROM orders"}),
        ),
    );
    assert_eq!(status, 200, "{answer}");
    let row = &answer["rows"][0];
    assert!(row["orders"].as_i64().unwrap() >= 20, "{answer}\n{stderr}");
    assert!(row["shoppers"].as_i64().unwrap() >= 2, "{answer}");
    assert!(row["kept"].as_i64().unwrap() >= 10, "{answer}");
    // The most popular product outsells the least (Zipf), as the dashboard shows.
    let (status, board) = server.request("GET", "/api/v1/dashboards/inventory", None);
    assert_eq!(status, 200, "{board}");
    let top = board["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|panel| panel["id"] == "top_products")
        .unwrap();
    let ranked = top["value"]["rows"].as_array().unwrap();
    assert!(ranked.len() >= 2, "{top}");
    assert!(
        ranked[0][1].as_f64() > ranked[ranked.len() - 1][1].as_f64(),
        "{top}"
    );
}

/// `SUBSCRIBE TO view` in `tidemark sql` follows the view's changefeed: its rows now,
/// then each change, as `frontier, diff, row` lines; another form is refused.
#[test]
fn the_sql_shell_subscribes_to_a_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let product = |sku: &str, price: i64| {
        let body = json!({"sku": sku, "name": sku, "price_cents": price, "currency": "USD", "initial_stock": 1});
        let (status, product) = server.request("POST", "/api/v1/products", Some(body));
        assert_eq!(status, 201, "{product}");
    };
    product("SUB-1", 100);
    let url = format!("http://{}", server.client.addr);
    let mut shell = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["sql", "--server", &url, "-e", "SUBSCRIBE TO products"])
        .env("TIDEMARK_API_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tidemark sql runs");
    let mut lines = BufReader::new(shell.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line").expect("text");
    assert_eq!(next(), "frontier\tdiff\trow");
    let first = next();
    let fields: Vec<&str> = first.splitn(3, '\t').collect();
    assert_eq!(fields[1], "1", "{first}");
    let row: Value = serde_json::from_str(fields[2]).unwrap();
    assert_eq!(row["sku"], "SUB-1");
    let since: u64 = fields[0].parse().unwrap();
    product("SUB-2", 200);
    let change = next();
    let fields: Vec<&str> = change.splitn(3, '\t').collect();
    assert!(fields[0].parse::<u64>().unwrap() > since, "{change}");
    assert_eq!(fields[1], "1");
    assert!(fields[2].contains("SUB-2"), "{change}");
    let _ = shell.kill();
    let _ = shell.wait();

    let refused = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["sql", "--server", &url, "-e", "SUBSCRIBE TO (SELECT 1)"])
        .env("TIDEMARK_API_KEY", ADMIN_KEY)
        .output()
        .expect("tidemark sql runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("follows a view by name"));
}

/// An open changefeed ends, properly, when the server is told to stop (SIGTERM): the
/// stream that never ends on its own does not hold the server's drain to its limit nor
/// get cut off mid-response.
#[test]
fn stopping_the_server_ends_open_changefeeds_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &[]);
    let mut stream = TcpStream::connect(&server.client.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"GET /api/v1/views/products/changes HTTP/1.1\r\nhost: tidemark\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("event: snapshot") {
        let read = stream.read(&mut buffer).expect("the snapshot comes");
        assert!(read > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&received).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    let terminated = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    loop {
        let read = stream.read(&mut buffer).expect("the stream ends");
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    // The chunked body's last chunk: the response ended, it was not cut.
    assert!(
        received.ends_with(b"0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let status = server.child.wait().expect("the server exits");
    assert!(status.success(), "{status:?}");
}

/// The Prometheus exposition of the real binary passes `promtool check metrics`
/// (Debian's prometheus package, installed by scripts/setup.sh) and carries the
/// request, log, view, business and process metrics, each request counted under its
/// route pattern.
#[test]
fn the_metrics_pass_promtool_and_count_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (status, product) = server.request(
        "POST",
        "/api/v1/products",
        Some(json!({"sku": "MUG", "name": "Mug", "price_cents": 1200, "currency": "USD", "initial_stock": 50})),
    );
    assert_eq!(status, 201, "{product}");
    let id = product["id"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            server
                .request("GET", &format!("/api/v1/products/{id}"), None)
                .0,
            200
        );
    }
    assert_eq!(
        server.request("GET", "/api/v1/products/prd_none", None).0,
        404
    );
    let mut stream = TcpStream::connect(&server.metrics).expect("the metrics listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: tidemark\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    // The body may be chunked; promtool reads the exposition itself.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs: scripts/setup.sh installs Debian's prometheus package");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let sample = |prefix: &str| -> f64 {
        body.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        sample(
            r#"tidemark_http_requests_total{method="GET",route="/api/v1/products/{id}",status="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            r#"tidemark_http_requests_total{method="GET",route="/api/v1/products/{id}",status="404"}"#
        ),
        1.0
    );
    assert!(
        sample(
            r#"tidemark_http_request_duration_seconds_count{method="POST",route="/api/v1/products"}"#
        ) >= 1.0
    );
    assert_eq!(sample(r#"tidemark_view_rows{view="products"}"#), 1.0);
    assert!(sample("tidemark_log_group_commit_commands_count") >= 1.0);
    assert!(sample("tidemark_log_fsync_duration_seconds_bucket") >= 0.0);
    assert!(sample("tidemark_log_append_duration_seconds_count") >= 1.0);
    assert_eq!(sample("tidemark_ready"), 1.0);
    assert!(sample("process_resident_memory_bytes") > 0.0);
    assert!(sample("tidemark_orders_per_minute") >= 0.0);
    // Anything else on the metrics listener is a problem document, as on the API.
    for request in [
        "GET /nothing HTTP/1.1\r\nhost: tidemark\r\nconnection: close\r\n\r\n",
        "POST /metrics HTTP/1.1\r\nhost: tidemark\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&server.metrics).expect("the metrics listener");
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 404") || response.starts_with("HTTP/1.1 405"),
            "{response}"
        );
        assert!(response.contains("application/problem+json"), "{response}");
    }
    // Every metric exposed is one the dashboards may name.
    for line in body.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
        {
            assert!(
                serving::observability::is_exported(name),
                "{name} is not in EXPORTED"
            );
        }
    }
}

/// The Grafana dashboard in deploy/grafana parses, reads the provisioned data source,
/// and names only metrics the binary exports.
#[test]
fn the_grafana_dashboard_names_only_exported_metrics() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let text = std::fs::read_to_string(deploy.join("dashboards/tidemark.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let source =
        std::fs::read_to_string(deploy.join("provisioning/datasources/tidemark.yaml")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut named = std::collections::BTreeSet::new();
    for panel in panels {
        let uid = panel["datasource"]["uid"].as_str().expect("a data source");
        assert!(
            source.contains(&format!("uid: {uid}")),
            "{uid} is not provisioned"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a query");
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("tidemark_") || word.starts_with("process_"))
                .collect();
            assert!(!metrics.is_empty(), "{expr} names no metric");
            for metric in metrics {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .unwrap_or(metric);
                assert!(
                    serving::observability::is_exported(base),
                    "{metric} in {expr:?} is not exported"
                );
                named.insert(base.to_string());
            }
        }
    }
    // The brief's business metrics are on it.
    for business in [
        "tidemark_orders_per_minute",
        "tidemark_average_order_value_cents",
        "tidemark_payment_success_ratio",
        "tidemark_inventory_turnover_ratio",
    ] {
        assert!(named.contains(business), "{business}");
    }
}

/// A chunked HTTP/1.1 body, joined.
fn dechunk(mut body: &str) -> String {
    let mut joined = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        joined.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    joined
}

/// A local OTLP/HTTP collector: keeps every span posted to `/v1/traces`, decoded as
/// collectors decode them (protobuf `ExportTraceServiceRequest`).
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receive = axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .any(|kv| {
                            kv.key == "service.name"
                                && text(kv.value.as_ref()) == Some("tidemark".into())
                        });
                    assert!(service, "spans name their service");
                    for scope in resource.scope_spans {
                        kept.extend(scope.spans);
                    }
                }
                ([("content-type", "application/x-protobuf")], Vec::new())
            },
        );
        let router = axum::Router::new().route("/v1/traces", receive);
        runtime.spawn(async move { axum::serve(listener, router).await });
        Collector {
            url,
            spans,
            _runtime: runtime,
        }
    }

    /// Waits (up to a minute: the exporter sends every few seconds) until `found`
    /// picks something out of the spans received.
    fn wait_for<T>(&self, what: &str, found: impl Fn(&[Span]) -> Option<T>) -> T {
        for _ in 0..1200 {
            if let Some(found) = found(&self.spans.lock().unwrap()) {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let names: Vec<String> = self
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|span| span.name.clone())
            .collect();
        panic!("no {what} among the spans received: {names:?}");
    }
}

type Span = opentelemetry_proto::tonic::trace::v1::Span;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    match value?.value.as_ref()? {
        Any::StringValue(text) => Some(text.clone()),
        Any::IntValue(int) => Some(int.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    (span.attributes.iter())
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// With `--otlp-endpoint`, a request, the commands it sends, the batch they enter the
/// dataflow in and the saga's effects are spans at a collector; a caller's
/// `traceparent` is followed; and the log lines of a request carry its request id,
/// correlation id and trace id.
#[test]
fn traces_go_to_an_otlp_collector_and_log_lines_carry_their_ids() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        &[
            "--otlp-endpoint".into(),
            collector.url.clone(),
            "--trace-sample-ratio".into(),
            "1".into(),
        ],
        &[("TIDEMARK_LOG", "info,tidemark::access=debug")],
    );
    let (status, product) = server.request("POST", "/api/v1/products", Some(json!({"sku": "TRACE-1", "name": "Traced mug", "price_cents": 900, "currency": "USD", "initial_stock": 5})));
    assert_eq!(status, 201, "{product}");
    let (status, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(json!({"email": "trace@example.com", "password": "password123", "name": "Trace"})),
    );
    assert_eq!(status, 201, "{user}");
    let body = json!({"user_id": user["id"], "items": [{"product_id": product["id"], "quantity": 1}], "payment_method": {"type": "card", "card_number": "4242424242424242", "exp_month": 1, "exp_year": 2040, "cvc": "999"}});
    let (status, order) = server.request("POST", "/api/v1/orders", Some(body));
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_string();

    // The order's request, and under it its command, the append and the wait.
    let request = collector.wait_for("order request", |spans| {
        spans
            .iter()
            .find(|span| span.name == "POST /api/v1/orders")
            .cloned()
    });
    assert_eq!(
        attribute(&request, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attribute(&request, "correlation_id").as_deref(),
        Some(order_id.as_str())
    );
    let request_id = attribute(&request, "request_id").expect("a request id");
    let command = collector.wait_for("the order's command", |spans| {
        spans
            .iter()
            .find(|span| span.name == "command" && span.parent_span_id == request.span_id)
            .cloned()
    });
    assert_eq!(command.trace_id, request.trace_id);
    assert_eq!(
        attribute(&command, "command").as_deref(),
        Some("place_order")
    );
    assert_eq!(
        attribute(&command, "correlation_id").as_deref(),
        Some(order_id.as_str())
    );
    for step in ["log.append", "views.wait"] {
        collector.wait_for(step, |spans| {
            spans
                .iter()
                .find(|span| span.name == step && span.parent_span_id == command.span_id)
                .cloned()
        });
    }
    // The batches through the dataflow, and the saga's charge, by the order's id.
    let batch = collector.wait_for("the order's dataflow batch", |spans| {
        spans
            .iter()
            .find(|span| {
                span.name == "dataflow.batch"
                    && attribute(span, "correlation_ids")
                        .is_some_and(|ids| ids.split(',').any(|id| id == order_id))
            })
            .cloned()
    });
    assert!(batch.end_time_unix_nano >= batch.start_time_unix_nano);
    let commands = attribute(&batch, "commands").and_then(|n| n.parse::<u64>().ok());
    assert!(commands >= Some(1), "{batch:?}");
    let effect = collector.wait_for("the order's charge", |spans| {
        spans
            .iter()
            .find(|span| {
                span.name == "effect"
                    && attribute(span, "correlation_id").as_deref() == Some(order_id.as_str())
            })
            .cloned()
    });
    assert_eq!(attribute(&effect, "effect").as_deref(), Some("charge"));

    // A caller's trace is followed: the request's span is its child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut stream = TcpStream::connect(&server.client.addr).unwrap();
    write!(stream, "GET /api/v1/products HTTP/1.1\r\nHost: tidemark\r\ntraceparent: 00-{caller_trace}-{caller_span}-01\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let followed = collector.wait_for("the caller's trace", |spans| {
        spans
            .iter()
            .find(|span| hex(&span.trace_id) == caller_trace)
            .cloned()
    });
    assert_eq!(followed.name, "GET /api/v1/products");
    assert_eq!(hex(&followed.parent_span_id), caller_span);

    // The order's log line carries its request id, correlation id and trace id.
    let trace_id = hex(&request.trace_id);
    let line = (0..600)
        .find_map(|_| {
            let found = server
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(&request_id) && line.contains("\"served\""))
                .cloned();
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
        .expect("an access log line of the order's request");
    let entry: Value = serde_json::from_str(&line).expect("a JSON log line");
    let span = (entry["spans"].as_array().into_iter().flatten())
        .find(|span| span["name"] == "request")
        .unwrap_or_else(|| panic!("the request's span in {entry}"));
    assert_eq!(span["request_id"], request_id.as_str(), "{entry}");
    assert_eq!(span["correlation_id"], order_id.as_str(), "{entry}");
    assert_eq!(span["trace_id"], trace_id.as_str(), "{entry}");
    assert_eq!(entry["status"], 201, "{entry}");
}

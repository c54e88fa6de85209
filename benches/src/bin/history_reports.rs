//! A report set over the Parquet history, tidemark's SQL engine against DuckDB on the
//! same files.
//!
//! Writes `--events` events of a month of shop traffic with the history sink itself
//! (`connectors::history::HistoryWriter`, so the files are the ones a server writes),
//! unless `--dir` already holds them; then runs each report of `benches/history_reports/`
//! `--runs` times on tidemark's `SqlEngine` (the `events` table) and on DuckDB
//! (`read_parquet` over the same files, through `benches/duckdb_reports.py`), with the
//! same number of threads, the engines taking turns round by round, and prints the
//! median times side by side. Both engines run the same SQL text; the answers are
//! compared by row count and column sums. Freed memory is kept for reuse as in
//! `tidemark serve` (`MIMALLOC_PURGE_DELAY=1000` measures mimalloc's default instead).
//!
//! ```sh
//! cargo build --release --workspace --bin history-reports
//! python3 -m pip install duckdb
//! target/release/history-reports --events 10000000 --dir /tmp/tidemark-history-10m
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use benches::{Rng, Zipf};
use clap::Parser;
use connectors::history::{HistoryOptions, HistoryWriter};
use dataflows::events::*;
use dataflows::model::*;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use sql::{SqlConfig, SqlEngine};

#[derive(Parser, Debug)]
struct Args {
    /// Events in the history.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Where the history is (written first if it holds none).
    #[arg(long, default_value = "/tmp/tidemark-history-reports")]
    dir: PathBuf,
    /// Threads each engine may use.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Runs per query; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only the reports whose names contain this (to profile one of them).
    #[arg(long, default_value = "")]
    only: String,
}

/// The reports: name and SQL, the same text for both engines.
const REPORTS: [(&str, &str); 4] = [
    (
        "daily revenue",
        include_str!("../../history_reports/daily_revenue.sql"),
    ),
    (
        "top 10 products",
        include_str!("../../history_reports/top_products.sql"),
    ),
    (
        "payment success by method",
        include_str!("../../history_reports/payment_success.sql"),
    ),
    (
        "inventory turnover",
        include_str!("../../history_reports/inventory_turnover.sql"),
    ),
];

const PRODUCTS: u64 = 10_000;
const BRANDS: [&str; 4] = ["visa", "mastercard", "amex", "discover"];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
const DAYS: u64 = 30;
/// 2026-11-01T00:00:00Z.
const START_MS: Ts = 1_793_491_200_000;

/// A product by popularity (Zipf): a few sell often, most rarely.
fn product(zipf: &Zipf, rng: &mut Rng) -> Str {
    format!("p-{:05}", zipf.sample(rng)).into()
}

/// One stock event of `kind` (`inventory_reserved`, `_released`, `_deducted`) per line
/// of an order: the three records have the same fields.
fn stock_events(kind: &str, order_id: &Str, lines: &[PricedLine]) -> Vec<EventBody> {
    lines
        .iter()
        .map(|line| {
            let record = serde_json::json!({
                "type": kind,
                "product_id": line.product_id,
                "order_id": order_id,
                "quantity": line.quantity,
            });
            serde_json::from_value(record).expect("a stock event's record")
        })
        .collect()
}

/// Events of one order's life, as the saga emits them.
fn order_events(n: u64, zipf: &Zipf, rng: &mut Rng) -> Vec<EventBody> {
    let order_id: Str = format!("o-{n}").into();
    let payment_id: Str = format!("pay-{n}").into();
    let currency: Str = CURRENCIES[rng.below(CURRENCIES.len())].into();
    let lines: Vec<PricedLine> = (0..1 + rng.below(3))
        .map(|_| PricedLine {
            product_id: product(zipf, rng),
            quantity: 1 + rng.below(3) as i64,
            unit_price_cents: 199 + rng.below(20_000) as i64,
            currency: currency.clone(),
        })
        .collect();
    let total_cents = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
    let mut events = vec![EventBody::OrderCreated(OrderCreated {
        order_id: order_id.clone(),
        user_id: format!("u-{}", rng.below(100_000)).into(),
        items: lines
            .iter()
            .map(|l| Line {
                product_id: l.product_id.clone(),
                quantity: l.quantity,
            })
            .collect(),
        cart_id: None,
        shipping_address: Some("1 Main Street".into()),
    })];
    events.extend(stock_events("inventory_reserved", &order_id, &lines));
    events.push(EventBody::OrderReserved(OrderReserved {
        order_id: order_id.clone(),
        lines: lines.clone(),
        total_cents,
        currency: currency.clone(),
    }));
    let brand = BRANDS[rng.below(BRANDS.len())];
    events.push(EventBody::PaymentInitiated(PaymentInitiated {
        payment_id: payment_id.clone(),
        order_id: order_id.clone(),
        amount_cents: total_cents,
        currency,
        card: CardToken {
            token: format!("tok_{n}").into(),
            brand: brand.into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        },
    }));
    let outcome = rng.below(100);
    if outcome < 10 {
        if outcome < 2 {
            events.push(EventBody::FraudDetected(FraudDetected {
                payment_id: payment_id.clone(),
                order_id: order_id.clone(),
            }));
        }
        events.push(EventBody::PaymentFailed(PaymentFailed {
            payment_id,
            order_id: order_id.clone(),
            decline_code: ["card_declined", "insufficient_funds", "expired_card"][rng.below(3)]
                .into(),
        }));
        events.extend(stock_events("inventory_released", &order_id, &lines));
        events.push(EventBody::OrderCancelled(OrderCancelled {
            order_id,
            reason: if outcome < 2 {
                CancelReason::FraudSuspected
            } else {
                CancelReason::PaymentDeclined
            },
        }));
        return events;
    }
    events.push(EventBody::PaymentCompleted(PaymentCompleted {
        payment_id: payment_id.clone(),
        order_id: order_id.clone(),
        charge_id: format!("ch_{n}").into(),
    }));
    events.push(EventBody::OrderConfirmed(OrderConfirmed {
        order_id: order_id.clone(),
        payment_id: payment_id.clone(),
    }));
    if rng.below(100) < 2 {
        events.push(EventBody::RefundProcessed(RefundProcessed {
            refund_id: format!("re-{n}").into(),
            payment_id,
            order_id: order_id.clone(),
            amount_cents: total_cents,
        }));
    }
    if rng.below(100) < 80 {
        events.extend(stock_events("inventory_deducted", &order_id, &lines));
        events.push(EventBody::OrderShipped(OrderShipped {
            order_id: order_id.clone(),
            shipment_id: format!("sh-{n}").into(),
        }));
        if rng.below(100) < 75 {
            events.push(EventBody::OrderCompleted(OrderCompleted { order_id }));
        }
    }
    events
}

/// Writes about `count` events from `START_MS` on into the history at `dir`.
fn generate(dir: &Path, count: usize) {
    let started = Instant::now();
    let mut writer = HistoryWriter::open(dir, HistoryOptions::default()).expect("open history");
    let mut rng = Rng(0x5EED_CAFE_F00D_D00D);
    let zipf = Zipf::new(PRODUCTS as usize);
    // Orders spaced for `DAYS` days at 11 events each; the outcome mix gives about 10,
    // so the history runs a few days longer (34 days for 10 million events).
    let orders = (count as u64 / 11).max(1);
    let step = DAYS * 86_400_000 / orders;
    let (mut seq, mut written) = (0u64, 0usize);
    let mut pending = Vec::new();
    let mut push = |ts: Ts, body: EventBody, pending: &mut Vec<(Time, Event)>| {
        seq += 1;
        pending.push((
            command_time(ts),
            Event {
                seq,
                phase: 0,
                sub: 0,
                ts,
                body,
            },
        ));
    };
    // Every product starts with stock.
    for p in 0..PRODUCTS {
        let body = EventBody::StockAdjusted(StockAdjusted {
            product_id: format!("p-{p:05}").into(),
            delta: 1_000,
            reason: "initial".into(),
        });
        push(START_MS, body, &mut pending);
    }
    let mut n = 0;
    while written + pending.len() < count {
        let ts = START_MS + 1 + n * step;
        for body in order_events(n, &zipf, &mut rng) {
            push(ts, body, &mut pending);
        }
        // Restocks now and then.
        if n % 200 == 0 {
            let body = EventBody::StockAdjusted(StockAdjusted {
                product_id: product(&zipf, &mut rng),
                delta: 200 + rng.below(800) as i64,
                reason: "restock".into(),
            });
            push(ts, body, &mut pending);
        }
        n += 1;
        if pending.len() >= 256 * 1024 {
            written += pending.len();
            writer.add(command_time(ts) + 1, std::mem::take(&mut pending));
            writer.flush().expect("flush");
        }
    }
    written += pending.len();
    let end = START_MS + 1 + n * step;
    writer.add(command_time(end), pending);
    writer.flush().expect("flush");
    eprintln!(
        "wrote {written} events of {n} orders in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// The median of `times`, in milliseconds.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Rows and the sum of each numeric column, to compare answers across engines.
fn digest(answer: &sql::Answer) -> (usize, Vec<f64>) {
    let columns = answer.schema.fields().len();
    let mut sums = vec![0.0; columns];
    for batch in &answer.batches {
        for (column, sum) in sums.iter_mut().enumerate() {
            let array = batch.column(column);
            match array.data_type() {
                DataType::Int64 => {
                    let values = array.as_primitive::<Int64Type>();
                    *sum += (0..values.len())
                        .filter(|&i| values.is_valid(i))
                        .map(|i| values.value(i) as f64)
                        .sum::<f64>();
                }
                DataType::Float64 => {
                    let values = array.as_primitive::<Float64Type>();
                    *sum += (0..values.len())
                        .filter(|&i| values.is_valid(i))
                        .map(|i| values.value(i))
                        .sum::<f64>();
                }
                _ => {}
            }
        }
    }
    (answer.rows(), sums)
}

/// The server's allocator, set as `tidemark serve` sets it (`keep_freed_memory`): these
/// engines run here as they run there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    serving::allocator::keep_freed_memory();
    let args = Args::parse();
    if !args.dir.join("_committed").exists() {
        generate(&args.dir, args.events);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("runtime");
    let config = SqlConfig {
        threads: args.threads,
        memory_limit_mb: 8 * 1024,
        timeout_ms: 600_000,
        ..SqlConfig::default()
    };
    let engine = Arc::new(
        SqlEngine::new(config)
            .expect("sql threads")
            .with_history(args.dir.as_path().into()),
    );
    let snapshot = Arc::new(queries::Snapshot::default());
    let count = runtime
        .block_on(engine.run(
            snapshot.clone(),
            "SELECT count(*) AS events FROM events".into(),
            None,
            None,
        ))
        .expect("count");
    let events = count.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);

    let reports: Vec<(&str, &str)> = REPORTS
        .into_iter()
        .filter(|(name, _)| name.contains(args.only.as_str()))
        .collect();
    let mut duckdb = DuckDb::start(&args.dir, args.threads, &reports);

    println!(
        "{events} events in the history at {}; {} threads each; median of {} runs, the \
         engines taking turns",
        args.dir.display(),
        args.threads,
        args.runs
    );
    println!();
    println!("| report | tidemark ms | DuckDB ms | tidemark / DuckDB | rows | answers agree |");
    println!("|---|---|---|---|---|---|");
    // Rounds alternate between the engines, so that a slow moment of the machine falls
    // on both rather than on whichever ran then.
    let mut ours = vec![Vec::new(); reports.len()];
    let mut theirs = vec![Vec::new(); reports.len()];
    let mut answers = vec![None; reports.len()];
    let mut duck_answers = vec![serde_json::Value::Null; reports.len()];
    for _ in 0..args.runs {
        for (index, duck) in duckdb.round().into_iter().enumerate() {
            theirs[index].push(duck["ms"].as_f64().unwrap_or(f64::NAN));
            duck_answers[index] = duck;
        }
        for (index, (name, text)) in reports.iter().enumerate() {
            let started = Instant::now();
            let result = runtime
                .block_on(engine.run(snapshot.clone(), text.to_string(), None, None))
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            ours[index].push(started.elapsed().as_secs_f64() * 1000.0);
            answers[index] = Some(digest(&result));
        }
    }
    for (index, (name, _)) in reports.iter().enumerate() {
        let (rows, sums) = answers[index].take().expect("at least one run");
        let duck = &duck_answers[index];
        let duck_rows = duck["rows"].as_u64().unwrap_or(0) as usize;
        let duck_sums: Vec<f64> = duck["sums"]
            .as_array()
            .map(|sums| sums.iter().map(|s| s.as_f64().unwrap_or(0.0)).collect())
            .unwrap_or_default();
        let agree = rows == duck_rows
            && sums.len() == duck_sums.len()
            && sums
                .iter()
                .zip(&duck_sums)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0));
        let ours = median(std::mem::take(&mut ours[index]));
        let theirs = median(std::mem::take(&mut theirs[index]));
        println!(
            "| {name} | {ours:.0} | {theirs:.0} | {:.2}x | {rows} | {agree} |",
            ours / theirs
        );
        if !agree {
            eprintln!(
                "{name}: tidemark {rows} rows {sums:?}, DuckDB {duck_rows} rows {duck_sums:?}"
            );
        }
    }
}

/// DuckDB in a Python process of its own (`benches/duckdb_reports.py`), running every
/// report once per round asked for.
struct DuckDb {
    child: std::process::Child,
    answers: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl DuckDb {
    fn start(dir: &Path, threads: usize, reports: &[(&str, &str)]) -> DuckDb {
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/duckdb_reports.py"))
            .arg(dir)
            .arg(threads.to_string())
            .args(reports.iter().map(|(_, sql)| *sql))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let answers = BufReader::new(child.stdout.take().expect("piped")).lines();
        DuckDb { child, answers }
    }

    /// Runs every report once: per report, its time, row count and column sums.
    fn round(&mut self) -> Vec<serde_json::Value> {
        let asked = self
            .child
            .stdin
            .as_mut()
            .map(|stdin| writeln!(stdin, "run").and_then(|()| stdin.flush()));
        let line = match (asked, self.answers.next()) {
            (Some(Ok(())), Some(Ok(line))) => line,
            _ => {
                eprintln!("DuckDB failed (its error is above); is it installed? python3 -m pip install duckdb");
                std::process::exit(1);
            }
        };
        serde_json::from_str(&line).expect("the DuckDB script answers JSON")
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

//! Keeping `sales_daily` (paid orders, revenue and average order value per day and
//! currency) up to date as orders are paid: tidemark's metric dataflow, which updates it
//! incrementally, against recomputing it from scratch with DataFusion at every frontier.
//!
//! For each count of orders already held, both sides first take that many paid orders,
//! then `--frontiers` frontiers of `--batch` newly paid orders each; what is timed is
//! that second part, until the metric is current at each frontier. The dataflow side
//! runs the whole metric dataflow (`dataflows::analytics::metrics`, one timely worker),
//! which also keeps `sales_per_minute` and `product_sales_daily` from the same rows.
//! The DataFusion side runs one `GROUP BY` over an in-memory Arrow table of the paid
//! orders (day, currency, total) that grows by a batch per frontier: the cheapest
//! from-scratch recomputation there is. At the end both answers are compared.
//!
//! ```sh
//! cargo build --release --workspace --bin metric-maintenance
//! target/release/metric-maintenance --held 10000,100000,1000000
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::Rng;
use clap::Parser;
use dataflows::analytics::{self, Dim, Metric};
use dataflows::model::*;
use dataflows::views::{OrderRow, Row, StatusChange};
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use differential_dataflow::input::Input as _;
use timely::dataflow::operators::Input as _;
use timely::dataflow::ProbeHandle;

#[derive(Parser, Debug)]
struct Args {
    /// Paid orders held before the timed frontiers, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    held: Vec<usize>,
    /// Frontiers timed per measurement.
    #[arg(long, default_value_t = 200)]
    frontiers: usize,
    /// Orders paid per frontier.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Threads DataFusion may use (the machine's cores by default).
    #[arg(long)]
    threads: Option<usize>,
}

/// `sales_daily` as both sides answer it: (day, currency) -> (orders, revenue).
type Sales = BTreeMap<(i64, String), (i64, i64)>;

/// Log milliseconds per paid order: 1,000 orders a second of log time, so a million
/// orders span about 17 minutes and ten million about 3 hours.
const MS_PER_ORDER: Ts = 1;
/// Where log time starts: 2026-11-30 23:00 UTC, so the orders cross a day boundary.
const START_MS: Ts = 1_796_079_600_000;
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// The `n`th paid order: deterministic, one or two lines.
fn order(n: usize) -> (Ts, OrderRow) {
    let at = START_MS + n as Ts * MS_PER_ORDER;
    // Each order from its own seed, so that both sides build the `n`th order alike.
    let mut rng = Rng((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let currency: Str = CURRENCIES[rng.below(CURRENCIES.len())].into();
    let lines: Vec<PricedLine> = (0..1 + rng.below(2))
        .map(|_| PricedLine {
            product_id: format!("p-{}", rng.below(10_000)).into(),
            quantity: 1 + rng.below(3) as i64,
            unit_price_cents: 100 + rng.below(20_000) as i64,
            currency: currency.clone(),
        })
        .collect();
    let total_cents = lines
        .iter()
        .map(|line| line.quantity * line.unit_price_cents)
        .sum();
    let change = |status, at| StatusChange {
        status,
        at,
        reason: None,
    };
    let row = OrderRow {
        order_id: format!("o-{n}").into(),
        user_id: format!("u-{}", n % 1_000).into(),
        status: OrderStatus::Confirmed,
        cancel_reason: None,
        items: Box::new([]),
        lines: lines.into_boxed_slice(),
        total_cents,
        currency,
        has_payment: true,
        has_shipment: false,
        cart_id: None,
        shipping_address: None,
        created_at: at,
        updated_at: at,
        history: Box::new([
            change(OrderStatus::Pending, at),
            change(OrderStatus::Confirmed, at),
        ]),
    };
    (at, row)
}

/// One measurement: orders/s sustained over the timed frontiers, and the final answer.
struct Run {
    orders_per_sec: f64,
    sales: Sales,
}

/// The metric dataflow on one worker of this thread.
fn incremental(held: usize, frontiers: usize, batch: usize) -> Run {
    timely::execute_directly(move |worker| {
        let sales: Rc<RefCell<Sales>> = Rc::default();
        let probe = ProbeHandle::new();
        let (mut events, mut rejections, mut rows) = worker.dataflow::<Time, _, _>(|scope| {
            let (events_in, events) = scope.new_input::<Vec<Event>>();
            let (rejections_in, rejections) = scope.new_input::<Vec<Rejection>>();
            let (rows_in, rows) = scope.new_collection::<Row, isize>();
            let metrics = analytics::metrics(events, rejections, rows);
            let sink = Rc::clone(&sales);
            metrics
                .inspect(move |(row, _time, diff)| {
                    let Row::Metric(row) = row else { return };
                    if row.metric != Metric::SalesDaily {
                        return;
                    }
                    let (Dim::Day(day), Dim::Text(currency)) = (&row.key[0], &row.key[1]) else {
                        return;
                    };
                    let mut sales = sink.borrow_mut();
                    let entry = sales.entry((*day, currency.to_string())).or_default();
                    entry.0 += row.measures[0] * *diff as i64;
                    entry.1 += row.measures[1] * *diff as i64;
                })
                .probe_with(&probe);
            (events_in, rejections_in, rows_in)
        });
        // One frontier: the orders `range` paid at the next command time, and the
        // dataflow stepped until the metric is current there.
        let mut time: Time = 0;
        let mut frontier = |range: std::ops::Range<usize>, worker: &mut timely::worker::Worker| {
            for n in range {
                rows.insert(Row::Order(Arc::new(order(n).1)));
            }
            time += 2;
            events.advance_to(time);
            rejections.advance_to(time);
            rows.advance_to(time);
            rows.flush();
            while probe.less_than(&time) {
                worker.step();
            }
        };
        for start in (0..held).step_by(50_000) {
            frontier(start..(start + 50_000).min(held), worker);
        }
        let started = Instant::now();
        for f in 0..frontiers {
            let start = held + f * batch;
            frontier(start..start + batch, worker);
        }
        let elapsed = started.elapsed();
        let sales = sales
            .borrow()
            .iter()
            .filter(|(_, sums)| **sums != (0, 0))
            .map(|(key, sums)| (key.clone(), *sums))
            .collect();
        Run {
            orders_per_sec: (frontiers * batch) as f64 / elapsed.as_secs_f64(),
            sales,
        }
    })
}

/// DataFusion over an Arrow table of every paid order, queried again at every frontier.
async fn recompute(held: usize, frontiers: usize, batch: usize, threads: usize) -> Run {
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("day", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("total_cents", DataType::Int64, false),
    ]));
    let batch_of = |range: std::ops::Range<usize>| {
        let orders: Vec<(Ts, OrderRow)> = range.map(order).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    orders.iter().map(|(at, _)| analytics::day_of(*at)),
                )),
                Arc::new(StringArray::from_iter_values(
                    orders.iter().map(|(_, row)| row.currency.to_string()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    orders.iter().map(|(_, row)| row.total_cents),
                )),
            ],
        )
        .expect("batch")
    };
    let context =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
    // Partitions of about equal size, one per thread, so the scan uses every thread.
    let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); threads];
    for (index, start) in (0..held).step_by(65_536).enumerate() {
        partitions[index % threads].push(batch_of(start..(start + 65_536).min(held)));
    }
    const SQL: &str = "SELECT day, currency, count(*) AS orders, sum(total_cents) AS revenue, \
        sum(total_cents) / count(*) AS average_order_cents FROM paid_orders GROUP BY day, currency";
    let mut answer = Vec::new();
    let query = |partitions: Vec<Vec<RecordBatch>>| {
        let table = MemTable::try_new(schema.clone(), partitions).expect("table");
        let _ = context.deregister_table("paid_orders");
        context
            .register_table("paid_orders", Arc::new(table))
            .expect("register");
        let context = context.clone();
        async move { context.sql(SQL).await?.collect().await }
    };
    let started = Instant::now();
    for f in 0..frontiers {
        let start = held + f * batch;
        partitions[f % threads].push(batch_of(start..start + batch));
        answer = query(partitions.clone()).await.expect("query");
    }
    let elapsed = started.elapsed();
    let mut sales = Sales::new();
    for batch in &answer {
        let days = batch.column(0).as_primitive::<Int64Type>();
        let currencies = batch.column(1).as_string::<i32>();
        let orders = batch.column(2).as_primitive::<Int64Type>();
        let revenue = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            debug_assert!(!days.is_null(i));
            sales.insert(
                (days.value(i), currencies.value(i).to_string()),
                (orders.value(i), revenue.value(i)),
            );
        }
    }
    Run {
        orders_per_sec: (frontiers * batch) as f64 / elapsed.as_secs_f64(),
        sales,
    }
}

/// The server's allocator, set as `tidemark serve` sets it (`keep_freed_memory`): these
/// engines run here as they run there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    serving::allocator::keep_freed_memory();
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{} frontiers of {} paid orders each; DataFusion on {threads} threads",
        args.frontiers, args.batch
    );
    println!();
    println!("| orders held | incremental orders/s | recomputed orders/s | incremental / recomputed | answers agree |");
    println!("|---|---|---|---|---|");
    for &held in &args.held {
        let dataflow = incremental(held, args.frontiers, args.batch);
        let datafusion = runtime.block_on(recompute(held, args.frontiers, args.batch, threads));
        let agree = dataflow.sales == datafusion.sales;
        println!(
            "| {held} | {:.0} | {:.0} | {:.1}x | {agree} |",
            dataflow.orders_per_sec,
            datafusion.orders_per_sec,
            dataflow.orders_per_sec / datafusion.orders_per_sec,
        );
        if !agree {
            eprintln!("dataflow: {:?}", dataflow.sales);
            eprintln!("datafusion: {:?}", datafusion.sales);
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

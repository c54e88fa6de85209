//! Memory held per order by the dataflow and the views alone (no HTTP, no log): feeds
//! orders through the engine in batches, runs each saga to `shipped`, and reports the
//! growth of this process's resident set per order.
//!
//! cargo run --release -p tidemark-benches --bin engine-memory -- --orders 100000

use std::time::{Duration, Instant};

use clap::Parser;
use dataflows::model::*;
use dataflows::{Batch, Engine};
use queries::ViewStore;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[arg(long, default_value_t = 200)]
    batch: usize,
}

struct Feed {
    engine: Engine,
    store: std::sync::Arc<ViewStore>,
    seq: Seq,
    ts: Ts,
}

impl Feed {
    fn batch(&mut self, commands: Vec<Command>) {
        self.ts += 1;
        let records = commands
            .into_iter()
            .map(|command| {
                self.seq += 1;
                (self.seq, Envelope::new(command))
            })
            .collect();
        self.engine
            .feed(Batch {
                ts: self.ts,
                records,
            })
            .expect("feed");
    }

    fn settle(&self) {
        self.store
            .wait_for_blocking(settled_frontier(self.ts), Duration::from_secs(600))
            .expect("views catch up");
    }
}

fn main() {
    let args = Args::parse();
    let store = ViewStore::new(args.workers);
    let engine = Engine::start(args.workers, store.clone()).expect("engine");
    let mut feed = Feed {
        engine,
        store,
        seq: 0,
        ts: 1_700_000_000_000,
    };
    // Orders name products by the catalog's own ids, as the API does.
    let products: Vec<Str> = (0..1000).map(|i| format!("prd_{i:032}").into()).collect();
    feed.batch(
        products
            .iter()
            .map(|id| Command::CreateProduct {
                product_id: id.clone(),
                sku: id.clone(),
                name: "Product".into(),
                price_cents: 1000,
                currency: "USD".into(),
                initial_stock: dataflows::catalog::MAX_QUANTITY,
                warehouse_id: None,
                reorder_point: 0,
            })
            .collect(),
    );
    feed.settle();
    let card = CardToken {
        token: "tok_0123456789abcdef01234567".into(),
        brand: "visa".into(),
        last4: "4242".into(),
        exp_month: 12,
        exp_year: 2035,
    };
    let before = benches::rss_bytes("self");
    let started = Instant::now();
    let order_id = |n: usize| format!("ord_{n:032x}");
    for start in (0..args.orders).step_by(args.batch) {
        let end = (start + args.batch).min(args.orders);
        let place = (start..end)
            .map(|n| Command::PlaceOrder {
                order_id: order_id(n).into(),
                user_id: format!("usr_{:032x}", n % 1000).into(),
                items: vec![
                    Line {
                        product_id: products[n % 1000].clone(),
                        quantity: 1,
                    },
                    Line {
                        product_id: products[(n * 7 + 3) % 1000].clone(),
                        quantity: 2,
                    },
                ],
                payment: Some(card.clone()),
                shipping_address: Some("1 Main St".into()),
                cart_id: None,
            })
            .collect();
        feed.batch(place);
        let paid = (start..end)
            .map(|n| Command::PaymentResult {
                payment_id: payment_id_for(&order_id(n)),
                order_id: order_id(n).into(),
                outcome: PaymentOutcome::Approved {
                    charge_id: format!("ch_{n:024x}").into(),
                },
            })
            .collect();
        feed.batch(paid);
        let dispatched = (start..end)
            .map(|n| Command::ShipmentDispatched {
                shipment_id: shipment_id_for(&order_id(n)),
                order_id: order_id(n).into(),
                carrier: "sandbox".into(),
                tracking_number: format!("SBX{n:016X}").into(),
            })
            .collect();
        feed.batch(dispatched);
        if (start / args.batch) % 16 == 0 {
            feed.settle();
        }
    }
    feed.settle();
    let elapsed = started.elapsed();
    let after = benches::rss_bytes("self");
    let snapshot = feed.store.read();
    let shipped = snapshot
        .orders
        .values()
        .filter(|o| o.status == OrderStatus::Shipped)
        .count();
    drop(snapshot);
    // A run in which orders did not go through measures nothing.
    assert_eq!(shipped, args.orders, "every order ships");
    println!("| orders | shipped | workers | seconds | commands/s | RSS before MiB | RSS after MiB | bytes per order |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} |",
        args.orders,
        shipped,
        args.workers,
        elapsed.as_secs_f64(),
        (args.orders * 3) as f64 / elapsed.as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / args.orders as f64
    );
}

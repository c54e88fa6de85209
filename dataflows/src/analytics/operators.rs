//! The metric dataflow: every metric view, maintained incrementally.
//!
//! Most metrics are sums: each event or row contributes `Sums` to a key, and one `count`
//! per metric accumulates them (a row's retraction takes its contribution back). Windows
//! of recent log time are joins against the clock's ticks. Joins read named arrangements
//! shared between metrics (`ProductsById`, `PaymentCurrency`).

use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::events::*;
use crate::model::*;
use crate::shared::ordered::key_hash;
use crate::views::{stock_deltas, OrderRow, PaymentStatus, Row, StockMeasure, WithTimes};

use super::anomaly::anomalies;
use super::clock::{clock, Tick};
use super::views::*;
use super::Sums;

type Rows<'scope> = VecCollection<'scope, Time, Row, isize>;

/// Buckets of the first round of the top products' ranking: each ranks its share, and
/// the final round ranks the buckets' leaders only.
const TOP_BUCKETS: u64 = 16;

/// Every metric view over the events, the refusals and the read models' rows, and the
/// anomaly events of the per-minute series.
pub fn metrics<'scope>(
    events: Stream<'scope, Time, Vec<Event>>,
    rejections: Stream<'scope, Time, Vec<Rejection>>,
    views: Rows<'scope>,
) -> (Rows<'scope>, Stream<'scope, Time, Vec<Event>>) {
    let anomalies = anomalies(events.clone(), rejections.clone());
    let anomaly_rows = anomalies
        .clone()
        .with_times()
        .as_collection()
        .flat_map(|event: Event| match event.body {
            EventBody::AnomalyDetected(anomaly) => Some(anomaly_row(&anomaly)),
            _ => None,
        });
    let ticks = clock(
        events
            .clone()
            .map(|event| event.ts)
            .concat(rejections.clone().map(|rejection| rejection.ts)),
    );
    let refused = rejections.with_times().as_collection();
    let events = events.with_times().as_collection();

    // Orders as paid: each order row that went through `confirmed`, with the time it did.
    let paid = views.clone().flat_map(|row| match row {
        Row::Order(order) => paid_at(&order).map(|at| (order, at)),
        _ => None,
    });
    // Their lines: (day paid, product, currency) with units and revenue.
    let product_days = paid
        .clone()
        .explode(|(order, at): (Arc<OrderRow>, Ts)| {
            let day = day_of(at);
            order
                .lines
                .iter()
                .map(|line| {
                    let key = (day, line.product_id.clone(), line.currency.clone());
                    let revenue = line.quantity * line.unit_price_cents;
                    (key, Sums::of(&[line.quantity, revenue]))
                })
                .collect::<Vec<_>>()
        })
        .count();

    // Named arrangements more than one metric reads.
    let products_by_id = views
        .clone()
        .flat_map(|row| match row {
            Row::Product(product) => Some((product.product_id.clone(), product.reorder_point)),
            _ => None,
        })
        .arrange_by_key_named("ProductsById");
    let payment_currency = events
        .clone()
        .flat_map(|event| match event.body {
            EventBody::PaymentInitiated(PaymentInitiated {
                payment_id,
                currency,
                ..
            }) => Some((payment_id, currency)),
            _ => None,
        })
        .arrange_by_key_named("PaymentCurrency");

    let per_minute = events
        .clone()
        .explode(|event| minute_signals(&event))
        .concat(refused.explode(|rejection: Rejection| {
            Some((minute_of(rejection.ts), Sums::of(&[0, 0, 0, 0, 0, 1])))
        }))
        .count()
        .map(|(minute, sums)| (Tick::Minute(minute), sums))
        .semijoin(ticks.clone())
        .map(|(tick, sums)| {
            let Tick::Minute(minute) = tick else {
                unreachable!("joined with minutes")
            };
            metric(Metric::OrdersPerMinute, vec![Dim::Minute(minute)], sums)
        });

    let sales_per_minute = paid
        .clone()
        .explode(|(order, at): (Arc<OrderRow>, Ts)| {
            let key = (Tick::Minute(minute_of(at)), order.currency.clone());
            Some((key, Sums::of(&[1, order.total_cents])))
        })
        .count()
        .map(|((tick, currency), sums)| (tick, (currency, sums)))
        .semijoin(ticks.clone())
        .map(|(tick, (currency, sums))| {
            let Tick::Minute(minute) = tick else {
                unreachable!("joined with minutes")
            };
            let key = vec![Dim::Minute(minute), Dim::Text(currency)];
            metric(Metric::SalesPerMinute, key, sums)
        });

    let refunds = events
        .clone()
        .flat_map(|event| match event.body {
            EventBody::RefundProcessed(RefundProcessed {
                payment_id,
                amount_cents,
                ..
            }) => Some((payment_id, (day_of(event.ts), amount_cents))),
            _ => None,
        })
        .arrange_by_key_named("RefundsByPayment")
        .join_core(payment_currency, |_payment, &(day, amount), currency| {
            Some((
                (day, currency.clone()),
                Sums::of(&[0, 0, 1, amount, -amount]),
            ))
        })
        .explode(|(key, sums)| Some((key, sums)));
    let sales_daily = paid
        .clone()
        .explode(|(order, at): (Arc<OrderRow>, Ts)| {
            let total = order.total_cents;
            Some((
                (day_of(at), order.currency.clone()),
                Sums::of(&[1, total, 0, 0, total]),
            ))
        })
        .concat(refunds)
        .count()
        .map(|((day, currency), sums)| {
            metric(
                Metric::SalesDaily,
                vec![Dim::Day(day), Dim::Text(currency)],
                sums,
            )
        });

    let product_sales_daily = product_days
        .clone()
        .map(|((day, product, currency), sums)| {
            metric(
                Metric::ProductSalesDaily,
                vec![Dim::Day(day), Dim::Text(product), Dim::Text(currency)],
                sums,
            )
        });

    let top_products = product_days
        .clone()
        .explode(|((_, product, _), sums): ((i64, Str, Str), Sums)| {
            Some((product, Sums::of(&[sums.0[0]])))
        })
        .count()
        .filter(|(_, sums)| sums.0[0] > 0)
        .map(|(product, sums)| {
            let bucket = key_hash(&product) % TOP_BUCKETS;
            // Most units first, then by id.
            (bucket, (-sums.0[0], product))
        })
        .reduce_named("TopProductsByBucket", |_bucket, ranked, out| {
            out.extend(
                ranked
                    .iter()
                    .take(TOP_PRODUCTS)
                    .map(|(entry, _)| ((*entry).clone(), 1)),
            );
        })
        .map(|(_, entry)| ((), entry))
        .reduce_named("TopProducts", |_, ranked, out| {
            out.extend(
                ranked
                    .iter()
                    .take(TOP_PRODUCTS)
                    .enumerate()
                    .map(|(rank, (entry, _))| ((rank as i64 + 1, (*entry).clone()), 1)),
            );
        })
        .map(|((), (rank, (units, product)))| {
            MetricRow::new(
                Metric::TopProducts,
                vec![Dim::Int(rank), Dim::Text(product)],
                vec![-units],
            )
        });

    let payments = views.clone().flat_map(|row| match row {
        Row::Payment(payment) => Some(payment),
        _ => None,
    });
    let payment_success = payments
        .clone()
        .explode(|payment| {
            let outcome = match payment.status {
                PaymentStatus::Pending => [0, 0, 0, 1],
                PaymentStatus::Failed if payment.fraud => [0, 0, 1, 0],
                PaymentStatus::Failed => [0, 1, 0, 0],
                PaymentStatus::Succeeded
                | PaymentStatus::PartiallyRefunded
                | PaymentStatus::Refunded => [1, 0, 0, 0],
            };
            let key = (day_of(payment.created_at), payment.card_brand.clone());
            Some((
                key,
                Sums::of(&[1, outcome[0], outcome[1], outcome[2], outcome[3]]),
            ))
        })
        .count()
        .map(|((day, brand), sums)| {
            metric(
                Metric::PaymentSuccess,
                vec![Dim::Day(day), Dim::Text(brand)],
                sums,
            )
        });
    let payment_declines = payments
        .explode(|payment| {
            let code = payment.decline_code.clone();
            let failed = payment.status == PaymentStatus::Failed;
            code.filter(|_| failed)
                .map(|code| ((day_of(payment.created_at), code), Sums::of(&[1])))
        })
        .count()
        .map(|((day, code), sums)| {
            metric(
                Metric::PaymentDeclines,
                vec![Dim::Day(day), Dim::Text(code)],
                sums,
            )
        });

    let conversion_funnel = events
        .clone()
        .explode(|event| {
            let step = match event.body {
                EventBody::CartCreated(_) => 0,
                EventBody::OrderCreated(_) => 1,
                EventBody::OrderConfirmed(_) => 2,
                EventBody::OrderCompleted(_) => 3,
                _ => return None,
            };
            let mut sums = Sums::default();
            sums.0[step] = 1;
            Some((day_of(event.ts), sums))
        })
        .count()
        .map(|(day, sums)| metric(Metric::ConversionFunnel, vec![Dim::Day(day)], sums));

    // Stock available per product. Every product counts once more in the last sum, so
    // a product without any movement still has a level.
    let stocked = events
        .clone()
        .explode(|event| {
            stock_deltas(&event.body)
                .into_iter()
                .map(|(product, measure, delta)| match measure {
                    StockMeasure::OnHand => (product, Sums::of(&[delta, 0, 0])),
                    StockMeasure::Reserved => (product, Sums::of(&[0, delta, 0])),
                })
                .collect::<Vec<_>>()
        })
        .concat(
            views
                .flat_map(|row| match row {
                    Row::Product(product) => Some(product.product_id.clone()),
                    _ => None,
                })
                .explode(|product| Some((product, Sums::of(&[0, 0, 1])))),
        )
        .count()
        .filter(|(_, sums)| sums.0[2] > 0)
        .map(|(product, sums)| (product, crate::catalog::available(sums.0[0], sums.0[1])))
        .arrange_by_key_named("AvailableById")
        .join_core(
            products_by_id.clone(),
            |product, &available, &reorder_point| {
                Some((product.clone(), (available, reorder_point)))
            },
        );
    let low_stock = stocked
        .clone()
        .filter(|(_, (available, reorder_point))| available <= reorder_point)
        .map(|(product, (available, reorder_point))| {
            MetricRow::new(
                Metric::LowStock,
                vec![Dim::Text(product)],
                vec![available, reorder_point],
            )
        });
    let sold_recently = product_days
        .map(|((day, product, _), sums)| (Tick::RecentDay(day), (product, sums.0[0])))
        .semijoin(ticks.clone())
        .explode(|(_, (product, units))| Some((product, Sums::of(&[0, 0, units, 0]))));
    let stock_forecast = stocked
        .explode(|(product, (available, reorder_point))| {
            Some((product, Sums::of(&[available, reorder_point, 0, 1])))
        })
        .concat(sold_recently)
        .count()
        .filter(|(_, sums)| sums.0[3] > 0)
        .map(|(product, sums)| {
            MetricRow::new(
                Metric::StockForecast,
                vec![Dim::Text(product)],
                sums.first(3),
            )
        });

    // Movements per product and day, and each product with today's date.
    let movements = events
        .explode(|event| {
            let day = day_of(event.ts);
            match event.body {
                EventBody::StockAdjusted(StockAdjusted {
                    product_id, delta, ..
                }) => Some((
                    (product_id, day),
                    Sums::of(&[delta.max(0), (-delta).max(0), 0]),
                )),
                EventBody::InventoryDeducted(InventoryDeducted {
                    product_id,
                    quantity,
                    ..
                }) => Some(((product_id, day), Sums::of(&[0, 0, quantity]))),
                _ => None,
            }
        })
        .count()
        .map(|((product, day), sums)| (product, Movement::Day(day, sums)));
    let today = ticks
        .flat_map(|tick| match tick {
            Tick::Today(day) => Some(((), day)),
            _ => None,
        })
        .join_map(
            products_by_id.as_collection(|product, _| ((), product.clone())),
            |(), &today, product| (product.clone(), Movement::Today(today)),
        );
    let inventory = movements
        .concat(today)
        .reduce_named("Inventory", |product, movements, out| {
            inventory_rows(product, movements, out)
        })
        .map(|(_, row)| row);

    let rows = per_minute
        .concatenate([
            sales_per_minute,
            sales_daily,
            product_sales_daily,
            top_products,
            payment_success,
            payment_declines,
            conversion_funnel,
            low_stock,
            stock_forecast,
            inventory,
            anomaly_rows,
        ])
        // Joins may say "+row" and "-row" at one time; readers get each time's net change.
        .consolidate()
        .map(|row| Row::Metric(Arc::new(row)));
    (rows, anomalies)
}

/// The `anomalies` row of an anomaly event.
pub fn anomaly_row(anomaly: &AnomalyDetected) -> MetricRow {
    MetricRow::new(
        Metric::Anomalies,
        vec![
            Dim::Minute(anomaly.minute),
            Dim::Text(anomaly.series.clone()),
        ],
        vec![anomaly.value, anomaly.median, anomaly.lower, anomaly.upper],
    )
}

/// A row of `metric` whose measures are the first sums.
fn metric(metric: Metric, key: Vec<Dim>, sums: Sums) -> MetricRow {
    let measures = sums.first(metric.table().measures.len());
    MetricRow::new(metric, key, measures)
}

/// When an order was paid, if it was.
fn paid_at(order: &OrderRow) -> Option<Ts> {
    order
        .history
        .iter()
        .find(|change| change.status == OrderStatus::Confirmed)
        .map(|change| change.at)
}

/// What an event adds to the per-minute series: `orders`, `orders_last_5m` (the order's
/// minute and the four after it), `payments_succeeded`, `payments_failed`, `fraud_flags`.
fn minute_signals(event: &Event) -> Vec<(Ts, Sums)> {
    let minute = minute_of(event.ts);
    match event.body {
        EventBody::OrderCreated(_) => {
            let mut signals = vec![(minute, Sums::of(&[1, 0]))];
            signals.extend((0..5).map(|later| (minute + later * MINUTE_MS, Sums::of(&[0, 1]))));
            signals
        }
        EventBody::PaymentCompleted(_) => vec![(minute, Sums::of(&[0, 0, 1]))],
        EventBody::PaymentFailed(_) => vec![(minute, Sums::of(&[0, 0, 0, 1]))],
        EventBody::FraudDetected(_) => vec![(minute, Sums::of(&[0, 0, 0, 0, 1]))],
        _ => Vec::new(),
    }
}

/// What the inventory of one product is made of: its movements per day, and today.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
enum Movement {
    Day(i64, Sums),
    Today(i64),
}

/// A product's `inventory_daily` rows and its `inventory_turnover` row.
fn inventory_rows(product: &Str, inputs: &[(&Movement, isize)], out: &mut Vec<(MetricRow, isize)>) {
    let mut today = None;
    let mut days = Vec::new();
    for (input, _) in inputs {
        match input {
            Movement::Day(day, sums) => days.push((*day, *sums)),
            Movement::Today(day) => today = Some(*day),
        }
    }
    // Sorted by `Movement`'s order: days ascending.
    let Some(&(first, _)) = days.first() else {
        return;
    };
    let last = days.last().map(|(day, _)| *day).unwrap_or(first);
    let end = today.unwrap_or(last).max(last);
    let (mut on_hand, mut shipped, mut on_hand_days) = (0, 0, 0);
    for (position, (day, sums)) in days.iter().enumerate() {
        let [received, removed, shipped_today, ..] = sums.0;
        on_hand += received - removed - shipped_today;
        shipped += shipped_today;
        let next = days
            .get(position + 1)
            .map(|(next, _)| *next)
            .unwrap_or(end + 1);
        on_hand_days += on_hand * (next - day);
        out.push((
            MetricRow::new(
                Metric::InventoryDaily,
                vec![Dim::Day(*day), Dim::Text(product.clone())],
                vec![received, removed, shipped_today, on_hand],
            ),
            1,
        ));
    }
    out.push((
        MetricRow::new(
            Metric::InventoryTurnover,
            vec![Dim::Text(product.clone())],
            vec![shipped, end - first + 1, on_hand_days],
        ),
        1,
    ));
}

//! The metric dataflow: every metric view, maintained incrementally.
//!
//! Most metrics are sums. Every event, refusal and read-model row says what it adds to
//! which `Tally` (a metric's key), and one `count_total` keeps all of them: one arrangement
//! and one operator however many metrics there are, so each time of the log costs the
//! metrics a handful of operators, not dozens. A row's retraction takes back what it
//! added. Windows of recent log time are one semijoin of the tallies against the clock's
//! ticks. Stock joins the named `ProductsById` arrangement, refunds `PaymentCurrency`.
//!
//! `top_products` is not ranked here: the read model keeps `product_sales_daily` summed
//! per product in an ordered index and reads the first ten (see `queries::Snapshot`).

use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::events::*;
use crate::model::*;
use crate::views::{
    stock_deltas, OrderRow, PaymentRow, PaymentStatus, Row, StockMeasure, WithTimes,
};

use super::clock::{clock, Tick};
use super::views::*;
use super::Sums;

type Rows<'scope> = VecCollection<'scope, Time, Row, isize>;

/// What one sum of the metrics is kept for: a metric and its key, or an input of a
/// metric computed further on (stock, movements).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Tally {
    /// `orders_per_minute`, by minute.
    Minute(Ts),
    /// `sales_per_minute`, by minute and currency.
    SalesMinute(Ts, Str),
    /// `sales_daily`, by day and currency.
    SalesDay(i64, Str),
    /// `product_sales_daily`, by day, product and currency.
    ProductDay(i64, Str, Str),
    /// `payment_success`, by day and card brand.
    Payments(i64, Str),
    /// `payment_declines`, by day and decline code.
    Declines(i64, Str),
    /// `conversion_funnel`, by day.
    Funnel(i64),
    /// A product's stock on hand, reserved, and whether it is listed.
    Stock(Str),
    /// A product's stock received, removed and shipped in a day.
    Movements(Str, i64),
}

/// Whether the metrics read `row` (the rest of the read models' rows need not reach them).
pub fn reads_row(row: &Row) -> bool {
    matches!(row, Row::Product(_) | Row::Order(_) | Row::Payment(_))
}

/// Every metric view over the events (the anomaly events among them), the refusals and
/// the read models' rows.
pub fn metrics<'scope>(
    events: Stream<'scope, Time, Vec<Event>>,
    rejections: Stream<'scope, Time, Vec<Rejection>>,
    views: Rows<'scope>,
) -> Rows<'scope> {
    // A log batch speaks at its command time and once more a round later (the saga's
    // replies). The metrics take both at the later time, so each of their operators
    // steps once per batch rather than twice. (The engine feeds them at odd times, one
    // per step of theirs, which this leaves as they are.)
    let (events, rejections) = (settle(events), settle(rejections));
    let views = views.delay(|time| time | 1);
    let anomaly_rows = events
        .clone()
        .flat_map(|event: Event| match event.body {
            EventBody::AnomalyDetected(anomaly) => Some(anomaly_row(&anomaly)),
            _ => None,
        })
        .with_times()
        .as_collection();
    let ticks = clock(
        events
            .clone()
            .map(|event| event.ts)
            .concat(rejections.clone().map(|rejection| rejection.ts)),
    );
    let refused = rejections.with_times().as_collection();
    let events = events.with_times().as_collection();

    // Named arrangements: products with their reorder points, payments' currencies.
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
            let sums = Sums::of(&[0, 0, 1, amount, -amount]);
            Some((Tally::SalesDay(day, currency.clone()), sums))
        });

    let tallies = events
        .explode(|event| event_tallies(&event))
        .concat(refused.explode(|rejection: Rejection| {
            let rejected = Sums::of(&[0, 0, 0, 0, 0, 1]);
            Some((Tally::Minute(minute_of(rejection.ts)), rejected))
        }))
        .concat(views.explode(|row| row_tallies(&row)))
        .concat(refunds.explode(Some))
        .count_total();

    // Sums read as they are.
    let sums = tallies.clone().flat_map(|(tally, sums)| {
        let (metric, key) = match tally {
            Tally::SalesDay(day, currency) => {
                (Metric::SalesDaily, vec![Dim::Day(day), Dim::Text(currency)])
            }
            Tally::ProductDay(day, product, currency) => (
                Metric::ProductSalesDaily,
                vec![Dim::Day(day), Dim::Text(product), Dim::Text(currency)],
            ),
            Tally::Payments(day, brand) => (
                Metric::PaymentSuccess,
                vec![Dim::Day(day), Dim::Text(brand)],
            ),
            Tally::Declines(day, code) => (
                Metric::PaymentDeclines,
                vec![Dim::Day(day), Dim::Text(code)],
            ),
            Tally::Funnel(day) => (Metric::ConversionFunnel, vec![Dim::Day(day)]),
            _ => return None,
        };
        Some(metric_row(metric, key, sums))
    });

    // Sums inside a window of log time: the minutes of the last 24 hours, the units of
    // the last days' sales.
    let windowed = tallies
        .clone()
        .flat_map(|(tally, sums)| {
            let tick = match &tally {
                Tally::Minute(minute) | Tally::SalesMinute(minute, _) => Tick::Minute(*minute),
                Tally::ProductDay(day, ..) => Tick::RecentDay(*day),
                _ => return None,
            };
            Some((tick, (tally, sums)))
        })
        .semijoin(ticks.clone())
        .map(|(_, tallied)| tallied);
    let per_minute = windowed.clone().flat_map(|(tally, sums)| match tally {
        Tally::Minute(minute) => Some(metric_row(
            Metric::OrdersPerMinute,
            vec![Dim::Minute(minute)],
            sums,
        )),
        Tally::SalesMinute(minute, currency) => Some(metric_row(
            Metric::SalesPerMinute,
            vec![Dim::Minute(minute), Dim::Text(currency)],
            sums,
        )),
        _ => None,
    });
    let sold_recently = windowed.explode(|(tally, sums)| match tally {
        Tally::ProductDay(_, product, _) => Some((product, Sums::of(&[0, 0, sums.0[0], 0]))),
        _ => None,
    });

    // Stock available per listed product, with its reorder point.
    let stocked = tallies
        .clone()
        .flat_map(|(tally, sums)| match tally {
            Tally::Stock(product) if sums.0[2] > 0 => {
                Some((product, crate::catalog::available(sums.0[0], sums.0[1])))
            }
            _ => None,
        })
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
    let stock_forecast = stocked
        .explode(|(product, (available, reorder_point))| {
            Some((product, Sums::of(&[available, reorder_point, 0, 1])))
        })
        .concat(sold_recently)
        .count_total()
        .filter(|(_, sums)| sums.0[3] > 0)
        .map(|(product, sums)| {
            MetricRow::new(
                Metric::StockForecast,
                vec![Dim::Text(product)],
                sums.first(3),
            )
        });

    // Movements per product and day, and each product with today's date.
    let movements = tallies.flat_map(|(tally, sums)| match tally {
        Tally::Movements(product, day) => Some((product, Movement::Day(day, sums))),
        _ => None,
    });
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

    // A row may be said and unsaid at one time (a join's output, as both its inputs
    // change): the read model adds up each time's diffs before it applies them.
    sums.concatenate([
        per_minute,
        low_stock,
        stock_forecast,
        inventory,
        anomaly_rows,
    ])
    .map(|row| Row::Metric(Arc::new(row)))
}

/// `stream` with each batch's times moved to its later one (`time | 1`).
fn settle<'scope, D: Clone + 'static>(
    stream: Stream<'scope, Time, Vec<D>>,
) -> Stream<'scope, Time, Vec<D>> {
    stream.unary(Pipeline, "Settle", |_capability, _info| {
        move |input, output| {
            input.for_each(|capability, data| {
                let Some(time) = capability.least().copied() else {
                    return;
                };
                let later = capability.delayed(&(time | 1), output.output_index());
                output.session(&later).give_container(data);
            });
        }
    })
}

/// What an event adds to the tallies.
fn event_tallies(event: &Event) -> Vec<(Tally, Sums)> {
    let minute = minute_of(event.ts);
    let day = day_of(event.ts);
    let funnel = |step: usize| {
        let mut sums = Sums::default();
        sums.0[step] = 1;
        (Tally::Funnel(day), sums)
    };
    let mut tallies = match &event.body {
        // The order's minute, and the 5-minute windows ending in it and the four after.
        EventBody::OrderCreated(_) => {
            let mut tallies = vec![funnel(1), (Tally::Minute(minute), Sums::of(&[1, 0]))];
            tallies.extend(
                (0..5).map(|later| (Tally::Minute(minute + later * MINUTE_MS), Sums::of(&[0, 1]))),
            );
            tallies
        }
        EventBody::PaymentCompleted(_) => {
            vec![(Tally::Minute(minute), Sums::of(&[0, 0, 1]))]
        }
        EventBody::PaymentFailed(_) => vec![(Tally::Minute(minute), Sums::of(&[0, 0, 0, 1]))],
        EventBody::FraudDetected(_) => {
            vec![(Tally::Minute(minute), Sums::of(&[0, 0, 0, 0, 1]))]
        }
        EventBody::CartCreated(_) => vec![funnel(0)],
        EventBody::OrderConfirmed(_) => vec![funnel(2)],
        EventBody::OrderCompleted(_) => vec![funnel(3)],
        EventBody::StockAdjusted(StockAdjusted {
            product_id, delta, ..
        }) => {
            let moved = Sums::of(&[(*delta).max(0), (-*delta).max(0), 0]);
            vec![(Tally::Movements(product_id.clone(), day), moved)]
        }
        EventBody::InventoryDeducted(InventoryDeducted {
            product_id,
            quantity,
            ..
        }) => {
            let shipped = Sums::of(&[0, 0, *quantity]);
            vec![(Tally::Movements(product_id.clone(), day), shipped)]
        }
        _ => Vec::new(),
    };
    tallies.extend(
        stock_deltas(&event.body)
            .into_iter()
            .map(|(product, measure, delta)| {
                let sums = match measure {
                    StockMeasure::OnHand => Sums::of(&[delta, 0, 0]),
                    StockMeasure::Reserved => Sums::of(&[0, delta, 0]),
                };
                (Tally::Stock(product), sums)
            }),
    );
    tallies
}

/// What a read model's row adds to the tallies: a listed product, a paid order, a
/// payment.
fn row_tallies(row: &Row) -> Vec<(Tally, Sums)> {
    match row {
        // Every product counts once, so a product without any movement has a level.
        Row::Product(product) => {
            vec![(
                Tally::Stock(product.product_id.clone()),
                Sums::of(&[0, 0, 1]),
            )]
        }
        Row::Order(order) => paid_order_tallies(order),
        Row::Payment(payment) => payment_tallies(payment),
        _ => Vec::new(),
    }
}

/// A paid order's revenue in its minute and day of payment, and its lines' units and
/// revenue per product.
fn paid_order_tallies(order: &OrderRow) -> Vec<(Tally, Sums)> {
    let Some(at) = paid_at(order) else {
        return Vec::new();
    };
    let (day, currency, total) = (day_of(at), &order.currency, order.total_cents);
    let mut tallies = vec![
        (
            Tally::SalesMinute(minute_of(at), currency.clone()),
            Sums::of(&[1, total]),
        ),
        (
            Tally::SalesDay(day, currency.clone()),
            Sums::of(&[1, total, 0, 0, total]),
        ),
    ];
    tallies.extend(order.lines.iter().map(|line| {
        let key = Tally::ProductDay(day, line.product_id.clone(), line.currency.clone());
        let revenue = line.quantity * line.unit_price_cents;
        (key, Sums::of(&[line.quantity, revenue]))
    }));
    tallies
}

/// A payment in its day's outcomes, and its decline if it failed with a code.
fn payment_tallies(payment: &PaymentRow) -> Vec<(Tally, Sums)> {
    let day = day_of(payment.created_at);
    let outcome = match payment.status {
        PaymentStatus::Pending => 4,
        PaymentStatus::Failed if payment.fraud => 3,
        PaymentStatus::Failed => 2,
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded => 1,
    };
    let mut sums = Sums::of(&[1]);
    sums.0[outcome] = 1;
    let mut tallies = vec![(Tally::Payments(day, payment.card_brand.clone()), sums)];
    if payment.status == PaymentStatus::Failed {
        if let Some(code) = &payment.decline_code {
            tallies.push((Tally::Declines(day, code.clone()), Sums::of(&[1])));
        }
    }
    tallies
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
fn metric_row(metric: Metric, key: Vec<Dim>, sums: Sums) -> MetricRow {
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

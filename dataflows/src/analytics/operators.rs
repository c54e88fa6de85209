//! The metric dataflow: every metric view, maintained incrementally.
//!
//! Most metrics are sums. Every event, refusal and read-model row says what it adds to
//! which `Tally` (a metric's key), and one `count_total` keeps all of them: one arrangement
//! and one operator however many metrics there are, so each time of the log costs the
//! metrics a handful of operators, not dozens. One operator reads every input once and
//! sums each time's tallies before they are exchanged (`read`). A row's retraction takes
//! back what it added. Windows of recent log time are one semijoin of the tallies against
//! the clock's ticks. Stock joins the named `ProductsById` arrangement.
//!
//! `top_products` is not ranked here: the read model keeps `product_sales_daily` summed
//! per product in an ordered index and reads the first ten (see `queries::Snapshot`).

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::events::*;
use crate::model::*;
use crate::views::{
    stock_deltas, OrderRow, PaymentRow, PaymentStatus, RefundStatus, Row, StockMeasure,
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
    let facts = read(
        events
            .map(Input::Event)
            .concat(rejections.map(Input::Rejection))
            .concat(
                views
                    .inner
                    .map(|(row, time, diff)| Input::Row(row, time, diff)),
            ),
    );
    let anomaly_rows = facts
        .clone()
        .flat_map(|(fact, time)| match fact {
            Fact::Anomaly(row) => Some((row, time, 1)),
            _ => None,
        })
        .as_collection();
    let ticks = clock(facts.clone().flat_map(|(fact, _)| match fact {
        Fact::Newest(ts) => Some(ts),
        _ => None,
    }));
    // Named arrangement: products with their reorder points.
    let products_by_id = facts
        .clone()
        .flat_map(|(fact, time)| match fact {
            Fact::Product(product, reorder_point, diff) => {
                Some(((product, reorder_point), time, diff))
            }
            _ => None,
        })
        .as_collection()
        .arrange_by_key_named("ProductsById");

    let tallies = facts
        .flat_map(|(fact, time)| match fact {
            Fact::Tally(tally, sums) => Some((tally, time, sums)),
            _ => None,
        })
        .as_collection()
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

/// One input of the metrics: an event, a refusal, or a change of a read model's row.
enum Input {
    Event(Event),
    Rejection(Rejection),
    Row(Row, Time, isize),
}

/// What the metrics take from their inputs.
#[derive(Clone, Debug)]
enum Fact {
    /// What one time's inputs on this worker add to a tally, summed.
    Tally(Tally, Sums),
    /// The newest log time among one time's events and refusals on this worker: what the
    /// clock reads.
    Newest(Ts),
    /// A listed product and its reorder point, with its row's diff.
    Product(Str, i64, isize),
    /// An anomaly event's row.
    Anomaly(MetricRow),
}

/// Reads every input once, into facts. What a time's inputs add to each tally is summed
/// here, on the worker that read them, before it crosses to the worker that keeps the
/// tally: `count_total` then takes one update per tally, time and worker instead of one
/// per event and row, which is most of what the metrics would cost.
///
/// A log batch speaks at its command time and once more a round later (the saga's
/// replies). The metrics take both at the later time (`time | 1`), so that each of their
/// operators steps once per batch. (The engine feeds them at odd times already.)
fn read<'scope>(
    inputs: Stream<'scope, Time, Vec<Input>>,
) -> Stream<'scope, Time, Vec<(Fact, Time)>> {
    inputs.unary_frontier(Pipeline, "ReadFacts", |_capability, _info| {
        let mut pending: BTreeMap<Time, (Capability<Time>, Pending)> = BTreeMap::new();
        move |(input, frontier), output| {
            input.for_each(|capability, data| {
                let Some(&stamp) = capability.least() else {
                    return;
                };
                for input in data.drain(..) {
                    let at = match &input {
                        Input::Row(_, time, _) => *time,
                        _ => stamp,
                    } | 1;
                    let (_, read) = pending.entry(at).or_insert_with(|| {
                        let held = capability.delayed(&at, output.output_index());
                        (held, Pending::default())
                    });
                    read.take(input);
                }
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.frontier().less_equal(entry.key()) {
                    break;
                }
                let (time, (capability, read)) = entry.remove_entry();
                output
                    .session(&capability)
                    .give_iterator(read.into_facts().map(|fact| (fact, time)));
            }
        }
    })
}

/// What one time's inputs said, until the time is complete.
#[derive(Default)]
struct Pending {
    tallies: BTreeMap<Tally, Sums>,
    newest: Option<Ts>,
    facts: Vec<Fact>,
}

impl Pending {
    fn take(&mut self, input: Input) {
        match input {
            Input::Event(event) => {
                self.stamp(event.ts);
                if let EventBody::AnomalyDetected(anomaly) = &event.body {
                    self.facts.push(Fact::Anomaly(anomaly_row(anomaly)));
                }
                for (tally, sums) in event_tallies(&event) {
                    self.add(tally, sums);
                }
            }
            Input::Rejection(rejection) => {
                self.stamp(rejection.ts);
                let rejected = Sums::of(&[0, 0, 0, 0, 0, 1]);
                self.add(Tally::Minute(minute_of(rejection.ts)), rejected);
            }
            Input::Row(row, _, diff) => {
                if let Row::Product(product) = &row {
                    let (id, reorder_point) = (product.product_id.clone(), product.reorder_point);
                    self.facts.push(Fact::Product(id, reorder_point, diff));
                }
                for (tally, sums) in row_tallies(&row) {
                    self.add(tally, sums.multiply(&diff));
                }
            }
        }
    }

    fn stamp(&mut self, ts: Ts) {
        self.newest = self.newest.max(Some(ts));
    }

    fn add(&mut self, tally: Tally, sums: Sums) {
        self.tallies.entry(tally).or_default().plus_equals(&sums);
    }

    fn into_facts(self) -> impl Iterator<Item = Fact> {
        let tallies = (self.tallies.into_iter())
            .filter(|(_, sums)| !sums.is_zero())
            .map(|(tally, sums)| Fact::Tally(tally, sums));
        (self.newest.map(Fact::Newest).into_iter())
            .chain(tallies)
            .chain(self.facts)
    }
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

/// A payment in its day's outcomes, its decline if it failed with a code, and its
/// refunds.
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
    // Refunds paid back, on the day they were, in the payment's currency.
    tallies.extend(payment.refunds.iter().filter_map(|refund| {
        let at = refund
            .settled_at
            .filter(|_| refund.status == RefundStatus::Succeeded)?;
        let amount = refund.amount_cents;
        let refunded = Sums::of(&[0, 0, 1, amount, -amount]);
        Some((
            Tally::SalesDay(day_of(at), payment.currency.clone()),
            refunded,
        ))
    }));
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

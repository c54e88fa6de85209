//! Key figures at a glance, read from the metric views of one snapshot: orders per
//! minute, average order value, payment success and inventory turnover, now and over the
//! last hour of log time.

use std::collections::BTreeMap;

use dataflows::analytics::{day_of, minute_of, Dim, Metric, MetricRow, MINUTE_MS};
use dataflows::model::{log_ts, Str, Ts};
use serde::Serialize;

use crate::snapshot::Snapshot;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kpis {
    /// The log time the figures are as of: the newest command applied.
    pub as_of: Ts,
    pub orders_per_minute: OrderRate,
    /// By currency.
    pub average_order_cents: BTreeMap<Str, Average>,
    pub payment_success_rate: SuccessRate,
    pub inventory_turnover: Turnover,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OrderRate {
    /// Orders placed in the current minute (so far).
    pub current_minute: i64,
    /// Orders per minute over the last 5 minutes and the last hour.
    pub last_5m: f64,
    pub last_hour: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Average {
    pub today: Option<f64>,
    pub last_hour: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SuccessRate {
    /// Of the charges asked for today, those succeeded over those decided.
    pub today: Option<f64>,
    /// Of the charges decided in the last hour, those that succeeded.
    pub last_hour: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Turnover {
    /// Units shipped over average units on hand, all products together.
    pub overall: Option<f64>,
    pub products: usize,
}

fn ratio(numerator: i64, denominator: i64) -> Option<f64> {
    (denominator != 0).then(|| numerator as f64 / denominator as f64)
}

fn minute_key(row: &MetricRow) -> Ts {
    match row.key.first() {
        Some(Dim::Minute(minute)) => *minute,
        _ => 0,
    }
}

impl Snapshot {
    /// The key figures as of this snapshot.
    pub fn kpis(&self) -> Kpis {
        let as_of = log_ts(self.frontier.saturating_sub(1));
        let now = minute_of(as_of);
        let hour_start = now.saturating_sub(59 * MINUTE_MS);
        let today = day_of(as_of);
        let measure = |row: &MetricRow, name: &str| row.measure(name).unwrap_or(0);

        let minutes = self.metric(Metric::OrdersPerMinute);
        let last_hour: Vec<&MetricRow> = minutes
            .values()
            .filter(|row| (hour_start..=now).contains(&minute_key(row)))
            .collect();
        let current = minutes.values().rev().find(|row| minute_key(row) == now);
        let hour_sum = |name: &str| -> i64 { last_hour.iter().map(|row| measure(row, name)).sum() };
        let orders_per_minute = OrderRate {
            current_minute: current.map_or(0, |row| measure(row, "orders")),
            last_5m: current.map_or(0, |row| measure(row, "orders_last_5m")) as f64 / 5.0,
            last_hour: hour_sum("orders") as f64 / 60.0,
        };

        let mut averages: BTreeMap<Str, ([i64; 2], [i64; 2])> = BTreeMap::new();
        for row in self.metric(Metric::SalesDaily).values() {
            if let [Dim::Day(day), Dim::Text(currency)] = &*row.key {
                if *day == today {
                    let entry = averages.entry(currency.clone()).or_default();
                    entry.0[0] += measure(row, "orders");
                    entry.0[1] += measure(row, "revenue_cents");
                }
            }
        }
        for row in self.metric(Metric::SalesPerMinute).values() {
            if let [Dim::Minute(minute), Dim::Text(currency)] = &*row.key {
                if (hour_start..=now).contains(minute) {
                    let entry = averages.entry(currency.clone()).or_default();
                    entry.1[0] += measure(row, "orders");
                    entry.1[1] += measure(row, "revenue_cents");
                }
            }
        }
        let average_order_cents = averages
            .into_iter()
            .map(|(currency, (today, hour))| {
                let average = Average {
                    today: ratio(today[1], today[0]),
                    last_hour: ratio(hour[1], hour[0]),
                };
                (currency, average)
            })
            .collect();

        let (mut succeeded, mut decided) = (0, 0);
        for row in self.metric(Metric::PaymentSuccess).values() {
            if matches!(row.key.first(), Some(Dim::Day(day)) if *day == today) {
                succeeded += measure(row, "succeeded");
                decided += measure(row, "succeeded")
                    + measure(row, "declined")
                    + measure(row, "fraudulent");
            }
        }
        let hour_succeeded = hour_sum("payments_succeeded");
        let payment_success_rate = SuccessRate {
            today: ratio(succeeded, decided),
            last_hour: ratio(hour_succeeded, hour_succeeded + hour_sum("payments_failed")),
        };

        let turnovers = self.metric(Metric::InventoryTurnover);
        let (mut shipped, mut average_on_hand) = (0.0, 0.0);
        for row in turnovers.values() {
            shipped += measure(row, "units_shipped") as f64;
            let days = measure(row, "days");
            if days > 0 {
                average_on_hand += measure(row, "on_hand_day_sum") as f64 / days as f64;
            }
        }
        let inventory_turnover = Turnover {
            overall: (average_on_hand > 0.0).then(|| shipped / average_on_hand),
            products: turnovers.len(),
        };

        Kpis {
            as_of,
            orders_per_minute,
            average_order_cents,
            payment_success_rate,
            inventory_turnover,
        }
    }
}

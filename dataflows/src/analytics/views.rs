//! Metric views: every metric is a table of rows, each row a key (a window of log time,
//! a product, a currency, …) and integer measures. Ratios (success rates, averages,
//! turnover, days until stock-out) are derived from the measures when a row is read, so
//! the dataflow only ever adds and subtracts integers.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::model::{Str, Ts};

/// The metric views, each a table for SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    OrdersPerMinute,
    SalesPerMinute,
    SalesDaily,
    ProductSalesDaily,
    TopProducts,
    PaymentSuccess,
    PaymentDeclines,
    ConversionFunnel,
    StockForecast,
    LowStock,
    InventoryDaily,
    InventoryTurnover,
    Anomalies,
}

/// What a key column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// The start of a minute of log time.
    Minute,
    /// A day of log time (UTC).
    Day,
    Text,
    Int,
}

/// A measure computed from a row's integer measures when it is read.
#[derive(Clone, Copy, Debug)]
pub struct Derived {
    pub name: &'static str,
    /// `None` where the ratio is undefined (nothing to divide by).
    pub compute: fn(&[i64]) -> Option<f64>,
}

/// A metric's columns: its key, its integer measures, then its derived measures.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub description: &'static str,
    pub keys: &'static [(&'static str, KeyType)],
    pub measures: &'static [&'static str],
    pub derived: &'static [Derived],
}

/// How many days of sales make a product's recent sales velocity.
pub const VELOCITY_DAYS: i64 = 7;
/// How much log time per-minute series keep in the live view (older minutes are in the
/// history).
pub const MINUTES_KEPT: i64 = 24 * 60;
/// How many products `top_products` ranks.
pub const TOP_PRODUCTS: usize = 10;

fn ratio(numerator: i64, denominator: i64) -> Option<f64> {
    (denominator != 0).then(|| numerator as f64 / denominator as f64)
}

use KeyType::*;

impl Metric {
    pub const ALL: [Metric; 13] = [
        Metric::OrdersPerMinute,
        Metric::SalesPerMinute,
        Metric::SalesDaily,
        Metric::ProductSalesDaily,
        Metric::TopProducts,
        Metric::PaymentSuccess,
        Metric::PaymentDeclines,
        Metric::ConversionFunnel,
        Metric::StockForecast,
        Metric::LowStock,
        Metric::InventoryDaily,
        Metric::InventoryTurnover,
        Metric::Anomalies,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        self.table().name
    }

    /// The metric's table: its name, what a row is, and its columns.
    pub fn table(self) -> &'static Table {
        match self {
            Metric::OrdersPerMinute => &Table {
                name: "orders_per_minute",
                description: "Orders placed per minute of log time (tumbling), over the 5 minutes \
                    ending with it (sliding), and the minute's payments succeeded and failed, \
                    fraud flags and refused commands. The last 24 hours.",
                keys: &[("minute", Minute)],
                measures: &[
                    "orders",
                    "orders_last_5m",
                    "payments_succeeded",
                    "payments_failed",
                    "fraud_flags",
                    "rejections",
                ],
                derived: &[],
            },
            Metric::SalesPerMinute => &Table {
                name: "sales_per_minute",
                description: "Paid orders and their revenue per minute of payment and currency, \
                    with the average order value. The last 24 hours.",
                keys: &[("minute", Minute), ("currency", Text)],
                measures: &["orders", "revenue_cents"],
                derived: &[Derived {
                    name: "average_order_cents",
                    compute: |m| ratio(m[1], m[0]),
                }],
            },
            Metric::SalesDaily => &Table {
                name: "sales_daily",
                description: "Paid orders and their revenue per day and currency (the day of \
                    payment), refunds paid back that day, and the average order value.",
                keys: &[("day", Day), ("currency", Text)],
                measures: &[
                    "orders",
                    "revenue_cents",
                    "refunds",
                    "refunded_cents",
                    "net_revenue_cents",
                ],
                derived: &[Derived {
                    name: "average_order_cents",
                    compute: |m| ratio(m[1], m[0]),
                }],
            },
            Metric::ProductSalesDaily => &Table {
                name: "product_sales_daily",
                description: "Units and revenue of each product in paid orders, per day of \
                    payment and currency.",
                keys: &[("day", Day), ("product_id", Text), ("currency", Text)],
                measures: &["units", "revenue_cents"],
                derived: &[],
            },
            Metric::TopProducts => &Table {
                name: "top_products",
                description: "The ten products with the most units in paid orders, best first \
                    (ties by product id).",
                keys: &[("rank", Int), ("product_id", Text)],
                measures: &["units"],
                derived: &[],
            },
            Metric::PaymentSuccess => &Table {
                name: "payment_success",
                description: "Charges per day they were asked for and card brand, by outcome; \
                    the success rate is of those decided.",
                keys: &[("day", Day), ("card_brand", Text)],
                measures: &["attempts", "succeeded", "declined", "fraudulent", "pending"],
                derived: &[Derived {
                    name: "success_rate",
                    compute: |m| ratio(m[1], m[1] + m[2] + m[3]),
                }],
            },
            Metric::PaymentDeclines => &Table {
                name: "payment_declines",
                description: "Refused charges per day they were asked for and decline code.",
                keys: &[("day", Day), ("decline_code", Text)],
                measures: &["payments"],
                derived: &[],
            },
            Metric::ConversionFunnel => &Table {
                name: "conversion_funnel",
                description: "Per day: carts created, orders placed, orders paid, orders \
                    completed, and the rate of each step to the one before.",
                keys: &[("day", Day)],
                measures: &[
                    "carts_created",
                    "orders_placed",
                    "orders_paid",
                    "orders_completed",
                ],
                derived: &[
                    Derived {
                        name: "cart_to_order_rate",
                        compute: |m| ratio(m[1], m[0]),
                    },
                    Derived {
                        name: "order_to_paid_rate",
                        compute: |m| ratio(m[2], m[1]),
                    },
                    Derived {
                        name: "paid_to_completed_rate",
                        compute: |m| ratio(m[3], m[2]),
                    },
                ],
            },
            Metric::StockForecast => &Table {
                name: "stock_forecast",
                description: "Each product's available stock, its units in paid orders over the \
                    last 7 days of log time, and the days until it runs out at that pace.",
                keys: &[("product_id", Text)],
                measures: &["available", "reorder_point", "units_sold_7d"],
                derived: &[
                    Derived {
                        name: "daily_velocity",
                        compute: |m| ratio(m[2], VELOCITY_DAYS),
                    },
                    Derived {
                        name: "days_until_stockout",
                        compute: |m| days_until_stockout(m[0], m[2]),
                    },
                ],
            },
            Metric::LowStock => &Table {
                name: "low_stock",
                description: "Products whose available stock is at or below their reorder point.",
                keys: &[("product_id", Text)],
                measures: &["available", "reorder_point"],
                derived: &[],
            },
            Metric::InventoryDaily => &Table {
                name: "inventory_daily",
                description: "Each product's stock movements per day: units received, removed \
                    by adjustments, shipped with orders, and the units on hand at the day's end.",
                keys: &[("day", Day), ("product_id", Text)],
                measures: &["received", "removed", "shipped", "closing_on_hand"],
                derived: &[],
            },
            Metric::InventoryTurnover => &Table {
                name: "inventory_turnover",
                description: "Units shipped over average units on hand, from a product's first \
                    stock movement to today (log time), averaging each day's closing stock.",
                keys: &[("product_id", Text)],
                measures: &["units_shipped", "days", "on_hand_day_sum"],
                derived: &[
                    Derived {
                        name: "average_on_hand",
                        compute: |m| ratio(m[2], m[1]),
                    },
                    Derived {
                        name: "turnover",
                        // Units shipped over (on-hand day sum / days).
                        compute: |m| (m[2] != 0).then(|| m[0] as f64 * m[1] as f64 / m[2] as f64),
                    },
                ],
            },
            Metric::Anomalies => &Table {
                name: "anomalies",
                description: "Minutes a per-minute series (orders, payments_failed, fraud_flags, \
                    rejections) left its band: the median of the 30 minutes before it, plus or \
                    minus four median absolute deviations (at least 3 + 3 x sqrt(median)). \
                    Each is also an `analytics.anomaly` event.",
                keys: &[("minute", Minute), ("series", Text)],
                measures: &["value", "median", "lower", "upper"],
                derived: &[],
            },
        }
    }
}

/// Days until `available` units run out selling `units` every `VELOCITY_DAYS`; `None`
/// when nothing sold.
pub fn days_until_stockout(available: i64, units: i64) -> Option<f64> {
    (units > 0).then(|| available.max(0) as f64 * VELOCITY_DAYS as f64 / units as f64)
}

/// A value of a key column.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// Log milliseconds at the start of a minute.
    Minute(Ts),
    /// Days since the Unix epoch.
    Day(i64),
    Text(Str),
    Int(i64),
}

/// A row of one metric view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricRow {
    pub metric: Metric,
    /// The key, encoded so that ids sort as the keys do: the row's id in its view.
    pub id: Str,
    pub key: Box<[Dim]>,
    pub measures: Box<[i64]>,
}

impl MetricRow {
    pub fn new(metric: Metric, key: Vec<Dim>, measures: Vec<i64>) -> MetricRow {
        debug_assert_eq!(key.len(), metric.table().keys.len());
        debug_assert_eq!(measures.len(), metric.table().measures.len());
        let mut id = String::new();
        for (position, dim) in key.iter().enumerate() {
            if position > 0 {
                id.push('\u{1f}');
            }
            // Numbers fixed-width (and offset so negatives sort first): ids sort as keys.
            match dim {
                Dim::Minute(ts) => write!(id, "{ts:020}"),
                Dim::Day(day) | Dim::Int(day) => {
                    write!(id, "{:020}", (*day as i128 - i64::MIN as i128) as u64)
                }
                Dim::Text(text) => write!(id, "{text}"),
            }
            .expect("writing to a string");
        }
        MetricRow {
            metric,
            id: id.into(),
            key: key.into(),
            measures: measures.into(),
        }
    }

    /// The measure named `name`.
    pub fn measure(&self, name: &str) -> Option<i64> {
        let position = self
            .metric
            .table()
            .measures
            .iter()
            .position(|m| *m == name)?;
        self.measures.get(position).copied()
    }

    /// Every derived measure of the row, in table order.
    pub fn derived(&self) -> impl Iterator<Item = (&'static str, Option<f64>)> + '_ {
        self.metric
            .table()
            .derived
            .iter()
            .map(|derived| (derived.name, (derived.compute)(&self.measures)))
    }
}

pub const MINUTE_MS: Ts = 60_000;
pub const DAY_MS: Ts = 86_400_000;

/// The start of the minute of log time `ts` falls in.
pub fn minute_of(ts: Ts) -> Ts {
    ts - ts % MINUTE_MS
}

/// The day (since the Unix epoch, UTC) of log time `ts`.
pub fn day_of(ts: Ts) -> i64 {
    (ts / DAY_MS) as i64
}

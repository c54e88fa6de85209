//! The metric views on a worked example: what a shop's first day reads as, and how the
//! windows of log time move on as the days pass.

use dataflows::analytics::{day_of, minute_of, Dim, Metric};
use dataflows::events::Event;
use dataflows::model::*;
use queries::testkit::Harness;

use super::{order, product};

/// One metric as lines of text, `key key: measure measure`, in key order. Days and
/// minutes are counted from the harness's first log time.
fn table(h: &Harness, metric: Metric) -> Vec<String> {
    let start = 1_700_000_000_000;
    h.store
        .read()
        .metric(metric)
        .values()
        .map(|row| {
            let key: Vec<String> = row
                .key
                .iter()
                .map(|dim| match dim {
                    Dim::Minute(minute) => format!("m{}", (minute - minute_of(start)) / 60_000),
                    Dim::Day(day) => format!("d{}", day - day_of(start)),
                    Dim::Text(text) => text.to_string(),
                    Dim::Int(n) => n.to_string(),
                })
                .collect();
            let measures: Vec<String> = row.measures.iter().map(i64::to_string).collect();
            format!("{}: {}", key.join(" "), measures.join(" "))
        })
        .collect()
}

fn pay(order_id: &str, outcome: PaymentOutcome) -> Command {
    Command::PaymentResult {
        payment_id: payment_id_for(order_id),
        order_id: order_id.into(),
        outcome,
    }
}

fn approved() -> PaymentOutcome {
    PaymentOutcome::Approved {
        charge_id: "ch".into(),
    }
}

/// Three orders: one paid, shipped and delivered, one declined, one refused as fraud.
fn first_day(workers: usize) -> Harness {
    let mut h = Harness::new(workers);
    h.batch(vec![product("p0", 4), product("p1", 4)]);
    h.batch(vec![
        order("o1", &[("p0", 2)], true),
        order("o2", &[("p1", 1)], true),
        order("o3", &[("p0", 1)], true),
    ]);
    h.batch(vec![
        pay("o1", approved()),
        pay(
            "o2",
            PaymentOutcome::Declined {
                decline_code: "card_declined".into(),
            },
        ),
        pay(
            "o3",
            PaymentOutcome::Fraud {
                decline_code: "fraudulent".into(),
            },
        ),
    ]);
    h.batch(vec![Command::ShipmentDispatched {
        shipment_id: shipment_id_for("o1"),
        order_id: "o1".into(),
        carrier: "c".into(),
        tracking_number: "t".into(),
    }]);
    h.batch(vec![
        Command::ShipmentDelivered {
            shipment_id: shipment_id_for("o1"),
            order_id: "o1".into(),
        },
        Command::AdjustStock {
            product_id: "p0".into(),
            delta: -1,
            reason: "damaged".into(),
        },
        // Refused: no such order.
        Command::CancelOrder {
            order_id: "nope".into(),
            reason: CancelReason::CustomerRequest,
        },
    ]);
    h
}

#[test]
fn a_first_day_of_trade_reads_as_expected() {
    for workers in [1, 4] {
        let h = first_day(workers);
        let t = |metric| table(&h, metric);
        // orders, orders_last_5m, payments succeeded and failed, fraud flags, rejections.
        // The sliding window carries the orders into the next minutes only once the log
        // reaches them.
        assert_eq!(
            t(Metric::OrdersPerMinute),
            ["m0: 3 3 1 2 1 1"],
            "{workers} workers"
        );
        // orders, revenue_cents
        assert_eq!(t(Metric::SalesPerMinute), ["m0 USD: 1 2000"]);
        // orders, revenue_cents, refunds, refunded_cents, net_revenue_cents
        assert_eq!(t(Metric::SalesDaily), ["d0 USD: 1 2000 0 0 2000"]);
        assert_eq!(t(Metric::ProductSalesDaily), ["d0 p0 USD: 2 2000"]);
        assert_eq!(t(Metric::TopProducts), ["1 p0: 2"]);
        // attempts, succeeded, declined, fraudulent, pending
        assert_eq!(t(Metric::PaymentSuccess), ["d0 visa: 3 1 1 1 0"]);
        assert_eq!(
            t(Metric::PaymentDeclines),
            ["d0 card_declined: 1", "d0 fraudulent: 1"]
        );
        // carts, placed, paid, completed
        assert_eq!(t(Metric::ConversionFunnel), ["d0: 0 3 1 1"]);
        // available, reorder point, units sold in the last 7 days
        assert_eq!(t(Metric::StockForecast), ["p0: 1 1 2", "p1: 4 1 0"]);
        assert_eq!(t(Metric::LowStock), ["p0: 1 1"]);
        // received, removed, shipped, closing on hand
        assert_eq!(
            t(Metric::InventoryDaily),
            ["d0 p0: 4 1 2 1", "d0 p1: 4 0 0 4"]
        );
        // units shipped, days, on-hand day sum
        assert_eq!(t(Metric::InventoryTurnover), ["p0: 2 1 1", "p1: 0 1 4"]);

        let snapshot = h.store.read();
        let p0 = snapshot
            .metric(Metric::StockForecast)
            .values()
            .next()
            .unwrap();
        let derived: Vec<_> = p0.derived().collect();
        assert_eq!(
            derived,
            [
                ("daily_velocity", Some(2.0 / 7.0)),
                ("days_until_stockout", Some(3.5))
            ]
        );
        let visa = snapshot
            .metric(Metric::PaymentSuccess)
            .values()
            .next()
            .unwrap();
        assert_eq!(
            visa.derived().next(),
            Some(("success_rate", Some(1.0 / 3.0)))
        );
    }
}

#[test]
fn windows_move_with_log_time() {
    let mut h = first_day(2);
    // Two minutes on: the orders are still in the sliding window of minute 2.
    h.append(
        120_000,
        vec![Envelope::new(order("o4", &[("p1", 1)], false))],
    );
    assert_eq!(
        table(&h, Metric::OrdersPerMinute),
        ["m0: 3 3 1 2 1 1", "m1: 0 3 0 0 0 0", "m2: 1 4 0 0 0 0"]
    );
    // A day and a refund later: yesterday's minutes are gone from the live view, the
    // refund counts on its own day, and turnover averages over both days.
    h.append(
        86_400_000 + 600_000,
        vec![Envelope::new(Command::RequestRefund {
            payment_id: payment_id_for("o1"),
            order_id: "o1".into(),
            amount_cents: Some(500),
            reason: "r".into(),
        })],
    );
    let refund_id = h
        .store
        .read()
        .effects
        .values()
        .find_map(|effect| match effect {
            dataflows::views::EffectRow::Refund { refund_id, .. } => Some(refund_id.clone()),
            _ => None,
        });
    let refund_id = refund_id.expect("a refund is awaited");
    h.batch(vec![Command::RefundResult {
        refund_id,
        payment_id: payment_id_for("o1"),
        order_id: "o1".into(),
        succeeded: true,
    }]);
    assert_eq!(table(&h, Metric::OrdersPerMinute), Vec::<String>::new());
    assert_eq!(table(&h, Metric::SalesPerMinute), Vec::<String>::new());
    assert_eq!(
        table(&h, Metric::SalesDaily),
        ["d0 USD: 1 2000 0 0 2000", "d1 USD: 0 0 1 500 -500"]
    );
    assert_eq!(
        table(&h, Metric::InventoryTurnover),
        ["p0: 2 2 2", "p1: 0 2 8"]
    );
    // Eight days on, last week's sales no longer make a velocity.
    h.append(8 * 86_400_000, vec![Envelope::new(product("p2", 1))]);
    assert_eq!(
        table(&h, Metric::StockForecast),
        ["p0: 1 1 0", "p1: 3 1 0", "p2: 1 1 0"]
    );
}

/// Forty quiet minutes of two orders each, then a burst: the burst's minute is judged
/// once the log is past it, becomes an `analytics.anomaly` event and an `anomalies` row,
/// and the same on one worker and on four.
#[test]
fn a_burst_of_orders_is_an_anomaly() {
    let mut runs = Vec::new();
    for workers in [1, 4] {
        let mut h = Harness::new(workers);
        h.batch(vec![product("p0", 100_000)]);
        let mut next = 0;
        let mut orders = |h: &mut Harness, jump: Ts, count: usize| {
            let batch = (0..count)
                .map(|_| {
                    next += 1;
                    Envelope::new(order(&format!("o{next}"), &[("p0", 1)], false))
                })
                .collect();
            h.append(jump, batch);
        };
        for _ in 0..40 {
            orders(&mut h, 60_000, 2);
        }
        assert!(
            table(&h, Metric::Anomalies).is_empty(),
            "steady is not news"
        );
        orders(&mut h, 60_000, 20);
        assert!(
            table(&h, Metric::Anomalies).is_empty(),
            "a minute is judged once it is over"
        );
        orders(&mut h, 60_000, 1);
        // value, median, lower, upper: 2 +- (3 * isqrt(2) + 3).
        assert_eq!(table(&h, Metric::Anomalies), ["m41 orders: 20 2 -4 8"]);
        let anomalies: Vec<Event> = h
            .store
            .recorded_events()
            .into_iter()
            .filter(|event| event.body.name() == "analytics.anomaly")
            .collect();
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        runs.push(anomalies);
    }
    assert_eq!(runs[0], runs[1], "the same event on 1 and 4 workers");
}

/// The key figures of the first day, from the metric views of one snapshot.
#[test]
fn key_figures_of_the_first_day() {
    let h = first_day(2);
    let kpis = h.store.read().kpis();
    assert_eq!(kpis.orders_per_minute.current_minute, 3);
    assert_eq!(kpis.orders_per_minute.last_5m, 3.0 / 5.0);
    assert_eq!(kpis.orders_per_minute.last_hour, 3.0 / 60.0);
    let usd = &kpis.average_order_cents["USD"];
    assert_eq!((usd.today, usd.last_hour), (Some(2000.0), Some(2000.0)));
    // One of three charges succeeded today; in the last hour, one of three decided.
    assert_eq!(kpis.payment_success_rate.today, Some(1.0 / 3.0));
    assert_eq!(kpis.payment_success_rate.last_hour, Some(1.0 / 3.0));
    // 2 units shipped over average stock of 1 (p0) and 4 (p1).
    assert_eq!(kpis.inventory_turnover.overall, Some(2.0 / 5.0));
    assert_eq!(kpis.inventory_turnover.products, 2);
}

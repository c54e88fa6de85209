//! Every metric computed from scratch: plain Rust over the list of events and refusals,
//! written from the metrics' definitions rather than from the dataflow's operators.
//! After every batch the incremental metric views must equal this.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::*;
use crate::model::{Event, Rejection, Str, Ts};

use super::views::*;

/// Every metric row implied by `events` and `rejections`.
pub fn recompute(events: &[Event], rejections: &[Rejection]) -> BTreeSet<MetricRow> {
    let mut rows = BTreeSet::new();
    let newest = events
        .iter()
        .map(|event| event.ts)
        .chain(rejections.iter().map(|rejection| rejection.ts))
        .max();
    let Some(newest) = newest else {
        return rows;
    };
    let now = minute_of(newest);
    let today = day_of(newest);
    let facts = Facts::gather(events);

    // Orders per minute, the last 24 hours.
    let oldest = now.saturating_sub((MINUTES_KEPT as Ts - 1) * MINUTE_MS);
    let mut per_minute: BTreeMap<Ts, [i64; 6]> = BTreeMap::new();
    for event in events {
        let slot = match event.body {
            EventBody::OrderCreated(_) => 0,
            EventBody::PaymentCompleted(_) => 2,
            EventBody::PaymentFailed(_) => 3,
            EventBody::FraudDetected(_) => 4,
            _ => continue,
        };
        per_minute.entry(minute_of(event.ts)).or_default()[slot] += 1;
    }
    for rejection in rejections {
        per_minute.entry(minute_of(rejection.ts)).or_default()[5] += 1;
    }
    let order_minutes: Vec<Ts> = events
        .iter()
        .filter(|event| matches!(event.body, EventBody::OrderCreated(_)))
        .map(|event| minute_of(event.ts))
        .collect();
    let mut minutes: BTreeSet<Ts> = per_minute.keys().copied().collect();
    for minute in &order_minutes {
        minutes.extend((1..5).map(|later| minute + later * MINUTE_MS));
    }
    for minute in minutes.into_iter().filter(|m| (oldest..=now).contains(m)) {
        let mut measures = per_minute.get(&minute).copied().unwrap_or_default();
        let since = minute.saturating_sub(4 * MINUTE_MS);
        measures[1] = order_minutes
            .iter()
            .filter(|m| (since..=minute).contains(*m))
            .count() as i64;
        push(
            &mut rows,
            Metric::OrdersPerMinute,
            vec![Dim::Minute(minute)],
            &measures,
        );
    }

    // Sales per day of payment and currency, with refunds paid back that day.
    let mut sales: BTreeMap<(i64, Str), [i64; 5]> = BTreeMap::new();
    let mut product_days: BTreeMap<(i64, Str, Str), [i64; 2]> = BTreeMap::new();
    let mut units_by_product: BTreeMap<Str, i64> = BTreeMap::new();
    let mut sales_minutes: BTreeMap<(Ts, Str), [i64; 2]> = BTreeMap::new();
    for (order, at) in &facts.paid {
        let Some(reserved) = facts.reserved.get(order) else {
            continue;
        };
        let day = &day_of(*at);
        if (oldest..=now).contains(&minute_of(*at)) {
            let entry = sales_minutes
                .entry((minute_of(*at), reserved.currency.clone()))
                .or_default();
            entry[0] += 1;
            entry[1] += reserved.total_cents;
        }
        let entry = sales.entry((*day, reserved.currency.clone())).or_default();
        entry[0] += 1;
        entry[1] += reserved.total_cents;
        entry[4] += reserved.total_cents;
        for line in &reserved.lines {
            let key = (*day, line.product_id.clone(), line.currency.clone());
            let entry = product_days.entry(key).or_default();
            entry[0] += line.quantity;
            entry[1] += line.quantity * line.unit_price_cents;
            *units_by_product.entry(line.product_id.clone()).or_default() += line.quantity;
        }
    }
    for event in events {
        if let EventBody::RefundProcessed(refund) = &event.body {
            let Some(payment) = facts.payments.get(&refund.payment_id) else {
                continue;
            };
            let entry = sales
                .entry((day_of(event.ts), payment.currency.clone()))
                .or_default();
            entry[2] += 1;
            entry[3] += refund.amount_cents;
            entry[4] -= refund.amount_cents;
        }
    }
    for ((minute, currency), measures) in sales_minutes {
        let key = vec![Dim::Minute(minute), Dim::Text(currency)];
        push(&mut rows, Metric::SalesPerMinute, key, &measures);
    }
    for ((day, currency), measures) in sales {
        let key = vec![Dim::Day(day), Dim::Text(currency)];
        push(&mut rows, Metric::SalesDaily, key, &measures);
    }
    for ((day, product, currency), measures) in &product_days {
        let key = vec![
            Dim::Day(*day),
            Dim::Text(product.clone()),
            Dim::Text(currency.clone()),
        ];
        push(&mut rows, Metric::ProductSalesDaily, key, measures);
    }

    // Top products by units paid for.
    let mut ranking: Vec<(Str, i64)> = units_by_product
        .into_iter()
        .filter(|(_, units)| *units > 0)
        .collect();
    ranking.sort_by(|(a, units_a), (b, units_b)| units_b.cmp(units_a).then(a.cmp(b)));
    for (rank, (product, units)) in ranking.into_iter().take(TOP_PRODUCTS).enumerate() {
        let key = vec![Dim::Int(rank as i64 + 1), Dim::Text(product)];
        push(&mut rows, Metric::TopProducts, key, &[units]);
    }

    // Payments by the day they were asked for.
    let mut success: BTreeMap<(i64, Str), [i64; 5]> = BTreeMap::new();
    let mut declines: BTreeMap<(i64, Str), i64> = BTreeMap::new();
    for payment in facts.payments.values() {
        let entry = success
            .entry((payment.day, payment.brand.clone()))
            .or_default();
        entry[0] += 1;
        let outcome = if payment.fraud {
            3
        } else if payment.decline_code.is_some() {
            2
        } else if payment.completed {
            1
        } else {
            4
        };
        entry[outcome] += 1;
        if let Some(code) = &payment.decline_code {
            *declines.entry((payment.day, code.clone())).or_default() += 1;
        }
    }
    for ((day, brand), measures) in success {
        push(
            &mut rows,
            Metric::PaymentSuccess,
            vec![Dim::Day(day), Dim::Text(brand)],
            &measures,
        );
    }
    for ((day, code), payments) in declines {
        let key = vec![Dim::Day(day), Dim::Text(code)];
        push(&mut rows, Metric::PaymentDeclines, key, &[payments]);
    }

    // The funnel, per day of each step.
    let mut funnel: BTreeMap<i64, [i64; 4]> = BTreeMap::new();
    for event in events {
        let step = match event.body {
            EventBody::CartCreated(_) => 0,
            EventBody::OrderCreated(_) => 1,
            EventBody::OrderConfirmed(_) => 2,
            EventBody::OrderCompleted(_) => 3,
            _ => continue,
        };
        funnel.entry(day_of(event.ts)).or_default()[step] += 1;
    }
    for (day, measures) in funnel {
        push(
            &mut rows,
            Metric::ConversionFunnel,
            vec![Dim::Day(day)],
            &measures,
        );
    }

    // Stock: what is available, what sold in the last days, and what runs low.
    let mut on_hand: BTreeMap<Str, i64> = BTreeMap::new();
    let mut reserved: BTreeMap<Str, i64> = BTreeMap::new();
    let mut movements: BTreeMap<Str, BTreeMap<i64, [i64; 3]>> = BTreeMap::new();
    for event in events {
        let day = day_of(event.ts);
        match &event.body {
            EventBody::StockAdjusted(e) => {
                *on_hand.entry(e.product_id.clone()).or_default() += e.delta;
                let moves = movements.entry(e.product_id.clone()).or_default();
                let entry = moves.entry(day).or_default();
                if e.delta > 0 {
                    entry[0] += e.delta;
                } else {
                    entry[1] -= e.delta;
                }
            }
            EventBody::InventoryReserved(e) => {
                *reserved.entry(e.product_id.clone()).or_default() += e.quantity;
            }
            EventBody::InventoryReleased(e) => {
                *reserved.entry(e.product_id.clone()).or_default() -= e.quantity;
            }
            EventBody::InventoryDeducted(e) => {
                *on_hand.entry(e.product_id.clone()).or_default() -= e.quantity;
                *reserved.entry(e.product_id.clone()).or_default() -= e.quantity;
                let moves = movements.entry(e.product_id.clone()).or_default();
                moves.entry(day).or_default()[2] += e.quantity;
            }
            _ => {}
        }
    }
    let recent = (today - VELOCITY_DAYS + 1)..=today;
    for (product, reorder_point) in &facts.reorder_points {
        let available = on_hand.get(product).copied().unwrap_or(0)
            - reserved.get(product).copied().unwrap_or(0);
        let sold: i64 = product_days
            .iter()
            .filter(|((day, sold, _), _)| sold == product && recent.contains(day))
            .map(|(_, measures)| measures[0])
            .sum();
        let key = vec![Dim::Text(product.clone())];
        let forecast = [available, *reorder_point, sold];
        rows.insert(MetricRow::new(
            Metric::StockForecast,
            key.clone(),
            forecast.to_vec(),
        ));
        if available <= *reorder_point {
            rows.insert(MetricRow::new(
                Metric::LowStock,
                key,
                vec![available, *reorder_point],
            ));
        }
    }

    // Inventory per day, and its turnover from the first movement to today.
    for (product, days) in movements {
        let first = *days
            .keys()
            .next()
            .expect("a product with movements has a day");
        let end = today.max(*days.keys().last().expect("and a last one"));
        let (mut level, mut shipped, mut level_days) = (0, 0, 0);
        for day in first..=end {
            if let Some([received, removed, shipped_today]) = days.get(&day).copied() {
                level += received - removed - shipped_today;
                shipped += shipped_today;
                let key = vec![Dim::Day(day), Dim::Text(product.clone())];
                let measures = [received, removed, shipped_today, level];
                rows.insert(MetricRow::new(
                    Metric::InventoryDaily,
                    key,
                    measures.to_vec(),
                ));
            }
            level_days += level;
        }
        let key = vec![Dim::Text(product)];
        let measures = vec![shipped, end - first + 1, level_days];
        rows.insert(MetricRow::new(Metric::InventoryTurnover, key, measures));
    }

    rows.extend(anomalies(events, rejections, now));
    rows
}

/// Minutes of the per-minute series outside their band, judged once over: the value
/// against the lower median `m` of the 30 minutes before (zero where nothing happened),
/// flagged when further than `max(4 * MAD, 3 * isqrt(m) + 3)` from it. A minute is only
/// judged with a full history behind it, counted from the first minute of the log.
fn anomalies(events: &[Event], rejections: &[Rejection], now: Ts) -> Vec<MetricRow> {
    const HISTORY: Ts = 30;
    let series_names = ["orders", "payments_failed", "fraud_flags", "rejections"];
    let first = events
        .iter()
        .map(|event| event.ts)
        .chain(rejections.iter().map(|rejection| rejection.ts))
        .min()
        .map(minute_of)
        .unwrap_or(now);
    let mut counts: BTreeMap<(usize, Ts), i64> = BTreeMap::new();
    for event in events {
        let series = match event.body {
            EventBody::OrderCreated(_) => 0,
            EventBody::PaymentFailed(_) => 1,
            EventBody::FraudDetected(_) => 2,
            _ => continue,
        };
        *counts.entry((series, minute_of(event.ts))).or_default() += 1;
    }
    for rejection in rejections {
        *counts.entry((3, minute_of(rejection.ts))).or_default() += 1;
    }
    // A minute with nothing in it or in the 30 before it is zero against zeros: only
    // the minutes up to 30 after one with counts can be out of band.
    let mut candidates = BTreeSet::new();
    for (_, minute) in counts.keys() {
        candidates.extend((0..=HISTORY).map(|later| minute + later * MINUTE_MS));
    }
    let lower_median = |mut values: Vec<i64>| {
        values.sort();
        values[(values.len() - 1) / 2]
    };
    let mut rows = Vec::new();
    for minute in candidates {
        if minute >= now || minute < first + HISTORY * MINUTE_MS {
            continue;
        }
        for (series, name) in series_names.iter().enumerate() {
            let count = |m: Ts| counts.get(&(series, m)).copied().unwrap_or(0);
            let history: Vec<i64> = (1..=HISTORY)
                .map(|back| count(minute - back * MINUTE_MS))
                .collect();
            let middle = lower_median(history.clone());
            let mad = lower_median(history.iter().map(|v| (v - middle).abs()).collect());
            let width = (4 * mad).max(3 * middle.isqrt() + 3);
            let value = count(minute);
            if (value - middle).abs() > width {
                let key = vec![Dim::Minute(minute), Dim::Text((*name).into())];
                let measures = vec![value, middle, middle - width, middle + width];
                rows.push(MetricRow::new(Metric::Anomalies, key, measures));
            }
        }
    }
    rows
}

/// A row of a sum metric: only when something was counted.
fn push(rows: &mut BTreeSet<MetricRow>, metric: Metric, key: Vec<Dim>, measures: &[i64]) {
    if measures.iter().any(|measure| *measure != 0) {
        rows.insert(MetricRow::new(metric, key, measures.to_vec()));
    }
}

/// What the metrics need to know of each order, payment and product, from the events.
#[derive(Default)]
struct Facts {
    /// Orders priced: their lines, total and currency.
    reserved: BTreeMap<Str, OrderReserved>,
    /// Orders paid, with the log time they were.
    paid: BTreeMap<Str, Ts>,
    payments: BTreeMap<Str, Payment>,
    reorder_points: BTreeMap<Str, i64>,
}

struct Payment {
    day: i64,
    brand: Str,
    currency: Str,
    completed: bool,
    fraud: bool,
    decline_code: Option<Str>,
}

impl Facts {
    fn gather(events: &[Event]) -> Facts {
        let mut facts = Facts::default();
        for event in events {
            match &event.body {
                EventBody::OrderReserved(e) => {
                    facts.reserved.insert(e.order_id.clone(), e.clone());
                }
                EventBody::OrderConfirmed(e) => {
                    facts.paid.insert(e.order_id.clone(), event.ts);
                }
                EventBody::PaymentInitiated(e) => {
                    let payment = Payment {
                        day: day_of(event.ts),
                        brand: e.card.brand.clone(),
                        currency: e.currency.clone(),
                        completed: false,
                        fraud: false,
                        decline_code: None,
                    };
                    facts.payments.insert(e.payment_id.clone(), payment);
                }
                EventBody::PaymentCompleted(e) => {
                    if let Some(payment) = facts.payments.get_mut(&e.payment_id) {
                        payment.completed = true;
                    }
                }
                EventBody::PaymentFailed(e) => {
                    if let Some(payment) = facts.payments.get_mut(&e.payment_id) {
                        payment.decline_code = Some(e.decline_code.clone());
                    }
                }
                EventBody::FraudDetected(e) => {
                    if let Some(payment) = facts.payments.get_mut(&e.payment_id) {
                        payment.fraud = true;
                    }
                }
                EventBody::ProductCreated(e) => {
                    facts
                        .reorder_points
                        .insert(e.product_id.clone(), e.reorder_point);
                }
                EventBody::ProductUpdated(e) => {
                    facts
                        .reorder_points
                        .insert(e.product_id.clone(), e.reorder_point);
                }
                _ => {}
            }
        }
        facts
    }
}

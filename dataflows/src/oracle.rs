//! From-scratch recomputation of every view: the specification the incremental
//! dataflow must agree with after every batch.

use crate::model::Str;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Event, Rejection, Time};
use crate::views::{expires, fold, stock_deltas, view_keys, Row, StockRow, ViewKey};

/// Every view row implied by `events` and `rejections`, computed without any
/// incremental state, as at the frontier `upto` (rows that leave their view by
/// themselves, `expires`, have left by then); metrics by their own specification
/// (`analytics::spec`).
pub fn recompute(events: &[Event], rejections: &[Rejection], upto: Time) -> BTreeSet<Row> {
    let mut by_key: BTreeMap<ViewKey, Vec<&Event>> = BTreeMap::new();
    let mut stock: BTreeMap<(Str, crate::views::StockMeasure), i64> = BTreeMap::new();
    for event in events {
        for key in view_keys(&event.body) {
            by_key.entry(key).or_default().push(event);
        }
        for (product_id, measure, delta) in stock_deltas(&event.body) {
            *stock.entry((product_id, measure)).or_default() += delta;
        }
    }
    let mut rows = BTreeSet::new();
    for (key, mut events) in by_key {
        events.sort();
        events.dedup();
        if let Some(row) = fold(&key, events) {
            if expires(&row).is_none_or(|until| until >= upto) {
                rows.insert(row);
            }
        }
    }
    for ((product_id, measure), quantity) in stock {
        if quantity != 0 {
            rows.insert(Row::Stock(std::sync::Arc::new(StockRow {
                product_id,
                measure,
                quantity,
            })));
        }
    }
    rows.extend(
        crate::analytics::spec::recompute(events, rejections)
            .into_iter()
            .map(|row| Row::Metric(std::sync::Arc::new(row))),
    );
    rows
}

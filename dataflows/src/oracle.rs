//! From-scratch recomputation of every view: the specification the incremental
//! dataflow must agree with after every batch.

use crate::model::Str;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::Event;
use crate::views::{fold, stock_deltas, view_keys, Row, StockRow, ViewKey};

/// Every view row implied by `events`, computed without any incremental state.
pub fn recompute(events: &[Event]) -> BTreeSet<Row> {
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
            rows.insert(row);
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
    rows
}

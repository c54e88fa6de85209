//! The read-model operator: views over the event collection.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

use crate::model::*;
use crate::shared::ordered::{key_hash, KeyedOrdered};
use crate::shared::sharded::ShardedSet;

use super::{step, stock_deltas, view_keys, ById, Row, StockRow, ViewKey, ViewKind};

/// The read models over the event collection; see `views/mod.rs`.
///
/// `ReadModels` keeps the current row of every view key and applies `views::step` to
/// each new event. That is `reduce` specialised to what events are: a key's events only
/// arrive in log order and are never retracted, so the row after one more event needs
/// only the row before it, not the key's whole history (which a general `reduce` would
/// keep arranged and fold again on every change). Stock levels are sums of deltas,
/// maintained by `count`.
///
/// Some rows leave their views by themselves at a log time (`expires`): a revoked
/// access token's when the token expires (from then on its signature refuses it), a
/// session's some time after it ended. The retraction is an update at that future time,
/// as a temporal filter would make; a change to the row before then cancels it (the
/// opposite update at the same time) and schedules the new row's. The operator forgets
/// the row once its time has passed.
pub fn read_models<'scope>(
    events: Stream<'scope, Time, Vec<Event>>,
) -> VecCollection<'scope, Time, Row, isize> {
    // Current rows, one set per `Row::key` kind, keyed by the id inside each row.
    let mut rows: Vec<ShardedSet<ById>> = vec![ShardedSet::default(); ViewKind::COUNT];
    // The keys of rows that leave their views by themselves (`expires`), by when.
    let mut expiring: BTreeMap<Time, Vec<ViewKey>> = BTreeMap::new();
    let folded = events
        .clone()
        .flat_map(|event: Event| {
            // One shared copy of the event for every view it updates.
            let event = Arc::new(event);
            view_keys(&event.body)
                .into_iter()
                .map(move |key| (key, Arc::clone(&event)))
        })
        .keyed_ordered(
            "ReadModels",
            |(key, _): &(ViewKey, Arc<Event>)| key_hash(key.id()),
            move |time, records, out: &mut Vec<(Row, Time, isize)>| {
                while let Some(expired) = expiring.first_entry() {
                    if *expired.key() > time {
                        break;
                    }
                    let until = *expired.key();
                    for key in expired.remove() {
                        // Unless it changed since, and expires later now.
                        let view = &mut rows[key.kind().index()];
                        if let Some(held) = view.take(key.id()) {
                            if expires(&held.0).is_some_and(|expiry| expiry > until) {
                                view.insert(held);
                            }
                        }
                    }
                }
                let mut records = records.into_iter().peekable();
                while let Some((key, event)) = records.next() {
                    let view = &mut rows[key.kind().index()];
                    let old = view.take(key.id()).map(|held| held.0);
                    let mut row: Option<Row> = old.clone();
                    step(&key, &mut row, &event);
                    while let Some((_, event)) = records.next_if(|(next, _)| *next == key) {
                        step(&key, &mut row, &event);
                    }
                    if old == row {
                        if let Some(old) = old {
                            view.insert(ById(old));
                        }
                        continue;
                    }
                    if let Some(old) = old {
                        // Its retraction at its expiry no longer happens: this one is
                        // now.
                        if let Some(until) = expires(&old) {
                            out.push((old.clone(), until, 1));
                        }
                        out.push((old, time, -1));
                    }
                    if let Some(new) = row {
                        if let Some(until) = expires(&new) {
                            if until <= time {
                                // Over before it was shown (a token revoked after it
                                // expired): never shown.
                                continue;
                            }
                            out.push((new.clone(), until, -1));
                            expiring.entry(until).or_default().push(key.clone());
                        }
                        view.insert(ById(new.clone()));
                        out.push((new, time, 1));
                    }
                }
            },
        )
        .as_collection();
    let stock = events
        .with_times()
        .as_collection()
        .explode(|event: Event| {
            stock_deltas(&event.body)
                .into_iter()
                .map(|(product_id, measure, delta)| ((product_id, measure), delta as isize))
        })
        .count_total()
        .map(|((product_id, measure), quantity)| {
            Row::Stock(Arc::new(StockRow {
                product_id,
                measure,
                quantity: quantity as i64,
            }))
        });
    folded.concat(stock)
}

/// When a row leaves its view by itself (a dataflow time), if it does.
pub fn expires(row: &Row) -> Option<Time> {
    match row {
        Row::RevokedToken(token) => Some(command_time(token.expires_at)),
        Row::Session(session) => Some(command_time(session.forgotten_at())),
        _ => None,
    }
}

/// Turns a stream of data into a stream of differential updates `(data, time, +1)`.
pub trait WithTimes<'scope, D> {
    fn with_times(self) -> Stream<'scope, Time, Vec<(D, Time, isize)>>;
}

impl<'scope, D: Clone + 'static> WithTimes<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn with_times(self) -> Stream<'scope, Time, Vec<(D, Time, isize)>> {
        self.unary(Pipeline, "WithTimes", |_capability, _info| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    output
                        .session(&capability)
                        .give_iterator(data.drain(..).map(|datum| (datum, time, 1isize)));
                });
            }
        })
    }
}

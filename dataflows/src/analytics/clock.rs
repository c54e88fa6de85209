//! Log time as data: which minutes and days are "recent".
//!
//! A window like "the last 24 hours" moves as time passes. Here time is the log's: the
//! clock is the minute of the newest event or refusal, and `Tick`s say which minutes and
//! days are inside each window. Metrics join against the ticks, so a window moves exactly
//! when the log does, and a replay moves it the same way. Each move changes only the
//! minutes and days that enter and leave a window, never the whole window.

use std::collections::BTreeSet;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::model::{Time, Ts};
use crate::shared::ordered::KeyedOrdered;

use super::views::{day_of, minute_of, MINUTES_KEPT, MINUTE_MS, VELOCITY_DAYS};

/// A fact of the clock at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tick {
    /// A minute among the last `MINUTES_KEPT`, the current one included.
    Minute(Ts),
    /// A day among the last `VELOCITY_DAYS`, today included.
    RecentDay(i64),
    /// Today.
    Today(i64),
}

/// The ticks of the clock at `now` (a minute start).
pub fn ticks_at(now: Ts) -> impl Iterator<Item = Tick> {
    let today = day_of(now);
    let minutes = (0..MINUTES_KEPT as u64)
        .filter_map(move |back| now.checked_sub(back * MINUTE_MS))
        .map(Tick::Minute);
    let days = (0..VELOCITY_DAYS)
        .map(move |back| today - back)
        .filter(|day| *day >= 0)
        .map(Tick::RecentDay);
    minutes
        .chain(days)
        .chain(std::iter::once(Tick::Today(today)))
}

/// The clock over the log times of `stamps` (events' and refusals' timestamps).
pub fn clock<'scope>(
    stamps: Stream<'scope, Time, Vec<Ts>>,
) -> VecCollection<'scope, Time, Tick, isize> {
    // Only each container's newest stamp crosses to the clock's worker.
    let newest = stamps.unary(Pipeline, "NewestStamp", |_capability, _info| {
        move |input, output| {
            input.for_each(|capability, data| {
                if let Some(newest) = data.iter().max() {
                    output.session(&capability).give(*newest);
                }
            });
        }
    });
    let mut now: Option<Ts> = None;
    newest
        .keyed_ordered(
            "Clock",
            |_stamp: &Ts| 0,
            move |time, stamps, out: &mut Vec<(Tick, Time, isize)>| {
                let Some(minute) = stamps.last().copied().map(minute_of) else {
                    return;
                };
                if now.is_some_and(|now| now >= minute) {
                    return;
                }
                let before: BTreeSet<Tick> =
                    now.map(|now| ticks_at(now).collect()).unwrap_or_default();
                let after: BTreeSet<Tick> = ticks_at(minute).collect();
                out.extend(before.difference(&after).map(|tick| (*tick, time, -1)));
                out.extend(after.difference(&before).map(|tick| (*tick, time, 1)));
                now = Some(minute);
            },
        )
        .as_collection()
}

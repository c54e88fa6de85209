//! Anomaly detection in the stream: per-minute series checked against a robust band.
//!
//! For each series (orders placed, payments failed, fraud flags, refused commands) a
//! minute is judged once it is over, that is once the log has reached a later minute.
//! Its value is compared with the median of the `HISTORY_MINUTES` minutes before it
//! (minutes without any count as zero). The band is the median plus or minus
//! `band_width`: four median absolute deviations, but never narrower than three times
//! the square root of the median plus three, so that counting noise in a quiet series
//! is not news. A value outside the band is an `analytics.anomaly` event.
//!
//! Everything is integer arithmetic over log time, in one operator on one worker, so the
//! same log gives the same anomalies on any number of workers and on every replay.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;
use timely::dataflow::Stream;

use crate::events::{AnomalyDetected, EventBody};
use crate::model::{log_ts, Event, Rejection, Seq, Time, Ts};
use crate::shared::ordered::KeyedOrdered;

use super::views::{minute_of, MINUTE_MS};

/// How many minutes before a minute its band is taken over.
pub const HISTORY_MINUTES: i64 = 30;
/// The series checked, by index.
pub const SERIES: [&str; 4] = ["orders", "payments_failed", "fraud_flags", "rejections"];
/// The phase anomaly events carry: after every round of the saga.
pub const ANOMALY_PHASE: u8 = 3;

/// The series an event counts in, if any.
pub fn series_of(body: &EventBody) -> Option<usize> {
    match body {
        EventBody::OrderCreated(_) => Some(0),
        EventBody::PaymentFailed(_) => Some(1),
        EventBody::FraudDetected(_) => Some(2),
        _ => None,
    }
}

/// The series refusals count in.
const REJECTIONS: usize = 3;
/// Marks a signal that only says "the log reached this minute".
const CLOCK_ONLY: u8 = u8::MAX;

/// The lower median of `values` (sorted in place).
pub fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}

/// Half the width of the band around `median`, given the median absolute deviation.
pub fn band_width(median: i64, mad: i64) -> i64 {
    (4 * mad).max(3 * median.max(0).isqrt() + 3)
}

/// Judges `value` against `history` (the minutes before it, oldest first): the event to
/// emit if it is outside the band.
pub fn judge(series: &str, minute: Ts, value: i64, history: &[i64]) -> Option<AnomalyDetected> {
    let mut values = history.to_vec();
    let middle = median(&mut values);
    let mut deviations: Vec<i64> = history.iter().map(|v| (v - middle).abs()).collect();
    let mad = median(&mut deviations);
    let width = band_width(middle, mad);
    let (lower, upper) = (middle - width, middle + width);
    (value < lower || value > upper).then(|| AnomalyDetected {
        series: series.into(),
        minute,
        value,
        median: middle,
        lower,
        upper,
        window_minutes: HISTORY_MINUTES,
    })
}

/// A count for one series in one minute (or only the minute, `CLOCK_ONLY`), with the
/// first log position it came from.
type Signal = (Ts, u8, i64, Seq);

/// The anomaly events of the per-minute series over `events` and `rejections`.
pub fn anomalies<'scope>(
    events: Stream<'scope, Time, Vec<Event>>,
    rejections: Stream<'scope, Time, Vec<Rejection>>,
) -> Stream<'scope, Time, Vec<Event>> {
    let from_events = summarise(events, |event: &Event| {
        (event.ts, event.seq, series_of(&event.body))
    });
    let from_rejections = summarise(rejections, |rejection: &Rejection| {
        (rejection.ts, rejection.seq, Some(REJECTIONS))
    });
    let mut detector = Detector::default();
    from_events.concat(from_rejections).keyed_ordered(
        "Anomalies",
        |_signal: &Signal| 0,
        move |time, signals, out: &mut Vec<Event>| detector.step(time, &signals, out),
    )
}

/// Counts per series and minute of each container, and its newest minute: what crosses
/// to the detector's worker is a handful of signals per batch, not every event.
fn summarise<'scope, D: Clone + 'static>(
    stream: Stream<'scope, Time, Vec<D>>,
    signal: impl Fn(&D) -> (Ts, Seq, Option<usize>) + 'static,
) -> Stream<'scope, Time, Vec<Signal>> {
    stream.unary(Pipeline, "AnomalySignals", move |_capability, _info| {
        move |input, output| {
            input.for_each(|capability, data| {
                let mut counts: BTreeMap<(Ts, u8), (i64, Seq)> = BTreeMap::new();
                for datum in data.iter() {
                    let (ts, seq, series) = signal(datum);
                    let series = series.map_or(CLOCK_ONLY, |series| series as u8);
                    let entry = counts.entry((minute_of(ts), series)).or_insert((0, seq));
                    entry.0 += i64::from(series != CLOCK_ONLY);
                    entry.1 = entry.1.min(seq);
                }
                output.session(&capability).give_iterator(
                    counts
                        .into_iter()
                        .map(|((minute, series), (count, seq))| (minute, series, count, seq)),
                );
            });
        }
    })
}

#[derive(Default)]
struct Detector {
    /// The newest minute the log has reached.
    now: Option<Ts>,
    /// The first minute of the log: no minute is judged before it has a full history.
    first: Option<Ts>,
    /// Counts of the minutes a judgement may still need, by series and minute.
    counts: BTreeMap<(usize, Ts), i64>,
}

impl Detector {
    fn step(&mut self, time: Time, signals: &[Signal], out: &mut Vec<Event>) {
        let Some(newest) = signals.iter().map(|signal| signal.0).max() else {
            return;
        };
        let seq = signals
            .iter()
            .map(|signal| signal.3)
            .min()
            .unwrap_or_default();
        self.first.get_or_insert(newest);
        for &(minute, series, count, _) in signals {
            if series != CLOCK_ONLY {
                *self
                    .counts
                    .entry((usize::from(series), minute))
                    .or_default() += count;
            }
        }
        let Some(now) = self.now.filter(|now| *now < newest) else {
            self.now = Some(self.now.map_or(newest, |now| now.max(newest)));
            return;
        };
        // Every minute from `now` up to the new one is over. Past `HISTORY_MINUTES + 1`
        // of them the rest of a gap is zeros judged against zeros: nothing to report.
        let history_ms = HISTORY_MINUTES as Ts * MINUTE_MS;
        let last = newest.min(now + history_ms + MINUTE_MS);
        let first = self.first.unwrap_or(now);
        let mut sub = 0;
        for minute in (now..last).step_by(MINUTE_MS as usize) {
            if minute < first + history_ms {
                continue;
            }
            for (series, name) in SERIES.iter().enumerate() {
                let count = |m: Ts| self.counts.get(&(series, m)).copied().unwrap_or(0);
                let history: Vec<i64> = (1..=HISTORY_MINUTES as Ts)
                    .rev()
                    .map(|back| count(minute - back * MINUTE_MS))
                    .collect();
                if let Some(anomaly) = judge(name, minute, count(minute), &history) {
                    out.push(Event {
                        seq,
                        phase: ANOMALY_PHASE,
                        sub,
                        ts: log_ts(time),
                        body: anomaly.into(),
                    });
                    sub += 1;
                }
            }
        }
        self.now = Some(newest);
        // Keep only what the next judgements can look at.
        let keep_from = newest.saturating_sub(history_ms);
        self.counts.retain(|(_, minute), _| *minute >= keep_from);
    }
}

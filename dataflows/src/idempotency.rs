//! Idempotency: the first command with a key wins; a later one within a day of log time
//! is refused as a duplicate (the HTTP layer answers it like the first). Whether a key
//! is live is decided from the arriving command's log time, so the answer does not
//! depend on when a worker last tidied up.

use std::collections::VecDeque;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

use crate::dataflow::Record;
use crate::model::*;
use crate::shared::input::Outcome;
use crate::shared::ordered::{key_hash, KeyedOrdered};
use crate::shared::sharded::ShardedMap;
use crate::views::{IdempotencyRow, Row, WithTimes};

/// What the idempotency stage lets through, refuses, or records.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Admitted {
    Pass(Seq, Ts, Command),
    Rejected(Rejection),
    Recorded(IdempotencyRow),
    Forgotten(IdempotencyRow),
}

impl Outcome for Admitted {
    fn event(self) -> Option<Event> {
        None
    }

    fn rejection(self) -> Option<Rejection> {
        match self {
            Admitted::Rejected(rejection) => Some(rejection),
            _ => None,
        }
    }
}

pub trait AdmitOnce<'scope> {
    /// In: commands in log order. Out: each let through or refused, and the keys
    /// recorded and forgotten.
    fn admit_once(self) -> Stream<'scope, Time, Vec<Admitted>>;
}

impl<'scope> AdmitOnce<'scope> for Stream<'scope, Time, Vec<Record>> {
    fn admit_once(self) -> Stream<'scope, Time, Vec<Admitted>> {
        self.keyed_ordered(
            "Idempotency",
            |(seq, _, envelope): &Record| match &envelope.idempotency {
                Some(idempotency) => key_hash(&idempotency.key),
                None => *seq,
            },
            {
                let mut first: ShardedMap<Str, IdempotencyRow> = ShardedMap::default();
                let mut by_age: VecDeque<(Ts, Str)> = VecDeque::new();
                move |time, records, out: &mut Vec<Admitted>| {
                    // Forget keys older than the TTL (memory only; liveness is checked below).
                    let now = log_ts(time);
                    while let Some((ts, key)) = by_age.front() {
                        if now < ts.saturating_add(IDEMPOTENCY_TTL_MS) {
                            break;
                        }
                        if first.get(key).is_some_and(|row| row.ts == *ts) {
                            if let Some(row) = first.remove(key) {
                                out.push(Admitted::Forgotten(row));
                            }
                        }
                        by_age.pop_front();
                    }
                    for (seq, ts, envelope) in records {
                        let Some(key) = envelope.idempotency else {
                            out.push(Admitted::Pass(seq, ts, envelope.command));
                            continue;
                        };
                        if let Some(row) = first.get(&key.key).filter(|row| row.is_live(ts)) {
                            out.push(Admitted::Rejected(Rejection {
                                seq,
                                ts,
                                kind: RejectionKind::Duplicate {
                                    first_seq: row.first_seq,
                                    same_request: row.fingerprint == key.fingerprint,
                                },
                                detail: "this Idempotency-Key was used before".into(),
                            }));
                            continue;
                        }
                        let row = IdempotencyRow {
                            key: key.key.clone(),
                            fingerprint: key.fingerprint,
                            first_seq: seq,
                            ts,
                        };
                        if let Some(expired) = first.insert(key.key.clone(), row.clone()) {
                            out.push(Admitted::Forgotten(expired));
                        }
                        by_age.push_back((ts, key.key));
                        out.push(Admitted::Recorded(row));
                        out.push(Admitted::Pass(seq, ts, envelope.command));
                    }
                }
            },
        )
    }
}

/// The parts of the stage's output the rest of the dataflow reads.
pub trait Admissions<'scope> {
    /// The commands let through.
    fn passed(&self) -> Stream<'scope, Time, Vec<(Seq, Ts, Command)>>;
    /// The idempotency view: keys recorded, and retracted once forgotten.
    fn rows(&self) -> VecCollection<'scope, Time, Row, isize>;
}

impl<'scope> Admissions<'scope> for Stream<'scope, Time, Vec<Admitted>> {
    fn passed(&self) -> Stream<'scope, Time, Vec<(Seq, Ts, Command)>> {
        self.clone().flat_map(|admitted| match admitted {
            Admitted::Pass(seq, ts, command) => Some((seq, ts, command)),
            _ => None,
        })
    }

    fn rows(&self) -> VecCollection<'scope, Time, Row, isize> {
        let recorded = self
            .clone()
            .clone()
            .flat_map(|admitted| match admitted {
                Admitted::Recorded(row) => Some(Row::Idempotency(Arc::new(row))),
                _ => None,
            })
            .with_times()
            .as_collection();
        let forgotten = self
            .clone()
            .flat_map(|admitted| match admitted {
                Admitted::Forgotten(row) => Some(Row::Idempotency(Arc::new(row))),
                _ => None,
            })
            .with_times()
            .as_collection()
            .negate();
        recorded.concat(forgotten)
    }
}

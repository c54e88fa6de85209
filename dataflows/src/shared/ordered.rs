//! The one shape every deciding operator has: exchange by key, then process each
//! timestamp whole, in time order, with its inputs sorted into log order.

use crate::model::Str;
use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::model::{Event, EventBody, Rejection, RejectionKind, Seq, Time, Ts};

/// Stable hash of an aggregate key, used to route it to a worker. The same on every
/// worker and every run (FNV-1a), so placement never depends on the process.
pub fn key_hash(key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Extension trait: `stream.keyed_ordered("catalog", key, logic)`.
///
/// In: records of type `I`, routed by `key`. Out: whatever `logic` pushes.
/// Invariant: `logic` sees each time exactly once, after every input at that time has
/// arrived, times in increasing order, records sorted by their `Ord` (which puts them in
/// log order). The result therefore does not depend on the number of workers.
pub trait KeyedOrdered<'scope, I> {
    fn keyed_ordered<O, K, L>(self, name: &str, key: K, logic: L) -> Stream<'scope, Time, Vec<O>>
    where
        O: Clone + 'static,
        K: Fn(&I) -> u64 + 'static,
        L: FnMut(Time, Vec<I>, &mut Vec<O>) + 'static;
}

impl<'scope, I> KeyedOrdered<'scope, I> for Stream<'scope, Time, Vec<I>>
where
    I: timely::ExchangeData + Ord + Clone,
{
    fn keyed_ordered<O, K, L>(
        self,
        name: &str,
        key: K,
        mut logic: L,
    ) -> Stream<'scope, Time, Vec<O>>
    where
        O: Clone + 'static,
        K: Fn(&I) -> u64 + 'static,
        L: FnMut(Time, Vec<I>, &mut Vec<O>) + 'static,
    {
        let pact = Exchange::new(move |record: &I| key(record));
        self.unary_frontier(pact, name, |_capability, _info| {
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<I>)> = BTreeMap::new();
            let mut produced = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, containers| {
                    let Some(held) = capability.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = stash
                        .entry(*held.time())
                        .or_insert_with(|| (held.clone(), Vec::new()));
                    for container in containers {
                        entry.1.append(container);
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.frontier().less_equal(entry.key()) {
                        break;
                    }
                    let (time, (capability, mut records)) = entry.remove_entry();
                    records.sort();
                    logic(time, records, &mut produced);
                    if !produced.is_empty() {
                        output
                            .session(&capability)
                            .give_iterator(produced.drain(..));
                    }
                }
            }
        })
    }
}

/// Writes what one input caused, in a deterministic order: events numbered from
/// `sub` up, refusals of the input's command.
pub struct Emitter<'a, O> {
    pub seq: Seq,
    pub phase: u8,
    pub sub: u16,
    pub ts: Ts,
    pub out: &'a mut Vec<O>,
}

impl<'a, O: From<Event> + From<Rejection>> Emitter<'a, O> {
    pub fn new(seq: Seq, phase: u8, first_sub: u16, ts: Ts, out: &'a mut Vec<O>) -> Self {
        Emitter {
            seq,
            phase,
            sub: first_sub,
            ts,
            out,
        }
    }

    pub fn event(&mut self, body: impl Into<EventBody>) {
        self.out.push(O::from(Event {
            seq: self.seq,
            phase: self.phase,
            sub: self.sub,
            ts: self.ts,
            body: body.into(),
        }));
        self.sub += 1;
    }

    pub fn reject(&mut self, kind: RejectionKind, detail: impl Into<Str>) {
        self.out.push(O::from(Rejection {
            seq: self.seq,
            ts: self.ts,
            kind,
            detail: detail.into(),
        }));
    }

    pub fn conflict(&mut self, code: &str, detail: impl Into<Str>) {
        self.reject(RejectionKind::Conflict { code: code.into() }, detail);
    }
}

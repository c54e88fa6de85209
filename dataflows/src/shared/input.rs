//! What every deciding operator takes in and gives out.

use serde::{Deserialize, Serialize};

use crate::model::{Event, EventBody, Rejection, RejectionKind, Seq, Str, Ts};

/// An operation for an aggregate, with where it stands in the log. The fields sort in
/// log order: the command's position, the saga's round (`phase`: 0 for the command, 1
/// for the replies it caused), then the line within the command (`sub`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Input<Op> {
    pub seq: Seq,
    pub phase: u8,
    pub sub: u16,
    pub ts: Ts,
    pub op: Op,
}

impl<Op> Input<Op> {
    /// A command's own input: first round, whole command.
    pub fn command(seq: Seq, ts: Ts, op: Op) -> Input<Op> {
        Input {
            seq,
            phase: 0,
            sub: 0,
            ts,
            op,
        }
    }
}

/// What one command of an aggregate decides: its events, numbered in the order they are
/// made, or its refusal. For aggregates whose output is `Result<Event, Rejection>`.
pub struct Decided {
    seq: Seq,
    ts: Ts,
    sub: u16,
}

impl Decided {
    pub fn of<Op>(input: &Input<Op>) -> Decided {
        Decided {
            seq: input.seq,
            ts: input.ts,
            sub: 0,
        }
    }

    /// Numbers this command's events from `sub` on: for an aggregate that adds events
    /// to a command another aggregate also decides (a user's deletion, for one).
    pub fn numbered_from(mut self, sub: u16) -> Decided {
        self.sub = sub;
        self
    }

    /// The command's next event.
    pub fn event<B: Into<EventBody>>(&mut self, body: B) -> Result<Event, Rejection> {
        self.sub += 1;
        Ok(Event {
            seq: self.seq,
            phase: 0,
            sub: self.sub - 1,
            ts: self.ts,
            body: body.into(),
        })
    }

    pub fn reject(&self, kind: RejectionKind, detail: impl Into<Str>) -> Result<Event, Rejection> {
        Err(Rejection {
            seq: self.seq,
            ts: self.ts,
            kind,
            detail: detail.into(),
        })
    }

    /// The aggregate's state forbids the command (`code` says how).
    pub fn conflict(&self, code: &str, detail: impl Into<Str>) -> Result<Event, Rejection> {
        self.reject(RejectionKind::Conflict { code: code.into() }, detail)
    }

    pub fn not_found(&self, detail: impl Into<Str>) -> Result<Event, Rejection> {
        self.reject(RejectionKind::NotFound, detail)
    }
}

/// An aggregate's output, of which the events and the refusals are gathered from every
/// aggregate alike; whatever else it emits (requests to other aggregates, released
/// claims) its wiring routes by hand.
pub trait Outcome: Sized {
    fn event(self) -> Option<Event>;
    fn rejection(self) -> Option<Rejection>;
}

impl Outcome for Result<Event, Rejection> {
    fn event(self) -> Option<Event> {
        self.ok()
    }

    fn rejection(self) -> Option<Rejection> {
        self.err()
    }
}

/// `Outcome` for an aggregate's output enum with `Event(Event)` and
/// `Rejected(Rejection)` variants.
macro_rules! outcome_variants {
    ($output:ident) => {
        impl $crate::shared::input::Outcome for $output {
            fn event(self) -> Option<Event> {
                match self {
                    $output::Event(event) => Some(event),
                    _ => None,
                }
            }

            fn rejection(self) -> Option<Rejection> {
                match self {
                    $output::Rejected(rejection) => Some(rejection),
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use outcome_variants;

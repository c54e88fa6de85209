//! Values that at most one owner may hold (a product's sku, a user's address): a command
//! that takes one must win its claim before its aggregate sees it.

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

use crate::model::{Rejection, RejectionKind, Str, Time};
use crate::shared::input::Input;
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// A request to a claim operator, about one value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Claim<Then> {
    /// Take `value` for `owner`, then hand `then` on to the owner's aggregate.
    Take { value: Str, owner: Str, then: Then },
    /// `owner` no longer holds `value` (sent back a round later through a feedback edge).
    Release { value: Str, owner: Str },
}

impl<Then> Claim<Then> {
    pub fn value(&self) -> &Str {
        match self {
            Claim::Take { value, .. } | Claim::Release { value, .. } => value,
        }
    }
}

/// How a claim operator refuses a value another owner holds.
pub struct Taken {
    /// The conflict's code (`sku_taken`, `email_taken`).
    pub code: &'static str,
    /// The refusal's detail, from the value.
    pub detail: fn(&str) -> String,
}

/// The claims won (as their `then`) and the claims refused.
pub type Decided<'scope, Then> = (
    Stream<'scope, Time, Vec<Input<Then>>>,
    Stream<'scope, Time, Vec<Rejection>>,
);

pub trait ClaimUnique<'scope, Then> {
    /// Keyed by value: claims in log order; a value another owner holds is refused as
    /// `taken` says, and a won claim goes on as `then`, at the claim's place in the log.
    /// Invariant: at any settled time a value belongs to at most one owner.
    fn claim_unique(self, name: &str, taken: Taken) -> Decided<'scope, Then>;
}

impl<'scope, Then> ClaimUnique<'scope, Then> for Stream<'scope, Time, Vec<Input<Claim<Then>>>>
where
    Input<Claim<Then>>: timely::ExchangeData + Ord,
    Then: Clone + 'static,
{
    fn claim_unique(self, name: &str, taken: Taken) -> Decided<'scope, Then> {
        let mut owners = UniqueClaims::default();
        let decided = self.keyed_ordered(
            name,
            |input: &Input<Claim<Then>>| key_hash(input.op.value()),
            move |_time, inputs, out: &mut Vec<Result<Input<Then>, Rejection>>| {
                for Input {
                    seq,
                    phase,
                    sub,
                    ts,
                    op,
                } in inputs
                {
                    match op {
                        Claim::Release { value, owner } => owners.release(&value, &owner),
                        Claim::Take { value, owner, then } => {
                            if owners.claim(value.clone(), owner) {
                                out.push(Ok(Input {
                                    seq,
                                    phase,
                                    sub,
                                    ts,
                                    op: then,
                                }));
                            } else {
                                out.push(Err(Rejection {
                                    seq,
                                    ts,
                                    kind: RejectionKind::Conflict {
                                        code: taken.code.into(),
                                    },
                                    detail: (taken.detail)(&value).into(),
                                }));
                            }
                        }
                    }
                }
            },
        );
        let accepted = decided.clone().flat_map(|result| result.ok());
        let refused = decided.flat_map(|result| result.err());
        (accepted, refused)
    }
}

/// Who holds each unique value: claims are decided in log order, and a value held by one
/// owner is refused to every other.
#[derive(Default)]
struct UniqueClaims(std::collections::HashMap<Str, Str>);

impl UniqueClaims {
    /// Gives `value` to `owner` unless another owner holds it; says whether it did.
    fn claim(&mut self, value: Str, owner: Str) -> bool {
        if self.0.get(&value).is_some_and(|held| *held != owner) {
            return false;
        }
        self.0.insert(value, owner);
        true
    }

    /// Frees `value` if `owner` still holds it.
    fn release(&mut self, value: &str, owner: &str) {
        if self.0.get(value).is_some_and(|held| **held == *owner) {
            self.0.remove(value);
        }
    }
}

//! `PaymentMethods`: the cards users save to pay with. Keyed by user id.
//!
//! In: payment-method adds and removes, and user deletions. Out: `payment_method.*`
//! events and rejections.
//! Invariants: a method id names one card of one user (ids are minted by the server,
//! unique across users: the aggregate checks them per user); a user holds at most
//! `MAX_METHODS_PER_USER`; a deleted user's cards are removed with the account, and a
//! deleted user saves no more.

use std::collections::{BTreeSet, HashMap, HashSet};

use timely::dataflow::Stream;

use crate::events::{PaymentMethodAdded, PaymentMethodRemoved};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// Most cards one user may keep.
pub const MAX_METHODS_PER_USER: usize = 20;
/// Where the events of a user's deletion that remove their cards are numbered from,
/// after the user aggregate's own.
const REMOVALS_ON_DELETE_SUB: u16 = 256;

pub type MethodIn = Input<Command>;

/// The input of the payment-method aggregate for a command, if it is one's: its own
/// commands, and a user's deletion (which removes the user's cards).
pub fn route(seq: Seq, ts: Ts, command: &Command) -> Option<MethodIn> {
    matches!(
        command,
        Command::AddPaymentMethod { .. }
            | Command::RemovePaymentMethod { .. }
            | Command::DeleteUser { .. }
    )
    .then(|| Input::command(seq, ts, command.clone()))
}

fn user_of(command: &Command) -> &str {
    match command {
        Command::AddPaymentMethod { user_id, .. }
        | Command::RemovePaymentMethod { user_id, .. }
        | Command::DeleteUser { user_id } => user_id,
        _ => "",
    }
}

pub trait PaymentMethods<'scope> {
    fn payment_methods(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> PaymentMethods<'scope> for Stream<'scope, Time, Vec<MethodIn>> {
    fn payment_methods(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        let mut methods: HashMap<Str, BTreeSet<Str>> = HashMap::new();
        let mut deleted: HashSet<Str> = HashSet::new();
        self.keyed_ordered(
            "PaymentMethods",
            |input: &MethodIn| key_hash(user_of(&input.op)),
            move |_time, inputs, out| {
                for input in inputs {
                    let decided = Decided::of(&input);
                    match input.op {
                        Command::AddPaymentMethod {
                            method_id,
                            user_id,
                            card,
                        } => {
                            if deleted.contains(&user_id) {
                                out.push(decided.not_found(format!("user {user_id} was deleted")));
                                continue;
                            }
                            let cards = methods.entry(user_id.clone()).or_default();
                            if cards.contains(&method_id) {
                                out.push(decided.conflict(
                                    "payment_method_exists",
                                    format!("payment method {method_id} already exists"),
                                ));
                                continue;
                            }
                            if cards.len() >= MAX_METHODS_PER_USER {
                                out.push(decided.conflict(
                                    "too_many_payment_methods",
                                    format!(
                                        "user {user_id} keeps {MAX_METHODS_PER_USER} cards, \
                                         the most; remove one first"
                                    ),
                                ));
                                continue;
                            }
                            cards.insert(method_id.clone());
                            let mut decided = decided;
                            out.push(decided.event(PaymentMethodAdded {
                                method_id,
                                user_id,
                                card,
                            }));
                        }
                        Command::RemovePaymentMethod { method_id, user_id } => {
                            let removed = methods
                                .get_mut(&user_id)
                                .is_some_and(|cards| cards.remove(&method_id));
                            if !removed {
                                out.push(decided.not_found(format!(
                                    "user {user_id} has no payment method {method_id}"
                                )));
                                continue;
                            }
                            let mut decided = decided;
                            out.push(decided.event(PaymentMethodRemoved { method_id, user_id }));
                        }
                        Command::DeleteUser { user_id } => {
                            // Whether or not the account existed, nothing is saved for
                            // it from now on; the user aggregate answers the command.
                            deleted.insert(user_id.clone());
                            let mut decided = decided.numbered_from(REMOVALS_ON_DELETE_SUB);
                            for method_id in methods.remove(&user_id).unwrap_or_default() {
                                out.push(decided.event(PaymentMethodRemoved {
                                    method_id,
                                    user_id: user_id.clone(),
                                }));
                            }
                        }
                        _ => {}
                    }
                }
            },
        )
    }
}

//! `ClaimEmail` and `UserAccounts`: users, with unique e-mail addresses.
//!
//! E-mail uniqueness needs one owner per address, and the user needs one owner per id,
//! so there are two aggregates. `ClaimEmail` (keyed by address) claims the address of a
//! create or an e-mail change in log order, refusing one held by another user, and
//! forwards the command. `UserAccounts` (keyed by user id) applies it and releases
//! addresses the user no longer holds, through the feedback edge at `2t + 1`.
//!
//! Invariant: at any settled time an address belongs to at most one live user.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::events::{UserCreated, UserDeleted, UserUpdated};
use crate::model::*;
use crate::shared::input::{outcome_variants, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered, UniqueClaims};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EmailIn {
    pub seq: Seq,
    pub phase: u8,
    pub ts: Ts,
    pub email: Str,
    pub op: EmailOp,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EmailOp {
    /// Claim the address for this user, then forward the command.
    Claim { user_id: Str, then: Command },
    /// The user no longer holds the address.
    Release { user_id: Str },
}

pub type UserIn = Input<Command>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UserOut {
    Event(Event),
    Release(EmailIn),
    Rejected(Rejection),
}

outcome_variants!(UserOut);

/// The address claim a command must win before the user aggregate sees it: a
/// sign-up's, or an update's new address.
pub fn route_claim(seq: Seq, ts: Ts, command: &Command) -> Option<EmailIn> {
    match command {
        Command::CreateUser { user_id, email, .. }
        | Command::UpdateUser {
            user_id,
            email: Some(email),
            ..
        } => Some(EmailIn {
            seq,
            phase: 0,
            ts,
            email: email_key(email),
            op: EmailOp::Claim {
                user_id: user_id.clone(),
                then: command.clone(),
            },
        }),
        _ => None,
    }
}

/// The input of the user aggregate for a command that claims no address.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<UserIn> {
    matches!(
        command,
        Command::UpdateUser { email: None, .. } | Command::DeleteUser { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

/// The form of an address that uniqueness compares: Unicode compatibility caseless
/// matching (NFKC, then full case folding, then NFKC again), so `Ａlice@X.example`,
/// `alice@x.example` and a ligature or `ß` spelled either way are one address.
pub fn email_key(email: &str) -> Str {
    use unicode_normalization::UnicodeNormalization;
    let composed: String = email.trim().nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    folded.nfkc().collect::<String>().into()
}

#[cfg(test)]
mod tests {
    use super::email_key;

    #[test]
    fn addresses_that_read_alike_share_a_key() {
        let key = email_key("strasse@example.com");
        for same in [
            "STRASSE@example.com",
            "Straße@Example.com",
            "ｓｔｒａｓｓｅ@example.com",
            " strasse@EXAMPLE.COM ",
        ] {
            assert_eq!(email_key(same), key, "{same}");
        }
        assert_ne!(email_key("strase@example.com"), key);
    }
}

pub trait ClaimEmail<'scope> {
    fn claim_email(
        self,
    ) -> (
        Stream<'scope, Time, Vec<UserIn>>,
        Stream<'scope, Time, Vec<Rejection>>,
    );
}

impl<'scope> ClaimEmail<'scope> for Stream<'scope, Time, Vec<EmailIn>> {
    fn claim_email(
        self,
    ) -> (
        Stream<'scope, Time, Vec<UserIn>>,
        Stream<'scope, Time, Vec<Rejection>>,
    ) {
        use timely::dataflow::operators::vec::Map;
        let mut owners = UniqueClaims::default();
        let decided = self.keyed_ordered(
            "ClaimEmail",
            |input: &EmailIn| key_hash(&input.email),
            move |_time, inputs, out: &mut Vec<Result<UserIn, Rejection>>| {
                for input in inputs {
                    match input.op {
                        EmailOp::Release { user_id } => owners.release(&input.email, &user_id),
                        EmailOp::Claim { user_id, then } => {
                            if owners.claim(input.email, user_id) {
                                out.push(Ok(Input::command(input.seq, input.ts, then)));
                            } else {
                                out.push(Err(Rejection {
                                    seq: input.seq,
                                    ts: input.ts,
                                    kind: RejectionKind::Conflict {
                                        code: "email_taken".into(),
                                    },
                                    detail: "a user with this email already exists".into(),
                                }));
                            }
                        }
                    }
                }
            },
        );
        let accepted = decided.clone().flat_map(|result| result.ok());
        let rejected = decided.flat_map(|result| result.err());
        (accepted, rejected)
    }
}

#[derive(Clone, Debug)]
struct User {
    email: Str,
    name: Str,
    password_hash: Str,
}

pub trait UserAccounts<'scope> {
    fn user_accounts(self) -> Stream<'scope, Time, Vec<UserOut>>;
}

impl<'scope> UserAccounts<'scope> for Stream<'scope, Time, Vec<UserIn>> {
    fn user_accounts(self) -> Stream<'scope, Time, Vec<UserOut>> {
        let mut users: HashMap<Str, User> = HashMap::new();
        self.keyed_ordered(
            "UserAccounts",
            |input: &UserIn| key_hash(user_id_of(&input.op)),
            move |_time, inputs, out| {
                for input in inputs {
                    decide(&mut users, input, out);
                }
            },
        )
    }
}

fn user_id_of(command: &Command) -> &str {
    match command {
        Command::CreateUser { user_id, .. }
        | Command::UpdateUser { user_id, .. }
        | Command::DeleteUser { user_id } => user_id,
        _ => "",
    }
}

fn decide(users: &mut HashMap<Str, User>, input: UserIn, out: &mut Vec<UserOut>) {
    let (seq, ts) = (input.seq, input.ts);
    let event = |body| {
        UserOut::Event(Event {
            seq,
            phase: 0,
            sub: 0,
            ts,
            body,
        })
    };
    let reject = |kind, detail: Str| {
        UserOut::Rejected(Rejection {
            seq,
            ts,
            kind,
            detail,
        })
    };
    let release = |email: &str, user_id: &Str| {
        UserOut::Release(EmailIn {
            seq,
            phase: 1,
            ts,
            email: email_key(email),
            op: EmailOp::Release {
                user_id: user_id.clone(),
            },
        })
    };
    match input.op {
        Command::CreateUser {
            user_id,
            email,
            name,
            password_hash,
        } => {
            if users.contains_key(&user_id) {
                out.push(release(&email, &user_id));
                out.push(reject(
                    RejectionKind::Conflict {
                        code: "user_exists".into(),
                    },
                    format!("user {user_id} already exists").into(),
                ));
                return;
            }
            out.push(event(
                UserCreated {
                    user_id: user_id.clone(),
                    email: email.clone(),
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                }
                .into(),
            ));
            users.insert(
                user_id,
                User {
                    email,
                    name,
                    password_hash,
                },
            );
        }
        Command::UpdateUser {
            user_id,
            email,
            name,
            password_hash,
        } => {
            let Some(user) = users.get_mut(&user_id) else {
                if let Some(email) = email {
                    out.push(release(&email, &user_id));
                }
                out.push(reject(
                    RejectionKind::NotFound,
                    format!("user {user_id} does not exist").into(),
                ));
                return;
            };
            if let Some(email) = email {
                if email_key(&email) != email_key(&user.email) {
                    out.push(release(&user.email, &user_id));
                }
                user.email = email;
            }
            if let Some(name) = name {
                user.name = name;
            }
            if let Some(password_hash) = password_hash {
                user.password_hash = password_hash;
            }
            out.push(event(
                UserUpdated {
                    user_id,
                    email: user.email.clone(),
                    name: user.name.clone(),
                    password_hash: user.password_hash.clone(),
                }
                .into(),
            ));
        }
        Command::DeleteUser { user_id } => {
            let Some(user) = users.remove(&user_id) else {
                out.push(reject(
                    RejectionKind::NotFound,
                    format!("user {user_id} does not exist").into(),
                ));
                return;
            };
            out.push(release(&user.email, &user_id));
            out.push(event(UserDeleted { user_id }.into()));
        }
        _ => {}
    }
}

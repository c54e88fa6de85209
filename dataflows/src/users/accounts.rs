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
use crate::shared::claims::{Claim, Taken};
use crate::shared::input::{outcome_variants, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// A claim on an address (its `email_key`), which must be unique across users; a won
/// claim goes on to the user aggregate.
pub type EmailIn = Input<Claim<Command>>;

/// How `ClaimEmail` refuses an address another user holds.
pub const EMAIL_TAKEN: Taken = Taken {
    code: "email_taken",
    detail: |_| "a user with this email already exists".into(),
};

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
        } => Some(Input::command(
            seq,
            ts,
            Claim::Take {
                value: email_key(email),
                owner: user_id.clone(),
                then: command.clone(),
            },
        )),
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

#[derive(Clone, Debug)]
struct User {
    email: Str,
    name: Str,
    password_hash: Str,
    profile: Profile,
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
        UserOut::Release(Input {
            seq,
            phase: 1,
            sub: 0,
            ts,
            op: Claim::Release {
                value: email_key(email),
                owner: user_id.clone(),
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
                    profile: Profile::default(),
                },
            );
        }
        Command::UpdateUser {
            user_id,
            email,
            name,
            password_hash,
            profile,
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
            profile.apply(&mut user.profile);
            out.push(event(
                UserUpdated {
                    user_id,
                    email: user.email.clone(),
                    name: user.name.clone(),
                    password_hash: user.password_hash.clone(),
                    profile: user.profile.clone(),
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

//! The auth context (the brief's auth-service): API keys, issued, rotated and revoked
//! through the log like every other change, so that every worker and every replay
//! agrees on which keys are live. The HTTP layer checks a request's key against the
//! view (`ApiKeyRow`); the secret itself never enters the log, only its digest.
//!
//! `ApiKeys`: one aggregate over every key. Rotation makes a new key from an old one,
//! and the two must be decided together, so all key commands share one key of the
//! aggregate (one worker): they are administrative, a handful per day, not traffic.
//! In: key creates, rotations, revocations. Out: `api_key.*` events and rejections.
//! Invariants: a key id is issued once; a revoked key stays revoked; a rotation's old
//! key is refused from the end of its grace period, never later than it would have been.

pub mod events;
pub mod sessions;
pub mod tokens;
pub mod views;

use std::collections::HashMap;

use timely::dataflow::Stream;

use crate::events::{ApiKeyCreated, ApiKeyExpiryChanged, ApiKeyRevoked};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

pub type KeyIn = Input<Command>;

/// The input of the key aggregate for a command, if it is about API keys.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<KeyIn> {
    matches!(
        command,
        Command::CreateApiKey { .. } | Command::RotateApiKey { .. } | Command::RevokeApiKey { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

/// What the aggregate remembers of a key.
#[derive(Clone, Debug)]
struct Key {
    name: Str,
    owner: Option<Str>,
    scopes: Vec<Str>,
    lifetime_ms: Ts,
    expires_at: Ts,
    revoked: bool,
}

pub trait ApiKeys<'scope> {
    fn api_keys(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> ApiKeys<'scope> for Stream<'scope, Time, Vec<KeyIn>> {
    fn api_keys(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        let mut keys: HashMap<Str, Key> = HashMap::new();
        self.keyed_ordered(
            "ApiKeys",
            |_: &KeyIn| key_hash("api_keys"),
            move |_time, inputs, out| {
                for input in inputs {
                    decide(&mut keys, input, out);
                }
            },
        )
    }
}

fn decide(keys: &mut HashMap<Str, Key>, input: KeyIn, out: &mut Vec<Result<Event, Rejection>>) {
    let mut decided = Decided::of(&input);
    match input.op {
        Command::CreateApiKey {
            key_id,
            name,
            owner,
            scopes,
            key_hash,
            lifetime_ms,
        } => {
            if keys.contains_key(&key_id) {
                out.push(
                    decided.conflict("api_key_exists", format!("API key {key_id} already exists")),
                );
                return;
            }
            let expires_at = input.ts.saturating_add(lifetime_ms);
            keys.insert(
                key_id.clone(),
                Key {
                    name: name.clone(),
                    owner: owner.clone(),
                    scopes: scopes.clone(),
                    lifetime_ms,
                    expires_at,
                    revoked: false,
                },
            );
            out.push(decided.event(ApiKeyCreated {
                key_id,
                name,
                owner,
                scopes,
                key_hash,
                expires_at,
            }));
        }
        Command::RotateApiKey {
            key_id,
            new_key_id,
            new_key_hash,
            grace_ms,
        } => {
            let Some(old) = keys.get(&key_id).filter(|key| !key.revoked).cloned() else {
                out.push(match keys.contains_key(&key_id) {
                    true => {
                        decided.conflict("api_key_revoked", format!("API key {key_id} is revoked"))
                    }
                    false => decided.not_found(format!("API key {key_id} does not exist")),
                });
                return;
            };
            if keys.contains_key(&new_key_id) {
                out.push(decided.conflict(
                    "api_key_exists",
                    format!("API key {new_key_id} already exists"),
                ));
                return;
            }
            let expires_at = input.ts.saturating_add(old.lifetime_ms);
            let old_expires_at = old.expires_at.min(input.ts.saturating_add(grace_ms));
            out.push(decided.event(ApiKeyCreated {
                key_id: new_key_id.clone(),
                name: old.name.clone(),
                owner: old.owner.clone(),
                scopes: old.scopes.clone(),
                key_hash: new_key_hash,
                expires_at,
            }));
            out.push(decided.event(ApiKeyExpiryChanged {
                key_id: key_id.clone(),
                expires_at: old_expires_at,
            }));
            keys.get_mut(&key_id).expect("checked above").expires_at = old_expires_at;
            keys.insert(new_key_id, Key { expires_at, ..old });
        }
        Command::RevokeApiKey { key_id } => match keys.get_mut(&key_id) {
            None => out.push(decided.not_found(format!("API key {key_id} does not exist"))),
            Some(key) if key.revoked => out.push(decided.conflict(
                "api_key_revoked",
                format!("API key {key_id} is already revoked"),
            )),
            Some(key) => {
                key.revoked = true;
                out.push(decided.event(ApiKeyRevoked { key_id }));
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(key_id: &str, lifetime_ms: Ts) -> Command {
        Command::CreateApiKey {
            key_id: key_id.into(),
            name: "ci".into(),
            owner: None,
            scopes: vec!["admin".into()],
            key_hash: format!("hash-{key_id}").into(),
            lifetime_ms,
        }
    }

    fn rotate(key_id: &str, new_key_id: &str, grace_ms: Ts) -> Command {
        Command::RotateApiKey {
            key_id: key_id.into(),
            new_key_id: new_key_id.into(),
            new_key_hash: format!("hash-{new_key_id}").into(),
            grace_ms,
        }
    }

    /// Runs `commands` (at log time 1000, 2000, ...) through the aggregate.
    fn run(commands: Vec<Command>) -> Vec<Result<Event, Rejection>> {
        let mut keys = HashMap::new();
        let mut out = Vec::new();
        for (i, command) in commands.into_iter().enumerate() {
            let seq = i as Seq;
            decide(
                &mut keys,
                Input::command(seq, 1000 * (seq + 1), command),
                &mut out,
            );
        }
        out
    }

    fn code(outcome: &Result<Event, Rejection>) -> String {
        match outcome {
            Err(Rejection {
                kind: RejectionKind::Conflict { code },
                ..
            }) => code.to_string(),
            Err(Rejection {
                kind: RejectionKind::NotFound,
                ..
            }) => "not_found".into(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_key_id_is_issued_once_and_revoked_once() {
        let out = run(vec![
            create("k1", 10_000),
            create("k1", 10_000),
            Command::RevokeApiKey {
                key_id: "k1".into(),
            },
            Command::RevokeApiKey {
                key_id: "k1".into(),
            },
            Command::RevokeApiKey {
                key_id: "k2".into(),
            },
            rotate("k1", "k3", 0),
            rotate("k2", "k3", 0),
        ]);
        assert!(
            matches!(&out[0], Ok(Event { body: EventBody::ApiKeyCreated(created), .. }) if created.expires_at == 11_000)
        );
        assert_eq!(code(&out[1]), "api_key_exists");
        assert!(matches!(
            &out[2],
            Ok(Event {
                body: EventBody::ApiKeyRevoked(_),
                ..
            })
        ));
        assert_eq!(code(&out[3]), "api_key_revoked");
        assert_eq!(code(&out[4]), "not_found");
        assert_eq!(code(&out[5]), "api_key_revoked");
        assert_eq!(code(&out[6]), "not_found");
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn rotation_issues_a_key_of_the_same_lifetime_and_never_extends_the_old_one() {
        // k1 (created at 1000) lives until 11000; rotated at 2000 with 5000 of grace,
        // it ends at 7000; k2 lives 10000 from 2000. Rotated at 3000 with a grace past
        // its end, k2 keeps its end.
        let out = run(vec![
            create("k1", 10_000),
            rotate("k1", "k2", 5_000),
            rotate("k2", "k3", 1_000_000),
            rotate("k3", "k1", 0),
        ]);
        let bodies: Vec<&EventBody> = out
            .iter()
            .map(|outcome| &outcome.as_ref().expect("decided").body)
            .take(5)
            .collect();
        assert!(
            matches!(bodies[1], EventBody::ApiKeyCreated(new) if &*new.key_id == "k2" && new.expires_at == 12_000 && new.scopes == vec![Str::from("admin")])
        );
        assert!(
            matches!(bodies[2], EventBody::ApiKeyExpiryChanged(old) if &*old.key_id == "k1" && old.expires_at == 7_000)
        );
        assert!(
            matches!(bodies[4], EventBody::ApiKeyExpiryChanged(old) if &*old.key_id == "k2" && old.expires_at == 12_000)
        );
        // A rotation may not reuse an id.
        assert_eq!(code(out.last().unwrap()), "api_key_exists");
    }
}

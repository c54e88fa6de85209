//! `AccessTokens`: revoked access tokens (signed out, or revoked by RFC 7009).
//!
//! Access tokens are signed, so the HTTP layer checks them without the log; what it
//! cannot know from the token is that it was revoked. A revocation goes through the
//! log like any change, so every worker and every replay refuses the same tokens, from
//! the request after the revocation's on. A token is revoked once: its id is kept
//! until the token would have expired anyway, after which its signature refuses it.
//!
//! The keys tokens are signed with are here too: each server signs with keys of its
//! own and publishes their public halves through the log, so that a token one server
//! issued is accepted by every server sharing the log.
//!
//! In: `RevokeAccessToken`, keyed by the token's id; `PublishSigningKey` and
//! `RetireSigningKey`, keyed by the key's id. Out: `access_token.revoked`, or
//! `token_revoked` for a token revoked already; `signing_key.published` (once per key),
//! `signing_key.retired`, or `signing_key_published` / `signing_key_retired` /
//! `signing_key_not_found` when that is already so or the key is unknown.

use std::collections::HashMap;

use timely::dataflow::Stream;

use crate::events::{AccessTokenRevoked, SigningKeyPublished, SigningKeyRetired};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

pub type TokenIn = Input<Command>;

/// Revocations between sweeps of those that expired: the ids kept stay bounded by the
/// tokens revoked within one token lifetime, plus this many.
const SWEEP_EVERY: usize = 1024;

/// The input of the token aggregate for a command, if it revokes a token.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<TokenIn> {
    matches!(
        command,
        Command::RevokeAccessToken { .. }
            | Command::PublishSigningKey { .. }
            | Command::RetireSigningKey { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

pub trait AccessTokens<'scope> {
    fn access_tokens(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> AccessTokens<'scope> for Stream<'scope, Time, Vec<TokenIn>> {
    fn access_tokens(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        // Revoked token ids, with when each expires (log milliseconds).
        let mut revoked: HashMap<Str, Ts> = HashMap::new();
        let mut since_sweep = 0;
        // Published signing keys, and whether each was retired.
        let mut keys: HashMap<Str, bool> = HashMap::new();
        self.keyed_ordered(
            "AccessTokens",
            |input: &TokenIn| key_hash(input.op.aggregate_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let decided = Decided::of(&input);
                    let (token_id, user_id, expires_at) = match input.op {
                        Command::RevokeAccessToken {
                            token_id,
                            user_id,
                            expires_at,
                        } => (token_id, user_id, expires_at),
                        Command::PublishSigningKey { kid, public_key } => {
                            out.push(match keys.get(&kid) {
                                Some(_) => decided.conflict(
                                    "signing_key_published",
                                    format!("signing key {kid} is published already"),
                                ),
                                None => {
                                    keys.insert(kid.clone(), false);
                                    let mut decided = decided;
                                    decided.event(SigningKeyPublished { kid, public_key })
                                }
                            });
                            continue;
                        }
                        Command::RetireSigningKey { kid } => {
                            out.push(match keys.get_mut(&kid) {
                                None => {
                                    decided.not_found(format!("signing key {kid} is not published"))
                                }
                                Some(true) => decided.conflict(
                                    "signing_key_retired",
                                    format!("signing key {kid} is retired already"),
                                ),
                                Some(retired) => {
                                    *retired = true;
                                    let mut decided = decided;
                                    decided.event(SigningKeyRetired { kid })
                                }
                            });
                            continue;
                        }
                        _ => continue,
                    };
                    since_sweep += 1;
                    if since_sweep >= SWEEP_EVERY {
                        since_sweep = 0;
                        revoked.retain(|_, expires| *expires > input.ts);
                    }
                    if revoked.contains_key(&token_id) {
                        out.push(decided.conflict(
                            "token_revoked",
                            format!("access token {token_id} is revoked already"),
                        ));
                        continue;
                    }
                    revoked.insert(token_id.clone(), expires_at);
                    let mut decided = decided;
                    out.push(decided.event(AccessTokenRevoked {
                        token_id,
                        user_id,
                        expires_at,
                    }));
                }
            },
        )
    }
}

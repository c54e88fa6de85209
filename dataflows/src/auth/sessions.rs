//! `Sessions`: OAuth sessions, their authorization codes and refresh tokens.
//!
//! A session is one sign-in of a user through an OAuth client. It opens with the
//! password grant, or with an authorization code (the authorization endpoint grants
//! it, the token endpoint redeems it once, against its PKCE verifier). It then holds
//! one live refresh token; each refresh spends that token and issues the next one
//! (rotation). A spent token or a redeemed code that comes back means someone else
//! holds a copy: the whole session is revoked (reuse detection, RFC 6819 5.2.2.3 and
//! OAuth 2.1 4.3.1), and with it every access token issued in it, which names the
//! session in its `sid` claim.
//!
//! Deciding this in the log makes rotation race-free: of two requests presenting the
//! same refresh token, on any servers, exactly one rotates it and the other is reuse.
//! Codes and tokens are made and digested by the HTTP layer; only their SHA-256
//! digests enter the log, and the PKCE verifier only as its S256 digest.
//!
//! In: `OpenSession`, `GrantAuthorizationCode`, `RedeemAuthorizationCode`,
//! `RefreshSession`, `RevokeSession`, keyed by the session's id (so sessions spread
//! over the workers). Out: `authorization_code.granted`, `session.*`, or
//! `invalid_grant` refusals, which tell the client nothing about why a credential it
//! may have guessed is wrong beyond the detail.

use std::collections::HashMap;

use timely::dataflow::Stream;

use crate::events::{AuthorizationCodeGranted, SessionOpened, SessionRefreshed, SessionRevoked};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

pub type SessionIn = Input<Command>;

/// The refusal of every grant that cannot be honoured (RFC 6749 5.2).
pub const INVALID_GRANT: &str = "invalid_grant";
/// Why a session was revoked (`SessionRevoked::reason`).
pub const SIGNED_OUT: &str = "signed_out";
pub const REFRESH_TOKEN_REUSED: &str = "refresh_token_reused";
pub const CODE_REUSED: &str = "authorization_code_reused";

/// Decisions between sweeps of the sessions that expired.
const SWEEP_EVERY: usize = 1024;

/// The input of the session aggregate for a command, if it is about sessions.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<SessionIn> {
    matches!(
        command,
        Command::OpenSession { .. }
            | Command::GrantAuthorizationCode { .. }
            | Command::RedeemAuthorizationCode { .. }
            | Command::RefreshSession { .. }
            | Command::RevokeSession { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

/// An authorization code, until and after it is redeemed.
#[derive(Clone, Debug)]
struct Code {
    hash: Str,
    redirect_uri: Str,
    challenge: Str,
    expires_at: Ts,
    redeemed: bool,
}

#[derive(Clone, Debug)]
struct Session {
    user_id: Str,
    client_id: Str,
    scope: Str,
    /// The code the session was granted with, if it was.
    code: Option<Code>,
    /// The live refresh token's digest; none until a code is redeemed.
    current: Option<Str>,
    /// Digests of the refresh tokens spent by rotation.
    spent: Vec<Str>,
    generation: u32,
    /// When the live refresh token (or the unredeemed code) stops working.
    expires_at: Ts,
    revoked: bool,
}

impl Session {
    /// A session with neither code nor refresh token yet.
    fn new(user_id: &Str, client_id: &Str, scope: &Str, expires_at: Ts) -> Session {
        Session {
            user_id: user_id.clone(),
            client_id: client_id.clone(),
            scope: scope.clone(),
            code: None,
            current: None,
            spent: Vec::new(),
            generation: 0,
            expires_at,
            revoked: false,
        }
    }
}

/// The refusal of a new session whose id is taken.
fn taken(
    sessions: &HashMap<Str, Session>,
    decided: &Decided,
    session_id: &Str,
) -> Option<Result<Event, Rejection>> {
    sessions.contains_key(session_id).then(|| {
        decided.conflict(
            "session_exists",
            format!("session {session_id} already exists"),
        )
    })
}

pub trait Sessions<'scope> {
    fn sessions(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> Sessions<'scope> for Stream<'scope, Time, Vec<SessionIn>> {
    fn sessions(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        let mut sessions: HashMap<Str, Session> = HashMap::new();
        let mut since_sweep = 0;
        self.keyed_ordered(
            "Sessions",
            |input: &SessionIn| key_hash(input.op.aggregate_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    since_sweep += 1;
                    if since_sweep >= SWEEP_EVERY {
                        since_sweep = 0;
                        // An expired session refuses everything anyway; forgetting it
                        // changes only the refusal's detail.
                        sessions.retain(|_, session| session.expires_at > input.ts);
                    }
                    decide(&mut sessions, input, out);
                }
            },
        )
    }
}

fn decide(
    sessions: &mut HashMap<Str, Session>,
    input: SessionIn,
    out: &mut Vec<Result<Event, Rejection>>,
) {
    let mut decided = Decided::of(&input);
    let now = input.ts;
    let invalid = |decided: &Decided, detail: &str| decided.conflict(INVALID_GRANT, detail);
    match input.op {
        Command::OpenSession {
            session_id,
            user_id,
            client_id,
            scope,
            refresh_hash,
            ttl_ms,
        } => {
            if let Some(taken) = taken(sessions, &decided, &session_id) {
                out.push(taken);
                return;
            }
            let expires_at = now.saturating_add(ttl_ms);
            let session = Session::new(&user_id, &client_id, &scope, expires_at);
            sessions.insert(
                session_id.clone(),
                Session {
                    current: Some(refresh_hash),
                    generation: 1,
                    ..session
                },
            );
            out.push(decided.event(SessionOpened {
                session_id,
                user_id,
                client_id,
                scope,
                grant: "password".into(),
                expires_at,
            }));
        }
        Command::GrantAuthorizationCode {
            session_id,
            user_id,
            client_id,
            scope,
            code_hash,
            redirect_uri,
            code_challenge,
            code_ttl_ms,
            nonce,
        } => {
            if let Some(taken) = taken(sessions, &decided, &session_id) {
                out.push(taken);
                return;
            }
            let expires_at = now.saturating_add(code_ttl_ms);
            let session = Session::new(&user_id, &client_id, &scope, expires_at);
            sessions.insert(
                session_id.clone(),
                Session {
                    code: Some(Code {
                        hash: code_hash,
                        redirect_uri: redirect_uri.clone(),
                        challenge: code_challenge,
                        expires_at,
                        redeemed: false,
                    }),
                    ..session
                },
            );
            out.push(decided.event(AuthorizationCodeGranted {
                session_id,
                user_id,
                client_id,
                scope,
                redirect_uri,
                expires_at,
                nonce,
            }));
        }
        Command::RedeemAuthorizationCode {
            session_id,
            client_id,
            code_hash,
            redirect_uri,
            verifier_digest,
            refresh_hash,
            ttl_ms,
        } => {
            let Some(session) = sessions.get_mut(&session_id) else {
                out.push(invalid(&decided, "the authorization code is not valid"));
                return;
            };
            let Some(code) = session.code.as_mut().filter(|code| code.hash == code_hash) else {
                out.push(invalid(&decided, "the authorization code is not valid"));
                return;
            };
            if session.revoked {
                out.push(invalid(
                    &decided,
                    "the session of this authorization code has been revoked",
                ));
            } else if code.redeemed {
                // A code is redeemed once: whoever comes second holds a copy.
                session.revoked = true;
                out.push(decided.event(SessionRevoked {
                    session_id,
                    user_id: session.user_id.clone(),
                    reason: CODE_REUSED.into(),
                }));
            } else if now >= code.expires_at {
                out.push(invalid(&decided, "the authorization code has expired"));
            } else if client_id != session.client_id {
                out.push(invalid(
                    &decided,
                    "the authorization code was issued to another client",
                ));
            } else if redirect_uri != code.redirect_uri {
                out.push(invalid(
                    &decided,
                    "redirect_uri differs from the one the code was issued for",
                ));
            } else if verifier_digest != code.challenge {
                out.push(invalid(
                    &decided,
                    "code_verifier does not match the code_challenge (PKCE S256)",
                ));
            } else {
                code.redeemed = true;
                session.current = Some(refresh_hash);
                session.generation = 1;
                session.expires_at = now.saturating_add(ttl_ms);
                out.push(decided.event(SessionOpened {
                    session_id,
                    user_id: session.user_id.clone(),
                    client_id,
                    scope: session.scope.clone(),
                    grant: "authorization_code".into(),
                    expires_at: session.expires_at,
                }));
            }
        }
        Command::RefreshSession {
            session_id,
            client_id,
            refresh_hash,
            new_refresh_hash,
            ttl_ms,
        } => {
            let Some(session) = sessions.get_mut(&session_id) else {
                out.push(invalid(&decided, "the refresh token is not valid"));
                return;
            };
            let live = session.current.as_ref() == Some(&refresh_hash);
            let spent = session.spent.contains(&refresh_hash);
            if !live && !spent {
                out.push(invalid(&decided, "the refresh token is not valid"));
            } else if client_id != session.client_id {
                out.push(invalid(
                    &decided,
                    "the refresh token was issued to another client",
                ));
            } else if session.revoked {
                out.push(invalid(&decided, "the session has been revoked"));
            } else if spent {
                // Rotation spent this token: whoever comes with it now holds a copy.
                session.revoked = true;
                out.push(decided.event(SessionRevoked {
                    session_id,
                    user_id: session.user_id.clone(),
                    reason: REFRESH_TOKEN_REUSED.into(),
                }));
            } else if now >= session.expires_at {
                out.push(invalid(&decided, "the refresh token has expired"));
            } else {
                session.spent.push(refresh_hash);
                session.current = Some(new_refresh_hash);
                session.generation += 1;
                session.expires_at = now.saturating_add(ttl_ms);
                out.push(decided.event(SessionRefreshed {
                    session_id,
                    user_id: session.user_id.clone(),
                    generation: session.generation,
                    expires_at: session.expires_at,
                }));
            }
        }
        Command::RevokeSession {
            session_id,
            reason,
            refresh_hash,
        } => {
            let Some(session) = sessions.get_mut(&session_id) else {
                out.push(decided.not_found(format!("session {session_id} does not exist")));
                return;
            };
            let held = refresh_hash.is_none_or(|hash| {
                session.current.as_ref() == Some(&hash) || session.spent.contains(&hash)
            });
            if !held {
                out.push(invalid(&decided, "the refresh token is not valid"));
            } else if session.revoked {
                out.push(decided.conflict(
                    "session_revoked",
                    format!("session {session_id} is revoked already"),
                ));
            } else {
                session.revoked = true;
                out.push(decided.event(SessionRevoked {
                    session_id,
                    user_id: session.user_id.clone(),
                    reason,
                }));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Ts = 10_000;

    fn open(session: &str, refresh: &str) -> Command {
        Command::OpenSession {
            session_id: session.into(),
            user_id: "u1".into(),
            client_id: "cli".into(),
            scope: "".into(),
            refresh_hash: refresh.into(),
            ttl_ms: TTL,
        }
    }

    fn refresh(session: &str, presented: &str, next: &str) -> Command {
        refresh_as(session, "cli", presented, next)
    }

    fn refresh_as(session: &str, client: &str, presented: &str, next: &str) -> Command {
        Command::RefreshSession {
            session_id: session.into(),
            client_id: client.into(),
            refresh_hash: presented.into(),
            new_refresh_hash: next.into(),
            ttl_ms: TTL,
        }
    }

    fn grant(session: &str) -> Command {
        Command::GrantAuthorizationCode {
            session_id: session.into(),
            user_id: "u1".into(),
            client_id: "app".into(),
            scope: "".into(),
            code_hash: "code".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_challenge: "challenge".into(),
            code_ttl_ms: 60_000,
            nonce: None,
        }
    }

    fn redeem(session: &str, client: &str, uri: &str, verifier: &str) -> Command {
        Command::RedeemAuthorizationCode {
            session_id: session.into(),
            client_id: client.into(),
            code_hash: "code".into(),
            redirect_uri: uri.into(),
            verifier_digest: verifier.into(),
            refresh_hash: "r1".into(),
            ttl_ms: TTL,
        }
    }

    /// Runs `commands`, each at the log time given, through the aggregate.
    fn run(commands: Vec<(Ts, Command)>) -> Vec<Result<Event, Rejection>> {
        let mut sessions = HashMap::new();
        let mut out = Vec::new();
        for (i, (ts, command)) in commands.into_iter().enumerate() {
            decide(
                &mut sessions,
                Input::command(i as Seq, ts, command),
                &mut out,
            );
        }
        out
    }

    /// An outcome in brief: the event's name and reason, or the refusal's code.
    fn brief(outcome: &Result<Event, Rejection>) -> String {
        match outcome {
            Ok(Event {
                body: EventBody::SessionRevoked(revoked),
                ..
            }) => format!("revoked:{}", revoked.reason),
            Ok(event) => event.body.name().to_string(),
            Err(Rejection {
                kind: RejectionKind::Conflict { code },
                detail,
                ..
            }) => format!("{code}:{detail}"),
            Err(rejection) => format!("{rejection:?}"),
        }
    }

    #[test]
    fn each_refresh_token_rotates_once_and_a_spent_one_revokes_the_session() {
        let out: Vec<String> = run(vec![
            (1_000, open("s1", "r1")),
            (2_000, refresh("s1", "r1", "r2")),
            (3_000, refresh("s1", "r2", "r3")),
            (4_000, refresh("s1", "unknown", "x")),
            // r1 comes back: a copy is out there; the session ends for everyone.
            (5_000, refresh("s1", "r1", "r4")),
            (6_000, refresh("s1", "r3", "r5")),
            (7_000, refresh("s1", "r1", "r6")),
            (8_000, revoke("s1", None)),
            (9_000, open("s2", "q1")),
            (9_000, revoke("s2", Some("r1"))),
            (9_000, revoke("s2", Some("q1"))),
        ])
        .iter()
        .map(brief)
        .collect();
        assert_eq!(out[0], "session.opened");
        assert_eq!(out[1], "session.refreshed");
        assert_eq!(out[2], "session.refreshed");
        assert!(out[3].starts_with("invalid_grant:"));
        assert_eq!(out[4], "revoked:refresh_token_reused");
        assert_eq!(out[5], "invalid_grant:the session has been revoked");
        assert_eq!(out[6], "invalid_grant:the session has been revoked");
        assert!(out[7].starts_with("session_revoked:"));
        // Signing out with a refresh token takes that session's token.
        assert_eq!(out[9], "invalid_grant:the refresh token is not valid");
        assert_eq!(out[10], "revoked:signed_out");
    }

    fn revoke(session: &str, presented: Option<&str>) -> Command {
        Command::RevokeSession {
            session_id: session.into(),
            reason: SIGNED_OUT.into(),
            refresh_hash: presented.map(Str::from),
        }
    }

    #[test]
    fn refresh_tokens_expire_on_log_time_and_belong_to_their_client() {
        let other_client = refresh_as("s1", "elsewhere", "r1", "r2");
        let out: Vec<String> = run(vec![
            (1_000, open("s1", "r1")),
            (2_000, other_client),
            (1_000 + TTL, refresh("s1", "r1", "r2")),
            (1_000 + TTL, open("s1", "again")),
        ])
        .iter()
        .map(brief)
        .collect();
        assert_eq!(
            out[1],
            "invalid_grant:the refresh token was issued to another client"
        );
        assert_eq!(out[2], "invalid_grant:the refresh token has expired");
        assert!(out[3].starts_with("session_exists:"));
    }

    #[test]
    fn a_code_is_redeemed_once_with_its_client_redirect_uri_and_verifier() {
        let uri = "https://app.example/cb";
        let out: Vec<String> = run(vec![
            (1_000, grant("s1")),
            (2_000, redeem("s1", "other", uri, "challenge")),
            (
                2_000,
                redeem("s1", "app", "https://evil.example/cb", "challenge"),
            ),
            (2_000, redeem("s1", "app", uri, "wrong")),
            (2_000, redeem("nope", "app", uri, "challenge")),
            (3_000, redeem("s1", "app", uri, "challenge")),
            (3_500, refresh_as("s1", "app", "r1", "r2")),
            // The code again: the session it opened ends.
            (4_000, redeem("s1", "app", uri, "challenge")),
            (4_500, refresh_as("s1", "app", "r2", "r3")),
            (5_000, grant("s2")),
            (65_000, redeem("s2", "app", uri, "challenge")),
        ])
        .iter()
        .map(brief)
        .collect();
        assert_eq!(out[0], "authorization_code.granted");
        assert!(out[1].contains("another client"), "{}", out[1]);
        assert!(out[2].contains("redirect_uri"), "{}", out[2]);
        assert!(out[3].contains("PKCE"), "{}", out[3]);
        assert_eq!(out[4], "invalid_grant:the authorization code is not valid");
        assert_eq!(out[5], "session.opened");
        assert_eq!(out[6], "session.refreshed");
        assert_eq!(out[7], "revoked:authorization_code_reused");
        assert_eq!(out[8], "invalid_grant:the session has been revoked");
        assert_eq!(out[10], "invalid_grant:the authorization code has expired");
    }
}

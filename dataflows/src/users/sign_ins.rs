//! `SignIns`: whether a sign-in is let through, and account lockout.
//!
//! The HTTP layer checks the password (Argon2 is too slow for a dataflow worker) and
//! logs the attempt with its result; this aggregate, keyed by account, decides on log
//! time: `MAX_FAILURES` failed attempts within `FAILURE_WINDOW_MS` lock the account for
//! `LOCK_MS`, during which every attempt is refused, the right password too. A success
//! clears the failures; an administrator's unlock clears both. Because the counters are
//! decided here, in log order, they are exact on any number of workers and after
//! replay, and an attacker cannot race several servers past the limit.
//!
//! Attempts on addresses no account has are logged too (keyed by the address), and
//! never lock anything.
//!
//! Two-factor authentication lives here too, since it decides sign-ins: an account
//! with it on needs a one-time code with its password. The HTTP layer matches a TOTP
//! code to its time step (the secret is derived from the enrollment id by the server
//! and never logged); this aggregate lets each step through once, so a code seen by an
//! attacker cannot be replayed, and keeps the digests of the unused recovery codes.

use std::collections::{BTreeSet, HashMap, VecDeque};

use timely::dataflow::Stream;

use crate::events::{
    MfaDisabled, MfaEnabled, MfaEnrollmentStarted, MfaRecoveryCodeUsed, UserAuthenticated,
    UserAuthenticationFailed, UserLocked, UserUnlocked,
};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// Failed attempts within `FAILURE_WINDOW_MS` that lock an account.
pub const MAX_FAILURES: usize = 5;
/// The window failures are counted in: 15 minutes.
pub const FAILURE_WINDOW_MS: Ts = 15 * 60 * 1000;
/// How long a lock lasts unless an administrator lifts it: 15 minutes.
pub const LOCK_MS: Ts = 15 * 60 * 1000;

/// Why a sign-in was refused (`UserAuthenticationFailed::reason`).
pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
pub const ACCOUNT_LOCKED: &str = "account_locked";
/// The right password, without the one-time code the account needs: not counted as a
/// failure, since no guess was made.
pub const MFA_REQUIRED: &str = "mfa_required";
/// The right password with a wrong, stale or replayed one-time code, or a used
/// recovery code: counted.
pub const INVALID_MFA_CODE: &str = "invalid_mfa_code";

pub type SignInIn = Input<Command>;

/// The input of the sign-in aggregate for a command, if it is about signing in.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<SignInIn> {
    matches!(
        command,
        Command::Authenticate { .. }
            | Command::UnlockUser { .. }
            | Command::StartMfa { .. }
            | Command::ConfirmMfa { .. }
            | Command::DisableMfa { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

/// What the aggregate remembers of an account: its recent failures, oldest first, the
/// end of its lock, if it has one, and its second factor.
#[derive(Default)]
struct Account {
    failures: VecDeque<Ts>,
    locked_until: Option<Ts>,
    mfa: Mfa,
}

#[derive(Default)]
enum Mfa {
    #[default]
    Off,
    Pending {
        enrollment_id: Str,
    },
    On {
        enrollment_id: Str,
        /// The newest TOTP time step used: a code is good once.
        last_step: u64,
        /// Digests of the recovery codes not used yet.
        recovery: BTreeSet<Str>,
    },
}

pub trait SignIns<'scope> {
    fn sign_ins(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> SignIns<'scope> for Stream<'scope, Time, Vec<SignInIn>> {
    fn sign_ins(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        let mut accounts: HashMap<Str, Account> = HashMap::new();
        self.keyed_ordered(
            "SignIns",
            |input: &SignInIn| key_hash(input.op.aggregate_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    decide(&mut accounts, input, out);
                }
            },
        )
    }
}

/// What a sign-in with the right password comes to, given the account's second factor:
/// let through (naming the factor used), or refused (with the reason and whether the
/// refusal counts as a failure).
enum Verdict {
    Through(Option<&'static str>),
    Refused(&'static str, bool),
}

fn second_factor(mfa: &mut Mfa, offered: Option<SecondFactor>) -> Verdict {
    let Mfa::On {
        enrollment_id,
        last_step,
        recovery,
    } = mfa
    else {
        return Verdict::Through(None);
    };
    match offered {
        None => Verdict::Refused(MFA_REQUIRED, false),
        Some(SecondFactor::Totp {
            enrollment_id: matched,
            step,
        }) if matched == *enrollment_id && step > *last_step => {
            *last_step = step;
            Verdict::Through(Some("totp"))
        }
        Some(SecondFactor::RecoveryCode { code_hash }) if recovery.remove(&code_hash) => {
            Verdict::Through(Some("recovery_code"))
        }
        Some(_) => Verdict::Refused(INVALID_MFA_CODE, true),
    }
}

fn decide(
    accounts: &mut HashMap<Str, Account>,
    input: SignInIn,
    out: &mut Vec<Result<Event, Rejection>>,
) {
    let mut decided = Decided::of(&input);
    let now = input.ts;
    match input.op {
        Command::Authenticate {
            attempt_id,
            user_id: None,
            email,
            client,
            ..
        } => out.push(decided.event(UserAuthenticationFailed {
            attempt_id,
            user_id: None,
            email,
            client,
            reason: INVALID_CREDENTIALS.into(),
            failures: 0,
            locked_until: None,
        })),
        Command::Authenticate {
            attempt_id,
            user_id: Some(user_id),
            email,
            password_matched,
            client,
            second_factor: offered,
        } => {
            let account = accounts.entry(user_id.clone()).or_default();
            let failed = |reason: &str, account: &Account| UserAuthenticationFailed {
                attempt_id: attempt_id.clone(),
                user_id: Some(user_id.clone()),
                email: email.clone(),
                client: client.clone(),
                reason: reason.into(),
                failures: account.failures.len() as u32,
                locked_until: account.locked_until,
            };
            if account.locked_until.is_some_and(|until| now < until) {
                out.push(decided.event(failed(ACCOUNT_LOCKED, account)));
                return;
            }
            account.locked_until = None;
            let verdict = match password_matched {
                true => second_factor(&mut account.mfa, offered),
                false => Verdict::Refused(INVALID_CREDENTIALS, true),
            };
            let reason = match verdict {
                Verdict::Through(factor) => {
                    account.failures.clear();
                    let remaining = match (&account.mfa, factor) {
                        (Mfa::On { recovery, .. }, Some("recovery_code")) => {
                            Some(recovery.len() as u32)
                        }
                        _ => None,
                    };
                    out.push(decided.event(UserAuthenticated {
                        attempt_id,
                        user_id: user_id.clone(),
                        client,
                        second_factor: factor.map(Str::from),
                    }));
                    if let Some(remaining) = remaining {
                        out.push(decided.event(MfaRecoveryCodeUsed { user_id, remaining }));
                    }
                    return;
                }
                Verdict::Refused(reason, false) => {
                    out.push(decided.event(failed(reason, account)));
                    return;
                }
                Verdict::Refused(reason, true) => reason,
            };
            while account
                .failures
                .front()
                .is_some_and(|at| now.saturating_sub(*at) >= FAILURE_WINDOW_MS)
            {
                account.failures.pop_front();
            }
            account.failures.push_back(now);
            if account.failures.len() < MAX_FAILURES {
                out.push(decided.event(failed(reason, account)));
                return;
            }
            let locked_until = now.saturating_add(LOCK_MS);
            account.locked_until = Some(locked_until);
            out.push(decided.event(failed(reason, account)));
            out.push(decided.event(UserLocked {
                user_id: user_id.clone(),
                locked_until,
                failures: account.failures.len() as u32,
            }));
            account.failures.clear();
        }
        Command::UnlockUser { user_id } => {
            let Some(account) = accounts.get_mut(&user_id) else {
                return;
            };
            let was_locked = account.locked_until.is_some_and(|until| now < until);
            account.failures.clear();
            account.locked_until = None;
            if was_locked {
                out.push(decided.event(UserUnlocked { user_id }));
            }
        }
        Command::StartMfa {
            user_id,
            enrollment_id,
        } => {
            let account = accounts.entry(user_id.clone()).or_default();
            if let Mfa::On { .. } = account.mfa {
                out.push(decided.conflict(
                    "mfa_enabled",
                    "two-factor authentication is already on; turn it off first",
                ));
                return;
            }
            account.mfa = Mfa::Pending {
                enrollment_id: enrollment_id.clone(),
            };
            out.push(decided.event(MfaEnrollmentStarted {
                user_id,
                enrollment_id,
            }));
        }
        Command::ConfirmMfa {
            user_id,
            enrollment_id,
            step,
            recovery_code_hashes,
        } => {
            let account = accounts.entry(user_id.clone()).or_default();
            match &account.mfa {
                Mfa::Pending {
                    enrollment_id: pending,
                } if *pending == enrollment_id => {}
                _ => {
                    out.push(decided.conflict(
                        "mfa_not_pending",
                        "no two-factor enrollment waits for this code; start one again",
                    ));
                    return;
                }
            }
            let recovery: BTreeSet<Str> = recovery_code_hashes.into_iter().collect();
            out.push(decided.event(MfaEnabled {
                user_id,
                enrollment_id: enrollment_id.clone(),
                recovery_codes: recovery.len() as u32,
            }));
            account.mfa = Mfa::On {
                enrollment_id,
                last_step: step,
                recovery,
            };
        }
        Command::DisableMfa { user_id } => {
            let Some(account) = accounts.get_mut(&user_id) else {
                return;
            };
            if !matches!(account.mfa, Mfa::Off) {
                account.mfa = Mfa::Off;
                out.push(decided.event(MfaDisabled { user_id }));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Ts = 60 * 1000;

    fn attempt(user: Option<&str>, matched: bool) -> Command {
        Command::Authenticate {
            attempt_id: "a".into(),
            user_id: user.map(Str::from),
            email: "ada@example.com".into(),
            password_matched: matched,
            client: "127.0.0.1".into(),
            second_factor: None,
        }
    }

    fn with_factor(matched: bool, factor: SecondFactor) -> Command {
        match attempt(Some("u"), matched) {
            Command::Authenticate {
                attempt_id,
                user_id,
                email,
                password_matched,
                client,
                ..
            } => Command::Authenticate {
                attempt_id,
                user_id,
                email,
                password_matched,
                client,
                second_factor: Some(factor),
            },
            _ => unreachable!(),
        }
    }

    fn totp(enrollment: &str, step: u64) -> SecondFactor {
        SecondFactor::Totp {
            enrollment_id: enrollment.into(),
            step,
        }
    }

    fn recovery(hash: &str) -> SecondFactor {
        SecondFactor::RecoveryCode {
            code_hash: hash.into(),
        }
    }

    /// Runs `(minute, command)` pairs through the aggregate; returns the events' names
    /// with each failure's reason.
    fn run(commands: Vec<(Ts, Command)>) -> Vec<String> {
        let mut accounts = HashMap::new();
        let mut out = Vec::new();
        for (seq, (minute, command)) in commands.into_iter().enumerate() {
            decide(
                &mut accounts,
                Input::command(seq as Seq, minute * MINUTE, command),
                &mut out,
            );
        }
        out.into_iter()
            .map(|outcome| match outcome {
                Ok(Event {
                    body: EventBody::UserAuthenticationFailed(failed),
                    ..
                }) => format!("failed:{}", failed.reason),
                Ok(event) => event.body.name().to_string(),
                Err(Rejection {
                    kind: RejectionKind::Conflict { code },
                    ..
                }) => format!("refused:{code}"),
                Err(other) => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn five_failures_in_the_window_lock_even_the_right_password_out_until_the_cool_down() {
        let mut commands: Vec<_> = (0..5).map(|m| (m, attempt(Some("u"), false))).collect();
        commands.push((6, attempt(Some("u"), true)));
        // 4 + 15 = 19: the lock ends at minute 19.
        commands.push((18, attempt(Some("u"), true)));
        commands.push((19, attempt(Some("u"), true)));
        let names = run(commands);
        assert_eq!(
            names,
            [
                "failed:invalid_credentials",
                "failed:invalid_credentials",
                "failed:invalid_credentials",
                "failed:invalid_credentials",
                "failed:invalid_credentials",
                "user.locked",
                "failed:account_locked",
                "failed:account_locked",
                "user.authenticated",
            ]
        );
    }

    #[test]
    fn failures_older_than_the_window_and_before_a_success_do_not_count() {
        // Four failures, then one 15 minutes after the first: the first has left the
        // window. A success clears the rest.
        let mut commands: Vec<_> = (0..4).map(|m| (m, attempt(Some("u"), false))).collect();
        commands.push((15, attempt(Some("u"), false)));
        commands.push((16, attempt(Some("u"), true)));
        commands.extend((17..21).map(|m| (m, attempt(Some("u"), false))));
        let names = run(commands);
        assert!(!names.iter().any(|name| name == "user.locked"), "{names:?}");
        assert_eq!(names[5], "user.authenticated");
    }

    #[test]
    fn an_unlock_lifts_the_lock_at_once_and_unknown_addresses_lock_nothing() {
        let mut commands: Vec<_> = (0..5).map(|m| (m, attempt(Some("u"), false))).collect();
        commands.push((
            5,
            Command::UnlockUser {
                user_id: "u".into(),
            },
        ));
        commands.push((5, attempt(Some("u"), true)));
        // Unlocking an account that is not locked says nothing.
        commands.push((
            6,
            Command::UnlockUser {
                user_id: "u".into(),
            },
        ));
        commands.extend((0..10).map(|m| (m, attempt(None, false))));
        let names = run(commands);
        assert_eq!(
            names[5..8],
            ["user.locked", "user.unlocked", "user.authenticated"]
        );
        assert_eq!(names.len(), 18);
        assert!(names[8..]
            .iter()
            .all(|name| name == "failed:invalid_credentials"));
    }

    #[test]
    fn with_two_factors_on_each_code_lets_one_sign_in_through() {
        let start = |id: &str| Command::StartMfa {
            user_id: "u".into(),
            enrollment_id: id.into(),
        };
        let confirm = |id: &str, step| Command::ConfirmMfa {
            user_id: "u".into(),
            enrollment_id: id.into(),
            step,
            recovery_code_hashes: vec!["h1".into(), "h2".into()],
        };
        let names = run(vec![
            (0, start("e1")),
            // Pending: the password alone still signs in.
            (0, attempt(Some("u"), true)),
            (0, confirm("e0", 100)),
            (0, confirm("e1", 100)),
            (0, start("e2")),
            (1, attempt(Some("u"), true)),
            (1, with_factor(true, totp("e1", 100))),
            (1, with_factor(true, totp("e1", 101))),
            (1, with_factor(true, totp("e1", 101))),
            (1, with_factor(true, totp("e0", 102))),
            (1, with_factor(false, totp("e1", 102))),
            (2, with_factor(true, recovery("h1"))),
            (2, with_factor(true, recovery("h1"))),
            (2, with_factor(true, SecondFactor::Invalid)),
            (
                3,
                Command::DisableMfa {
                    user_id: "u".into(),
                },
            ),
            (3, attempt(Some("u"), true)),
        ]);
        assert_eq!(
            names,
            [
                "user.mfa_enrollment_started",
                "user.authenticated",
                "refused:mfa_not_pending",
                "user.mfa_enabled",
                "refused:mfa_enabled",
                "failed:mfa_required",
                "failed:invalid_mfa_code",
                "user.authenticated",
                "failed:invalid_mfa_code",
                "failed:invalid_mfa_code",
                "failed:invalid_credentials",
                "user.authenticated",
                "user.mfa_recovery_code_used",
                "failed:invalid_mfa_code",
                "failed:invalid_mfa_code",
                "user.mfa_disabled",
                "user.authenticated",
            ]
        );
    }
}

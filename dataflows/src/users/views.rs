//! User read models: the users, and the authentication log (one row per sign-in
//! attempt). The password hash is kept for authentication; no answer shows it.

use serde::{Deserialize, Serialize};

use crate::events::{
    LoyaltyPointsEarned, LoyaltyPointsReversed, MfaDisabled, MfaEnabled, MfaEnrollmentStarted,
    MfaRecoveryCodeUsed, UserAuthenticated, UserAuthenticationFailed, UserCreated, UserDeleted,
    UserLocked, UserUnlocked, UserUpdated,
};
use crate::model::*;
use crate::users::loyalty::Tier;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: Str,
    pub email: Str,
    pub name: Str,
    pub password_hash: Str,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// Until when (Unix milliseconds, log time) sign-ins are refused after too many
    /// failures; a time in the past is no lock.
    pub locked_until: Option<Ts>,
    pub last_authenticated_at: Option<Ts>,
    /// The two-factor enrollment the user's TOTP secret is derived from: pending until
    /// `mfa_enabled`.
    pub mfa_enrollment: Option<Str>,
    pub mfa_enabled: bool,
    pub recovery_codes_left: u32,
    pub profile: Profile,
}

impl UserRow {
    /// The end of the account's lock, if it is locked at `now` (Unix milliseconds).
    pub fn locked_at(&self, now: Ts) -> Option<Ts> {
        self.locked_until.filter(|until| now < *until)
    }
}

pub(crate) fn step_user(row: &mut Option<UserRow>, event: &Event) {
    match &event.body {
        EventBody::UserCreated(UserCreated {
            user_id,
            email,
            name,
            password_hash,
        }) => {
            *row = Some(UserRow {
                user_id: user_id.clone(),
                email: email.clone(),
                name: name.clone(),
                password_hash: password_hash.clone(),
                created_at: event.ts,
                updated_at: event.ts,
                locked_until: None,
                last_authenticated_at: None,
                mfa_enrollment: None,
                mfa_enabled: false,
                recovery_codes_left: 0,
                profile: Profile::default(),
            })
        }
        EventBody::UserUpdated(UserUpdated {
            email,
            name,
            password_hash,
            profile,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.email = email.clone();
                row.name = name.clone();
                row.password_hash = password_hash.clone();
                row.profile = profile.clone();
                row.updated_at = event.ts;
            }
        }
        EventBody::UserDeleted(UserDeleted { .. }) => *row = None,
        EventBody::UserLocked(UserLocked { locked_until, .. }) => {
            if let Some(row) = row.as_mut() {
                row.locked_until = Some(*locked_until);
            }
        }
        EventBody::UserUnlocked(UserUnlocked { .. }) => {
            if let Some(row) = row.as_mut() {
                row.locked_until = None;
            }
        }
        EventBody::UserAuthenticated(UserAuthenticated { .. }) => {
            if let Some(row) = row.as_mut() {
                row.locked_until = None;
                row.last_authenticated_at = Some(event.ts);
            }
        }
        EventBody::MfaEnrollmentStarted(MfaEnrollmentStarted { enrollment_id, .. }) => {
            if let Some(row) = row.as_mut() {
                row.mfa_enrollment = Some(enrollment_id.clone());
                row.mfa_enabled = false;
            }
        }
        EventBody::MfaEnabled(MfaEnabled {
            enrollment_id,
            recovery_codes,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.mfa_enrollment = Some(enrollment_id.clone());
                row.mfa_enabled = true;
                row.recovery_codes_left = *recovery_codes;
            }
        }
        EventBody::MfaDisabled(MfaDisabled { .. }) => {
            if let Some(row) = row.as_mut() {
                row.mfa_enrollment = None;
                row.mfa_enabled = false;
                row.recovery_codes_left = 0;
            }
        }
        EventBody::MfaRecoveryCodeUsed(MfaRecoveryCodeUsed { remaining, .. }) => {
            if let Some(row) = row.as_mut() {
                row.recovery_codes_left = *remaining;
            }
        }
        _ => {}
    }
}

/// One sign-in attempt, as the authentication log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignInRow {
    pub attempt_id: Str,
    /// The account the address named; none for an address no account has.
    pub user_id: Option<Str>,
    pub client: Str,
    pub succeeded: bool,
    /// The second factor a success took: `totp`, `recovery_code`, or none.
    pub second_factor: Option<Str>,
    /// Why it was refused: `invalid_credentials`, `account_locked`, `mfa_required` or
    /// `invalid_mfa_code` (`sign_ins`).
    pub reason: Option<Str>,
    /// The account's failed attempts in the current window, this one included.
    pub failures: u32,
    /// Until when the account is locked, when this attempt found it locked or locked it.
    pub locked_until: Option<Ts>,
    pub at: Ts,
}

pub(crate) fn step_sign_in(row: &mut Option<SignInRow>, event: &Event) {
    match &event.body {
        EventBody::UserAuthenticated(UserAuthenticated {
            attempt_id,
            user_id,
            client,
            second_factor,
        }) => {
            *row = Some(SignInRow {
                attempt_id: attempt_id.clone(),
                user_id: Some(user_id.clone()),
                client: client.clone(),
                succeeded: true,
                second_factor: second_factor.clone(),
                reason: None,
                failures: 0,
                locked_until: None,
                at: event.ts,
            })
        }
        EventBody::UserAuthenticationFailed(UserAuthenticationFailed {
            attempt_id,
            user_id,
            client,
            reason,
            failures,
            locked_until,
            ..
        }) => {
            *row = Some(SignInRow {
                attempt_id: attempt_id.clone(),
                user_id: user_id.clone(),
                client: client.clone(),
                succeeded: false,
                second_factor: None,
                reason: Some(reason.clone()),
                failures: *failures,
                locked_until: *locked_until,
                at: event.ts,
            })
        }
        _ => {}
    }
}

/// A deleted user, kept as a tombstone: what the readers of other views and of the
/// history erase the user's personal data by (their orders stay, under the user's id,
/// which names no one any more).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErasedUserRow {
    pub user_id: Str,
    pub erased_at: Ts,
}

pub(crate) fn step_erased_user(row: &mut Option<ErasedUserRow>, event: &Event) {
    if let EventBody::UserDeleted(UserDeleted { user_id }) = &event.body {
        row.get_or_insert_with(|| ErasedUserRow {
            user_id: user_id.clone(),
            erased_at: event.ts,
        });
    }
}

/// A user's loyalty points: what completed orders earned, less what refunds took back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LoyaltyRow {
    pub user_id: Str,
    /// Earned less reversed: the balance, and what the tier is judged on.
    pub points: i64,
    pub earned: i64,
    pub reversed: i64,
    /// Orders that earned points.
    pub orders: u64,
    pub tier: Tier,
    pub updated_at: Ts,
}

pub(crate) fn step_loyalty(row: &mut Option<LoyaltyRow>, event: &Event) {
    let (user_id, earned, reversed) = match &event.body {
        EventBody::LoyaltyPointsEarned(LoyaltyPointsEarned {
            user_id, points, ..
        }) => (user_id, *points, 0),
        EventBody::LoyaltyPointsReversed(LoyaltyPointsReversed {
            user_id, points, ..
        }) => (user_id, 0, *points),
        _ => return,
    };
    let row = row.get_or_insert_with(|| LoyaltyRow {
        user_id: user_id.clone(),
        points: 0,
        earned: 0,
        reversed: 0,
        orders: 0,
        tier: Tier::Standard,
        updated_at: event.ts,
    });
    row.earned += earned;
    row.reversed += reversed;
    row.orders += u64::from(matches!(event.body, EventBody::LoyaltyPointsEarned(_)));
    row.points = row.earned - row.reversed;
    row.tier = Tier::of(row.points);
    row.updated_at = event.ts;
}

//! The users context's part of the event catalogue: accounts (`user.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{Profile, Str, Ts};

records! {
    /// An account was opened.
    pub struct UserCreated {
        pub user_id: Str,
        pub email: Str,
        pub name: Str,
        /// The Argon2id hash, for the views in this process only: never written out
        /// (the bus, the history, the event schemas), so a reader of events learns no
        /// password hash.
        #[serde(skip_serializing, default)]
        #[schemars(skip)]
        pub password_hash: Str,
    }

    /// An account changed; every field is its value after the change.
    pub struct UserUpdated {
        pub user_id: Str,
        pub email: Str,
        pub name: Str,
        /// As on `UserCreated`: in this process only.
        #[serde(skip_serializing, default)]
        #[schemars(skip)]
        pub password_hash: Str,
        /// Events logged before profiles existed have the default profile.
        #[serde(default)]
        pub profile: Profile,
    }

    /// An account was closed; its address is free again.
    pub struct UserDeleted {
        pub user_id: Str,
    }

    /// A sign-in succeeded: the password matched and the account is not locked.
    pub struct UserAuthenticated {
        pub attempt_id: Str,
        pub user_id: Str,
        /// The client's network address.
        pub client: Str,
        /// The second factor it took: `totp`, `recovery_code`, or none.
        pub second_factor: Option<Str>,
    }

    /// A sign-in was refused. `reason` is `invalid_credentials` (an unknown address or
    /// a wrong password), `mfa_required` (the right password without the one-time code
    /// the account needs), `invalid_mfa_code` or `account_locked`.
    pub struct UserAuthenticationFailed {
        pub attempt_id: Str,
        /// The account the address names; none for an address no account has.
        pub user_id: Option<Str>,
        /// The address as it was typed.
        pub email: Str,
        pub client: Str,
        pub reason: Str,
        /// The account's failed attempts in the current window, this one included.
        pub failures: u32,
        /// Until when (Unix milliseconds, log time) the account is locked, if it is.
        pub locked_until: Option<Ts>,
    }

    /// Too many failed sign-ins: the account refuses every sign-in until `locked_until`
    /// (Unix milliseconds, log time) or until an administrator unlocks it.
    pub struct UserLocked {
        pub user_id: Str,
        pub locked_until: Ts,
        pub failures: u32,
    }

    /// An administrator lifted an account's lock.
    pub struct UserUnlocked {
        pub user_id: Str,
    }

    /// Two-factor enrollment began: the user was shown a TOTP secret, derived by the
    /// server from `enrollment_id`; a first valid code confirms it.
    pub struct MfaEnrollmentStarted {
        pub user_id: Str,
        pub enrollment_id: Str,
    }

    /// Two-factor authentication is on: every sign-in needs a one-time code.
    pub struct MfaEnabled {
        pub user_id: Str,
        pub enrollment_id: Str,
        /// How many recovery codes the user was given.
        pub recovery_codes: u32,
    }

    pub struct MfaDisabled {
        pub user_id: Str,
    }

    /// A recovery code stood in for a one-time code; it cannot be used again.
    pub struct MfaRecoveryCodeUsed {
        pub user_id: Str,
        pub remaining: u32,
    }

    /// A completed order earned its buyer points (less any share already refunded).
    pub struct LoyaltyPointsEarned {
        pub user_id: Str,
        pub order_id: Str,
        pub points: i64,
    }

    /// A refund took back the refunded share of an order's points.
    pub struct LoyaltyPointsReversed {
        pub user_id: Str,
        pub order_id: Str,
        pub refund_id: Str,
        pub points: i64,
    }
}

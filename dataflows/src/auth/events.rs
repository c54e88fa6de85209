//! The auth context's part of the event catalogue: API keys (`api_key.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{Str, Ts};

records! {
    /// An API key was issued. Only a digest of the key is kept anywhere.
    pub struct ApiKeyCreated {
        pub key_id: Str,
        pub name: Str,
        /// The user the key acts as, if any; a key without one is a service's.
        pub owner: Option<Str>,
        pub scopes: Vec<Str>,
        /// SHA-256 of the key, in hex.
        pub key_hash: Str,
        /// Unix milliseconds (log time) from which the key is refused.
        pub expires_at: Ts,
    }

    /// An API key was revoked, or its expiry moved earlier (a rotation's grace period).
    pub struct ApiKeyExpiryChanged {
        pub key_id: Str,
        pub expires_at: Ts,
    }

    /// An API key was revoked: refused from now on.
    pub struct ApiKeyRevoked {
        pub key_id: Str,
    }

    /// An access token was revoked (signed out): refused from now on. Its id is the
    /// token's `jti`; it would have expired at `expires_at` (Unix milliseconds).
    pub struct AccessTokenRevoked {
        pub token_id: Str,
        pub user_id: Str,
        pub expires_at: Ts,
    }
}

//! The auth context's part of the event catalogue: API keys (`api_key.*`), access
//! tokens and OAuth sessions (`session.*`).
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

    /// A server signs access tokens with this key from now on; every server accepts
    /// them. Only the public key enters the log; the private one stays in the data
    /// directory of the server that made it.
    pub struct SigningKeyPublished {
        /// The key's id, the `kid` of the tokens it signs.
        pub kid: Str,
        /// The Ed25519 public key (base64url, no padding: a JWK's `x`).
        pub public_key: Str,
    }

    /// A signing key was retired: every token it signed has expired, and tokens it
    /// signs are refused.
    pub struct SigningKeyRetired {
        pub kid: Str,
    }

    /// A user let an OAuth client in: an authorization code was issued, redeemable once
    /// until `expires_at`, for the session `session_id`.
    pub struct AuthorizationCodeGranted {
        pub session_id: Str,
        pub user_id: Str,
        pub client_id: Str,
        pub scope: Str,
        pub redirect_uri: Str,
        pub expires_at: Ts,
        /// The client's OpenID Connect `nonce`, for the session's ID token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub nonce: Option<Str>,
    }

    /// A session opened: a user signed in through an OAuth client (`grant` is
    /// `password` or `authorization_code`) and holds a refresh token good until
    /// `expires_at`.
    pub struct SessionOpened {
        pub session_id: Str,
        pub user_id: Str,
        pub client_id: Str,
        pub scope: Str,
        pub grant: Str,
        pub expires_at: Ts,
    }

    /// A session's refresh token was exchanged for its next one (`generation`, counted
    /// from 1); the one before is spent.
    pub struct SessionRefreshed {
        pub session_id: Str,
        pub user_id: Str,
        pub generation: u32,
        pub expires_at: Ts,
    }

    /// A session ended: its refresh token and its access tokens are refused from now
    /// on. `reason`: `signed_out`, `revoked`, or `refresh_token_reused` /
    /// `authorization_code_reused` when a spent credential came back, which means it
    /// was stolen.
    pub struct SessionRevoked {
        pub session_id: Str,
        pub user_id: Str,
        pub reason: Str,
    }
}

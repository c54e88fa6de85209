//! API key read model: what a request's key is checked against, by id and (in the
//! snapshot) by the key's digest.

use serde::{Deserialize, Serialize};

use crate::events::{
    AccessTokenRevoked, ApiKeyCreated, ApiKeyExpiryChanged, ApiKeyRevoked,
    AuthorizationCodeGranted, SessionOpened, SessionRefreshed, SessionRevoked, SigningKeyPublished,
};
use crate::model::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub key_id: Str,
    pub name: Str,
    pub owner: Option<Str>,
    pub scopes: Vec<Str>,
    pub key_hash: Str,
    pub created_at: Ts,
    pub expires_at: Ts,
    pub revoked_at: Option<Ts>,
}

impl ApiKeyRow {
    /// Whether the key is accepted at `now` (Unix milliseconds).
    pub fn is_live(&self, now: Ts) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

pub(crate) fn step_api_key(row: &mut Option<ApiKeyRow>, event: &Event) {
    match &event.body {
        EventBody::ApiKeyCreated(ApiKeyCreated {
            key_id,
            name,
            owner,
            scopes,
            key_hash,
            expires_at,
        }) => {
            *row = Some(ApiKeyRow {
                key_id: key_id.clone(),
                name: name.clone(),
                owner: owner.clone(),
                scopes: scopes.clone(),
                key_hash: key_hash.clone(),
                created_at: event.ts,
                expires_at: *expires_at,
                revoked_at: None,
            })
        }
        EventBody::ApiKeyExpiryChanged(ApiKeyExpiryChanged { expires_at, .. }) => {
            if let Some(row) = row.as_mut() {
                row.expires_at = *expires_at;
            }
        }
        EventBody::ApiKeyRevoked(ApiKeyRevoked { .. }) => {
            if let Some(row) = row.as_mut() {
                row.revoked_at.get_or_insert(event.ts);
            }
        }
        _ => {}
    }
}

/// A revoked access token, by its id (`jti`): refused until it expires anyway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RevokedTokenRow {
    pub token_id: Str,
    pub user_id: Str,
    pub expires_at: Ts,
    pub revoked_at: Ts,
}

pub(crate) fn step_revoked_token(row: &mut Option<RevokedTokenRow>, event: &Event) {
    if let EventBody::AccessTokenRevoked(AccessTokenRevoked {
        token_id,
        user_id,
        expires_at,
    }) = &event.body
    {
        row.get_or_insert_with(|| RevokedTokenRow {
            token_id: token_id.clone(),
            user_id: user_id.clone(),
            expires_at: *expires_at,
            revoked_at: event.ts,
        });
    }
}

/// A key access tokens are signed with, published by the server that holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SigningKeyRow {
    pub kid: Str,
    /// Ed25519, base64url without padding.
    pub public_key: Str,
    pub published_at: Ts,
    pub retired_at: Option<Ts>,
}

pub(crate) fn step_signing_key(row: &mut Option<SigningKeyRow>, event: &Event) {
    match &event.body {
        EventBody::SigningKeyPublished(SigningKeyPublished { kid, public_key }) => {
            *row = Some(SigningKeyRow {
                kid: kid.clone(),
                public_key: public_key.clone(),
                published_at: event.ts,
                retired_at: None,
            })
        }
        EventBody::SigningKeyRetired(_) => {
            if let Some(row) = row.as_mut() {
                row.retired_at = Some(event.ts);
            }
        }
        _ => {}
    }
}

/// Where an OAuth session stands.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// An authorization code was granted and is not redeemed yet.
    Pending,
    /// The session holds a live refresh token.
    Active,
    /// Refused from now on, with its access tokens.
    Revoked,
}

/// An OAuth session: one sign-in of a user through a client. What its refresh token
/// and access tokens are checked against; the token digests stay in the aggregate.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionRow {
    pub session_id: Str,
    pub user_id: Str,
    pub client_id: Str,
    pub scope: Str,
    /// `password` or `authorization_code`.
    pub grant: Str,
    pub status: SessionStatus,
    /// How many refresh tokens the session has had.
    pub generation: u32,
    pub created_at: Ts,
    pub refreshed_at: Option<Ts>,
    /// When the live refresh token (or the pending code) stops working.
    pub expires_at: Ts,
    pub revoked_at: Option<Ts>,
    pub revoke_reason: Option<Str>,
    /// The OpenID Connect `nonce` the authorization request sent.
    pub nonce: Option<Str>,
}

/// How long a session stays listed after it ended (signed out, revoked or expired).
pub const ENDED_SESSION_KEPT_MS: Ts = 30 * 24 * 60 * 60 * 1000;

impl SessionRow {
    pub fn is_revoked(&self) -> bool {
        self.status == SessionStatus::Revoked
    }

    /// When the session stopped, or will stop, working.
    pub fn ended_at(&self) -> Ts {
        self.revoked_at
            .map_or(self.expires_at, |revoked| revoked.min(self.expires_at))
    }

    /// When it leaves the sessions view: `ENDED_SESSION_KEPT_MS` after it ended. Its
    /// access tokens expired long before (they live a day at most), so every one of
    /// them is refused all the same.
    pub fn forgotten_at(&self) -> Ts {
        self.ended_at().saturating_add(ENDED_SESSION_KEPT_MS)
    }
}

pub(crate) fn step_session(row: &mut Option<SessionRow>, event: &Event) {
    match &event.body {
        EventBody::AuthorizationCodeGranted(AuthorizationCodeGranted {
            session_id,
            user_id,
            client_id,
            scope,
            expires_at,
            nonce,
            ..
        }) => {
            *row = Some(SessionRow {
                session_id: session_id.clone(),
                user_id: user_id.clone(),
                client_id: client_id.clone(),
                scope: scope.clone(),
                grant: "authorization_code".into(),
                status: SessionStatus::Pending,
                generation: 0,
                created_at: event.ts,
                refreshed_at: None,
                expires_at: *expires_at,
                revoked_at: None,
                revoke_reason: None,
                nonce: nonce.clone(),
            })
        }
        EventBody::SessionOpened(SessionOpened {
            session_id,
            user_id,
            client_id,
            scope,
            grant,
            expires_at,
        }) => {
            let created_at = row.as_ref().map_or(event.ts, |row| row.created_at);
            let nonce = row.as_ref().and_then(|row| row.nonce.clone());
            *row = Some(SessionRow {
                session_id: session_id.clone(),
                user_id: user_id.clone(),
                client_id: client_id.clone(),
                scope: scope.clone(),
                grant: grant.clone(),
                status: SessionStatus::Active,
                generation: 1,
                created_at,
                refreshed_at: None,
                expires_at: *expires_at,
                revoked_at: None,
                revoke_reason: None,
                nonce,
            })
        }
        EventBody::SessionRefreshed(SessionRefreshed {
            generation,
            expires_at,
            ..
        }) => {
            if let Some(row) = row {
                row.generation = *generation;
                row.refreshed_at = Some(event.ts);
                row.expires_at = *expires_at;
            }
        }
        EventBody::SessionRevoked(SessionRevoked { reason, .. }) => {
            if let Some(row) = row {
                row.status = SessionStatus::Revoked;
                row.revoked_at = Some(event.ts);
                row.revoke_reason = Some(reason.clone());
            }
        }
        _ => {}
    }
}

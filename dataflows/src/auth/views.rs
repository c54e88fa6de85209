//! API key read model: what a request's key is checked against, by id and (in the
//! snapshot) by the key's digest.

use serde::{Deserialize, Serialize};

use crate::events::{AccessTokenRevoked, ApiKeyCreated, ApiKeyExpiryChanged, ApiKeyRevoked};
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

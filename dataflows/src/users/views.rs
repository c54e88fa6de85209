//! User read model. The password hash is kept for authentication; no answer shows it.

use serde::{Deserialize, Serialize};

use crate::events::{UserCreated, UserDeleted, UserUpdated};
use crate::model::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: Str,
    pub email: Str,
    pub name: Str,
    pub password_hash: Str,
    pub created_at: Ts,
    pub updated_at: Ts,
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
            })
        }
        EventBody::UserUpdated(UserUpdated {
            email,
            name,
            password_hash,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                row.email = email.clone();
                row.name = name.clone();
                row.password_hash = password_hash.clone();
                row.updated_at = event.ts;
            }
        }
        EventBody::UserDeleted(UserDeleted { .. }) => *row = None,
        _ => {}
    }
}

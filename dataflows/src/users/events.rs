//! The users context's part of the event catalogue: accounts (`user.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Str;

/// An account was opened.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct UserCreated {
    pub user_id: Str,
    pub email: Str,
    pub name: Str,
    pub password_hash: Str,
}

/// An account changed; every field is its value after the change.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct UserUpdated {
    pub user_id: Str,
    pub email: Str,
    pub name: Str,
    pub password_hash: Str,
}

/// An account was closed; its address is free again.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct UserDeleted {
    pub user_id: Str,
}

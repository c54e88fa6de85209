//! The users context's part of the event catalogue: accounts (`user.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::Str;

records! {
    /// An account was opened.
    pub struct UserCreated {
        pub user_id: Str,
        pub email: Str,
        pub name: Str,
        pub password_hash: Str,
    }

    /// An account changed; every field is its value after the change.
    pub struct UserUpdated {
        pub user_id: Str,
        pub email: Str,
        pub name: Str,
        pub password_hash: Str,
    }

    /// An account was closed; its address is free again.
    pub struct UserDeleted {
        pub user_id: Str,
    }
}

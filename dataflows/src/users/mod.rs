//! Users: accounts and the uniqueness of their addresses.
//!
//! `accounts.rs` holds the user aggregate (`UserAccounts`) and the address claims
//! (`ClaimEmail`), keyed by the normalised address (`email_key`); `views.rs` the user
//! rows.

mod accounts;
pub mod events;
pub mod views;

pub use accounts::*;

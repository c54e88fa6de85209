//! Users: accounts, the uniqueness of their addresses, and signing in.
//!
//! `accounts.rs` holds the user aggregate (`UserAccounts`) and the address claims
//! (`ClaimEmail`), keyed by the normalised address (`email_key`); `sign_ins.rs` the
//! sign-in attempts and account lockout (`SignIns`); `loyalty.rs` the points completed
//! orders earn (`Loyalty`); `views.rs` the user rows, the authentication log and the
//! loyalty balances.

mod accounts;
pub mod events;
pub mod loyalty;
pub mod sign_ins;
pub mod views;

pub use accounts::*;

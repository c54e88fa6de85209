//! Providers the effect executors call: payments and carriers.

pub mod payments;
pub mod shipping;

//! The HTTP API as a client sees it: in-process with `oneshot`, and end to end against
//! the real binary.

mod auth;
mod browser;
mod changes;
mod config;
mod dashboards;
mod e2e;
mod errors;
mod gateway;
mod hardening;
mod kafka;
mod loyalty;
mod oauth;
mod orders;
mod payment_methods;
mod replay;
mod reports;
mod sql;
mod support;
mod tickets;

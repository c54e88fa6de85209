//! The HTTP API as a client sees it: in-process with `oneshot`, and end to end against
//! the real binary.

mod e2e;
mod errors;
mod orders;
mod replay;
mod support;

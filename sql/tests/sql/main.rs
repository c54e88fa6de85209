//! SQL over the live views: the `.slt` files under `tests/slt` against a fixed shop, and
//! the engine's limits.

mod fixture;
mod limits;
mod slt;

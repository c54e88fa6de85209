//! Machinery every context shares: the input every deciding operator takes and the
//! split of its output (`input`), claims on values only one owner may hold (`claims`),
//! the keyed, time-ordered operator shape (`ordered`), hash tables that grow a shard at
//! a time (`sharded`), and the interner that shares repeated strings of decoded
//! commands (`intern`).

pub mod claims;
pub mod input;
pub mod intern;
pub mod ordered;
pub mod sharded;

//! Machinery every context shares: the input every deciding operator takes and the
//! split of its output (`input`), the keyed, time-ordered operator shape
//! (`ordered`), hash tables that grow a shard at a time (`sharded`), and the interner
//! that shares repeated strings of decoded commands (`intern`).

pub mod input;
pub mod intern;
pub mod ordered;
pub mod sharded;

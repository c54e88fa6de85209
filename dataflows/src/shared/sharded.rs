//! Hash tables that grow a piece at a time.
//!
//! A `HashMap` grows all at once: when it is seven-eighths full every entry is rehashed
//! (for a row keyed by its id, a walk through two pointers to reach the id) and moved
//! while the caller waits. The tables that grow with every order (orders, payments,
//! shipments, reservations, idempotency keys, ...) all reach that point at the same
//! count, and at 114,688 orders their doublings held the views' write lock for 82 ms,
//! stalling every read. Split into shards chosen by hash, each shard doubles on its own
//! at a slightly different count, so one doubling costs a sixty-fourth as much.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// The shard of a key. The hasher has fixed keys: which shard an entry lands in need not
/// be secret, since each shard's table hashes with its own random keys.
fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
    (hash >> (64 - SHARD_BITS)) as usize
}

/// A `HashSet` in shards; see the module.
#[derive(Clone, Debug)]
pub struct ShardedSet<T> {
    shards: Box<[HashSet<T>]>,
}

impl<T> Default for ShardedSet<T> {
    fn default() -> Self {
        ShardedSet {
            shards: (0..SHARDS).map(|_| HashSet::new()).collect(),
        }
    }
}

impl<T: Hash + Eq> ShardedSet<T> {
    pub fn get<Q: Hash + Eq + ?Sized>(&self, value: &Q) -> Option<&T>
    where
        T: Borrow<Q>,
    {
        self.shards[shard_of(value)].get(value)
    }

    pub fn contains<Q: Hash + Eq + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.shards[shard_of(value)].contains(value)
    }

    pub fn take<Q: Hash + Eq + ?Sized>(&mut self, value: &Q) -> Option<T>
    where
        T: Borrow<Q>,
    {
        self.shards[shard_of(value)].take(value)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.shards[shard_of(value)].remove(value)
    }

    pub fn insert(&mut self, value: T) -> bool {
        self.shards[shard_of(&value)].insert(value)
    }

    /// Inserts `value`, replacing an equal one (which it returns).
    pub fn replace(&mut self, value: T) -> Option<T> {
        self.shards[shard_of(&value)].replace(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashSet::is_empty)
    }
}

/// A `HashMap` in shards; see the module.
#[derive(Clone, Debug)]
pub struct ShardedMap<K, V> {
    shards: Box<[HashMap<K, V>]>,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].get(key)
    }

    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].get_mut(key)
    }

    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].contains_key(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shards[shard_of(&key)].insert(key, value)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.shards[shard_of(key)].remove(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_set_and_map_behave_as_one_table() {
        let mut set = ShardedSet::default();
        let mut map = ShardedMap::default();
        for n in 0..10_000u32 {
            assert!(set.insert(n.to_string()));
            assert_eq!(map.insert(n.to_string(), n), None);
        }
        assert!(!set.insert("7".to_string()));
        assert_eq!(map.insert("7".to_string(), 70), Some(7));
        assert_eq!((set.len(), map.len()), (10_000, 10_000));
        assert_eq!(set.get("42").map(String::as_str), Some("42"));
        assert_eq!(map.get("7"), Some(&70));
        *map.get_mut("8").unwrap() += 1;
        assert_eq!(map.get("8"), Some(&9));
        assert_eq!(set.take("42"), Some("42".to_string()));
        assert!(!set.contains("42") && set.remove("43") && !set.contains("43"));
        assert_eq!(map.remove("7"), Some(70));
        assert!(!map.contains_key("7") && map.contains_key("9"));
        assert_eq!(set.iter().count(), 9_998);
        // Spread over every shard, not piled into a few.
        assert!(set.shards.iter().all(|shard| shard.len() > 100));
    }
}

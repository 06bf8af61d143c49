//! Where entries live: a map from primary key to the key's variants, sharded
//! under plain mutexes (held for a lookup or an insert, never across an await),
//! each shard a least-recently-used list bounded in bytes.
//!
//! The bound is per shard (the cache's `size` split evenly), so the eviction
//! order is LRU within a shard: a shard that fills up evicts its own least
//! recently used entries even if another shard holds older ones. There are as
//! many shards as `size` holds `max_object`s, at most 16, so every shard can
//! hold the largest object; a small cache is a single exact LRU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::HeaderMap;

use super::entry::Entry;
use super::key::Key;

/// Most shards: enough that workers seldom meet on one lock.
const MAX_SHARDS: u64 = 16;
/// Most variants kept per key: lookups scan them, so a Vary on a header with
/// endless values (a User-Agent) cannot make one key's list long.
const MAX_VARIANTS: usize = 16;
/// No node (end of the LRU list).
const NIL: usize = usize::MAX;

/// The entries of one cache.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    /// Bytes held, across shards (for `fulcrum_cache_bytes`).
    bytes: AtomicU64,
    /// Entries held, across shards.
    entries: AtomicU64,
}

/// One shard: a slab of nodes linked most to least recently used, and an index
/// from key to the key's nodes (newest variant first).
#[derive(Debug)]
struct Shard {
    index: HashMap<Arc<str>, Vec<usize>>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
    bytes: u64,
    limit: u64,
}

#[derive(Debug)]
struct Node {
    key: Arc<str>,
    /// `None` while the slot is free.
    entry: Option<Arc<Entry>>,
    weight: u64,
    prev: usize,
    next: usize,
}

impl Store {
    /// A store holding at most `size` bytes, for objects of up to `max_object`.
    pub fn new(size: u64, max_object: u64) -> Store {
        let shards = (size / max_object.max(1)).clamp(1, MAX_SHARDS);
        let limit = size / shards;
        Store {
            shards: (0..shards).map(|_| Mutex::new(Shard::new(limit))).collect(),
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Entries (variants) held now.
    pub fn len(&self) -> u64 {
        self.entries.load(Relaxed)
    }

    /// The newest entry under `key` whose variant `request` matches; it becomes
    /// the most recently used.
    pub fn get(&self, key: &Key, request: &HeaderMap) -> Option<Arc<Entry>> {
        let mut shard = self.shard(key);
        let id = *shard.index.get(key.as_str())?.iter().find(|&&id| shard.entry(id).variant.matches(request))?;
        shard.touch(id);
        Some(Arc::clone(shard.entry(id)))
    }

    /// Stores `entry` under `key`, replacing the entry of the same variant, and
    /// evicts the least recently used beyond the shard's bound. False if the
    /// entry alone is larger than the shard (then the variant it would have
    /// replaced is dropped too: it is outdated).
    pub fn insert(&self, key: &Key, entry: Arc<Entry>) -> bool {
        let weight = entry.weight(key.as_str().len());
        let mut shard = self.shard(key);
        let before = shard.counts();
        let same = shard
            .index
            .get(key.as_str())
            .and_then(|ids| ids.iter().copied().find(|&id| shard.entry(id).variant == entry.variant));
        if let Some(id) = same {
            shard.remove(id);
        }
        let stored = weight <= shard.limit;
        if stored {
            let text = match shard.index.get_key_value(key.as_str()) {
                Some((text, _)) => Arc::clone(text),
                None => key.shared(),
            };
            let id = shard.allocate(Node { key: Arc::clone(&text), entry: Some(entry), weight, prev: NIL, next: NIL });
            shard.push_front(id);
            shard.bytes += weight;
            let ids = shard.index.entry(text).or_default();
            ids.insert(0, id);
            let oldest = (ids.len() > MAX_VARIANTS).then(|| ids[ids.len() - 1]);
            if let Some(oldest) = oldest {
                shard.remove(oldest);
            }
            while shard.bytes > shard.limit && shard.tail != NIL {
                let lru = shard.tail;
                shard.remove(lru);
            }
        }
        self.account(before, shard.counts());
        stored
    }

    /// Removes every variant stored under `key`; how many there were.
    pub fn remove(&self, key: &Key) -> u64 {
        let mut shard = self.shard(key);
        let before = shard.counts();
        for id in shard.index.get(key.as_str()).cloned().unwrap_or_default() {
            shard.remove(id);
        }
        let after = shard.counts();
        self.account(before, after);
        before.1 - after.1
    }

    /// Removes `entry` from under `key` if it is still there (not replaced since).
    pub fn remove_entry(&self, key: &Key, entry: &Arc<Entry>) {
        let mut shard = self.shard(key);
        let before = shard.counts();
        let found = shard
            .index
            .get(key.as_str())
            .and_then(|ids| ids.iter().copied().find(|&id| Arc::ptr_eq(shard.entry(id), entry)));
        if let Some(id) = found {
            shard.remove(id);
        }
        self.account(before, shard.counts());
    }

    /// Removes every entry whose key `doomed` says; how many.
    pub fn purge(&self, doomed: impl Fn(&str) -> bool) -> u64 {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.counts();
            let ids: Vec<usize> =
                shard.index.iter().filter(|(key, _)| doomed(key)).flat_map(|(_, ids)| ids.iter().copied()).collect();
            for id in ids {
                shard.remove(id);
            }
            let after = shard.counts();
            self.account(before, after);
            purged += before.1 - after.1;
        }
        purged
    }

    fn shard(&self, key: &Key) -> MutexGuard<'_, Shard> {
        let hash = xxhash_rust::xxh3::xxh3_64(key.as_str().as_bytes());
        lock(&self.shards[(hash % self.shards.len() as u64) as usize])
    }

    /// Carries a shard's change in bytes and entries over to the totals.
    fn account(&self, before: (u64, u64), after: (u64, u64)) {
        apply(&self.bytes, before.0, after.0);
        apply(&self.entries, before.1, after.1);
    }
}

fn apply(total: &AtomicU64, before: u64, after: u64) {
    if after >= before {
        total.fetch_add(after - before, Relaxed);
    } else {
        total.fetch_sub(before - after, Relaxed);
    }
}

/// A shard's lock; a panic while holding it (a bug) leaves a consistent shard
/// behind, as every change is made before the guard drops: keep serving.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shard {
    fn new(limit: u64) -> Shard {
        Shard { index: HashMap::new(), nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL, bytes: 0, limit }
    }

    /// (bytes, entries) held.
    fn counts(&self) -> (u64, u64) {
        (self.bytes, (self.nodes.len() - self.free.len()) as u64)
    }

    fn entry(&self, id: usize) -> &Arc<Entry> {
        self.nodes[id].entry.as_ref().expect("indexed nodes hold an entry")
    }

    fn allocate(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    fn push_front(&mut self, id: usize) {
        self.nodes[id].prev = NIL;
        self.nodes[id].next = self.head;
        if self.head != NIL {
            self.nodes[self.head].prev = id;
        }
        self.head = id;
        if self.tail == NIL {
            self.tail = id;
        }
    }

    fn unlink(&mut self, id: usize) {
        let (prev, next) = (self.nodes[id].prev, self.nodes[id].next);
        match prev {
            NIL => self.head = next,
            prev => self.nodes[prev].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.nodes[next].prev = prev,
        }
    }

    /// Makes `id` the most recently used.
    fn touch(&mut self, id: usize) {
        if self.head != id {
            self.unlink(id);
            self.push_front(id);
        }
    }

    /// Unlinks, unindexes and frees node `id`.
    fn remove(&mut self, id: usize) {
        self.unlink(id);
        let node = &mut self.nodes[id];
        let key = Arc::clone(&node.key);
        node.entry = None;
        self.bytes -= node.weight;
        self.free.push(id);
        if let Some(ids) = self.index.get_mut(&key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.index.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::test_entry;
    use super::super::key::Variant;
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn key(path: &str) -> Key {
        Key::new(false, Some("x"), path)
    }

    fn entry() -> Arc<Entry> {
        Arc::new(test_entry(&[0u8; 700], Variant::default()))
    }

    #[test]
    fn least_recently_used_go_first_and_bytes_stay_within_size() {
        let weight = entry().weight(key("/0").as_str().len());
        // One shard (size < 2 x max_object) holding three entries.
        let store = Store::new(3 * weight + weight / 2, 2 * weight);
        for path in ["/0", "/1", "/2"] {
            assert!(store.insert(&key(path), entry()));
        }
        assert_eq!((store.len(), store.bytes()), (3, 3 * weight));
        // /0 used again: /1 is now the least recently used.
        assert!(store.get(&key("/0"), &HeaderMap::new()).is_some());
        assert!(store.insert(&key("/3"), entry()));
        assert!(store.get(&key("/1"), &HeaderMap::new()).is_none());
        for path in ["/0", "/2", "/3"] {
            assert!(store.get(&key(path), &HeaderMap::new()).is_some(), "{path}");
        }
        assert_eq!(store.bytes(), 3 * weight);
        // Replacing the same variant does not add.
        assert!(store.insert(&key("/3"), entry()));
        assert_eq!((store.len(), store.bytes()), (3, 3 * weight));
    }

    #[test]
    fn an_entry_larger_than_its_shard_is_refused_and_drops_its_predecessor() {
        let small = entry();
        let store = Store::new(small.weight(3) + 10, 1 << 20);
        assert!(store.insert(&key("/a"), small));
        let big = Arc::new(test_entry(&[0u8; 2000], Variant::default()));
        assert!(!store.insert(&key("/a"), big));
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }

    #[test]
    fn variants_live_side_by_side_and_are_removed_together() {
        let store = Store::new(1 << 20, 1 << 20);
        let lang = [HeaderName::from_static("accept-language")];
        let mut de = HeaderMap::new();
        de.insert("accept-language", HeaderValue::from_static("de"));
        let mut en = HeaderMap::new();
        en.insert("accept-language", HeaderValue::from_static("en"));
        store.insert(&key("/v"), Arc::new(test_entry(b"de", Variant::of(&lang, &de))));
        store.insert(&key("/v"), Arc::new(test_entry(b"en", Variant::of(&lang, &en))));
        assert_eq!(store.get(&key("/v"), &de).unwrap().body, "de");
        assert_eq!(store.get(&key("/v"), &en).unwrap().body, "en");
        assert!(store.get(&key("/v"), &HeaderMap::new()).is_none());
        assert_eq!(store.remove(&key("/v")), 2);
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }

    #[test]
    fn purge_by_key_and_removal_of_a_replaced_entry_is_a_no_op() {
        let store = Store::new(1 << 30, 1 << 20);
        for path in ["/a/1", "/a/2", "/b/1"] {
            store.insert(&key(path), entry());
        }
        let old = store.get(&key("/b/1"), &HeaderMap::new()).unwrap();
        store.insert(&key("/b/1"), entry());
        store.remove_entry(&key("/b/1"), &old);
        assert_eq!(store.len(), 3, "the replaced entry was no longer there");
        assert_eq!(store.purge(|k| k.starts_with("http://x/a/")), 2);
        assert_eq!(store.len(), 1);
        assert!(store.get(&key("/b/1"), &HeaderMap::new()).is_some());
    }

    #[test]
    fn shards_can_each_hold_the_largest_object() {
        assert_eq!(Store::new(256 << 20, 8 << 20).shards.len(), 16);
        assert_eq!(Store::new(4 << 20, 1 << 20).shards.len(), 4);
        assert_eq!(Store::new(1 << 20, 1 << 20).shards.len(), 1);
    }
}

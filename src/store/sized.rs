//! A least-recently-used map bounded by the bytes its values hold, not by their number: a
//! thousand 4 MiB manifests must not fit where a thousand small ones do.

use std::hash::Hash;
use std::sync::Arc;

use lru::LruCache;

/// Values that know how many bytes they hold.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Arc<Vec<u8>> {
    fn weight(&self) -> usize {
        self.len()
    }
}

pub struct SizedLru<K: Hash + Eq, V: Weigh> {
    entries: LruCache<K, V>,
    bytes: usize,
    limit: usize,
}

impl<K: Hash + Eq, V: Weigh + Clone> SizedLru<K, V> {
    pub fn new(limit: usize) -> Self {
        SizedLru { entries: LruCache::unbounded(), bytes: 0, limit }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.entries.get(key).cloned()
    }

    /// Keep `value`, dropping the least recently used entries past the limit. A value larger
    /// than the whole limit is not kept.
    pub fn put(&mut self, key: K, value: V) {
        let w = value.weight();
        if w > self.limit {
            return;
        }
        if let Some(old) = self.entries.put(key, value) {
            self.bytes -= old.weight();
        }
        self.bytes += w;
        while self.bytes > self.limit {
            match self.entries.pop_lru() {
                Some((_, v)) => self.bytes -= v.weight(),
                None => break,
            }
        }
    }

    /// Every entry, most recently used first, without touching the order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter()
    }

    /// Bytes held now, as the values weigh themselves.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bytes_dropping_the_oldest() {
        let mut c: SizedLru<u32, Arc<Vec<u8>>> = SizedLru::new(100);
        for i in 0..10 {
            c.put(i, Arc::new(vec![0; 30]));
            assert!(c.bytes() <= 100);
        }
        assert!(c.get(&9).is_some() && c.get(&8).is_some() && c.get(&7).is_some());
        assert!(c.get(&0).is_none());
        c.get(&7);
        c.put(10, Arc::new(vec![0; 30]));
        assert!(c.get(&7).is_some(), "recently used entries stay");
        c.put(11, Arc::new(vec![0; 101]));
        assert!(c.get(&11).is_none(), "too large to keep");
        c.put(7, Arc::new(vec![0; 10]));
        assert_eq!(c.bytes(), 70);
    }
}

//! State shared by every instance of one plugin: atomic counters and a KV store with TTL and
//! compare-and-set (the building blocks of rate limits, circuit state, caches).

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::MAX_KV_ENTRIES;

#[derive(Debug, Default)]
pub struct SharedState {
    counters: Mutex<FxHashMap<String, i64>>,
    kv: Mutex<Kv>,
}

#[derive(Debug, Default)]
struct Kv {
    entries: HashMap<String, Entry>,
    next_version: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

impl SharedState {
    pub fn counter_add(&self, name: &str, delta: i64) -> i64 {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counters.get_mut(name) {
            *c = c.saturating_add(delta);
            return *c;
        }
        counters.insert(name.to_owned(), delta);
        delta
    }

    pub fn counter_get(&self, name: &str) -> i64 {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.get(name).copied().unwrap_or(0)
    }

    pub fn kv_get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        kv.entries
            .get(key)
            .filter(|e| e.live(Instant::now()))
            .map(|e| (e.value.clone(), e.version))
    }

    pub fn kv_set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> u64 {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        kv.put(key, value, ttl).unwrap_or(0)
    }

    pub fn kv_compare_and_set(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Option<u64> {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let current = kv
            .entries
            .get(key)
            .filter(|e| e.live(now))
            .map(|e| e.version);
        if current != expected {
            return None;
        }
        kv.put(key, value, ttl)
    }

    pub fn kv_delete(&self, key: &str) {
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        kv.entries.remove(key);
    }
}

impl Kv {
    fn put(&mut self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Option<u64> {
        let now = Instant::now();
        if self.entries.len() >= MAX_KV_ENTRIES && !self.entries.contains_key(key) {
            self.entries.retain(|_, e| e.live(now));
            if self.entries.len() >= MAX_KV_ENTRIES {
                return None;
            }
        }
        self.next_version += 1;
        let version = self.next_version;
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                version,
                expires: ttl.map(|t| now + t),
            },
        );
        Some(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_set_lets_one_writer_win() {
        let s = SharedState::default();
        let v1 = s
            .kv_compare_and_set("k", None, b"a".to_vec(), None)
            .unwrap();
        assert_eq!(
            s.kv_compare_and_set("k", None, b"b".to_vec(), None),
            None,
            "exists now"
        );
        let v2 = s
            .kv_compare_and_set("k", Some(v1), b"c".to_vec(), None)
            .unwrap();
        assert_eq!(
            s.kv_compare_and_set("k", Some(v1), b"d".to_vec(), None),
            None,
            "stale version"
        );
        assert_eq!(s.kv_get("k"), Some((b"c".to_vec(), v2)));
    }

    #[test]
    fn entries_expire() {
        let s = SharedState::default();
        s.kv_set("k", b"v".to_vec(), Some(Duration::from_millis(0)));
        assert_eq!(s.kv_get("k"), None);
    }

    #[test]
    fn counters_add_up() {
        let s = SharedState::default();
        assert_eq!(s.counter_add("c", 2), 2);
        assert_eq!(s.counter_add("c", -5), -3);
        assert_eq!(s.counter_get("c"), -3);
        assert_eq!(s.counter_get("other"), 0);
    }
}

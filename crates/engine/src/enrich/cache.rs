//! A short-lived, bounded cache of product data read from the PIM (found and not found).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A cached look-up: when it was made, and the product (`None`: not in the PIM).
type Entry = (Instant, Option<Arc<Value>>);

/// Identifier → product JSON (`None`: the PIM has no such product), each for `ttl`.
pub(crate) struct ProductCache {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ProductCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The fresh entry of `identifier`: `Some(None)` = known to be absent.
    pub fn get(&self, identifier: &str) -> Option<Option<Arc<Value>>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(identifier)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, p)| p.clone())
    }

    /// Remembers products (and absences). When full, expired entries go first, then the
    /// oldest tenth.
    pub fn put(&self, items: impl IntoIterator<Item = (String, Option<Arc<Value>>)>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (id, p) in items {
            if entries.len() >= self.max && !entries.contains_key(&id) {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
                if entries.len() >= self.max {
                    let mut ages: Vec<(Instant, String)> = entries
                        .iter()
                        .map(|(k, (at, _))| (*at, k.clone()))
                        .collect();
                    ages.sort();
                    let drop = (self.max / 10).max(1);
                    for (_, k) in ages.into_iter().take(drop) {
                        entries.remove(&k);
                    }
                }
            }
            entries.insert(id, (now, p));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hits_misses_expiry_and_bound() {
        // Long enough that the entries surely are still fresh when read on a loaded machine.
        let c = ProductCache::new(Duration::from_secs(1), 10);
        assert!(c.get("a").is_none());
        c.put([
            ("a".to_owned(), Some(Arc::new(json!({"x": 1})))),
            ("b".to_owned(), None),
        ]);
        assert_eq!(c.get("a").unwrap().unwrap()["x"], 1);
        assert_eq!(c.get("b"), Some(None), "absence is cached too");
        for i in 0..25 {
            c.put([(format!("k{i}"), None)]);
        }
        assert!(c.len() <= 10, "bounded: {}", c.len());
        assert!(c.get("k24").is_some(), "the newest stays");
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(c.get("k24").is_none(), "expired");

        let off = ProductCache::new(Duration::ZERO, 10);
        off.put([("a".to_owned(), None)]);
        assert!(off.get("a").is_none(), "ttl 0 disables the cache");
    }
}

//! Which keys a keyed table may hold: a growing Bloom filter, so that a read of keys the table
//! does not hold (every asset of an initial sync) costs no SQL.
//!
//! A lookup answers "absent" only for a key never inserted (no false negatives); "maybe" may be
//! wrong for about 1 % of absent keys, which then cost the SQL read they cost without a filter.
//! Keys are never removed (a deleted key stays "maybe"). The filter grows by layers: when a
//! layer holds its capacity, a layer twice as large is added, so the false-positive rate stays
//! near 1 % per layer whatever the table's size, at 1.25 bytes per key of a layer's capacity —
//! at most 2.5 bytes per key held, layers included (≤ 2.5 MB for a million keys).

use std::hash::{DefaultHasher, Hasher};

/// Bits per key of a layer (≈ 0.8 % false positives with [`PROBES`]).
const BITS_PER_KEY: usize = 10;
/// Bit positions per key (optimal: `BITS_PER_KEY · ln 2` ≈ 7).
const PROBES: u64 = 7;
/// Keys of the first layer at least.
const MIN_CAPACITY: usize = 1 << 14;

/// 64 bits of the key (the standard library's hasher with fixed keys: the same in every
/// filter of the process, which is all a filter held in memory needs).
fn hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(key.as_bytes());
    h.finish()
}

/// The bit positions of a key in a layer of `bits` bits: double hashing (`h1 + i·h2`), each
/// 64-bit value mapped onto `0..bits` by a multiply-shift (no power-of-two rounding of the size).
fn positions(h: u64, bits: u64) -> impl Iterator<Item = u64> {
    let h2 = h.rotate_left(32) | 1;
    (0..PROBES).map(move |i| {
        let x = h.wrapping_add(i.wrapping_mul(h2));
        ((u128::from(x) * u128::from(bits)) >> 64) as u64
    })
}

struct Layer {
    bits: Vec<u64>,
    /// Number of bits (a multiple of 64).
    nbits: u64,
    capacity: usize,
    len: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        let words = (capacity * BITS_PER_KEY).div_ceil(64).max(1);
        Self {
            bits: vec![0; words],
            nbits: words as u64 * 64,
            capacity,
            len: 0,
        }
    }

    fn contains(&self, h: u64) -> bool {
        positions(h, self.nbits).all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    fn insert(&mut self, h: u64) {
        for p in positions(h, self.nbits) {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
        self.len += 1;
    }
}

/// Keys a table may hold (see the module's documentation).
pub(super) struct KeyFilter {
    layers: Vec<Layer>,
}

impl KeyFilter {
    /// A filter sized for about `expected` keys (it grows past that).
    pub(super) fn with_capacity(expected: usize) -> Self {
        Self {
            layers: vec![Layer::new(expected.max(MIN_CAPACITY))],
        }
    }

    /// Whether `key` may have been inserted; `false`: it never was.
    pub(super) fn may_contain(&self, key: &str) -> bool {
        let h = hash(key);
        self.layers.iter().any(|l| l.contains(h))
    }

    pub(super) fn insert(&mut self, key: &str) {
        let h = hash(key);
        if self.layers.iter().any(|l| l.contains(h)) {
            return;
        }
        let last = self.layers.last().expect("a filter has a layer");
        if last.len >= last.capacity {
            let grown = Layer::new(last.capacity * 2);
            self.layers.push(grown);
        }
        self.layers
            .last_mut()
            .expect("a filter has a layer")
            .insert(h);
    }

    /// Bytes held by the filter's bits.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bits.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_inserted_key_is_ever_absent_and_few_others_are_maybe() {
        // 20× the first layer's capacity: several layers.
        let n = MIN_CAPACITY * 20;
        let mut f = KeyFilter::with_capacity(0);
        for i in 0..n {
            f.insert(&format!("asset-{i}"));
        }
        assert!(f.layers.len() > 3, "the filter grew by layers");
        for i in 0..n {
            assert!(f.may_contain(&format!("asset-{i}")), "asset-{i} inserted");
        }
        let probes = 100_000;
        let false_positives = (0..probes)
            .filter(|i| f.may_contain(&format!("other-{i}")))
            .count();
        let rate = false_positives as f64 / probes as f64;
        // ≈ 0.8 % per layer, the layers' rates adding up (≤ 5 layers here).
        assert!(rate < 0.05, "false-positive rate {rate}");
        // 1.25 bytes per key of capacity; the layers' capacities add up to less than twice
        // the keys held.
        assert!(f.bytes() * 10 < n * 25, "{} bytes for {n} keys", f.bytes());
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let f = KeyFilter::with_capacity(10);
        assert!(!f.may_contain(""));
        assert!(!f.may_contain("asset-1"));
    }

    proptest! {
        #[test]
        fn inserted_keys_are_always_maybe(keys in proptest::collection::vec(".{0,40}", 0..300)) {
            let mut f = KeyFilter::with_capacity(0);
            for k in &keys {
                f.insert(k);
            }
            for k in &keys {
                prop_assert!(f.may_contain(k));
            }
        }
    }
}

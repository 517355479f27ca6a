//! The emulated DAM's assets: compact slots, seeded deterministically, rendered to JSON on demand.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use super::log::{LogEntry, OrderedLog};
use super::DamEmulatorError;

/// splitmix64's finaliser: the emulator's only source of "randomness", so that everything is a
/// pure function of the seed.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn h(seed: u64, a: u64, b: u64) -> u64 {
    mix(seed ^ mix(a ^ mix(b.wrapping_add(0x5151))))
}

/// One asset, compactly: everything else of its record is derived from these and the seed.
#[derive(Debug, Clone)]
struct Slot {
    /// The id's numeric key (the first 16 hex digits of the id; ids sort as keys do).
    key: u64,
    /// `updated_at`, seconds since the epoch.
    t: i64,
    /// `created_at`, seconds since the epoch.
    created: i64,
    sku: u32,
    /// Metadata revision: bumped by every `touch`.
    rev: u32,
    family: u16,
    deleted: bool,
    /// Position in the global log.
    gpos: u32,
    /// Position in its family's log.
    fpos: u32,
    /// The SHA-1 of its file, computed when the asset is created: a DAM stores a file's
    /// checksum when the file arrives, listing only reads it (SHA-1 over a 1–4 KiB file, with
    /// the bytes generated for it, was ≈ 25 % of the emulator's CPU when it was computed on the
    /// first listing; seeding 1 000 000 assets takes ≈ 3 s longer).
    checksum: [u8; 20],
}

/// What a listing asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    /// Only assets with `updated_at >= since` (seconds, already rounded up).
    pub since: Option<i64>,
    /// Only assets of this family.
    pub family: Option<String>,
    /// Only assets strictly after this `(updated_at, key)` position.
    pub after: Option<(i64, u64)>,
    /// Live entries to skip (page-number paging).
    pub skip: usize,
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug)]
pub(crate) struct ListPage {
    /// The records, as JSON text.
    pub items: Vec<Box<RawValue>>,
    /// More items follow the last one.
    pub more: bool,
    /// `(updated_at, key)` of the last item.
    pub last: Option<(i64, u64)>,
    /// Items matching the filters, all pages together (without `after`/`skip`).
    pub total: usize,
}

/// The seed-derived parameters of the store.
#[derive(Debug, Clone)]
pub(crate) struct StoreParams {
    pub seed: u64,
    pub families: Vec<String>,
    pub skus: RangeInclusive<u32>,
    pub file_sizes: RangeInclusive<u32>,
    pub files_base: String,
}

#[derive(Debug)]
pub(crate) struct Store {
    p: StoreParams,
    slots: Vec<Slot>,
    by_key: HashMap<u64, u32>,
    global: OrderedLog,
    by_family: Vec<OrderedLog>,
    /// The logical clock (seconds): the `updated_at` of the latest change.
    clock: i64,
    /// Mutations so far (feeds the deterministic choice of assets to touch/delete).
    mutations: u64,
    /// JSON merge patches applied with `set`, in order.
    patches: HashMap<u32, Vec<Value>>,
    deleted: usize,
    /// Assets removed without a tombstone (`purge`).
    purged: usize,
}

/// An asset's record before `set` patches. Fields in the order of their names: serialised, it
/// is byte for byte what serialising the same record as a `serde_json::Value` (whose objects
/// keep their keys sorted) gives.
#[derive(Serialize)]
struct Record<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<String>,
    created_at: String,
    deleted: bool,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    #[serde(rename = "type")]
    family: &'a str,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// A live asset's `metadata`, fields in the order of their names.
#[derive(Serialize)]
struct Metadata<'a> {
    color: &'a str,
    description: String,
    height: u32,
    sku: String,
    supplier: &'a str,
    tags: Vec<&'a str>,
    title: String,
    title_de: String,
    title_fr: String,
    width: u32,
}

const ADJECTIVES: &[&str] = &[
    "Classic",
    "Slim",
    "Oversized",
    "Organic",
    "Vintage",
    "Essential",
    "Premium",
    "Relaxed",
    "Tailored",
    "Lightweight",
];
const COLORS: &[(&str, &str, &str)] = &[
    ("red", "rouge", "rot"),
    ("blue", "bleu", "blau"),
    ("green", "vert", "grün"),
    ("black", "noir", "schwarz"),
    ("white", "blanc", "weiß"),
    ("yellow", "jaune", "gelb"),
    ("grey", "gris", "grau"),
    ("navy", "marine", "marineblau"),
];
const NOUNS: &[(&str, &str, &str)] = &[
    ("shirt", "chemise", "Hemd"),
    ("sneaker", "basket", "Sneaker"),
    ("backpack", "sac à dos", "Rucksack"),
    ("jacket", "veste", "Jacke"),
    ("lamp", "lampe", "Lampe"),
    ("mug", "tasse", "Becher"),
    ("chair", "chaise", "Stuhl"),
    ("watch", "montre", "Uhr"),
    ("scarf", "écharpe", "Schal"),
    ("bottle", "bouteille", "Flasche"),
];
const VIEWS: &[&str] = &["front", "back", "side", "detail", "zoom", "top"];
/// Every tag the seeded records use (`metadata.tags`).
pub const TAGS: &[&str] = &[
    "summer",
    "winter",
    "spring",
    "autumn",
    "red",
    "studio",
    "outdoor",
    "new",
    "sale",
    "eco",
    "premium",
    "bestseller",
];
const SUPPLIERS: &[&str] = &[
    "Acme Textiles",
    "Nordic Goods AB",
    "Atelier Lumière",
    "Bergmann GmbH",
    "Bright Manufacturing Ltd",
    "Casa Verde S.p.A.",
];
const DIMENSIONS: &[(u32, u32)] = &[
    (1200, 800),
    (2000, 2000),
    (800, 1200),
    (1920, 1080),
    (3000, 2000),
];
const SEASONS: &[&str] = &["summer", "winter", "spring", "autumn"];

/// Keys whose values the emulator derives itself; `set` refuses to patch them.
pub(crate) const DERIVED_KEYS: &[&str] = &[
    "id",
    "updated_at",
    "created_at",
    "deleted",
    "url",
    "checksum",
    "size",
];

pub(crate) fn format_id(key: u64) -> String {
    let lo = mix(key ^ 0xD1B5_4A32_D192_ED03);
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        key >> 32,
        (key >> 16) & 0xFFFF,
        key & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// The key of an id string, if it is one the emulator could have issued.
pub(crate) fn parse_id(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let hex: String = [&id[0..8], &id[9..13], &id[14..18]].concat();
    let key = u64::from_str_radix(&hex, 16).ok()?;
    (format_id(key) == id).then_some(key)
}

pub(crate) fn rfc3339(secs: i64) -> String {
    ts(secs).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// Percent-encodes one URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON merge patch (RFC 7386).
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Store {
    pub fn seed(p: StoreParams, assets: usize, base_time: DateTime<Utc>) -> Self {
        assert!(!p.families.is_empty(), "at least one family");
        assert!(p.families.len() <= u16::MAX as usize, "too many families");
        assert!(assets <= u32::MAX as usize / 2, "too many assets");
        let mut store = Store {
            slots: Vec::with_capacity(assets),
            by_key: HashMap::with_capacity(assets),
            global: OrderedLog::default(),
            by_family: Vec::new(),
            clock: base_time.timestamp(),
            mutations: 0,
            patches: HashMap::new(),
            deleted: 0,
            purged: 0,
            p,
        };
        let mut t = base_time.timestamp();
        for idx in 0..assets as u32 {
            if idx > 0 {
                // About one asset in four shares its predecessor's timestamp (tie-breaks).
                let r = h(store.p.seed, idx as u64, 10);
                t += if r % 4 == 0 { 0 } else { 1 + (r >> 8) % 5 } as i64;
            }
            let slot = store.new_slot(idx, t);
            store.slots.push(slot);
        }
        store.clock = t;
        let mut entries: Vec<LogEntry> = store
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| LogEntry {
                t: s.t,
                key: s.key,
                idx: i as u32,
            })
            .collect();
        entries.sort_unstable_by_key(|e| (e.t, e.key));
        let mut fam_entries: Vec<Vec<LogEntry>> = vec![Vec::new(); store.p.families.len()];
        for (pos, e) in entries.iter().enumerate() {
            let slot = &mut store.slots[e.idx as usize];
            slot.gpos = pos as u32;
            let fam = &mut fam_entries[slot.family as usize];
            slot.fpos = fam.len() as u32;
            fam.push(*e);
        }
        store.global = OrderedLog::from_sorted(entries);
        store.by_family = fam_entries
            .into_iter()
            .map(OrderedLog::from_sorted)
            .collect();
        store
    }

    /// A new slot for asset number `idx`, not yet in any log.
    fn new_slot(&mut self, idx: u32, t: i64) -> Slot {
        let seed = self.p.seed;
        let mut key = h(seed, idx as u64, 1);
        while self.by_key.contains_key(&key) {
            key = mix(key);
        }
        self.by_key.insert(key, idx);
        let skus = self.p.skus.end().saturating_sub(*self.p.skus.start()) as u64 + 1;
        Slot {
            key,
            t,
            created: t - (h(seed, idx as u64, 2) % (30 * 86_400)) as i64,
            sku: self.p.skus.start() + (h(seed, idx as u64, 3) % skus) as u32,
            rev: 0,
            family: (h(seed, idx as u64, 4) % self.p.families.len() as u64) as u16,
            deleted: false,
            gpos: 0,
            fpos: 0,
            checksum: Sha1::digest(self.file_bytes(key)).into(),
        }
    }

    pub fn set_files_base(&mut self, base: String) {
        self.p.files_base = base;
    }

    pub fn now(&self) -> i64 {
        self.clock
    }

    /// Advances the clock without changing anything (the next change is stamped later still).
    pub fn advance(&mut self, secs: i64) {
        self.clock += secs.max(0);
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.mutations += 1;
        self.clock
    }

    /// Assets, tombstones included (purged assets are not listed at all).
    pub fn len(&self) -> usize {
        self.slots.len() - self.purged
    }

    /// Assets not deleted.
    pub fn live(&self) -> usize {
        self.slots.len() - self.deleted
    }

    pub fn families(&self) -> &[String] {
        &self.p.families
    }

    fn idx_of(&self, id: &str) -> Option<u32> {
        parse_id(id).and_then(|k| self.by_key.get(&k).copied())
    }

    /// File bytes of an asset: a JPEG-looking, deterministic byte string.
    fn file_size(&self, key: u64) -> usize {
        let lo = *self.p.file_sizes.start().max(&8) as u64;
        let hi = (*self.p.file_sizes.end() as u64).max(lo);
        (lo + h(self.p.seed, key, 20) % (hi - lo + 1)) as usize
    }

    fn file_bytes(&self, key: u64) -> Vec<u8> {
        let size = self.file_size(key);
        let mut out = Vec::with_capacity(size + 8);
        out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
        let mut state = h(self.p.seed, key, 21);
        while out.len() < size - 2 {
            state = mix(state);
            out.extend_from_slice(&state.to_le_bytes());
        }
        out.truncate(size - 2);
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    /// The `set` patches of a live asset (a deleted one shows none).
    fn live_patches(&self, idx: u32) -> Option<&Vec<Value>> {
        self.patches
            .get(&idx)
            .filter(|_| !self.slots[idx as usize].deleted)
    }

    /// The parts of asset `idx`'s record that do not depend on `set` patches.
    fn record(&self, idx: u32) -> Record<'_> {
        let s = &self.slots[idx as usize];
        let seed = self.p.seed;
        let i = idx as u64;
        let view = VIEWS[(h(seed, i, 5) % VIEWS.len() as u64) as usize];
        let name = format!("SKU-{:06}_{view}.jpg", s.sku);
        let mut record = Record {
            checksum: None,
            created_at: rfc3339(s.created),
            deleted: s.deleted,
            id: format_id(s.key),
            metadata: None,
            name,
            size: None,
            family: &self.p.families[s.family as usize],
            updated_at: rfc3339(s.t),
            url: None,
        };
        if s.deleted {
            return record;
        }
        let r = h(seed, i, 6 + s.rev as u64 * 1000);
        let adj = ADJECTIVES[(r % ADJECTIVES.len() as u64) as usize];
        let (c_en, c_fr, c_de) = COLORS[((r >> 8) % COLORS.len() as u64) as usize];
        let (n_en, n_fr, n_de) = NOUNS[((r >> 16) % NOUNS.len() as u64) as usize];
        let suffix = if s.rev == 0 {
            String::new()
        } else {
            format!(" (v{})", s.rev + 1)
        };
        let season = SEASONS[((r >> 24) % SEASONS.len() as u64) as usize];
        let t1 = TAGS[((r >> 32) % TAGS.len() as u64) as usize];
        let t2 = TAGS[((r >> 40) % TAGS.len() as u64) as usize];
        let mut tags = vec![season, t1];
        if t2 != t1 && t2 != season {
            tags.push(t2);
        }
        tags.dedup();
        let (w, hgt) = DIMENSIONS[(h(seed, i, 7) % DIMENSIONS.len() as u64) as usize];
        let supplier = SUPPLIERS[(h(seed, i, 8) % SUPPLIERS.len() as u64) as usize];
        record.size = Some(self.file_size(s.key));
        record.checksum = Some(hex::encode(s.checksum));
        record.metadata = Some(Metadata {
            color: c_en,
            description: format!(
                "{adj} {n_en} in {c_en}, {view} view, for the {season} collection."
            ),
            height: hgt,
            sku: format!("SKU-{:06}", s.sku),
            supplier,
            tags,
            title: format!("{adj} {c_en} {n_en}{suffix}"),
            title_de: format!("{n_de} {c_de}{suffix}"),
            title_fr: format!("{n_fr} {c_fr}{suffix}"),
            width: w,
        });
        record.url = Some(self.file_url(s.key, &record.name));
        record
    }

    fn file_url(&self, key: u64, name: &str) -> String {
        format!(
            "{}/files/{}/{}",
            self.p.files_base,
            format_id(key),
            encode_segment(name)
        )
    }

    /// The record of asset `idx`, as the API shows it.
    fn render(&self, idx: u32) -> Value {
        let mut value = serde_json::to_value(self.record(idx)).expect("a record serialises");
        if let Some(patches) = self.live_patches(idx) {
            for p in patches {
                merge_patch(&mut value, p);
            }
            // The file's URL follows the (patched) name.
            let name = value["name"].as_str().unwrap_or_default().to_owned();
            value["url"] = self.file_url(self.slots[idx as usize].key, &name).into();
        }
        value
    }

    /// [`Self::render`] as JSON text, the same bytes `serde_json::to_string` gives of it —
    /// written straight from the record, without building a `Value` (the listing's hot path).
    fn render_json(&self, idx: u32) -> Box<RawValue> {
        let text = if self.live_patches(idx).is_some() {
            serde_json::to_string(&self.render(idx))
        } else {
            serde_json::to_string(&self.record(idx))
        };
        RawValue::from_string(text.expect("a record serialises")).expect("valid JSON")
    }

    /// The record of an asset (tombstones included).
    pub fn get(&self, id: &str) -> Option<Value> {
        self.idx_of(id).map(|i| self.render(i))
    }

    /// The bytes of an asset's file, if `name` is its current name and it is not deleted.
    pub fn file(&self, id: &str, name: &str) -> Option<Vec<u8>> {
        let idx = self.idx_of(id)?;
        let slot = &self.slots[idx as usize];
        if slot.deleted {
            return None;
        }
        let record = self.render(idx);
        (record["name"].as_str() == Some(name)).then(|| self.file_bytes(slot.key))
    }

    /// The log of one family, or the global one; `None` for an unknown family.
    fn log_of(&self, family: Option<&str>) -> Option<&OrderedLog> {
        match family {
            None => Some(&self.global),
            Some(f) => self
                .p
                .families
                .iter()
                .position(|x| x == f)
                .map(|i| &self.by_family[i]),
        }
    }

    pub fn list(&self, q: &ListQuery) -> ListPage {
        let Some(log) = self.log_of(q.family.as_deref()) else {
            return ListPage {
                items: vec![],
                more: false,
                last: None,
                total: 0,
            };
        };
        let since_pos = q.since.map_or(0, |s| log.lower_bound_time(s));
        let start = match q.after {
            Some((t, key)) => since_pos.max(log.upper_bound(t, key)),
            None => since_pos,
        };
        let (entries, more) = log.page(start, q.skip, q.limit);
        ListPage {
            last: entries.last().map(|e| (e.t, e.key)),
            items: entries.iter().map(|e| self.render_json(e.idx)).collect(),
            more,
            total: log.live_from(since_pos),
        }
    }

    /// Ids in listing order, tombstones included.
    pub fn ordered_ids(&self, since: Option<i64>, family: Option<&str>) -> Vec<String> {
        let Some(log) = self.log_of(family) else {
            return vec![];
        };
        let start = since.map_or(0, |s| log.lower_bound_time(s));
        let first = log.rank(start);
        (first + 1..=log.live_count())
            .filter_map(|k| log.select(k))
            .map(|pos| format_id(log.entry(pos).key))
            .collect()
    }

    /// Re-stamps the given assets with `t` and moves them to the end of the logs.
    fn restamp(&mut self, mut idxs: Vec<u32>, t: i64) {
        idxs.sort_unstable_by_key(|&i| self.slots[i as usize].key);
        idxs.dedup();
        for idx in idxs {
            let s = &self.slots[idx as usize];
            let (gpos, fpos, fam, key) = (s.gpos, s.fpos, s.family, s.key);
            self.global.kill(gpos as usize);
            self.by_family[fam as usize].kill(fpos as usize);
            self.append(idx, t, key);
        }
    }

    fn append(&mut self, idx: u32, t: i64, key: u64) {
        let fam = self.slots[idx as usize].family as usize;
        let e = LogEntry { t, key, idx };
        let gpos = self.global.push(e) as u32;
        let fpos = self.by_family[fam].push(e) as u32;
        let s = &mut self.slots[idx as usize];
        s.t = t;
        s.gpos = gpos;
        s.fpos = fpos;
    }

    /// Chooses up to `n` distinct live assets, deterministically from the seed and the number
    /// of mutations so far.
    fn choose_live(&self, n: usize) -> Vec<u32> {
        let live = self.live();
        let n = n.min(live);
        let mut state = h(self.p.seed, self.mutations, 99);
        let mut next = || {
            state = mix(state);
            state
        };
        if n * 2 >= live {
            let mut all: Vec<u32> = (0..self.slots.len() as u32)
                .filter(|&i| !self.slots[i as usize].deleted)
                .collect();
            for i in 0..n {
                let j = i + (next() % (all.len() - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(n);
            return all;
        }
        let mut chosen = HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let i = (next() % self.slots.len() as u64) as u32;
            if !self.slots[i as usize].deleted && chosen.insert(i) {
                out.push(i);
            }
        }
        out
    }

    fn ids_of(&self, mut idxs: Vec<u32>) -> Vec<String> {
        idxs.sort_unstable_by_key(|&i| self.slots[i as usize].key);
        idxs.dedup();
        idxs.iter()
            .map(|&i| format_id(self.slots[i as usize].key))
            .collect()
    }

    /// Changes the metadata (new title) of `n` live assets, all stamped with one new tick.
    pub fn touch(&mut self, n: usize) -> Vec<String> {
        let chosen = self.choose_live(n);
        if chosen.is_empty() {
            return vec![];
        }
        let t = self.tick();
        for &i in &chosen {
            self.slots[i as usize].rev += 1;
        }
        self.restamp(chosen.clone(), t);
        self.ids_of(chosen)
    }

    /// Creates `n` new assets, all stamped with one new tick.
    pub fn add(&mut self, n: usize) -> Vec<String> {
        if n == 0 {
            return vec![];
        }
        let t = self.tick();
        let first = self.slots.len() as u32;
        let mut idxs = Vec::with_capacity(n);
        for idx in first..first + n as u32 {
            let mut slot = self.new_slot(idx, t);
            slot.created = t;
            self.slots.push(slot);
            idxs.push(idx);
        }
        let mut sorted = idxs.clone();
        sorted.sort_unstable_by_key(|&i| self.slots[i as usize].key);
        for idx in sorted {
            let key = self.slots[idx as usize].key;
            self.append(idx, t, key);
        }
        self.ids_of(idxs)
    }

    fn delete_idxs(&mut self, idxs: Vec<u32>) -> Vec<String> {
        if idxs.is_empty() {
            return vec![];
        }
        let t = self.tick();
        for &i in &idxs {
            self.slots[i as usize].deleted = true;
        }
        self.deleted += idxs.len();
        self.restamp(idxs.clone(), t);
        self.ids_of(idxs)
    }

    /// Deletes the given assets (unknown or already deleted ids are skipped); returns the ids
    /// deleted now.
    pub fn delete(&mut self, ids: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        let idxs: Vec<u32> = ids
            .iter()
            .filter_map(|id| self.idx_of(id))
            .filter(|&i| !self.slots[i as usize].deleted && seen.insert(i))
            .collect();
        self.delete_idxs(idxs)
    }

    /// Removes the given live assets from every listing without a tombstone (a DAM that does
    /// not list deleted assets). Unknown or already deleted ids are skipped; returns the ids
    /// removed now. The clock does not move: nothing new is listed.
    pub fn purge(&mut self, ids: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        let idxs: Vec<u32> = ids
            .iter()
            .filter_map(|id| self.idx_of(id))
            .filter(|&i| !self.slots[i as usize].deleted && seen.insert(i))
            .collect();
        self.mutations += 1;
        for &i in &idxs {
            let s = &mut self.slots[i as usize];
            s.deleted = true;
            let (gpos, fpos, fam) = (s.gpos, s.fpos, s.family);
            self.global.kill(gpos as usize);
            self.by_family[fam as usize].kill(fpos as usize);
        }
        self.deleted += idxs.len();
        self.purged += idxs.len();
        self.ids_of(idxs)
    }

    /// Deletes `n` live assets chosen deterministically.
    pub fn delete_some(&mut self, n: usize) -> Vec<String> {
        let chosen = self.choose_live(n);
        self.delete_idxs(chosen)
    }

    /// Applies a JSON merge patch to an asset's record and stamps it with a new tick.
    pub fn set(&mut self, id: &str, patch: &Value) -> Result<Value, DamEmulatorError> {
        let idx = self
            .idx_of(id)
            .ok_or_else(|| DamEmulatorError::UnknownAsset(id.to_owned()))?;
        if self.slots[idx as usize].deleted {
            return Err(DamEmulatorError::UnknownAsset(id.to_owned()));
        }
        let Value::Object(obj) = patch else {
            return Err(DamEmulatorError::InvalidPatch(
                "the patch must be a JSON object".into(),
            ));
        };
        if let Some(k) = obj.keys().find(|k| DERIVED_KEYS.contains(&k.as_str())) {
            return Err(DamEmulatorError::InvalidPatch(format!(
                "`{k}` is set by the emulator and cannot be patched"
            )));
        }
        let mut obj = obj.clone();
        let new_family = match obj.remove("type") {
            None => None,
            Some(Value::String(f)) => match self.p.families.iter().position(|x| *x == f) {
                Some(i) => Some(i as u16),
                None => return Err(DamEmulatorError::UnknownFamily(f)),
            },
            Some(other) => {
                return Err(DamEmulatorError::InvalidPatch(format!(
                    "`type` must be a family name, got {other}"
                )))
            }
        };
        if let Some(name) = obj.get("name") {
            if name.as_str().is_none_or(str::is_empty) {
                return Err(DamEmulatorError::InvalidPatch(
                    "`name` must be a non-empty string".into(),
                ));
            }
        }
        let t = self.tick();
        let s = &self.slots[idx as usize];
        let (gpos, fpos, fam, key) = (s.gpos, s.fpos, s.family, s.key);
        self.global.kill(gpos as usize);
        self.by_family[fam as usize].kill(fpos as usize);
        if let Some(f) = new_family {
            self.slots[idx as usize].family = f;
        }
        self.append(idx, t, key);
        if !obj.is_empty() {
            self.patches
                .entry(idx)
                .or_default()
                .push(Value::Object(obj));
        }
        Ok(self.render(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_round_trip_and_sort_like_keys() {
        let mut keys: Vec<u64> = (0..500).map(|i| mix(i * 7919)).collect();
        keys.sort_unstable();
        let ids: Vec<String> = keys.iter().map(|&k| format_id(k)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        for (k, id) in keys.iter().zip(&ids) {
            assert_eq!(parse_id(id), Some(*k));
        }
        assert_eq!(parse_id("nope"), None);
        let mut bad = ids[0].clone();
        bad.replace_range(30..31, if &bad[30..31] == "0" { "1" } else { "0" });
        assert_eq!(parse_id(&bad), None);
    }

    #[test]
    fn listed_json_is_the_rendered_record_byte_for_byte() {
        let params = StoreParams {
            seed: 7,
            families: vec!["packshots".into(), "lifestyle".into()],
            skus: 1..=500,
            file_sizes: 1024..=4096,
            files_base: "http://dam.local".into(),
        };
        let mut store = Store::seed(params, 300, ts(1_700_000_000));
        let touched = store.touch(40);
        store.delete(&touched[..10]);
        let ids = store.ordered_ids(None, None);
        store
            .set(
                &ids[20],
                &json!({"name": "renamed file.jpg", "metadata": {"sku": null, "x": [1]}}),
            )
            .unwrap();
        store.set(&ids[21], &json!({"type": "lifestyle"})).unwrap();
        store.add(5);
        let (mut deleted, mut patched) = (0, 0);
        for idx in 0..store.slots.len() as u32 {
            let value = store.render(idx);
            assert_eq!(
                store.render_json(idx).get(),
                serde_json::to_string(&value).unwrap(),
                "asset {idx}"
            );
            if value["deleted"] == true {
                deleted += 1;
                assert!(value.get("url").is_none() && value.get("metadata").is_none());
                continue;
            }
            patched += usize::from(store.patches.contains_key(&idx));
            // The checksum and size are those of the file served at the record's URL.
            let bytes = store.file_bytes(store.slots[idx as usize].key);
            assert_eq!(value["checksum"], hex::encode(Sha1::digest(&bytes)));
            assert_eq!(value["size"], bytes.len());
            let name = value["name"].as_str().unwrap();
            assert!(value["url"]
                .as_str()
                .unwrap()
                .ends_with(&encode_segment(name)));
        }
        // A new `type` moves the asset to another family: it is no patch.
        assert_eq!((deleted, patched), (10, 1));
        let patched = store.render(store.idx_of(&ids[20]).unwrap());
        assert_eq!(patched["name"], "renamed file.jpg");
        assert!(patched["url"]
            .as_str()
            .unwrap()
            .ends_with("/renamed%20file.jpg"));
        assert_eq!(patched["metadata"]["x"], json!([1]));
        assert!(patched["metadata"].get("sku").is_none());
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut v = json!({"a": 1, "m": {"x": 1, "y": 2}});
        merge_patch(&mut v, &json!({"a": null, "m": {"x": 3}, "n": [1]}));
        assert_eq!(v, json!({"m": {"x": 3, "y": 2}, "n": [1]}));
    }
}

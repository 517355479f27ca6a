//! Compact in-memory encoding of asset values.
//!
//! The benchmark harness keeps up to a million assets in one emulator, so an asset's values are
//! not kept as `serde_json::Value` trees (several kilobytes each) but as one byte buffer:
//!
//! ```text
//! value  := attr:u16le channel:u8 locale:u8 tag:u8 payload
//! tag 0  := string       payload = varint(len) bytes
//! tag 1  := false        (no payload)
//! tag 2  := true         (no payload)
//! tag 3  := string list  payload = varint(count) { varint(len) bytes }*
//! ```
//!
//! `attr` indexes the family's attribute list, `channel` / `locale` index the emulator's channel
//! and locale tables plus one (`0` = `null`). Values are kept sorted by (attr, channel, locale),
//! one per key: this is the merge key of §5.8 of the API reference.

/// The typed `data` of one stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    Str(String),
    Bool(bool),
    List(Vec<String>),
}

/// One stored value: attribute index, channel and locale indexes (0 = null) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Val {
    pub attr: u16,
    pub channel: u8,
    pub locale: u8,
    pub data: Data,
}

impl Val {
    pub fn key(&self) -> (u16, u8, u8) {
        (self.attr, self.channel, self.locale)
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(buf: &[u8], pos: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        n |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn get_str(buf: &[u8], pos: &mut usize) -> String {
    let len = get_varint(buf, pos);
    let s = String::from_utf8_lossy(&buf[*pos..*pos + len]).into_owned();
    *pos += len;
    s
}

/// Encodes values (which must be sorted by key and unique per key) into one buffer.
pub(crate) fn encode(vals: &[Val]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(vals.len() * 24);
    for v in vals {
        out.extend_from_slice(&v.attr.to_le_bytes());
        out.push(v.channel);
        out.push(v.locale);
        match &v.data {
            Data::Str(s) => {
                out.push(0);
                put_str(&mut out, s);
            }
            Data::Bool(false) => out.push(1),
            Data::Bool(true) => out.push(2),
            Data::List(items) => {
                out.push(3);
                put_varint(&mut out, items.len());
                for s in items {
                    put_str(&mut out, s);
                }
            }
        }
    }
    out.into_boxed_slice()
}

/// Decodes a buffer written by [`encode`].
pub(crate) fn decode(buf: &[u8]) -> Vec<Val> {
    let mut vals = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let attr = u16::from_le_bytes([buf[pos], buf[pos + 1]]);
        let channel = buf[pos + 2];
        let locale = buf[pos + 3];
        let tag = buf[pos + 4];
        pos += 5;
        let data = match tag {
            0 => Data::Str(get_str(buf, &mut pos)),
            1 => Data::Bool(false),
            2 => Data::Bool(true),
            _ => {
                let n = get_varint(buf, &mut pos);
                Data::List((0..n).map(|_| get_str(buf, &mut pos)).collect())
            }
        };
        vals.push(Val {
            attr,
            channel,
            locale,
            data,
        });
    }
    vals
}

/// Merges `changes` into `current` per (attr, channel, locale): `Some` replaces or adds, `None`
/// erases (§5.8). Returns true when the result differs from `current`.
pub(crate) fn merge(current: &mut Vec<Val>, changes: Vec<(u16, u8, u8, Option<Data>)>) -> bool {
    let mut changed = false;
    for (attr, channel, locale, data) in changes {
        let key = (attr, channel, locale);
        match current.binary_search_by(|v| v.key().cmp(&key)) {
            Ok(i) => match data {
                Some(d) => {
                    if current[i].data != d {
                        current[i].data = d;
                        changed = true;
                    }
                }
                None => {
                    current.remove(i);
                    changed = true;
                }
            },
            Err(i) => {
                if let Some(d) = data {
                    current.insert(
                        i,
                        Val {
                            attr,
                            channel,
                            locale,
                            data: d,
                        },
                    );
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        let mut vals = vec![];
        assert!(merge(
            &mut vals,
            vec![
                (3, 0, 2, Some(Data::Str("fr".into()))),
                (3, 0, 1, Some(Data::Str("en".repeat(100)))),
                (1, 0, 0, Some(Data::List(vec!["a".into(), "b".into()]))),
                (2, 1, 0, Some(Data::Bool(true))),
            ]
        ));
        let buf = encode(&vals);
        let back = decode(&buf);
        assert_eq!(back, vals);
        assert_eq!(back[0].attr, 1);
        assert_eq!(back[2].locale, 1);
        // same data: unchanged; null erases
        assert!(!merge(&mut vals, vec![(2, 1, 0, Some(Data::Bool(true)))]));
        assert!(merge(&mut vals, vec![(3, 0, 2, None), (9, 0, 0, None)]));
        assert_eq!(vals.len(), 3);
    }
}

//! The campaign table in shared memory, as plain logic: the byte record of one campaign
//! ([`encode`], [`RecordView`]) and the open-addressing index over record offsets ([`find`],
//! [`slot_for`]). The module keeps the bytes in an nginx slab zone; everything that reads them is
//! here, bounds-checked, so that a torn or stale record gives a wrong answer (which the caller
//! detects and retries), never an out-of-bounds read.
//!
//! Record (little-endian):
//!
//! ```text
//! 0   u32  total length
//! 4   u16  id length        6  u8 status        7  u8 flags (1: start, 2: end, 4: fallback)
//! 8   i16  utc offset (min) 10 u16 publishers   12 u32 account offset (>> 3, the module's)
//! 16  i64  start            24 i64 end
//! 32  u64  cpc   40 u64 cpm   48 u64 cpa   56 u32 revenue share ppm   60 u32 landing length
//! 64  6 x u64 caps (u64::MAX: none): daily spend, total spend, daily clicks, total clicks,
//!     daily impressions, total impressions
//! 112 u32 fallback length   116 u32 publishers bytes
//! 120 id, landing url, fallback url, publishers (each: u16 length, bytes)
//! ```

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;

use crate::campaign::{Campaign, Caps, Pricing, Status};

const HEAD: usize = 120;
/// An index slot that never held a record.
pub const EMPTY: u32 = 0;
/// An index slot whose record was deleted (probing goes on past it).
pub const DELETED: u32 = u32::MAX;

fn status_code(s: Status) -> u8 {
    match s {
        Status::Active => 0,
        Status::Paused => 1,
        Status::Ended => 2,
    }
}

/// The record of `c`, with the module's account offset.
pub fn encode(c: &Campaign, account: u32, out: &mut Vec<u8>) {
    out.clear();
    let mut pubs = Vec::new();
    for p in &c.publishers {
        let b = &p.as_bytes()[..p.len().min(u16::MAX as usize)];
        pubs.extend_from_slice(&(b.len() as u16).to_le_bytes());
        pubs.extend_from_slice(b);
    }
    let fallback = c.fallback_url.as_deref().unwrap_or("");
    let total = HEAD + c.id.len() + c.landing_url.len() + fallback.len() + pubs.len();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(c.id.len() as u16).to_le_bytes());
    out.push(status_code(c.status));
    let flags = u8::from(c.start.is_some())
        | u8::from(c.end.is_some()) << 1
        | u8::from(c.fallback_url.is_some()) << 2;
    out.push(flags);
    out.extend_from_slice(&c.utc_offset_minutes.to_le_bytes());
    out.extend_from_slice(&(c.publishers.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&account.to_le_bytes());
    out.extend_from_slice(&c.start.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&c.end.unwrap_or(0).to_le_bytes());
    let p = &c.pricing;
    for v in [p.cpc_micros, p.cpm_micros, p.cpa_micros] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&p.revenue_share_ppm.to_le_bytes());
    out.extend_from_slice(&(c.landing_url.len() as u32).to_le_bytes());
    let k = &c.caps;
    for v in [
        k.daily_spend_micros,
        k.total_spend_micros,
        k.daily_clicks,
        k.total_clicks,
        k.daily_impressions,
        k.total_impressions,
    ] {
        out.extend_from_slice(&v.unwrap_or(u64::MAX).to_le_bytes());
    }
    out.extend_from_slice(&(fallback.len() as u32).to_le_bytes());
    out.extend_from_slice(&(pubs.len() as u32).to_le_bytes());
    debug_assert_eq!(out.len(), HEAD);
    out.extend_from_slice(c.id.as_bytes());
    out.extend_from_slice(c.landing_url.as_bytes());
    out.extend_from_slice(fallback.as_bytes());
    out.extend_from_slice(&pubs);
    debug_assert_eq!(out.len(), total);
}

/// A record read in place; every accessor is bounds-checked by [`RecordView::new`].
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    b: &'a [u8],
    id: &'a [u8],
    landing: &'a [u8],
    fallback: &'a [u8],
    publishers: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> RecordView<'a> {
    /// The record at the start of `b` (which may be longer), or None if it is not one.
    pub fn new(b: &'a [u8]) -> Option<RecordView<'a>> {
        if b.len() < HEAD {
            return None;
        }
        let total = u32_at(b, 0) as usize;
        if total < HEAD {
            return None;
        }
        let b = b.get(..total)?;
        let id_len = u16_at(b, 4) as usize;
        let landing_len = u32_at(b, 60) as usize;
        let fallback_len = u32_at(b, 112) as usize;
        let pubs_len = u32_at(b, 116) as usize;
        let mut at = HEAD;
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let id = take(id_len)?;
        let landing = take(landing_len)?;
        let fallback = take(fallback_len)?;
        let publishers = take(pubs_len)?;
        (at == total && b[6] <= 2).then_some(RecordView {
            b,
            id,
            landing,
            fallback,
            publishers,
        })
    }

    pub fn len(&self) -> usize {
        self.b.len()
    }

    /// The record's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn id(&self) -> &'a [u8] {
        self.id
    }

    pub fn status(&self) -> Status {
        match self.b[6] {
            0 => Status::Active,
            1 => Status::Paused,
            _ => Status::Ended,
        }
    }

    pub fn landing_url(&self) -> &'a [u8] {
        self.landing
    }

    pub fn fallback_url(&self) -> Option<&'a [u8]> {
        (self.b[7] & 4 != 0).then_some(self.fallback)
    }

    pub fn utc_offset_minutes(&self) -> i16 {
        u16_at(self.b, 8) as i16
    }

    pub fn account(&self) -> u32 {
        u32_at(self.b, 12)
    }

    pub fn start(&self) -> Option<i64> {
        (self.b[7] & 1 != 0).then(|| u64_at(self.b, 16) as i64)
    }

    pub fn end(&self) -> Option<i64> {
        (self.b[7] & 2 != 0).then(|| u64_at(self.b, 24) as i64)
    }

    /// Whether `unix_secs` is within the campaign's schedule.
    pub fn in_schedule(&self, unix_secs: i64) -> bool {
        self.start().is_none_or(|s| unix_secs >= s) && self.end().is_none_or(|e| unix_secs < e)
    }

    pub fn pricing(&self) -> Pricing {
        Pricing {
            cpc_micros: u64_at(self.b, 32),
            cpm_micros: u64_at(self.b, 40),
            cpa_micros: u64_at(self.b, 48),
            revenue_share_ppm: u32_at(self.b, 56),
        }
    }

    pub fn caps(&self) -> Caps {
        let cap = |i: usize| Some(u64_at(self.b, 64 + 8 * i)).filter(|&v| v != u64::MAX);
        Caps {
            daily_spend_micros: cap(0),
            total_spend_micros: cap(1),
            daily_clicks: cap(2),
            total_clicks: cap(3),
            daily_impressions: cap(4),
            total_impressions: cap(5),
        }
    }

    /// The allowed publishers (empty: any).
    pub fn publishers(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.publishers;
        std::iter::from_fn(move || {
            if rest.len() < 2 {
                return None;
            }
            let n = u16_at(rest, 0) as usize;
            let s = rest.get(2..2 + n)?;
            rest = &rest[2 + n..];
            Some(s)
        })
    }

    /// Whether `publisher` may send events for this campaign.
    pub fn allows(&self, publisher: &[u8]) -> bool {
        self.publishers.is_empty() || self.publishers().any(|p| p == publisher)
    }

    /// The campaign back (for the admin API and the file write-through).
    pub fn to_campaign(&self) -> Campaign {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Campaign {
            id: s(self.id),
            status: self.status(),
            landing_url: s(self.landing),
            fallback_url: self.fallback_url().map(s),
            start: self.start(),
            end: self.end(),
            publishers: self.publishers().map(s).collect(),
            pricing: self.pricing(),
            caps: self.caps(),
            utc_offset_minutes: self.utc_offset_minutes(),
        }
    }
}

/// FNV-1a, 64 bits: the index hash of an id.
pub fn hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Finds `id` in `index` (a power-of-two number of slots; values are record offsets, or
/// [`EMPTY`] / [`DELETED`]); `id_at(value)` gives the id of the record a slot points to.
/// Returns the slot and its value.
pub fn find<'r>(
    index: &[AtomicU32],
    id: &[u8],
    id_at: impl Fn(u32) -> Option<&'r [u8]>,
) -> Option<(usize, u32)> {
    let mask = index.len().checked_sub(1)?;
    let mut i = hash(id) as usize & mask;
    for _ in 0..index.len() {
        let v = index[i].load(SeqCst);
        if v == EMPTY {
            return None;
        }
        if v != DELETED && id_at(v) == Some(id) {
            return Some((i, v));
        }
        i = (i + 1) & mask;
    }
    None
}

/// The index has no free slot.
#[derive(Debug, PartialEq)]
pub struct IndexFull;

/// Where `id` goes: its current slot (Ok(slot, Some(value))), or the first deleted or empty
/// slot on its probe path (Ok(slot, None)); Err when the index has no room. Writers only (one
/// at a time).
pub fn slot_for<'r>(
    index: &[AtomicU32],
    id: &[u8],
    id_at: impl Fn(u32) -> Option<&'r [u8]>,
) -> Result<(usize, Option<u32>), IndexFull> {
    if let Some((i, v)) = find(index, id, &id_at) {
        return Ok((i, Some(v)));
    }
    let mask = index.len().checked_sub(1).ok_or(IndexFull)?;
    let mut i = hash(id) as usize & mask;
    for _ in 0..index.len() {
        let v = index[i].load(SeqCst);
        if v == EMPTY || v == DELETED {
            return Ok((i, None));
        }
        i = (i + 1) & mask;
    }
    Err(IndexFull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::parse_file;
    use std::sync::atomic::Ordering::Release;

    #[test]
    fn record_roundtrip() {
        let text = r#"[{"id": "s", "status": "paused", "landing_url": "https://s.example/{click_id}",
            "fallback_url": "https://s.example/sorry", "start": 1000, "end": 2000,
            "publishers": ["pub-a", "pub-b"], "price_per_click": 0.25, "price_per_mille": 2.5,
            "revenue_share": 0.1, "daily_budget": 100, "total_clicks": 4000, "timezone": "+05:30"},
            {"id": "t", "status": "active", "landing_url": "https://t/"}]"#;
        for c in parse_file(text).unwrap() {
            let mut b = Vec::new();
            encode(&c, 77, &mut b);
            b.extend_from_slice(&[0xee; 9]); // a longer slab chunk still reads
            let r = RecordView::new(&b).unwrap();
            assert_eq!(r.to_campaign(), c);
            assert_eq!(r.account(), 77);
            assert_eq!(r.id(), c.id.as_bytes());
            if c.id == "s" {
                assert!(r.allows(b"pub-b") && !r.allows(b"pub-c") && !r.allows(b""));
                assert!(!r.in_schedule(999) && r.in_schedule(1000) && !r.in_schedule(2000));
            } else {
                assert!(r.allows(b"anyone") && r.in_schedule(i64::MIN));
            }
        }
    }

    #[test]
    fn corrupt_records_are_refused_not_panics() {
        let c = &parse_file(r#"[{"id": "abc", "status": "active", "landing_url": "https://a/", "publishers": ["x"]}]"#).unwrap()[0];
        let mut good = Vec::new();
        encode(c, 1, &mut good);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = good.clone();
            for k in 0..(1 + x % 4) {
                let at = ((x >> (8 * k)) as usize) % b.len();
                b[at] = (x >> (3 * k)) as u8;
            }
            b.truncate(b.len() - (x % 3) as usize);
            if let Some(r) = RecordView::new(&b) {
                let _ = (
                    r.to_campaign(),
                    r.allows(b"x"),
                    r.in_schedule(5),
                    r.caps(),
                    r.pricing(),
                );
            }
        }
        assert!(RecordView::new(&good[..HEAD - 1]).is_none());
    }

    #[test]
    fn index_insert_find_delete_100k() {
        let n: usize = 100_000;
        let ids: Vec<String> = (0..n).map(|i| format!("camp-{i}")).collect();
        let index: Vec<AtomicU32> = (0..(2 * n).next_power_of_two())
            .map(|_| AtomicU32::new(EMPTY))
            .collect();
        // Record "offsets" are 1 + the id's position.
        let id_at = |v: u32| ids.get(v as usize - 1).map(|s| s.as_bytes());
        for (k, id) in ids.iter().enumerate() {
            let (slot, old) = slot_for(&index, id.as_bytes(), id_at).unwrap();
            assert_eq!(old, None);
            index[slot].store(k as u32 + 1, Release);
        }
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(
                find(&index, id.as_bytes(), id_at).map(|f| f.1),
                Some(k as u32 + 1)
            );
        }
        assert_eq!(find(&index, b"absent", id_at), None);
        // Delete every other one: the rest stay reachable past the tombstones.
        for id in ids.iter().step_by(2) {
            let (slot, _) = find(&index, id.as_bytes(), id_at).unwrap();
            index[slot].store(DELETED, Release);
        }
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(
                find(&index, id.as_bytes(), id_at).is_some(),
                k % 2 == 1,
                "{id}"
            );
        }
        // An update finds the existing slot.
        let (_, old) = slot_for(&index, ids[1].as_bytes(), id_at).unwrap();
        assert_eq!(old, Some(2));
        // A full index says so.
        let tiny: Vec<AtomicU32> = (0..2).map(|_| AtomicU32::new(EMPTY)).collect();
        let (s, _) = slot_for(&tiny, ids[1].as_bytes(), id_at).unwrap();
        tiny[s].store(2, Release);
        let (s, _) = slot_for(&tiny, ids[3].as_bytes(), id_at).unwrap();
        tiny[s].store(4, Release);
        assert!(slot_for(&tiny, ids[5].as_bytes(), id_at).is_err());
        assert!(find(&[], b"x", id_at).is_none());
    }
}

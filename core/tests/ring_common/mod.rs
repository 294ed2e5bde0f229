//! Helpers shared by the ring tests: self-checking payloads that carry a producer id and a
//! sequence number.
#![allow(dead_code)]

use tracker_core::ring::{Read, Reader, Record};

/// A payload of `len` bytes (at least 8) for producer `id`, sequence `seq`: id and seq, then a
/// pattern derived from both, so a torn or misplaced copy is detected.
pub fn payload(id: u32, seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 8);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    for i in 8..len {
        v.push(fill(id, seq, i));
    }
    v
}

fn fill(id: u32, seq: u32, i: usize) -> u8 {
    (id.wrapping_mul(131) ^ seq.wrapping_mul(31) ^ (i as u32).wrapping_mul(7)) as u8
}

/// Payload length for a sequence number: varies between 8 and 8 + spread - 1.
pub fn len_for(id: u32, seq: u32, spread: u32) -> usize {
    8 + ((seq.wrapping_mul(2654435761) ^ id) % spread) as usize
}

/// Checks a payload made by [`payload`] and returns (id, seq).
pub fn check(p: &[u8]) -> (u32, u32) {
    assert!(p.len() >= 8, "payload too short: {}", p.len());
    let id = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    for (i, &b) in p.iter().enumerate().skip(8) {
        assert_eq!(
            b,
            fill(id, seq, i),
            "corrupt payload of producer {id} seq {seq} at byte {i}"
        );
    }
    (id, seq)
}

/// Reads everything currently readable, committing after each record. Skips are returned too.
pub fn drain(reader: &mut Reader, ring: &tracker_core::ring::Ring) -> Vec<Read> {
    let mut out = Vec::new();
    loop {
        match reader.next() {
            Read::Empty => return out,
            Read::Record(r) => {
                ring.commit(r.end);
                out.push(Read::Record(r));
            }
            s @ (Read::Skipped { .. } | Read::Corrupt { .. } | Read::Resynced { .. }) => {
                out.push(s)
            }
        }
    }
}

pub fn records(reads: Vec<Read>) -> Vec<Record> {
    reads
        .into_iter()
        .map(|r| match r {
            Read::Record(r) => r,
            other => panic!("expected a record, got {other:?}"),
        })
        .collect()
}

pub fn sum(a: &[u64]) -> u64 {
    a.iter().sum()
}

//! The campaign journal's reader (`journal::scan`, `journal::decode`): never panics on any
//! bytes; the valid records it returns lie inside the input, in order, end at `valid_end`,
//! and the tail after it holds no valid record (else it would be damage, an error); a record
//! re-framed from a returned payload scans back to the same payload; a decoded change
//! encodes to a record that decodes to the same change.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::journal::{decode, encode, frame, scan, OVERHEAD};

fuzz_target!(|data: &[u8]| {
    let s = match scan(data) {
        Ok(s) => s,
        Err(c) => {
            assert!(c.offset < data.len());
            return;
        }
    };
    assert_eq!(s.valid_end + s.torn, data.len());
    let mut at = 0;
    for r in &s.records {
        assert!(r.start >= at && r.end <= s.valid_end, "record outside the valid part");
        at = r.end;
        let mut again = Vec::new();
        frame(&data[r.clone()], &mut again);
        assert_eq!(again.len(), r.len() + OVERHEAD);
        let back = scan(&again).expect("a framed payload scans");
        assert_eq!(back.records.len(), 1);
        if let Ok(change) = decode(&data[r.clone()]) {
            let mut rec = Vec::new();
            encode(&change, &mut rec);
            let back = scan(&rec).expect("an encoded change scans");
            let p = back.records[0].clone();
            assert_eq!(decode(&rec[p]).expect("decodes"), change);
        }
    }
    // The records are back to back from the start.
    let framed: usize = s.records.iter().map(|r| r.len() + OVERHEAD).sum();
    assert_eq!(framed, s.valid_end);
    // The tail alone: no valid record in it, all of it torn.
    let tail = &data[s.valid_end..];
    let t = scan(tail).expect("a torn tail scans");
    assert!(t.records.is_empty() && t.valid_end == 0 && t.torn == tail.len());
});

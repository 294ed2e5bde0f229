use super::*;
use crate::campaign::Status;

fn camp(id: &str, url: &str) -> Campaign {
    Campaign::new(id, Status::Active, url)
}

fn rec(change: &Change) -> Vec<u8> {
    let mut out = Vec::new();
    encode(change, &mut out);
    out
}

fn changes(bytes: &[u8]) -> Vec<Change> {
    let s = scan(bytes).expect("valid journal");
    s.records
        .iter()
        .map(|r| decode(&bytes[r.clone()]).expect("decodes"))
        .collect()
}

fn ids(list: &[Campaign]) -> Vec<(&str, &str)> {
    let mut v: Vec<(&str, &str)> = list
        .iter()
        .map(|c| (c.id.as_str(), c.landing_url.as_str()))
        .collect();
    v.sort();
    v
}

fn sample() -> Vec<Change> {
    vec![
        Change::Upsert(vec![camp("a", "https://a.example/1")]),
        Change::Upsert(vec![
            camp("b", "https://b.example/1"),
            camp("c", "https://c.example/1"),
        ]),
        Change::Delete(vec!["a".into()]),
        Change::Upsert(vec![camp("b", "https://b.example/2")]),
    ]
}

fn journal_of(list: &[Change]) -> Vec<u8> {
    list.iter().flat_map(rec).collect()
}

#[test]
fn round_trip() {
    let list = sample();
    let bytes = journal_of(&list);
    assert_eq!(changes(&bytes), list);
    let s = scan(&bytes).unwrap();
    assert_eq!((s.valid_end, s.torn), (bytes.len(), 0));
    assert_eq!(rec(&list[0]).len(), OVERHEAD + s.records[0].len());
}

#[test]
fn empty_journal_has_no_records() {
    let s = scan(&[]).unwrap();
    assert!(s.records.is_empty());
    assert_eq!((s.valid_end, s.torn), (0, 0));
}

#[test]
fn torn_tail_is_dropped_at_every_cut() {
    let list = sample();
    let whole = journal_of(&list[..3]);
    let last = rec(&list[3]);
    // Every prefix of the last record (a write cut short anywhere) is a torn tail.
    for cut in 0..last.len() {
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&last[..cut]);
        let s = scan(&bytes).unwrap_or_else(|c| panic!("cut {cut}: {c:?}"));
        assert_eq!(s.records.len(), 3, "cut {cut}");
        assert_eq!((s.valid_end, s.torn), (whole.len(), cut), "cut {cut}");
    }
}

#[test]
fn a_bit_flip_in_the_last_record_is_a_torn_tail() {
    let mut bytes = journal_of(&sample());
    let n = bytes.len();
    bytes[n - 30] ^= 0x01; // in the last record's payload
    let s = scan(&bytes).unwrap();
    assert_eq!(s.records.len(), 3);
}

#[test]
fn corruption_in_the_middle_is_refused_with_its_offset() {
    let list = sample();
    let first = rec(&list[0]).len();
    let second = rec(&list[1]).len();
    // A flipped payload byte (checksum), length, trailer, magic of the second record.
    for (what, at) in [
        ("payload", first + HEAD + 5),
        ("length", first + 4),
        ("trailer", first + second - 2),
        ("magic", first + 1),
        ("checksum", first + 9),
    ] {
        let mut bytes = journal_of(&list);
        bytes[at] ^= 0x40;
        let e = scan(&bytes).expect_err(what);
        assert_eq!(e.offset, first, "{what}: {e:?}");
    }
}

#[test]
fn garbage_between_records_is_refused() {
    let list = sample();
    let mut bytes = rec(&list[0]);
    let at = bytes.len();
    bytes.extend_from_slice(b"garbage");
    bytes.extend(rec(&list[1]));
    assert_eq!(scan(&bytes).unwrap_err().offset, at);
}

#[test]
fn replay_applies_in_order() {
    let base = vec![
        camp("a", "https://a.example/0"),
        camp("z", "https://z.example/0"),
    ];
    let out = replay(base, sample());
    assert_eq!(
        ids(&out),
        vec![
            ("b", "https://b.example/2"),
            ("c", "https://c.example/1"),
            ("z", "https://z.example/0"),
        ]
    );
    // The order matters: the same records reversed give another state.
    let mut rev = sample();
    rev.reverse();
    let out = replay(vec![camp("a", "https://a.example/0")], rev);
    assert_eq!(
        ids(&out),
        vec![
            ("a", "https://a.example/1"),
            ("b", "https://b.example/1"),
            ("c", "https://c.example/1"),
        ]
    );
}

#[test]
fn replay_is_idempotent() {
    // A crash between writing the compacted file and removing the old journal: the old
    // journal is replayed again over a file that already holds its effect.
    let base = vec![
        camp("a", "https://a.example/0"),
        camp("z", "https://z.example/0"),
    ];
    let once = replay(base.clone(), sample());
    let twice = replay(once.clone(), sample());
    assert_eq!(ids(&once), ids(&twice));
    // A prefix already applied, then the whole journal (a rotation's re-read).
    let prefix_then_all = replay(replay(base, sample()[..2].to_vec()), sample());
    assert_eq!(ids(&once), ids(&prefix_then_all));
}

#[test]
fn decode_refuses_bad_payloads() {
    for bad in [
        &b"[]"[..],
        b"{}",
        b"{\"upsert\":[1]}",
        b"{\"delete\":[1]}",
        b"{\"upsert\":[{\"id\":\"a\"}]}",
        b"{\"upsert\":[],\"delete\":[]}",
    ] {
        assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write_file(path: &Path, list: &[Campaign]) {
    std::fs::write(path, campaigns_text(list)).unwrap();
}

#[test]
fn append_then_load() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[camp("a", "https://a.example/0")]);
    for c in sample() {
        let a = append(&journal_path(&f), &rec(&c)).unwrap();
        a.make_durable().unwrap();
        assert_eq!(a.repaired, None);
    }
    let l = load(&f).unwrap();
    assert_eq!(l.records, 4);
    assert_eq!(
        ids(&l.campaigns),
        ids(&replay(vec![camp("a", "https://a.example/0")], sample()))
    );
}

#[test]
fn append_cuts_a_torn_tail_first() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[]);
    let j = journal_path(&f);
    let list = sample();
    append(&j, &rec(&list[0])).unwrap();
    // A writer killed in the middle of its write.
    let half = rec(&list[1]);
    let mut bytes = std::fs::read(&j).unwrap();
    let good = bytes.len() as u64;
    bytes.extend_from_slice(&half[..half.len() / 2]);
    std::fs::write(&j, &bytes).unwrap();
    let a = append(&j, &rec(&list[2])).unwrap();
    assert_eq!(a.repaired, Some(bytes.len() as u64));
    let bytes = std::fs::read(&j).unwrap();
    assert_eq!(bytes.len() as u64, good + rec(&list[2]).len() as u64);
    assert_eq!(changes(&bytes), vec![list[0].clone(), list[2].clone()]);
}

#[test]
fn append_refuses_a_damaged_journal() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[]);
    let j = journal_path(&f);
    let list = sample();
    let mut bytes = journal_of(&list[..2]);
    bytes[HEAD + 2] ^= 0x20; // the first record's payload; the second one is valid
    bytes.extend_from_slice(b"xx"); // and a tail that is not a whole record
    std::fs::write(&j, &bytes).unwrap();
    let e = append(&j, &rec(&list[2])).unwrap_err();
    assert!(e.to_string().contains("damaged at byte 0"), "{e}");
    assert_eq!(std::fs::read(&j).unwrap(), bytes, "nothing written");
    let e = load(&f).unwrap_err();
    assert!(
        e.contains("campaigns.json.journal\" is damaged at byte 0"),
        "{e}"
    );
}

#[test]
fn compaction_round_trip() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[camp("a", "https://a.example/0")]);
    let list = sample();
    for c in &list[..2] {
        append(&journal_path(&f), &rec(c)).unwrap();
    }
    let state = load(&f).unwrap().campaigns;
    assert!(rotate(&f).unwrap());
    assert!(!journal_path(&f).exists());
    // An append after the rotation goes to a new journal.
    append(&journal_path(&f), &rec(&list[2])).unwrap();
    let old_len = std::fs::metadata(old_journal_path(&f)).unwrap().len();
    assert!(finish_compaction(&f, &state, old_len).unwrap());
    assert!(!old_journal_path(&f).exists());
    let l = load(&f).unwrap();
    assert_eq!(l.records, 1);
    assert_eq!(
        ids(&l.campaigns),
        ids(&replay(
            vec![camp("a", "https://a.example/0")],
            list[..3].to_vec()
        ))
    );
    // Nothing to rotate when there is no journal.
    std::fs::remove_file(journal_path(&f)).unwrap();
    assert!(!rotate(&f).unwrap());
}

/// A crash at each point of a compaction (files as the crash leaves them) loads the same
/// campaigns as before it.
#[test]
fn a_crash_during_compaction_loses_nothing() {
    let list = sample();
    let base = vec![camp("a", "https://a.example/0")];
    let expect = ids(&replay(base.clone(), list.clone())).len();
    let expected = replay(base.clone(), list.clone());
    for crash_after in 0..4 {
        let d = dir();
        let f = d.path().join("campaigns.json");
        write_file(&f, &base);
        for c in &list[..3] {
            append(&journal_path(&f), &rec(c)).unwrap();
        }
        let state = load(&f).unwrap().campaigns;
        if crash_after >= 1 {
            rotate(&f).unwrap();
            append(&journal_path(&f), &rec(&list[3])).unwrap();
        } else {
            append(&journal_path(&f), &rec(&list[3])).unwrap();
        }
        if crash_after >= 2 {
            write_campaigns(&f, &state).unwrap(); // the old journal is still there
        }
        if crash_after >= 3 {
            std::fs::remove_file(old_journal_path(&f)).unwrap();
        }
        let l = load(&f).unwrap();
        assert_eq!(
            ids(&l.campaigns),
            ids(&expected),
            "crash after step {crash_after}"
        );
        assert_eq!(l.campaigns.len(), expect);
    }
}

#[test]
fn finish_keeps_an_old_journal_that_grew() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[]);
    let list = sample();
    append(&journal_path(&f), &rec(&list[0])).unwrap();
    let state = load(&f).unwrap().campaigns;
    rotate(&f).unwrap();
    let old_len = std::fs::metadata(old_journal_path(&f)).unwrap().len();
    // A writer that opened the journal before the rotation appends to it after.
    append(&old_journal_path(&f), &rec(&list[1])).unwrap();
    assert!(!finish_compaction(&f, &state, old_len).unwrap());
    assert!(old_journal_path(&f).exists());
    let l = load(&f).unwrap();
    assert_eq!(ids(&l.campaigns), ids(&replay(vec![], list[..2].to_vec())));
}

#[test]
fn campaigns_text_is_a_campaigns_file() {
    let list = vec![
        camp("b", "https://b.example/"),
        camp("a", "https://a.example/"),
    ];
    let text = String::from_utf8(campaigns_text(&list)).unwrap();
    let back = campaign::parse_file(&text).unwrap();
    assert_eq!(back, vec![list[1].clone(), list[0].clone()]);
    assert_eq!(
        campaign::parse_file(&String::from_utf8(campaigns_text(&[])).unwrap()).unwrap(),
        vec![]
    );
}

#[test]
fn compaction_threshold() {
    assert!(!needs_compaction(10, 0));
    assert!(!needs_compaction(10, 11));
    assert!(needs_compaction(11, 11));
}

/// What the fuzz target (fuzz/fuzz_targets/journal.rs) checks, over mutations of a journal:
/// the records are back to back from the start, and what follows them holds no valid record.
#[test]
fn scan_invariants_hold_under_mutation() {
    let good = journal_of(&sample());
    let mut state = 0x2545_f491_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize
    };
    for round in 0..3000 {
        let mut b = good.clone();
        match round % 3 {
            0 => b.truncate(next() % (good.len() + 1)),
            1 => {
                let i = next() % b.len();
                b[i] ^= 1 << (next() % 8);
            }
            _ => {
                let i = next() % b.len();
                b.splice(i..i, [MAGIC[0], b'x', 0]);
            }
        }
        let Ok(s) = scan(&b) else { continue };
        let framed: usize = s.records.iter().map(|r| r.len() + OVERHEAD).sum();
        assert_eq!(framed, s.valid_end, "round {round}");
        let tail = scan(&b[s.valid_end..]).expect("a torn tail scans");
        assert!(
            tail.records.is_empty() && tail.valid_end == 0,
            "round {round}"
        );
    }
}

#[test]
fn background_compaction_by_size() {
    let d = dir();
    let f = d.path().join("campaigns.json");
    let base = vec![camp("a", "https://a.example/0")];
    write_file(&f, &base);
    let list = sample();
    for c in &list[..3] {
        append(&journal_path(&f), &rec(c)).unwrap();
    }
    let len = std::fs::metadata(journal_path(&f)).unwrap().len();
    assert_eq!(
        rotate_when_due(&f, len + 1).unwrap(),
        None,
        "not due below the size"
    );
    assert!(journal_path(&f).exists());
    let r = rotate_when_due(&f, len).unwrap().expect("due");
    assert_eq!(
        rotate_when_due(&f, 1).unwrap(),
        None,
        "one compaction at a time"
    );
    // Appends go on meanwhile, into a new journal.
    append(&journal_path(&f), &rec(&list[3])).unwrap();
    let tmp = prepare_compaction(&f).unwrap();
    assert!(commit_compaction(&f, &tmp, r).unwrap());
    assert!(!tmp.exists() && !old_journal_path(&f).exists());
    let l = load(&f).unwrap();
    assert_eq!(
        l.records, 1,
        "only the append made after the rotation is left"
    );
    assert_eq!(ids(&l.campaigns), ids(&replay(base, list)));
}

#[test]
fn background_compaction_gives_way_to_a_newer_one() {
    // A zone init (the master) finishes the old journal while a worker prepares its
    // compaction, then rotates again: the worker must not put its older state back.
    let d = dir();
    let f = d.path().join("campaigns.json");
    write_file(&f, &[]);
    let list = sample();
    append(&journal_path(&f), &rec(&list[0])).unwrap();
    let r = rotate_when_due(&f, 1).unwrap().expect("due");
    let tmp = prepare_compaction(&f).unwrap();
    // The master: finishes the old journal with the whole state, then rotates the journal.
    append(&journal_path(&f), &rec(&list[1])).unwrap();
    let state = load(&f).unwrap().campaigns;
    finish_compaction(&f, &state, u64::MAX).unwrap();
    append(&journal_path(&f), &rec(&list[2])).unwrap();
    assert!(rotate(&f).unwrap());
    assert!(
        !commit_compaction(&f, &tmp, r).unwrap(),
        "the worker gives way"
    );
    assert!(!tmp.exists());
    let l = load(&f).unwrap();
    assert_eq!(ids(&l.campaigns), ids(&replay(vec![], list[..3].to_vec())));
}

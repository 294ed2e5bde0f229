//! Loom models of the duplicates set (`core/src/dedup.rs`): the real `Seen` code, run by two
//! workers on a one-bucket set under every interleaving loom explores (and the weak-memory
//! outcomes it models: it treats `SeqCst` accesses as acquire/release, so these models also
//! show that the protocol needs no more than that; see the module docs).
//!
//!   RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!       cargo test -p tracker-core --release --test loom_dedup
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use tracker_core::dedup::{Claim, Outcome, Seen, BUCKET};

const WINDOW: u32 = 60;
const KEY: u64 = 0x5eed_1234_abcd_ef01;
const OTHER: u64 = 0x0bad_cafe_f00d_d00d;

fn bucket() -> Arc<Vec<AtomicU64>> {
    Arc::new((0..BUCKET).map(|_| AtomicU64::new(0)).collect())
}

fn is_first(o: Outcome) -> bool {
    matches!(o, Outcome::First { .. })
}

/// Two workers, the same key, the same second, an empty bucket: exactly one `First`, and the
/// key is recorded once.
#[test]
fn two_workers_one_key_exactly_one_first() {
    loom::model(|| {
        let t = bucket();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let t = t.clone();
                thread::spawn(move || Seen::new(&t).check_and_insert(KEY, 100, WINDOW))
            })
            .collect();
        let firsts = hs
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&o| is_first(o))
            .count();
        assert_eq!(firsts, 1);
        let s = Seen::new(&t);
        assert!(s.contains(KEY, 100, WINDOW));
        assert_eq!(s.live(100, WINDOW), 1);
    });
}

/// The racers choose different slots: slot 0 holds another key's entry that has expired for
/// the worker at 100 (age 60) and not for the one at 99 (age 59). Some racer always answers
/// `First`; a racer that answers `Duplicate` after its CAS gives its slot back, so the key is
/// never left recorded by an entry of a `Duplicate`.
#[test]
fn racers_on_different_slots_some_first_and_no_entry_without_a_first() {
    loom::model(|| {
        let t = bucket();
        assert!(is_first(Seen::new(&t).check_and_insert(OTHER, 40, WINDOW)));
        let hs: Vec<_> = [100u64, 99]
            .into_iter()
            .map(|now| {
                let t = t.clone();
                thread::spawn(move || Seen::new(&t).check_and_insert(KEY, now, WINDOW))
            })
            .collect();
        let outcomes: Vec<Outcome> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let firsts = outcomes.iter().filter(|&&o| is_first(o)).count();
        assert!(firsts >= 1, "no racer answered First: {outcomes:?}");
        // One entry of the key per First (both First: two entries, the documented rare case).
        let s = Seen::new(&t);
        assert_eq!(s.live(100, WINDOW), firsts, "{outcomes:?}");
    });
}

/// The first attempt's event is not stored (it releases its claim) while a second attempt
/// races it: the key ends up recorded exactly when the second attempt answered `First` (its
/// event stored), never by the released attempt.
#[test]
fn a_released_claim_leaves_the_key_recorded_only_by_a_stored_first() {
    loom::model(|| {
        let t = bucket();
        let t1 = t.clone();
        let failed = thread::spawn(move || {
            let s = Seen::new(&t1);
            let (o, claim): (Outcome, Option<Claim>) = s.check_and_claim(KEY, 100, WINDOW);
            if let Some(c) = claim {
                assert!(is_first(o));
                assert!(
                    s.release(c),
                    "nobody else writes a slot holding a live entry"
                );
            }
        });
        let t2 = t.clone();
        let retry = thread::spawn(move || Seen::new(&t2).check_and_insert(KEY, 100, WINDOW));
        failed.join().unwrap();
        let second = retry.join().unwrap();
        let s = Seen::new(&t);
        assert_eq!(s.contains(KEY, 100, WINDOW), is_first(second), "{second:?}");
        assert_eq!(s.live(100, WINDOW), usize::from(is_first(second)));
    });
}

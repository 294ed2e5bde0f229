//! Many readers and writers on one campaign store at once: writers replace, add and delete
//! campaigns (the index grows and is rebuilt); readers look up and charge. Readers never see a
//! wrong campaign, never miss one that exists throughout, and every charge lands in the
//! account of the campaign it was made for.

mod store_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use store_common::{campaign, landing_of, TestZone};
use tracker_core::event::Kind;
use tracker_core::store::Reader;

const STABLE: usize = 16;
const READERS: usize = 3;
const ROUNDS: usize = 300;

#[test]
fn readers_and_writers_race() {
    let tz = TestZone::new(8 << 20);
    let stable: Vec<String> = (0..STABLE).map(|i| format!("s{i}")).collect();
    tz.write(|w| w.upsert(&stable.iter().map(|id| campaign(id, 0)).collect::<Vec<_>>()))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (tz, stop, stable, lookups) =
            (tz.clone(), stop.clone(), stable.clone(), lookups.clone());
        readers.push(std::thread::spawn(move || {
            // Reader 0 has no slot of its own (more processes than slots): the shared count.
            let reader = if r == 0 {
                Reader::SHARED
            } else {
                tz.reader(10 + r as u32)
            };
            let zone = tz.zone();
            let mut charged = vec![0u64; STABLE];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) || n < 1000 {
                let i = (n * 7 + r) % STABLE;
                let (got, account) = zone
                    .lookup(reader, stable[i].as_bytes(), |rec| {
                        (rec.id().to_vec(), landing_of(rec.landing_url()))
                    })
                    .unwrap_or_else(|| panic!("{} not found", stable[i]));
                assert_eq!(got.0, stable[i].as_bytes());
                assert_eq!(got.1 .0, stable[i]);
                account.reject(Kind::Click);
                charged[i] += 1;
                // A churning campaign: if found, it is the one asked for.
                let churn = format!("c{}", n % 97);
                if let Some((got, account)) = zone.lookup(reader, churn.as_bytes(), |rec| {
                    landing_of(rec.landing_url())
                }) {
                    assert_eq!(got.0, churn);
                    account.count_video_complete();
                }
                n += 1;
            }
            lookups.fetch_add(n, Ordering::Relaxed);
            charged
        }));
    }
    let mut writers = Vec::new();
    for wr in 0..2 {
        let (tz, stable) = (tz.clone(), stable.clone());
        writers.push(std::thread::spawn(move || {
            for round in 0..ROUNDS {
                // The clock steps forward at every change (as if readers were that slow).
                tz.advance_clock(11);
                let version = (round * 2 + wr + 1) as u32;
                tz.write(|w| {
                    let replace: Vec<_> = stable
                        .iter()
                        .skip(round % 4)
                        .step_by(4)
                        .map(|id| campaign(id, version))
                        .collect();
                    w.upsert(&replace).unwrap();
                    let add: Vec<_> = (0..97)
                        .filter(|k| k % 3 == round % 3)
                        .map(|k| campaign(&format!("c{k}"), version))
                        .collect();
                    w.upsert(&add).unwrap();
                    let del: Vec<String> = (0..97)
                        .filter(|k| k % 3 == (round + 1) % 3)
                        .map(|k| format!("c{k}"))
                        .collect();
                    let del: Vec<&[u8]> = del.iter().map(|s| s.as_bytes()).collect();
                    w.remove(&del).unwrap();
                });
            }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut charged = [0u64; STABLE];
    for r in readers {
        for (c, n) in charged.iter_mut().zip(r.join().unwrap()) {
            *c += n;
        }
    }
    assert!(lookups.load(Ordering::Relaxed) >= READERS * 1000);
    // Every charge is in the account of its campaign.
    let (seen, _) = tz.write(|w| {
        w.page(0, usize::MAX, |r, a| {
            (
                r.to_campaign().id,
                a.map(|a| {
                    (
                        a.rejected.load(Ordering::Relaxed),
                        a.video_completes.load(Ordering::Relaxed),
                    )
                }),
            )
        })
    });
    for (i, id) in stable.iter().enumerate() {
        let got = seen.iter().find(|(x, _)| x == id).map(|(_, k)| *k);
        assert_eq!(
            got,
            Some(Some((charged[i], 0))),
            "{id}: (charges, charges of other campaigns)"
        );
    }
}

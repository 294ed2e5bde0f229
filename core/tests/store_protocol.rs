//! The campaign store's protocol at the points where other processes interleave: a writer
//! stopped or killed at every step of a change, a reader between the loads that locate the
//! index, a reader holding an account for as long as it likes.

mod store_common;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use store_common::{campaign, landing_of, TestZone};
use tracker_core::event::Kind;
use tracker_core::store::{ReadStep, Step};

/// How long a test waits for readers before it calls them hung. Not a speed assertion: the
/// lookups take microseconds; a hung reader never answers.
const HUNG: Duration = Duration::from_secs(20);

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Looks every id up from another thread (another worker); Err if they did not answer.
fn lookups_answer(
    tz: &std::sync::Arc<TestZone>,
    pid: u32,
    ids: &[String],
) -> Result<Vec<Option<(String, u32)>>, String> {
    let (tx, rx) = mpsc::channel();
    let (tz2, ids2) = (tz.clone(), ids.to_vec());
    std::thread::spawn(move || {
        let reader = tz2.reader(pid);
        let zone = tz2.zone();
        let out: Vec<_> = ids2
            .iter()
            .map(|id| {
                zone.lookup(reader, id.as_bytes(), |r| landing_of(r.landing_url()))
                    .map(|(t, _)| t)
            })
            .collect();
        let _ = tx.send(out);
    });
    rx.recv_timeout(HUNG)
        .map_err(|_| "the readers hung".to_owned())
}

/// The change the killed writer makes: replaces every stable campaign and adds enough new ones
/// that the index grows.
fn big_change() -> Vec<tracker_core::campaign::Campaign> {
    let mut list: Vec<_> = ids("s", 20).iter().map(|id| campaign(id, 2)).collect();
    list.extend(ids("n", 60).iter().map(|id| campaign(id, 1)));
    list
}

/// The store before `big_change`: 20 stable campaigns, and 10 deleted ones whose chunks
/// `big_change` frees first (so that the writer also stops while it reclaims).
fn before_big_change() -> std::sync::Arc<TestZone> {
    let tz = TestZone::new(1 << 20);
    let mut list: Vec<_> = ids("s", 20).iter().map(|id| campaign(id, 1)).collect();
    list.extend(ids("t", 10).iter().map(|id| campaign(id, 1)));
    tz.write(|w| w.upsert(&list)).unwrap();
    let gone = ids("t", 10);
    let gone: Vec<&[u8]> = gone.iter().map(|s| s.as_bytes()).collect();
    tz.write(|w| w.remove(&gone)).unwrap();
    tz
}

/// How many steps `big_change` has (a run that is not stopped).
fn steps_of_big_change() -> usize {
    let tz = before_big_change();
    let mut n = 0;
    let mut count = |_: Step| n += 1;
    tz.lock();
    tz.writer()
        .with_hook(&mut count)
        .upsert(&big_change())
        .unwrap();
    tz.unlock();
    n
}

#[test]
fn a_writer_killed_at_any_step_leaves_readers_answering_and_the_next_writer_working() {
    let steps = steps_of_big_change();
    assert!(steps > 20, "the change has {steps} steps");
    let stable = ids("s", 20);
    for kill_at in 0..steps {
        let tz = before_big_change();
        // The writer (the admin API in a worker) stops for good at step `kill_at`.
        let (tx, rx) = mpsc::channel();
        let tz2 = tz.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let mut stop = |_: Step| {
                if n == kill_at {
                    let _ = tx.send(());
                    loop {
                        std::thread::park();
                    }
                }
                n += 1;
            };
            tz2.lock();
            let _ = tz2.writer().with_hook(&mut stop).upsert(&big_change());
            unreachable!("the writer was to stop at step {kill_at}");
        });
        rx.recv_timeout(HUNG).expect("the writer reached its step");
        // Every worker still answers, with the old or the new version of each campaign.
        let got = lookups_answer(&tz, 100, &stable)
            .unwrap_or_else(|e| panic!("writer stopped at step {kill_at}: {e}"));
        for (id, g) in stable.iter().zip(&got) {
            let (gid, v) = g
                .clone()
                .unwrap_or_else(|| panic!("step {kill_at}: {id} not found"));
            assert!(
                gid == *id && (v == 1 || v == 2),
                "step {kill_at}: {id} answered {gid} v{v}"
            );
        }
        // nginx frees the dead writer's mutex; the next writer works.
        tz.force_unlock();
        // (Its reclamation frees what the dead writer retired or left to free: a chunk freed
        // twice panics in the test allocator.)
        tz.write(|w| {
            w.upsert(&[campaign("s3", 7), campaign("late", 1)]).unwrap();
            w.remove(&[b"s4"]).unwrap();
        });
        let got = lookups_answer(
            &tz,
            101,
            &["s3".into(), "late".into(), "s4".into(), "s5".into()],
        )
        .unwrap();
        assert_eq!(got[0], Some(("s3".into(), 7)), "step {kill_at}");
        assert_eq!(got[1], Some(("late".into(), 1)), "step {kill_at}");
        assert_eq!(got[2], None, "step {kill_at}");
        assert!(got[3].is_some(), "step {kill_at}");
    }
}

#[test]
fn a_reader_that_overlaps_an_index_replacement_finds_an_existing_campaign() {
    let tz = TestZone::new(1 << 20);
    let stable = ids("s", 10);
    // The first index lands in the last 3 KiB of the zone; the larger one elsewhere.
    let filler = tz.reserve_all_but(3072);
    tz.write(|w| w.upsert(&stable.iter().map(|id| campaign(id, 1)).collect::<Vec<_>>()))
        .unwrap();
    tz.unreserve(filler);
    let reader = tz.reader(7);
    let zone = tz.zone();
    let mut grown = false;
    // Between the reader's loads of the index's location, a writer grows the index.
    let found = zone.lookup_hooked(
        reader,
        b"s3",
        |r| landing_of(r.landing_url()),
        |step| {
            if step == ReadStep::IndexLocated && !grown {
                grown = true;
                let more: Vec<_> = ids("n", 300).iter().map(|id| campaign(id, 1)).collect();
                tz.write(|w| w.upsert(&more)).unwrap();
            }
        },
    );
    assert!(grown, "the hook ran");
    assert_eq!(found.map(|(t, _)| t), Some(("s3".to_owned(), 1)));
}

#[test]
fn an_account_held_by_a_stalled_reader_is_not_freed_nor_reused() {
    let tz = TestZone::new(1 << 20);
    tz.write(|w| w.upsert(&[campaign("x", 1), campaign("y", 1)]))
        .unwrap();
    let reader = tz.reader(8);
    let zone = tz.zone();
    // A worker looks "x" up and will charge it later.
    let (_, account) = zone.lookup(reader, b"x", |_| ()).expect("x");
    let account_off = tz.offset_of(&*account);
    // Meanwhile "x" is deleted and the worker stays stalled (or the clock steps forward) for
    // an hour, while other changes come and go.
    tz.write(|w| w.remove(&[b"x"])).unwrap();
    for round in 0..20 {
        tz.advance_clock(3600);
        let list: Vec<_> = ids(&format!("r{round}-"), 8)
            .iter()
            .map(|id| campaign(id, 1))
            .collect();
        tz.write(|w| w.upsert(&list)).unwrap();
    }
    assert!(
        !tz.was_freed(account_off),
        "the account of x was freed while a worker held it"
    );
    // The late charge lands in x's own (deleted) account, not in another campaign's.
    account.reject(Kind::Click);
    let others = tz.write(|w| {
        w.page(0, usize::MAX, |r, a| {
            (
                r.to_campaign().id,
                a.map(|a| a.rejected.load(Ordering::Relaxed)),
            )
        })
    });
    for (id, rejected) in others.0 {
        assert_eq!(rejected, Some(0), "the late charge landed in {id}");
    }
    // Once the worker lets go, the next changes free it.
    drop(account);
    for _ in 0..3 {
        tz.advance_clock(3600);
        tz.write(|w| w.upsert(&[campaign("z", 1)])).unwrap();
    }
    assert!(
        tz.was_freed(account_off),
        "the account of x is freed once no one holds it"
    );
}

#[test]
fn a_reader_that_died_pinned_holds_nothing_back() {
    let tz = TestZone::new(1 << 20);
    tz.write(|w| w.upsert(&[campaign("x", 1)])).unwrap();
    let zone = tz.zone();
    // Worker 31 dies in the middle of a request: its pin is never dropped.
    let (_, account) = zone.lookup(tz.reader(31), b"x", |_| ()).expect("x");
    let account_off = tz.offset_of(&*account);
    std::mem::forget(account);
    tz.write(|w| w.remove(&[b"x"])).unwrap();
    store_common::kill(31);
    // A new worker takes a slot (maybe the dead one's) and the next change frees x.
    let reader = tz.reader(32);
    assert!(zone.lookup(reader, b"x", |_| ()).is_none());
    tz.advance_clock(3600);
    tz.write(|w| w.upsert(&[campaign("y", 1)])).unwrap();
    assert!(
        tz.was_freed(account_off),
        "x's account is freed: its last reader is dead"
    );
}

#[test]
fn a_dead_process_is_told_from_a_live_one() {
    use tracker_core::store::pid_alive;
    assert!(pid_alive(std::process::id()));
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = child.id();
    assert!(pid_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!pid_alive(pid), "a killed and reaped child is dead");
    assert!(!pid_alive(0) && !pid_alive(u32::MAX));
}

#[test]
fn the_header_is_two_pages() {
    // Slab allocations above half a page take whole pages: 8 KiB, no page more.
    assert_eq!(tracker_core::store::Zone::header_size(), 8192);
}

/// A forked reader process: claims a slot, looks "x" up, sends the account's offset down
/// `fd`, and waits with its pin held until it is killed. (After fork only what does not
/// allocate or lock: the lookup allocates nothing, see store_hot_path.)
fn fork_reader_holding_x(tz: &TestZone, fd: i32) -> libc::pid_t {
    // SAFETY: the child only calls the store (no allocation, no lock) and async-signal-safe
    // libc functions, then waits to be killed.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let zone = tz.zone();
        // SAFETY: getpid, write, pause and _exit are async-signal-safe.
        unsafe {
            let me = libc::getpid() as u32;
            let found = zone
                .claim_reader(me, &tracker_core::store::pid_alive)
                .and_then(|r| zone.lookup(r, b"x", |_| ()));
            let Some((_, account)) = found else {
                libc::_exit(1)
            };
            // `account` (and its pin) lives until the process is killed.
            let off = tz.offset_of(&*account) as u64;
            libc::write(fd, (&off as *const u64).cast(), 8);
            loop {
                libc::pause();
            }
        }
    }
    pid
}

/// A forked child, killed when the test ends (even by a failed assertion).
struct Child(libc::pid_t);

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own child; killing an already reaped pid of ours fails harmlessly
        // (ESRCH) unless reused, and the test reaps it only just before it ends.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

#[test]
fn a_stopped_reader_process_keeps_its_account_and_a_killed_one_lets_go() {
    let tz = TestZone::new(1 << 20);
    tz.write(|w| w.upsert(&[campaign("x", 1), campaign("y", 1)]))
        .unwrap();
    let mut fds = [0i32; 2];
    // SAFETY: a new pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let child = Child(fork_reader_holding_x(&tz, fds[1]));
    let mut off = 0u64;
    // SAFETY: reads 8 bytes into `off` from our pipe.
    let n = unsafe { libc::read(fds[0], (&mut off as *mut u64).cast(), 8) };
    assert_eq!(n, 8, "the child found x");
    let off = off as usize;
    // The worker is stopped (SIGSTOP) between its lookup and its charge; x is deleted and
    // the zone changes again and again.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.0, libc::SIGSTOP) };
    tz.write(|w| w.remove(&[b"x"])).unwrap();
    for round in 0..5 {
        tz.advance_clock(3600);
        let list: Vec<_> = ids(&format!("p{round}-"), 8)
            .iter()
            .map(|id| campaign(id, 1))
            .collect();
        tz.write(|w| w.upsert(&list)).unwrap();
    }
    assert!(
        !tz.was_freed(off),
        "x's account was freed while a stopped worker held it"
    );
    // Killed: the next change frees it (its pid is gone).
    // SAFETY: our child; reaped so that its pid is gone.
    unsafe {
        libc::kill(child.0, libc::SIGKILL);
        libc::waitpid(child.0, std::ptr::null_mut(), 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    tz.write(|w| w.upsert(&[campaign("z", 1)])).unwrap();
    assert!(
        tz.was_freed(off),
        "x's account is freed once its reader's process is dead"
    );
}

//! Several processes on one ring file: child processes are this test binary re-executed with
//! `RING_CHILD=<role>` running the `ring_child` test.

mod ring_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::thread;
use std::time::{Duration, Instant};

use ring_common::{check, len_for, payload, sum};
use tracker_core::ring::{Read, Reader, RingFile, StallPoint, WriteError};

/// Not a test by itself: the body of child processes (does nothing without `RING_CHILD`).
#[test]
fn ring_child() {
    let Ok(role) = std::env::var("RING_CHILD") else {
        return;
    };
    let path = std::env::var("RING_PATH").unwrap();
    let id: u32 = std::env::var("RING_ID").unwrap().parse().unwrap();
    let n: u32 = std::env::var("RING_N").unwrap().parse().unwrap();
    let rf = RingFile::open_existing(Path::new(&path)).unwrap();
    let ring = rf.ring();
    let pid = std::process::id();
    // Never outlive a parent that stopped consuming (or died).
    let deadline = Instant::now() + Duration::from_secs(60);
    let write_all = |from: u32, to: u32| {
        for seq in from..to {
            let p = payload(id, seq, len_for(id, seq, 200));
            loop {
                match ring.write(id as usize % 5, &p, pid) {
                    Ok(_) => break,
                    Err(WriteError::Full) => {
                        assert!(Instant::now() < deadline, "ring full for too long");
                        thread::yield_now()
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
    };
    match role.as_str() {
        "writer" => write_all(0, n),
        "stall_reserved" | "stall_cas" => {
            write_all(0, n);
            let at = if role == "stall_cas" {
                StallPoint::AfterCas
            } else {
                StallPoint::AfterReserved
            };
            let p = payload(id, n, 100);
            let _ = ring.write_stalled(0, &p, pid, at, || {
                println!("RING-CHILD-STALLED");
                thread::sleep(Duration::from_secs(60));
                std::process::exit(3);
            });
            unreachable!();
        }
        r => panic!("unknown role {r}"),
    }
}

/// A child process, killed and reaped on drop (so a failing test leaves none behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn(role: &str, path: &Path, id: u32, n: u32) -> Proc {
    Proc(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "ring_child", "--nocapture", "--test-threads=1"])
            .env("RING_CHILD", role)
            .env("RING_PATH", path)
            .env("RING_ID", id.to_string())
            .env("RING_N", n.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn wait_for_stalled(child: &mut Proc) {
    let out = child.stdout.take().unwrap();
    for line in BufReader::new(out).lines() {
        if line.unwrap().ends_with("RING-CHILD-STALLED") {
            return;
        }
    }
    panic!("child exited before stalling: {:?}", child.wait());
}

fn wait_ok(mut child: Proc) {
    let st = child.wait().unwrap();
    assert!(st.success(), "child failed: {st:?}");
}

/// Reads until `expected` records arrived (or the deadline), checking per-producer order.
/// Returns the sequences per producer id and the skips.
struct Consumed {
    seqs: Vec<Vec<u32>>,
    skips: Vec<(u64, u64, Instant)>,
}

fn consume(
    reader: &mut Reader,
    ring: &tracker_core::ring::Ring,
    expected: usize,
    ids: usize,
) -> Consumed {
    let mut c = Consumed {
        seqs: vec![Vec::new(); ids],
        skips: Vec::new(),
    };
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while n < expected {
        match reader.next() {
            Read::Record(r) => {
                let (id, seq) = check(&r.payload);
                c.seqs[id as usize].push(seq);
                ring.commit(r.end);
                n += 1;
            }
            Read::Skipped { from, to } => c.skips.push((from, to, Instant::now())),
            Read::Empty => thread::sleep(Duration::from_micros(200)),
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "only {n} of {expected} records");
    }
    c
}

#[test]
fn ring_procs_many_writers_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let (rf, _) = RingFile::open_or_create(&path, 256 * 1024).unwrap();
    let ring = rf.ring();
    const N: u32 = 30_000;
    let children: Vec<Proc> = (0..3).map(|id| spawn("writer", &path, id, N)).collect();
    let mut reader = Reader::new(ring);
    let c = consume(&mut reader, ring, 3 * N as usize, 3);
    for ch in children {
        wait_ok(ch);
    }
    for id in 0..3 {
        assert!(
            c.seqs[id] == (0..N).collect::<Vec<_>>(),
            "producer {id}: {} records",
            c.seqs[id].len()
        );
    }
    assert!(c.skips.is_empty());
    assert_eq!(reader.next(), Read::Empty);
    let s = ring.stats();
    assert_eq!(sum(&s.written), 3 * N as u64);
    assert_eq!(s.abandoned, 0);
    assert_eq!(s.producer_pos, s.consumer_pos);
}

/// A producer process is SIGKILLed between "reserved" and "committed": its pid is gone, so the
/// record is skipped right away (well before stale_after), and everything after it is read.
#[test]
fn ring_procs_writer_killed_after_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let (rf, _) = RingFile::open_or_create(&path, 256 * 1024).unwrap();
    let ring = rf.ring();
    const PRE: u32 = 5;
    const N: u32 = 10_000;
    let mut staller = spawn("stall_reserved", &path, 3, PRE);
    wait_for_stalled(&mut staller);
    let stalled_at = ring.producer_pos() - (16 + 112);
    let writers: Vec<Proc> = (1..3).map(|id| spawn("writer", &path, id, N)).collect();
    // Other producers keep writing meanwhile (until the ring is full).
    thread::sleep(Duration::from_millis(100));
    staller.kill().unwrap();
    staller.wait().unwrap(); // reaped: kill(pid, 0) now fails with ESRCH
                             // A long stale_after: only the dead-pid check can skip the record quickly.
    let mut reader = Reader::new(ring).with_stale_after(Duration::from_secs(30));
    let t0 = Instant::now();
    let c = consume(&mut reader, ring, (PRE + 2 * N) as usize, 4);
    for w in writers {
        wait_ok(w);
    }
    assert_eq!(c.skips.len(), 1, "{:?}", c.skips);
    let (from, to, when) = c.skips[0];
    assert_eq!((from, to), (stalled_at, stalled_at + 16 + 112));
    assert!(
        when - t0 < Duration::from_secs(2),
        "skipped after {:?}",
        when - t0
    );
    assert_eq!(c.seqs[3], (0..PRE).collect::<Vec<_>>());
    for id in 1..3 {
        assert!(c.seqs[id] == (0..N).collect::<Vec<_>>(), "producer {id}");
    }
    let s = ring.stats();
    assert_eq!(s.abandoned, 1);
    assert_eq!(sum(&s.written), (PRE + 2 * N) as u64);
}

/// A producer process is SIGKILLed right after its CAS, before writing anything at its
/// record: the stale tag is recovered by the forward scan after stale_after.
#[test]
fn ring_procs_writer_killed_after_cas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let (rf, _) = RingFile::open_or_create(&path, 256 * 1024).unwrap();
    let ring = rf.ring();
    // Run a few laps first so the dead record's area holds stale records.
    {
        let mut reader = Reader::new(ring);
        let mut seq = 0;
        while ring.producer_pos() < 3 * ring.data_size() + 1000 {
            ring.write(0, &payload(0, seq, len_for(0, seq, 200)), 1)
                .unwrap();
            seq += 1;
            while let Read::Record(r) = reader.next() {
                ring.commit(r.end);
            }
        }
    }
    const PRE: u32 = 5;
    const N: u32 = 10_000;
    let mut staller = spawn("stall_cas", &path, 3, PRE);
    wait_for_stalled(&mut staller);
    let stalled_at = ring.producer_pos() - (16 + 112);
    let writers: Vec<Proc> = (1..3).map(|id| spawn("writer", &path, id, N)).collect();
    thread::sleep(Duration::from_millis(50));
    staller.kill().unwrap();
    staller.wait().unwrap();
    let stale_after = Duration::from_millis(100);
    let mut reader = Reader::new(ring).with_stale_after(stale_after);
    let t0 = Instant::now();
    let c = consume(&mut reader, ring, (PRE + 2 * N) as usize, 4);
    for w in writers {
        wait_ok(w);
    }
    assert_eq!(c.skips.len(), 1, "{:?}", c.skips);
    let (from, to, when) = c.skips[0];
    assert_eq!((from, to), (stalled_at, stalled_at + 16 + 112));
    assert!(when - t0 >= stale_after);
    assert!(
        when - t0 < Duration::from_secs(3),
        "skipped after {:?}",
        when - t0
    );
    assert_eq!(c.seqs[3], (0..PRE).collect::<Vec<_>>());
    for id in 1..3 {
        assert!(c.seqs[id] == (0..N).collect::<Vec<_>>(), "producer {id}");
    }
    assert_eq!(ring.stats().abandoned, 1);
}

/// Writers come and go (nginx restarts), the consumer restarts too: cursors and unread
/// records survive as long as the file exists.
#[test]
fn ring_procs_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    {
        let (_rf, _) = RingFile::open_or_create(&path, 128 * 1024).unwrap();
    }
    // First "nginx": writes and exits; no process has the ring mapped afterwards.
    wait_ok(spawn("writer", &path, 0, 500));
    let rf = RingFile::open_existing(&path).unwrap();
    let ring = rf.ring();
    let mut reader = Reader::new(ring);
    let c = consume(&mut reader, ring, 200, 2);
    assert_eq!(c.seqs[0], (0..200).collect::<Vec<_>>());
    let committed = ring.consumer_pos();
    drop(rf);

    // Second "nginx" while no shipper runs.
    wait_ok(spawn("writer", &path, 1, 500));
    let rf = RingFile::open_existing(&path).unwrap();
    let ring = rf.ring();
    assert_eq!(ring.consumer_pos(), committed);
    let mut reader = Reader::new(ring);
    let c = consume(&mut reader, ring, 800, 2);
    assert_eq!(c.seqs[0], (200..500).collect::<Vec<_>>());
    assert_eq!(c.seqs[1], (0..500).collect::<Vec<_>>());
    assert_eq!(reader.next(), Read::Empty);
    assert_eq!(sum(&ring.stats().written), 1000);
}

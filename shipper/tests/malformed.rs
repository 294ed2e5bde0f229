//! A running shipper against a damaged ring: malformed committed records between valid ones
//! (skipped, kept in the dead letters, counted, logged, and the drain goes on), and a ring
//! header whose producer cursor was torn far ahead (reported, read to the end of its lap,
//! resynchronized, and nginx's writes go through again).

mod common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn get_metrics(addr: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r
}

#[test]
fn malformed_records_are_skipped_counted_and_reported_and_the_shipper_keeps_running() {
    let f = Fixture::new(1 << 20);
    let addr = free_addr();
    let pid = std::process::id();
    // Valid, garbage (not MessagePack), valid, a map that is not an event, valid.
    let mut good = write_events(f.ring(), 5, &["impression"], 1000);
    let garbage: &[u8] = b"\xc1\xff\x00 torn write";
    let pos1 = f.ring().write(0, garbage, pid).unwrap();
    good.extend(write_events(f.ring(), 5, &["click"], 1000));
    let not_an_event: &[u8] = &[0x81, 0xa1, b'v', 0x02]; // {"v": 2}
    let pos2 = f.ring().write(1, not_an_event, pid).unwrap();
    good.extend(write_events(f.ring(), 5, &["signup"], 1000));

    let mut child = f.spawn(&["--metrics", &addr, "--flush-interval-ms", "50"]);
    assert!(
        wait_until(Duration::from_secs(15), || get_metrics(&addr).contains(
            "tracker_shipper_malformed_records_total{sink=\"file\"} 2"
        )),
        "{}",
        get_metrics(&addr)
    );
    let m = get_metrics(&addr);
    for line in [
        "tracker_shipper_dead_letters_total{sink=\"file\"} 2",
        "tracker_shipper_events_acked_total{sink=\"file\",type=\"impression\"} 5",
        "tracker_shipper_events_acked_total{sink=\"file\",type=\"click\"} 5",
        "tracker_shipper_ring_corruptions_total{sink=\"file\"} 0",
        "tracker_ring_lag_bytes{sink=\"file\"} 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    // Still running, and it goes on with what comes next (one more bad record among them).
    assert!(child.try_wait().unwrap().is_none(), "the shipper stopped");
    good.extend(write_events(f.ring(), 5, &["video"], 1000));
    let pos3 = f.ring().write(0, b"", pid).unwrap(); // empty payload
    good.extend(write_events(f.ring(), 5, &["impression"], 1000));
    assert!(
        wait_until(Duration::from_secs(15), || {
            let m = get_metrics(&addr);
            m.contains("tracker_shipper_malformed_records_total{sink=\"file\"} 3")
                && m.contains(
                    "tracker_shipper_events_acked_total{sink=\"file\",type=\"impression\"} 10",
                )
        }),
        "{}",
        get_metrics(&addr)
    );
    assert!(child.try_wait().unwrap().is_none(), "the shipper stopped");
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let stderr = stderr_of(&mut child);
    for pos in [pos1, pos2, pos3] {
        assert!(
            stderr.contains(&format!("undecodable record at ring position {pos}")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("malformed records"), "{stderr}");
    check_exactly_once(&f.out, &good);
    check_clean(&f.out);
    let dl = f.out.join("_dead_letter");
    assert_eq!(fs::read(dl.join(format!("{pos1}.bin"))).unwrap(), garbage);
    assert_eq!(
        fs::read(dl.join(format!("{pos2}.bin"))).unwrap(),
        not_an_event
    );
    assert_eq!(fs::read(dl.join(format!("{pos3}.bin"))).unwrap(), b"");
    let reasons = fs::read_to_string(dl.join("reasons.log")).unwrap();
    assert_eq!(reasons.lines().count(), 3, "{reasons}");
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
}

#[test]
fn a_producer_cursor_torn_far_ahead_is_reported_and_resynced() {
    let f = Fixture::new(1 << 20);
    let addr = free_addr();
    let mut good = write_events(f.ring(), 20, &["impression", "click"], 1000);
    // A stray write over the header: the producer cursor (offset 64) far ahead, 2^60.
    let bad: u64 = 1 << 60;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&f.ring_path)
        .unwrap();
    file.write_all_at(&bad.to_ne_bytes(), 64).unwrap();
    assert_eq!(f.ring().producer_pos(), bad);
    assert!(
        f.ring().write(0, b"x", 1).is_err(),
        "the ring looks full to nginx"
    );

    let mut child = f.spawn(&[
        "--metrics",
        &addr,
        "--flush-interval-ms",
        "50",
        "--stale-after-ms",
        "300",
    ]);
    // The 20 events are shipped, then the reader resynchronizes at the producer cursor and
    // commits it: nginx can write again.
    assert!(
        wait_until(Duration::from_secs(15), || f.ring().consumer_pos() == bad),
        "consumer at {}",
        f.ring().consumer_pos()
    );
    let m = get_metrics(&addr);
    assert!(
        m.contains("tracker_shipper_ring_corruptions_total{sink=\"file\"} 1"),
        "{m}"
    );
    let more = write_events(f.ring(), 10, &["signup"], 1000);
    good.extend(more);
    assert!(
        wait_until(Duration::from_secs(15), || get_metrics(&addr).contains(
            "tracker_shipper_events_acked_total{sink=\"file\",type=\"custom\"} 10"
        )),
        "{}",
        get_metrics(&addr)
    );
    assert!(child.try_wait().unwrap().is_none(), "the shipper stopped");
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let stderr = stderr_of(&mut child);
    assert!(
        stderr.contains(&format!(
            "the ring header is corrupt (torn or overwritten): producer cursor {bad}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("ring resynchronized"), "{stderr}");
    assert_eq!(
        stderr.matches("the ring header is corrupt").count(),
        1,
        "{stderr}"
    );
    check_exactly_once(&f.out, &good);
    check_clean(&f.out);
    assert_eq!(f.ring().stats().abandoned, 0);
}

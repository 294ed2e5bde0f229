//! The campaign store with its accounts in a state file (`tracker_state`): what a restart, a
//! binary upgrade (two nginx masters, each with its own zone, on one file) and a reload that
//! changes the setting do to the counters.

mod store_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use store_common::{campaign, TestZone};
use tracker_core::banker::Charge;
use tracker_core::campaign::{Campaign, Caps};
use tracker_core::event::Kind;
use tracker_core::state::StateFile;
use tracker_core::store::Zone;

const CPC: u64 = 10_000;
const DAY: u64 = 20_000;

fn capped(id: &str) -> Campaign {
    let mut c = campaign(id, 1);
    c.pricing.cpc_micros = CPC;
    c.caps = Caps {
        total_clicks: Some(100),
        ..Caps::default()
    };
    c
}

/// One nginx master's zone (fresh memory) over the state file at `path`, its campaigns made
/// `list` as zone init does (after the prune a lone start does).
struct Master {
    tz: Arc<TestZone>,
    state: StateFile,
}

impl Master {
    fn start(path: &std::path::Path, list: &[Campaign]) -> Master {
        let (state, _) = StateFile::open_or_create(path, 1 << 20).unwrap();
        if state.was_alone() {
            state
                .table()
                .prune(|id| list.iter().any(|c| c.id.as_bytes() == id), 1);
        }
        let m = Master {
            tz: TestZone::new(1 << 20),
            state,
        };
        m.zone().bind_accounts().unwrap();
        m.tz.lock();
        m.tz.writer_on(m.zone()).sync(list).unwrap();
        m.tz.unlock();
        m
    }

    fn zone(&self) -> Zone<'_> {
        self.tz
            .zone()
            .with_accounts(self.state.table(), self.state.file_id())
    }

    /// `n` clicks on `id`, as the handler charges them; returns how many were charged.
    fn click(&self, id: &str, n: usize, reader: u32) -> u64 {
        let r = self.tz.reader(reader);
        let mut charged = 0;
        for _ in 0..n {
            let (caps, acct) = self
                .zone()
                .lookup(r, id.as_bytes(), |rec| rec.caps())
                .unwrap();
            if let Charge::Charged(_) = acct.charge(&caps, Kind::Click, CPC, DAY) {
                charged += 1;
            }
        }
        charged
    }

    /// (clicks charged, spend) of `id`.
    fn counters(&self, id: &str) -> (u64, u64) {
        let r = self.tz.reader(99);
        let (_, a) = self.zone().lookup(r, id.as_bytes(), |_| ()).unwrap();
        (
            a.clicks_charged.load(Ordering::Relaxed),
            a.spend_total.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn the_cap_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state");
    let list = [capped("a"), capped("b")];
    let m = Master::start(&p, &list);
    assert_eq!(m.click("a", 80, 1), 80);
    assert_eq!(m.counters("a"), (80, 80 * CPC));
    drop(m);
    // nginx -s quit, start: the same counters, found by id.
    let m = Master::start(&p, &[capped("b"), capped("a")]);
    assert_eq!(m.counters("a"), (80, 80 * CPC));
    assert_eq!(m.click("a", 80, 2), 20);
    assert_eq!(m.counters("a"), (100, 100 * CPC));
    assert_eq!(m.counters("b"), (0, 0));
}

#[test]
fn a_campaign_deleted_while_down_is_dropped_and_starts_at_zero_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state");
    let m = Master::start(&p, &[capped("a"), capped("b")]);
    m.click("b", 30, 1);
    drop(m);
    let m = Master::start(&p, &[capped("a")]);
    assert!(m.state.table().find(b"b").is_none());
    drop(m);
    let m = Master::start(&p, &[capped("a"), capped("b")]);
    assert_eq!(m.counters("b"), (0, 0));
}

#[test]
fn a_campaign_deleted_at_run_time_and_created_again_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state");
    let m = Master::start(&p, &[capped("a")]);
    m.click("a", 30, 1);
    m.tz.lock();
    m.tz.writer_on(m.zone()).remove(&[b"a"]).unwrap();
    m.tz.writer_on(m.zone()).upsert(&[capped("a")]).unwrap();
    m.tz.unlock();
    assert_eq!(m.counters("a"), (0, 0));
}

#[test]
fn two_masters_of_a_binary_upgrade_share_the_counters_and_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state");
    let list = [capped("a")];
    let old = Master::start(&p, &list);
    assert_eq!(old.click("a", 10, 1), 10);
    // USR2: the new master maps the same file (not alone: no prune), its own zone.
    let new = Master::start(&p, &list);
    assert!(!new.state.was_alone());
    assert_eq!(new.counters("a"), (10, 10 * CPC));
    let (x, y) = std::thread::scope(|s| {
        let a = s.spawn(|| old.click("a", 100, 2));
        let b = s.spawn(|| new.click("a", 100, 3));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(x + y, 90, "old {x} + new {y}");
    assert_eq!(old.counters("a"), (100, 100 * CPC));
    assert_eq!(new.counters("a"), (100, 100 * CPC));
    // QUIT to the old master: the new one goes on alone with the same counters.
    drop(old);
    assert_eq!(new.click("a", 5, 4), 0);
}

#[test]
fn a_reload_that_changes_where_accounts_live_is_refused_while_campaigns_exist() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state");
    let m = Master::start(&p, &[capped("a")]);
    // The same zone without the state file (tracker_state removed at a reload).
    assert_eq!(m.tz.zone().bind_accounts(), Err(m.state.file_id()));
    // A zone of region accounts meets a state file: refused too.
    let tz = TestZone::new(1 << 20);
    tz.write(|w| w.upsert(&[capped("a")])).unwrap();
    let z = tz.zone().with_accounts(m.state.table(), m.state.file_id());
    assert_eq!(z.bind_accounts(), Err(0));
}

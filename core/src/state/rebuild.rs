//! Rebuilding accounts from the stored events (`tracker-shipper accounts rebuild`): after a
//! power loss (the file holds the counters of the last msync) or a corrupt state file (moved
//! aside, a new one started at zero), the exactly-once events the shipper stored carry every
//! charge (`cost_micros`, present exactly when the event was charged).
//!
//! What is restored, per campaign: the spend, the charged clicks and impressions, their daily
//! counters for the current day (in the campaign's time zone), the events seen by type
//! (impressions, clicks, conversions) and `over_budget`. Not restored (start at zero):
//! `rejected`, `video_completes`, `value_micros`, which decide no charge.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use super::table::{Table, TableFull};
use crate::banker::day_of;
use crate::event::Event;

const AMOUNT_BITS: u32 = 40;
const AMOUNT_MASK: u64 = (1 << AMOUNT_BITS) - 1;

/// One campaign's sums.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub spend: u64,
    pub clicks_charged: u64,
    pub impressions_charged: u64,
    pub spend_today: u64,
    pub clicks_today: u64,
    pub impressions_today: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
    pub over_budget: u64,
}

/// The sums of every campaign, as events are added.
#[derive(Debug)]
pub struct Sums {
    pub by_campaign: HashMap<String, Totals>,
    /// Each campaign's UTC offset in minutes; None: every campaign of the events, in UTC.
    offsets: Option<HashMap<String, i16>>,
    /// Unix seconds: the "today" of the daily counters.
    now: i64,
}

impl Sums {
    /// Sums for the campaigns of `offsets` (id to UTC offset in minutes; every one gets an
    /// account, at zero without events), or for every campaign of the events (None, UTC);
    /// daily counters for the day of `now` (Unix seconds).
    pub fn new(offsets: Option<HashMap<String, i16>>, now: i64) -> Sums {
        let by_campaign = offsets
            .iter()
            .flat_map(|o| o.keys())
            .map(|id| (id.clone(), Totals::default()))
            .collect();
        Sums {
            by_campaign,
            offsets,
            now,
        }
    }

    /// Adds one stored event (one of a campaign outside the offsets given is skipped).
    pub fn add(&mut self, e: &Event) {
        let offset = match &self.offsets {
            Some(o) => match o.get(&e.campaign) {
                Some(&m) => m,
                None => return,
            },
            None if e.campaign.is_empty() => return,
            None => 0,
        };
        let on_today = day_of((e.ts / 1_000_000) as i64, offset) == day_of(self.now, offset);
        let t = self.by_campaign.entry(e.campaign.clone()).or_default();
        let kind = e.event_type.as_str();
        match kind {
            "impression" => t.impressions += 1,
            "click" => t.clicks += 1,
            "conversion" => t.conversions += 1,
            _ => {}
        }
        if e.flags.iter().any(|f| f == "over_budget") {
            t.over_budget += 1;
        }
        let Some(cost) = e.cost_micros else {
            return;
        };
        t.spend += cost;
        t.spend_today += if on_today { cost } else { 0 };
        let today = u64::from(on_today);
        match kind {
            "click" => {
                t.clicks_charged += 1;
                t.clicks_today += today;
            }
            "impression" => {
                t.impressions_charged += 1;
                t.impressions_today += today;
            }
            _ => {}
        }
    }

    /// Writes every campaign's counters into `table` (found or inserted by id; the counters
    /// it restores are replaced, the others zeroed). The caller has the file alone (no nginx).
    /// Returns how many accounts were written.
    pub fn write(&self, table: &Table<'_>, pid: u32) -> Result<usize, TableFull> {
        for (id, t) in &self.by_campaign {
            let offset = self
                .offsets
                .as_ref()
                .and_then(|o| o.get(id).copied())
                .unwrap_or(0);
            let day = day_of(self.now, offset) << AMOUNT_BITS;
            let i = table.find_or_insert(id.as_bytes(), pid, &|_| false)?;
            let a = table.account(i).ok_or(TableFull)?;
            for (c, v) in [
                (&a.spend_total, t.spend),
                (&a.spend_day, day | t.spend_today.min(AMOUNT_MASK)),
                (&a.clicks_charged, t.clicks_charged),
                (&a.clicks_day, day | t.clicks_today.min(AMOUNT_MASK)),
                (&a.impressions_charged, t.impressions_charged),
                (
                    &a.impressions_day,
                    day | t.impressions_today.min(AMOUNT_MASK),
                ),
                (&a.impressions, t.impressions),
                (&a.clicks, t.clicks),
                (&a.conversions, t.conversions),
                (&a.over_budget, t.over_budget),
                (&a.video_completes, 0),
                (&a.rejected, 0),
                (&a.value_micros, 0),
            ] {
                c.store(v, Relaxed);
            }
        }
        Ok(self.by_campaign.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::banker::Charge;
    use crate::campaign::Caps;
    use crate::event::Kind;

    fn event(campaign: &str, kind: &str, ts_s: u64, cost: Option<u64>, flags: &[&str]) -> Event {
        let line = serde_json::json!({
            "v": 1, "id": "0123456789abcdef0123456789abcdef", "ts": ts_s * 1_000_000,
            "type": kind, "campaign": campaign, "dims": {}, "status": 302,
            "flags": flags, "cost_micros": cost,
        });
        let mut v = line;
        if cost.is_none() {
            v.as_object_mut().unwrap().remove("cost_micros");
        }
        serde_json::from_value(v).unwrap()
    }

    const DAY: i64 = 86_400;

    #[test]
    fn the_sums_of_the_events_become_the_counters_and_the_caps_hold_after() {
        let now = 100 * DAY + 3600;
        let mut s = Sums::new(None, now);
        // Yesterday: 5 charged clicks; today: 3 charged, 2 over budget; one impression.
        for _ in 0..5 {
            s.add(&event(
                "a",
                "click",
                (99 * DAY + 10) as u64,
                Some(10_000),
                &[],
            ));
        }
        for _ in 0..3 {
            s.add(&event(
                "a",
                "click",
                (100 * DAY + 10) as u64,
                Some(10_000),
                &[],
            ));
        }
        for _ in 0..2 {
            s.add(&event(
                "a",
                "click",
                (100 * DAY + 20) as u64,
                None,
                &["over_budget"],
            ));
        }
        s.add(&event("a", "impression", (100 * DAY) as u64, Some(2), &[]));
        s.add(&event("", "click", 0, None, &["unknown_campaign"]));
        let t = &s.by_campaign["a"];
        assert_eq!(
            (t.spend, t.spend_today, t.clicks_charged, t.clicks_today),
            (80_002, 30_002, 8, 3)
        );
        assert_eq!((t.clicks, t.over_budget, t.impressions_charged), (10, 2, 1));
        assert_eq!(s.by_campaign.len(), 1);

        let mut buf = vec![0u64; 16 * super::super::ENTRY_SIZE / 8];
        let lock = std::sync::atomic::AtomicU64::new(0);
        // SAFETY: 16 entries of 8-aligned memory that outlive the table.
        let table = unsafe { Table::new(&lock, buf.as_mut_ptr().cast(), 16) };
        assert_eq!(s.write(&table, 1), Ok(1));
        let a = table.account(table.find(b"a").unwrap()).unwrap();
        let counters = a.counters(100);
        assert_eq!(
            (
                counters.spend_micros,
                counters.spend_today_micros,
                counters.clicks_today
            ),
            (80_002, 30_002, 3)
        );
        // The caps hold on the rebuilt counters: 10 clicks in total, 2 left.
        let caps = Caps {
            total_clicks: Some(10),
            ..Caps::default()
        };
        let charged = (0..5)
            .filter(|_| {
                matches!(
                    a.charge(&caps, Kind::Click, 10_000, 100),
                    Charge::Charged(_)
                )
            })
            .count();
        assert_eq!(charged, 2);
    }

    #[test]
    fn with_a_campaigns_list_only_its_campaigns_in_their_time_zones() {
        // 23:30 UTC on day 100 is day 101 at +01:00.
        let now = 100 * DAY + 23 * 3600 + 1800;
        let offsets: HashMap<String, i16> = [("a".to_owned(), 60), ("quiet".to_owned(), 0)]
            .into_iter()
            .collect();
        let mut s = Sums::new(Some(offsets), now);
        s.add(&event(
            "a",
            "click",
            (100 * DAY + 23 * 3600 + 1700) as u64,
            Some(5),
            &[],
        ));
        s.add(&event(
            "a",
            "click",
            (100 * DAY + 22 * 3600) as u64,
            Some(5),
            &[],
        ));
        s.add(&event("other", "click", now as u64, Some(5), &[]));
        assert_eq!(s.by_campaign.len(), 2);
        assert_eq!(s.by_campaign["a"].spend_today, 5);
        assert_eq!(s.by_campaign["a"].spend, 10);
        assert_eq!(s.by_campaign["quiet"], Totals::default());
    }
}

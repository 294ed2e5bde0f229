//! The banker: per-campaign counters in shared memory, and the charge of a billable event
//! against the campaign's caps, as atomic steps that workers can race on without a lock.
//!
//! An [`Account`] is only atomics (valid for any bit pattern; all zeros is a new account), so
//! the module places it in nginx shared memory and every worker charges it directly.
//!
//! A charge reserves every cap that applies, one after the other, each with a compare-and-swap
//! that checks the cap and adds the amount in one step; if a later cap refuses, the earlier
//! reservations are given back. So the sum charged never exceeds a cap, whatever the number of
//! workers charging at once (two workers can never both spend the last cent). A refusal caused
//! by another worker's reservation that is then given back is possible at the very edge of a
//! cap: the banker may under-spend by one event there, never over-spend.
//!
//! Daily counters are packed with their day: `day << 40 | amount`. A charge on a later day
//! starts the amount again from zero (the day rolls over by itself, per campaign, in the
//! campaign's time zone). Amounts are limited to 2^40 - 1 per day (1.1 million currency units of
//! spend in micro-units, or 1.1 trillion clicks); beyond, the cap check refuses.
//!
//! The day of a counter never moves backwards. Workers read the clock before they charge, so
//! around midnight a charge computed with yesterday's day can arrive after another worker has
//! already charged today: it is reserved on the later day, the one the counter holds (its
//! event, time-stamped a few microseconds before midnight, counts against today's caps). The
//! day a charge was reserved on is in its [`Receipt`], and giving it back (a later cap refused,
//! or [`Account::refund`]) subtracts it from that day only: if the counter has moved to a later
//! day since, there is nothing to give back there, and other workers' charges of that day are
//! never touched.
//!
//! A charge is given back exactly with [`Account::refund`] when its event could not be stored
//! (the ring is full, the event is too large): spend that no stored event carries could not be
//! reconciled, and a retried postback would be charged twice. A worker killed between two
//! reservations of one charge (or between the charge and the write of its event) leaves what it
//! reserved charged without an event; nothing rolls it back (the counters hold no owner).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::campaign::{Caps, Pricing};
use crate::event::Kind;

const AMOUNT_BITS: u32 = 40;
const AMOUNT_MASK: u64 = (1 << AMOUNT_BITS) - 1;

/// A campaign's counters. `#[repr(C)]`, only atomics: lives in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Account {
    /// Micro-units charged since the campaign was created.
    pub spend_total: AtomicU64,
    /// `day << 40 | micro-units charged that day`.
    pub spend_day: AtomicU64,
    /// Clicks charged (within the caps), total and `day << 40 | count`.
    pub clicks_charged: AtomicU64,
    pub clicks_day: AtomicU64,
    /// Impressions charged, total and per day.
    pub impressions_charged: AtomicU64,
    pub impressions_day: AtomicU64,
    /// Events seen, by type (charged or not).
    pub impressions: AtomicU64,
    pub clicks: AtomicU64,
    pub conversions: AtomicU64,
    pub video_completes: AtomicU64,
    /// Events refused a charge because a cap was reached.
    pub over_budget: AtomicU64,
    /// Events for the campaign while it could not take them (paused, ended, outside its
    /// schedule, publisher not allowed).
    pub rejected: AtomicU64,
    /// Sum of conversion values, in micro-units.
    pub value_micros: AtomicU64,
}

/// A snapshot of an account, for the stats and the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
    pub video_completes: u64,
    pub spend_micros: u64,
    pub spend_today_micros: u64,
    pub clicks_today: u64,
    pub impressions_today: u64,
    pub over_budget: u64,
    pub rejected: u64,
    pub value_micros: u64,
}

/// What [`Account::charge`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Within every cap; the cost (possibly 0) is charged, as the receipt says.
    Charged(Receipt),
    /// A cap is reached: nothing charged.
    OverBudget,
}

impl Charge {
    /// The cost charged; None when over budget.
    pub fn cost(&self) -> Option<u64> {
        match self {
            Charge::Charged(r) => Some(r.cost),
            Charge::OverBudget => None,
        }
    }
}

/// What one charge reserved, so that [`Account::refund`] gives back exactly that: the cost,
/// the event type (which count caps it took) and the days its daily counters were charged on
/// (a late charge is reserved on the counter's later day, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    cost: u64,
    kind: Kind,
    spend_day: u64,
    count_day: u64,
}

impl Receipt {
    /// The micro-units charged.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The day the spend was charged on (the caller's, or a later one the counter had reached).
    pub fn spend_day(&self) -> u64 {
        self.spend_day
    }
}

/// What one request added to its campaign's account: the charge, the conversion value and the
/// completed video view. [`Account::take_back`] undoes it when the event is not stored. The
/// request stays counted as seen (`impressions`, `clicks`, `conversions`, `over_budget`,
/// `rejected`), as the ring counts the event it dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub charge: Option<Receipt>,
    pub value_micros: u64,
    pub video_completes: u64,
}

/// The day number (days since 1970-01-01 in the campaign's zone) of Unix time `unix_secs`.
pub fn day_of(unix_secs: i64, utc_offset_minutes: i16) -> u64 {
    (unix_secs + i64::from(utc_offset_minutes) * 60)
        .div_euclid(86_400)
        .max(0) as u64
}

/// What an event of `kind` costs: clicks `cpc`, impressions a thousandth of `cpm` (rounded
/// down), conversions `cpa` plus `revenue_share` of `value` (in currency units); others 0.
pub fn cost_of(p: &Pricing, kind: Kind, value: Option<f64>) -> u64 {
    match kind {
        Kind::Click => p.cpc_micros,
        Kind::Impression => p.cpm_micros / 1000,
        Kind::Conversion => {
            let share = match value {
                Some(v) if v.is_finite() && v > 0.0 => {
                    (v * f64::from(p.revenue_share_ppm)).min(1e15).round() as u64
                }
                _ => 0,
            };
            p.cpa_micros.saturating_add(share)
        }
        _ => 0,
    }
}

/// Adds `n` to a packed daily counter for `day`, if the day's amount stays within `cap`, and
/// returns the day it was added on. The day never moves backwards: if the counter already holds
/// a later day (another worker charged after midnight while this caller's clock read was from
/// before), `n` is reserved on that later day, against its amount.
fn reserve_daily(c: &AtomicU64, day: u64, n: u64, cap: u64) -> Option<u64> {
    let mut cur = c.load(Acquire);
    loop {
        let stored = cur >> AMOUNT_BITS;
        let day = day.max(stored);
        let amount = if stored == day { cur & AMOUNT_MASK } else { 0 };
        let next = amount
            .checked_add(n)
            .filter(|&v| v <= cap.min(AMOUNT_MASK))?;
        match c.compare_exchange_weak(cur, day << AMOUNT_BITS | next, AcqRel, Acquire) {
            Ok(_) => return Some(day),
            Err(now) => cur = now,
        }
    }
}

/// Gives back `n` that [`reserve_daily`] reserved on `day`. Once the counter holds a later day,
/// none of `n` is in it (days never move backwards): nothing to give back. While it holds
/// `day`, its amount includes `n` (amounts of a day only shrink by such give-backs), so the
/// subtraction removes exactly this reservation, never another worker's.
fn release_daily(c: &AtomicU64, day: u64, n: u64) {
    let mut cur = c.load(Acquire);
    while cur >> AMOUNT_BITS == day {
        let next = day << AMOUNT_BITS | (cur & AMOUNT_MASK).saturating_sub(n);
        match c.compare_exchange_weak(cur, next, AcqRel, Acquire) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// Adds `n` to a total, if it stays within `cap`.
fn reserve_total(c: &AtomicU64, n: u64, cap: u64) -> bool {
    let mut cur = c.load(Acquire);
    loop {
        let Some(next) = cur.checked_add(n).filter(|&v| v <= cap) else {
            return false;
        };
        match c.compare_exchange_weak(cur, next, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// The (total, daily) caps on the count of charged events of `kind`.
fn count_caps(caps: &Caps, kind: Kind) -> (Option<u64>, Option<u64>) {
    match kind {
        Kind::Click => (caps.total_clicks, caps.daily_clicks),
        Kind::Impression => (caps.total_impressions, caps.daily_impressions),
        _ => (None, None),
    }
}

/// The amount of a packed daily counter for `day` (0 if it holds another day).
fn daily_amount(c: &AtomicU64, day: u64) -> u64 {
    let v = c.load(Acquire);
    if v >> AMOUNT_BITS == day {
        v & AMOUNT_MASK
    } else {
        0
    }
}

impl Account {
    /// Charges `cost` micro-units for an event of `kind` on `day`, within `caps`: every cap
    /// that applies (spend; clicks for clicks; impressions for impressions; daily and total)
    /// is checked and reserved atomically, one after the other; a refusal gives back what the
    /// earlier ones reserved. Also counts the event (`impressions`, `clicks`, ...,
    /// `over_budget`). Conversion values are counted by [`Account::count_value`].
    pub fn charge(&self, caps: &Caps, kind: Kind, cost: u64, day: u64) -> Charge {
        self.count(kind);
        let unlimited = u64::MAX;
        let mut receipt = Receipt {
            cost,
            kind,
            spend_day: day,
            count_day: day,
        };
        if !reserve_total(
            &self.spend_total,
            cost,
            caps.total_spend_micros.unwrap_or(unlimited),
        ) {
            return self.refuse();
        }
        match reserve_daily(
            &self.spend_day,
            day,
            cost,
            caps.daily_spend_micros.unwrap_or(unlimited),
        ) {
            Some(d) => receipt.spend_day = d,
            None => {
                self.spend_total.fetch_sub(cost, AcqRel);
                return self.refuse();
            }
        }
        if let Some((total, daily)) = self.charged_counts(kind) {
            let (total_cap, daily_cap) = count_caps(caps, kind);
            if !reserve_total(total, 1, total_cap.unwrap_or(unlimited)) {
                self.give_back_spend(&receipt);
                return self.refuse();
            }
            // On the spend's day at least: one charge stays on one day where it can.
            match reserve_daily(daily, receipt.spend_day, 1, daily_cap.unwrap_or(unlimited)) {
                Some(d) => receipt.count_day = d,
                None => {
                    total.fetch_sub(1, AcqRel);
                    self.give_back_spend(&receipt);
                    return self.refuse();
                }
            }
        }
        Charge::Charged(receipt)
    }

    /// Gives back exactly what `receipt`'s charge reserved: the spend (total, and the day it
    /// was charged on, unless that day is over) and, for clicks and impressions, the charged
    /// count (likewise). For an event that could not be stored; see the module docs.
    pub fn refund(&self, receipt: &Receipt) {
        self.give_back_spend(receipt);
        if let Some((total, daily)) = self.charged_counts(receipt.kind) {
            total.fetch_sub(1, AcqRel);
            release_daily(daily, receipt.count_day, 1);
        }
    }

    /// Undoes what one request added (see [`Tally`]): its charge, its conversion value and
    /// its completed video view.
    pub fn take_back(&self, tally: &Tally) {
        if let Some(r) = &tally.charge {
            self.refund(r);
        }
        self.value_micros.fetch_sub(tally.value_micros, Relaxed);
        self.video_completes
            .fetch_sub(tally.video_completes, Relaxed);
    }

    fn give_back_spend(&self, r: &Receipt) {
        self.spend_total.fetch_sub(r.cost, AcqRel);
        release_daily(&self.spend_day, r.spend_day, r.cost);
    }

    fn refuse(&self) -> Charge {
        self.over_budget.fetch_add(1, Relaxed);
        Charge::OverBudget
    }

    /// The charged-count counters of `kind` (total, daily), if it has count caps.
    fn charged_counts(&self, kind: Kind) -> Option<(&AtomicU64, &AtomicU64)> {
        match kind {
            Kind::Click => Some((&self.clicks_charged, &self.clicks_day)),
            Kind::Impression => Some((&self.impressions_charged, &self.impressions_day)),
            _ => None,
        }
    }

    /// Counts an event of `kind` without charging it (the campaign could not take it).
    pub fn reject(&self, kind: Kind) {
        self.count(kind);
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Adds a conversion value to the sum; returns the micro-units added (for [`Tally`]).
    pub fn count_value(&self, value: f64) -> u64 {
        if !(value.is_finite() && value > 0.0) {
            return 0;
        }
        let micros = (value * 1e6).min(1e15).round() as u64;
        self.value_micros.fetch_add(micros, Relaxed);
        micros
    }

    /// Counts a completed video view.
    pub fn count_video_complete(&self) {
        self.video_completes.fetch_add(1, Relaxed);
    }

    fn count(&self, kind: Kind) {
        let c = match kind {
            Kind::Impression => &self.impressions,
            Kind::Click => &self.clicks,
            Kind::Conversion => &self.conversions,
            _ => return,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn counters(&self, day: u64) -> Counters {
        Counters {
            impressions: self.impressions.load(Relaxed),
            clicks: self.clicks.load(Relaxed),
            conversions: self.conversions.load(Relaxed),
            video_completes: self.video_completes.load(Relaxed),
            spend_micros: self.spend_total.load(Relaxed),
            spend_today_micros: daily_amount(&self.spend_day, day),
            clicks_today: daily_amount(&self.clicks_day, day),
            impressions_today: daily_amount(&self.impressions_day, day),
            over_budget: self.over_budget.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            value_micros: self.value_micros.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    fn caps() -> Caps {
        Caps::default()
    }

    #[test]
    fn days_and_costs() {
        assert_eq!(day_of(0, 0), 0);
        assert_eq!(day_of(86_399, 0), 0);
        assert_eq!(day_of(86_400, 0), 1);
        // 23:30 UTC is already tomorrow at +01:00, still today at -01:00.
        assert_eq!(day_of(86_400 - 1800, 60), 1);
        assert_eq!(day_of(86_400 + 1800, -60), 0);
        let p = Pricing {
            cpc_micros: 250_000,
            cpm_micros: 2_500_000,
            cpa_micros: 1_000_000,
            revenue_share_ppm: 100_000,
        };
        assert_eq!(cost_of(&p, Kind::Click, None), 250_000);
        assert_eq!(cost_of(&p, Kind::Impression, None), 2_500);
        assert_eq!(
            cost_of(&p, Kind::Conversion, Some(20.0)),
            1_000_000 + 2_000_000
        );
        assert_eq!(cost_of(&p, Kind::Conversion, Some(f64::NAN)), 1_000_000);
        assert_eq!(cost_of(&p, Kind::Video, None), 0);
    }

    #[test]
    fn caps_refuse_and_days_roll_over() {
        let a = Account::default();
        let c = Caps {
            daily_spend_micros: Some(1_000),
            daily_clicks: Some(3),
            ..caps()
        };
        assert_eq!(a.charge(&c, Kind::Click, 400, 10).cost(), Some(400));
        assert_eq!(a.charge(&c, Kind::Click, 400, 10).cost(), Some(400));
        // 1200 > 1000: refused, nothing charged.
        assert_eq!(a.charge(&c, Kind::Click, 400, 10), Charge::OverBudget);
        assert_eq!(a.charge(&c, Kind::Click, 200, 10).cost(), Some(200));
        // The click cap (3) now refuses even a free click.
        assert_eq!(a.charge(&c, Kind::Click, 0, 10), Charge::OverBudget);
        let k = a.counters(10);
        assert_eq!(
            (
                k.spend_micros,
                k.spend_today_micros,
                k.clicks_today,
                k.clicks,
                k.over_budget
            ),
            (1_000, 1_000, 3, 5, 2)
        );
        // The next day starts from zero; the total keeps counting.
        assert_eq!(a.charge(&c, Kind::Click, 400, 11).cost(), Some(400));
        let k = a.counters(11);
        assert_eq!(
            (k.spend_micros, k.spend_today_micros, k.clicks_today),
            (1_400, 400, 1)
        );
        // A refused later cap gives back the earlier reservations.
        let t = Caps {
            total_spend_micros: Some(10_000),
            total_clicks: Some(1),
            ..caps()
        };
        let b = Account::default();
        assert_eq!(b.charge(&t, Kind::Click, 100, 1).cost(), Some(100));
        assert_eq!(b.charge(&t, Kind::Click, 100, 1), Charge::OverBudget);
        assert_eq!(b.counters(1).spend_micros, 100);
        assert_eq!(b.counters(1).spend_today_micros, 100);
        // Impressions have their own caps; conversions only the spend caps.
        let i = Caps {
            daily_impressions: Some(1),
            ..caps()
        };
        assert_eq!(b.charge(&i, Kind::Impression, 5, 1).cost(), Some(5));
        assert_eq!(b.charge(&i, Kind::Impression, 5, 1), Charge::OverBudget);
        assert_eq!(b.charge(&i, Kind::Conversion, 5, 1).cost(), Some(5));
    }

    #[test]
    fn raising_a_cap_resumes() {
        let a = Account::default();
        let mut c = Caps {
            total_spend_micros: Some(100),
            ..caps()
        };
        assert_eq!(a.charge(&c, Kind::Click, 100, 1).cost(), Some(100));
        assert_eq!(a.charge(&c, Kind::Click, 1, 1), Charge::OverBudget);
        c.total_spend_micros = Some(150);
        assert_eq!(a.charge(&c, Kind::Click, 50, 1).cost(), Some(50));
    }

    /// Issue 21, finding 2: a charge computed with yesterday's day, arriving after today's
    /// first charge, must not start today's amount again from zero.
    #[test]
    fn a_late_charge_never_moves_the_day_back() {
        let a = Account::default();
        let c = Caps {
            daily_spend_micros: Some(1_000),
            ..caps()
        };
        // Day 11 has begun: a worker charged 900.
        assert!(matches!(
            a.charge(&c, Kind::Click, 900, 11),
            Charge::Charged(_)
        ));
        // A worker whose clock read was from day 10 charges 100 after it: counted on day 11.
        assert!(matches!(
            a.charge(&c, Kind::Click, 100, 10),
            Charge::Charged(_)
        ));
        assert_eq!(a.counters(11).spend_today_micros, 1_000);
        assert_eq!(a.counters(11).clicks_today, 2);
        // Day 11's cap is reached, whatever day the caller read.
        assert!(matches!(
            a.charge(&c, Kind::Click, 900, 11),
            Charge::OverBudget
        ));
        assert!(matches!(
            a.charge(&c, Kind::Click, 1, 10),
            Charge::OverBudget
        ));
        assert_eq!(a.counters(11).spend_today_micros, 1_000);
        assert_eq!(a.counters(11).spend_micros, 1_000);
    }

    /// Issue 21, finding 2, with threads: the new day has begun; late workers (still on the
    /// old day) and current ones race for the new day's caps, and the click cap refuses some
    /// charges after their spend was reserved (given back). The new day's counters hold exactly
    /// what was charged, within the caps.
    #[test]
    fn late_and_current_workers_racing_after_midnight_never_overspend() {
        for round in 0..20 {
            let a = Account::default();
            let c = Caps {
                daily_spend_micros: Some(10_000),
                daily_clicks: Some(70),
                ..caps()
            };
            assert!(matches!(
                a.charge(&c, Kind::Click, 100, 8),
                Charge::Charged(_)
            ));
            let charged: Vec<(u64, u64)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|t| {
                        let a = &a;
                        s.spawn(move || {
                            let (mut sum, mut n) = (0, 0);
                            for i in 0..300 {
                                let cost = [100, 50, 200][(i + t + round) % 3];
                                // Odd threads read the clock before midnight.
                                let day = if t % 2 == 1 { 7 } else { 8 };
                                if let Charge::Charged(_) = a.charge(&c, Kind::Click, cost, day) {
                                    sum += cost;
                                    n += 1;
                                }
                            }
                            (sum, n)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let total: u64 = charged.iter().map(|x| x.0).sum::<u64>() + 100;
            let clicks: u64 = charged.iter().map(|x| x.1).sum::<u64>() + 1;
            let k = a.counters(8);
            assert!(total <= 10_000, "overspent on the new day: {total}");
            assert_eq!(k.spend_today_micros, total, "round {round}");
            assert_eq!(k.spend_micros, total);
            assert_eq!(k.clicks_today, clicks);
            assert!(clicks <= 70);
        }
    }

    /// Issue 21, finding 3: a refund gives back exactly what the charge reserved, on the day it
    /// was reserved on; `take_back` also the value and the video completion it counted.
    #[test]
    fn refund_gives_back_exactly_the_charge() {
        let a = Account::default();
        let c = Caps {
            daily_spend_micros: Some(1_000),
            total_clicks: Some(2),
            daily_clicks: Some(2),
            ..caps()
        };
        let Charge::Charged(_) = a.charge(&c, Kind::Click, 400, 10) else {
            panic!("charged")
        };
        let Charge::Charged(r) = a.charge(&c, Kind::Click, 500, 10) else {
            panic!("charged")
        };
        assert_eq!((r.cost(), r.spend_day()), (500, 10));
        assert_eq!(a.charge(&c, Kind::Click, 1, 10), Charge::OverBudget);
        a.refund(&r);
        let k = a.counters(10);
        assert_eq!(
            (k.spend_micros, k.spend_today_micros, k.clicks_today),
            (400, 400, 1)
        );
        assert_eq!(a.clicks_charged.load(Relaxed), 1);
        // Still seen: 3 clicks, one over budget.
        assert_eq!((k.clicks, k.over_budget), (3, 1));
        // The retry is charged within the caps as if the first attempt had not been.
        assert_eq!(a.charge(&c, Kind::Click, 500, 10).cost(), Some(500));
        assert_eq!(a.charge(&c, Kind::Click, 1, 10), Charge::OverBudget);

        // A conversion: charge, value and nothing else; take_back undoes all three.
        let b = Account::default();
        let before = b.counters(3);
        let Charge::Charged(r) = b.charge(&caps(), Kind::Conversion, 3_000_000, 3) else {
            panic!("charged")
        };
        let tally = Tally {
            charge: Some(r),
            value_micros: b.count_value(20.0),
            video_completes: 0,
        };
        assert_eq!(tally.value_micros, 20_000_000);
        b.take_back(&tally);
        let k = b.counters(3);
        assert_eq!(
            k,
            Counters {
                conversions: 1,
                ..before
            }
        );
        // A video completion (not charged: cost 0, no count caps).
        let Charge::Charged(r) = b.charge(&caps(), Kind::Video, 0, 3) else {
            panic!("charged")
        };
        b.count_video_complete();
        b.take_back(&Tally {
            charge: Some(r),
            value_micros: 0,
            video_completes: 1,
        });
        assert_eq!(b.counters(3).video_completes, 0);

        // Impressions; the day rolls over before the refund: the new day is left alone, the
        // totals are given back.
        let i = Caps {
            daily_impressions: Some(5),
            daily_spend_micros: Some(100),
            ..caps()
        };
        let d = Account::default();
        let Charge::Charged(r) = d.charge(&i, Kind::Impression, 7, 10) else {
            panic!("charged")
        };
        assert_eq!(d.charge(&i, Kind::Impression, 9, 11).cost(), Some(9));
        d.refund(&r);
        let k = d.counters(11);
        assert_eq!(
            (k.spend_micros, k.spend_today_micros, k.impressions_today),
            (9, 9, 1)
        );
        assert_eq!(d.impressions_charged.load(Relaxed), 1);
    }

    /// Finding 2 with a moving day: threads read a shared clock that moves to the next day
    /// (twice) during the race, charge with what they read (often stale by then), and give
    /// back one charge in three (an event not stored). Every day's kept charges stay within its
    /// caps, and the last day's counters hold exactly its kept charges.
    #[test]
    fn a_moving_day_with_stale_reads_and_refunds_keeps_every_day_exact() {
        use std::sync::atomic::AtomicU64;
        for round in 0..10 {
            let (a, clock) = (Account::default(), AtomicU64::new(20));
            let c = Caps {
                daily_spend_micros: Some(5_000),
                daily_clicks: Some(40),
                ..caps()
            };
            let kept: Vec<Receipt> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|t| {
                        let (a, clock, c) = (&a, &clock, &c);
                        s.spawn(move || {
                            let mut kept = Vec::new();
                            for i in 0..400usize {
                                if t == 0 && (i == 130 || i == 260) {
                                    clock.fetch_add(1, Relaxed);
                                }
                                let day = clock.load(Relaxed);
                                for _ in 0..(i + t + round) % 7 {
                                    std::thread::yield_now();
                                }
                                let cost = [100, 50, 200][(i + t) % 3];
                                if let Charge::Charged(r) = a.charge(c, Kind::Click, cost, day) {
                                    if (i + t) % 3 == 0 {
                                        a.refund(&r);
                                    } else {
                                        kept.push(r);
                                    }
                                }
                            }
                            kept
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            for day in 20..=22 {
                let spent: u64 = kept
                    .iter()
                    .filter(|r| r.spend_day == day)
                    .map(|r| r.cost)
                    .sum();
                let clicks = kept.iter().filter(|r| r.count_day == day).count() as u64;
                assert!(
                    spent <= 5_000 && clicks <= 40,
                    "day {day}: {spent} micros, {clicks} clicks"
                );
            }
            let (spend_last, clicks_last) = (
                a.spend_day.load(Relaxed) >> AMOUNT_BITS,
                a.clicks_day.load(Relaxed) >> AMOUNT_BITS,
            );
            let spent: u64 = kept
                .iter()
                .filter(|r| r.spend_day == spend_last)
                .map(|r| r.cost)
                .sum();
            let clicks = kept.iter().filter(|r| r.count_day == clicks_last).count() as u64;
            assert_eq!(
                a.counters(spend_last).spend_today_micros,
                spent,
                "round {round}"
            );
            assert_eq!(
                a.counters(clicks_last).clicks_today,
                clicks,
                "round {round}"
            );
            assert_eq!(
                a.counters(0).spend_micros,
                kept.iter().map(|r| r.cost).sum::<u64>()
            );
            assert_eq!(a.clicks_charged.load(Relaxed), kept.len() as u64);
        }
    }

    /// Many threads race for the last units of every cap: the sums never exceed a cap, and
    /// every unit of the caps is spent (with costs that divide them exactly).
    #[test]
    fn racing_threads_never_overspend() {
        for round in 0..20 {
            let a = Arc::new(Account::default());
            let c = Caps {
                daily_spend_micros: Some(10_000),
                total_spend_micros: Some(12_000),
                daily_clicks: Some(90),
                ..caps()
            };
            let charged: Vec<u64> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|t| {
                        let a = a.clone();
                        s.spawn(move || {
                            let mut sum = 0;
                            for i in 0..400 {
                                let cost = [100, 50, 200][(i + t + round) % 3];
                                if let Some(x) = a.charge(&c, Kind::Click, cost, 7).cost() {
                                    sum += x;
                                }
                            }
                            sum
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let total: u64 = charged.iter().sum();
            let k = a.counters(7);
            assert!(total <= 10_000, "overspent: {total}");
            assert_eq!(k.spend_micros, total);
            assert_eq!(k.spend_today_micros, total);
            assert!(k.clicks_today <= 90);
            assert_eq!(k.clicks, 3200);
            assert_eq!(k.over_budget + k.clicks_today, 3200);
        }
    }
}

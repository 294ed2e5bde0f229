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
    /// Within every cap; the cost (possibly 0) is charged.
    Charged(u64),
    /// A cap is reached: nothing charged.
    OverBudget,
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

/// Adds `n` to a packed daily counter for `day`, if the day's amount stays within `cap`.
fn reserve_daily(c: &AtomicU64, day: u64, n: u64, cap: u64) -> bool {
    let mut cur = c.load(Acquire);
    loop {
        let amount = if cur >> AMOUNT_BITS == day {
            cur & AMOUNT_MASK
        } else {
            0
        };
        let Some(next) = amount.checked_add(n).filter(|&v| v <= cap.min(AMOUNT_MASK)) else {
            return false;
        };
        match c.compare_exchange_weak(cur, day << AMOUNT_BITS | next, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Gives back `n` reserved by [`reserve_daily`] for `day` (if the day has not rolled over).
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
    /// is checked and reserved atomically. Also counts the event (`impressions`, `clicks`,
    /// ..., `over_budget`). Conversion values are counted by [`Account::count_value`].
    pub fn charge(&self, caps: &Caps, kind: Kind, cost: u64, day: u64) -> Charge {
        self.count(kind);
        let unlimited = u64::MAX;
        // The caps that apply: (counter, is it daily, amount, cap); then what was reserved.
        let mut steps: [Option<(&AtomicU64, bool, u64, u64)>; 4] = [None; 4];
        let mut done: [Option<(&AtomicU64, bool, u64)>; 4] = [None; 4];
        steps[0] = Some((
            &self.spend_total,
            false,
            cost,
            caps.total_spend_micros.unwrap_or(unlimited),
        ));
        steps[1] = Some((
            &self.spend_day,
            true,
            cost,
            caps.daily_spend_micros.unwrap_or(unlimited),
        ));
        match kind {
            Kind::Click => {
                steps[2] = Some((
                    &self.clicks_charged,
                    false,
                    1,
                    caps.total_clicks.unwrap_or(unlimited),
                ));
                steps[3] = Some((
                    &self.clicks_day,
                    true,
                    1,
                    caps.daily_clicks.unwrap_or(unlimited),
                ));
            }
            Kind::Impression => {
                steps[2] = Some((
                    &self.impressions_charged,
                    false,
                    1,
                    caps.total_impressions.unwrap_or(unlimited),
                ));
                steps[3] = Some((
                    &self.impressions_day,
                    true,
                    1,
                    caps.daily_impressions.unwrap_or(unlimited),
                ));
            }
            _ => {}
        }
        for (n, (c, daily, amount, cap)) in steps.into_iter().flatten().enumerate() {
            let ok = if daily {
                reserve_daily(c, day, amount, cap)
            } else {
                reserve_total(c, amount, cap)
            };
            if !ok {
                for (c, daily, amount) in done[..n].iter().flatten() {
                    if *daily {
                        release_daily(c, day, *amount);
                    } else {
                        c.fetch_sub(*amount, AcqRel);
                    }
                }
                self.over_budget.fetch_add(1, Relaxed);
                return Charge::OverBudget;
            }
            done[n] = Some((c, daily, amount));
        }
        Charge::Charged(cost)
    }

    /// Counts an event of `kind` without charging it (the campaign could not take it).
    pub fn reject(&self, kind: Kind) {
        self.count(kind);
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Adds a conversion value to the sum.
    pub fn count_value(&self, value: f64) {
        if value.is_finite() && value > 0.0 {
            self.value_micros
                .fetch_add((value * 1e6).min(1e15).round() as u64, Relaxed);
        }
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
        assert_eq!(a.charge(&c, Kind::Click, 400, 10), Charge::Charged(400));
        assert_eq!(a.charge(&c, Kind::Click, 400, 10), Charge::Charged(400));
        // 1200 > 1000: refused, nothing charged.
        assert_eq!(a.charge(&c, Kind::Click, 400, 10), Charge::OverBudget);
        assert_eq!(a.charge(&c, Kind::Click, 200, 10), Charge::Charged(200));
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
        assert_eq!(a.charge(&c, Kind::Click, 400, 11), Charge::Charged(400));
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
        assert_eq!(b.charge(&t, Kind::Click, 100, 1), Charge::Charged(100));
        assert_eq!(b.charge(&t, Kind::Click, 100, 1), Charge::OverBudget);
        assert_eq!(b.counters(1).spend_micros, 100);
        assert_eq!(b.counters(1).spend_today_micros, 100);
        // Impressions have their own caps; conversions only the spend caps.
        let i = Caps {
            daily_impressions: Some(1),
            ..caps()
        };
        assert_eq!(b.charge(&i, Kind::Impression, 5, 1), Charge::Charged(5));
        assert_eq!(b.charge(&i, Kind::Impression, 5, 1), Charge::OverBudget);
        assert_eq!(b.charge(&i, Kind::Conversion, 5, 1), Charge::Charged(5));
    }

    #[test]
    fn raising_a_cap_resumes() {
        let a = Account::default();
        let mut c = Caps {
            total_spend_micros: Some(100),
            ..caps()
        };
        assert_eq!(a.charge(&c, Kind::Click, 100, 1), Charge::Charged(100));
        assert_eq!(a.charge(&c, Kind::Click, 1, 1), Charge::OverBudget);
        c.total_spend_micros = Some(150);
        assert_eq!(a.charge(&c, Kind::Click, 50, 1), Charge::Charged(50));
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
                                if let Charge::Charged(x) = a.charge(&c, Kind::Click, cost, 7) {
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

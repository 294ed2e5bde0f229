//! Hourly aggregates of events, the pure part of the aggregate sink ([`crate::sink::aggregate`]):
//! `f(events) -> rows`, one row per (UTC hour, campaign, publisher, event type) with the number
//! of events, the spend (`cost_micros`, integer micro-units), the summed conversion `value` and
//! the number of events carrying each of the flags in [`COUNTED_FLAGS`].
//!
//! Aggregates are sums, so they merge: the encoding workers aggregate their chunks in parallel
//! and the sink merges the chunks of a batch ([`Aggregates::merge`]); readers merge the rows of
//! every batch file of an hour by summing them.

use std::collections::BTreeMap;

use serde::Serialize;
use tracker_core::event::Event;

use crate::layout::{civil_from_days, US_PER_HOUR};

/// The dimension naming the publisher, unless configured otherwise.
pub const DEFAULT_PUBLISHER_DIMENSION: &str = "publisher";

/// The flags counted per row, each in a column of that name: the number of the row's events
/// whose `flags` hold it (`duplicate`: `tracker_duplicates flag`).
pub const COUNTED_FLAGS: [&str; 6] = [
    "over_budget",
    "outside_schedule",
    "unknown_campaign",
    "invalid_campaign",
    "inactive_campaign",
    "duplicate",
];

/// What a row is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// `ts / US_PER_HOUR` (UTC).
    pub hour_bucket: u64,
    pub campaign: String,
    /// The value of the publisher dimension, `""` when the event has none.
    pub publisher: String,
    pub event_type: String,
}

// `Key::of`, `Aggregates::add` and `aggregate` are the reference form over borrowed events
// (the tests' and tools'); the shipper itself uses `Aggregates::add_owned`.
#[cfg_attr(not(test), allow(dead_code))]
impl Key {
    /// The key of `ev`, with the publisher taken from the dimension `publisher_dim` (its first
    /// value, as in the event's JSON).
    pub fn of(ev: &Event, publisher_dim: &str) -> Key {
        Key {
            hour_bucket: ev.ts / US_PER_HOUR,
            campaign: ev.campaign.clone(),
            publisher: publisher_of(ev, publisher_dim).to_string(),
            event_type: ev.event_type.clone(),
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))]
fn publisher_of<'e>(ev: &'e Event, publisher_dim: &str) -> &'e str {
    ev.dims
        .iter()
        .find(|(k, _)| k == publisher_dim)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The sums of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    pub events: u64,
    /// Sum of the events' `cost_micros` (absent counts as 0).
    pub cost_micros: u64,
    /// Sum of the events' `value` (absent or not finite counts as 0).
    pub value: f64,
    /// Events carrying `COUNTED_FLAGS[i]`.
    pub flagged: [u64; COUNTED_FLAGS.len()],
}

impl Stats {
    /// Adds one event.
    pub fn add(&mut self, ev: &Event) {
        self.events += 1;
        self.cost_micros = self.cost_micros.saturating_add(ev.cost_micros.unwrap_or(0));
        if let Some(v) = ev.value.filter(|v| v.is_finite()) {
            self.value += v;
        }
        // Each flag once per event, even if an array repeated it.
        let mut seen = 0u32;
        for f in &ev.flags {
            if let Some(i) = COUNTED_FLAGS.iter().position(|c| c == f) {
                seen |= 1 << i;
            }
        }
        for (i, n) in self.flagged.iter_mut().enumerate() {
            *n += u64::from(seen >> i & 1);
        }
    }

    /// Adds the sums of `o`.
    pub fn merge(&mut self, o: &Stats) {
        self.events += o.events;
        self.cost_micros = self.cost_micros.saturating_add(o.cost_micros);
        self.value += o.value;
        for (a, b) in self.flagged.iter_mut().zip(o.flagged) {
            *a += b;
        }
    }
}

/// Rows, in key order (hour, campaign, publisher, type).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregates {
    pub rows: BTreeMap<Key, Stats>,
}

impl Aggregates {
    /// Adds one event to its row.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn add(&mut self, ev: &Event, publisher_dim: &str) {
        self.rows
            .entry(Key::of(ev, publisher_dim))
            .or_default()
            .add(ev);
    }

    /// [`Aggregates::add`] taking the event, to move its strings into the key instead of
    /// copying them (the encoding workers' way).
    pub fn add_owned(&mut self, mut ev: Event, publisher_dim: &str) {
        let publisher = ev
            .dims
            .iter_mut()
            .find(|(k, _)| k == publisher_dim)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default();
        let key = Key {
            hour_bucket: ev.ts / US_PER_HOUR,
            campaign: std::mem::take(&mut ev.campaign),
            publisher,
            event_type: std::mem::take(&mut ev.event_type),
        };
        self.rows.entry(key).or_default().add(&ev);
    }

    /// Adds every row of `other`.
    pub fn merge(&mut self, other: Aggregates) {
        if self.rows.is_empty() {
            self.rows = other.rows;
            return;
        }
        for (k, s) in other.rows {
            self.rows.entry(k).or_default().merge(&s);
        }
    }

    /// The rows grouped by hour bucket, each group in key order.
    pub fn by_hour(&self) -> Vec<(u64, Vec<(&Key, &Stats)>)> {
        let mut out: Vec<(u64, Vec<(&Key, &Stats)>)> = Vec::new();
        for (k, s) in &self.rows {
            match out.last_mut() {
                Some((h, v)) if *h == k.hour_bucket => v.push((k, s)),
                _ => out.push((k.hour_bucket, vec![(k, s)])),
            }
        }
        out
    }
}

/// The aggregates of `events` (the seed's `f(TrackedEvent[]) -> StatsAggregate`).
#[cfg_attr(not(test), allow(dead_code))]
pub fn aggregate<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    publisher_dim: &str,
) -> Aggregates {
    let mut a = Aggregates::default();
    for ev in events {
        a.add(ev, publisher_dim);
    }
    a
}

/// `YYYY-MM-DDTHH:00:00Z`: the start of an hour bucket.
pub fn hour_start(hour_bucket: u64) -> String {
    let (y, m, d) = civil_from_days((hour_bucket / 24) as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:00:00Z", hour_bucket % 24)
}

/// `date=YYYY-MM-DD/hour=HH`: the directory of an hour's files, relative to the aggregate
/// directory.
pub fn hour_dir(hour_bucket: u64) -> String {
    let (y, m, d) = civil_from_days((hour_bucket / 24) as i64);
    format!("date={y:04}-{m:02}-{d:02}/hour={:02}", hour_bucket % 24)
}

/// One row as written (the keys in this order).
#[derive(Serialize)]
struct Row<'a> {
    hour: &'a str,
    campaign: &'a str,
    publisher: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    events: u64,
    cost_micros: u64,
    value: f64,
    over_budget: u64,
    outside_schedule: u64,
    unknown_campaign: u64,
    invalid_campaign: u64,
    inactive_campaign: u64,
    duplicate: u64,
}

/// Appends the row of `k` as one line of JSON, with its `\n`.
pub fn write_row(k: &Key, s: &Stats, out: &mut Vec<u8>) {
    let hour = hour_start(k.hour_bucket);
    let [over_budget, outside_schedule, unknown_campaign, invalid_campaign, inactive_campaign, duplicate] =
        s.flagged;
    let row = Row {
        hour: &hour,
        campaign: &k.campaign,
        publisher: &k.publisher,
        event_type: &k.event_type,
        events: s.events,
        cost_micros: s.cost_micros,
        value: s.value,
        over_budget,
        outside_schedule,
        unknown_campaign,
        invalid_campaign,
        inactive_campaign,
        duplicate,
    };
    serde_json::to_writer(&mut *out, &row).expect("JSON of plain values");
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T22:00:00Z in µs.
    const T0: u64 = 1_709_244_000_000_000;

    /// An event with the fields rows depend on (read from its JSON form, the others absent).
    fn ev(ty: &str, ts: u64, campaign: &str, publisher: Option<&str>) -> Event {
        let mut dims = vec![["placement", "top"]];
        if let Some(p) = publisher {
            dims.push(["publisher", p]);
        }
        let json = serde_json::json!({
            "v": 1,
            "id": "00000000000000000000000000000000",
            "ts": ts,
            "type": ty,
            "campaign": campaign,
            "dims": dims,
            "status": 200,
        });
        serde_json::from_value(json).unwrap()
    }

    fn key(h: u64, c: &str, p: &str, t: &str) -> Key {
        Key {
            hour_bucket: T0 / US_PER_HOUR + h,
            campaign: c.into(),
            publisher: p.into(),
            event_type: t.into(),
        }
    }

    fn stats(events: u64, cost_micros: u64, value: f64, flagged: [u64; 6]) -> Stats {
        Stats {
            events,
            cost_micros,
            value,
            flagged,
        }
    }

    #[test]
    fn rows_by_hour_campaign_publisher_type() {
        let mut a = ev("click", T0 + 10, "c1", Some("news"));
        a.cost_micros = Some(250_000);
        let mut b = ev("click", T0 + 3_599_999_999, "c1", Some("news"));
        b.cost_micros = Some(100);
        b.flags = vec!["over_budget".into(), "inactive_campaign".into()];
        let c = ev("click", T0 + US_PER_HOUR, "c1", Some("news")); // next hour
        let d = ev("click", T0, "c1", None); // no publisher
        let e = ev("impression", T0, "c1", Some("news"));
        let mut f = ev("conversion", T0, "c2", Some("blog"));
        f.value = Some(12.5);
        f.cost_micros = Some(1_000_000);
        let mut g = ev("conversion", T0 + 1, "c2", Some("blog"));
        g.value = Some(0.25);
        g.flags = vec![
            "outside_schedule".into(),
            "duplicate".into(),
            "some_future_flag".into(),
        ];
        let mut h = ev("signup", T0, "", Some("blog"));
        h.flags = vec![
            "invalid_campaign".into(),
            "unknown_campaign".into(),
            "truncated".into(),
        ];
        h.value = Some(f64::NAN);
        let events = [a, b, c, d, e, f, g, h];
        let agg = aggregate(&events, "publisher");
        let want: BTreeMap<Key, Stats> = [
            (
                key(0, "", "blog", "signup"),
                stats(1, 0, 0.0, [0, 0, 1, 1, 0, 0]),
            ),
            (key(0, "c1", "", "click"), stats(1, 0, 0.0, [0; 6])),
            (
                key(0, "c1", "news", "click"),
                stats(2, 250_100, 0.0, [1, 0, 0, 0, 1, 0]),
            ),
            (key(0, "c1", "news", "impression"), stats(1, 0, 0.0, [0; 6])),
            (
                key(0, "c2", "blog", "conversion"),
                stats(2, 1_000_000, 12.75, [0, 1, 0, 0, 0, 1]),
            ),
            (key(1, "c1", "news", "click"), stats(1, 0, 0.0, [0; 6])),
        ]
        .into_iter()
        .collect();
        assert_eq!(agg.rows, want);
        // Another dimension names the publisher.
        let by_placement = aggregate(&events[..1], "placement");
        assert_eq!(by_placement.rows.keys().next().unwrap().publisher, "top");
        // The owned form gives the same rows.
        let mut owned = Aggregates::default();
        for e in events.iter().cloned() {
            owned.add_owned(e, "publisher");
        }
        assert_eq!(owned, agg);
        // Grouped by hour, in key order.
        let hours = agg.by_hour();
        assert_eq!(hours.len(), 2);
        assert_eq!(hours[0].1.len(), 5);
        assert_eq!(hours[1].0, T0 / US_PER_HOUR + 1);
    }

    /// Whether `n` divides `i` (without `is_multiple_of`, newer than Rust 1.81).
    fn every(i: u64, n: u64) -> bool {
        i.checked_rem(n) == Some(0)
    }

    #[test]
    fn merging_parts_equals_aggregating_all() {
        let events: Vec<Event> = (0..500u64)
            .map(|i| {
                let mut e = ev(
                    ["impression", "click", "conversion"][(i % 3) as usize],
                    T0 + i * 20_000_000_000,
                    ["a", "b"][(i % 2) as usize],
                    [Some("p"), None, Some("q")][(i % 3) as usize],
                );
                e.cost_micros = (i % 4 != 0).then_some(i * 7);
                e.value = every(i, 5).then_some(i as f64 * 0.5);
                if every(i, 7) {
                    e.flags = vec!["over_budget".into()];
                }
                e
            })
            .collect();
        let all = aggregate(&events, "publisher");
        let mut merged = Aggregates::default();
        for part in events.chunks(37) {
            merged.merge(aggregate(part, "publisher"));
        }
        assert_eq!(merged, all);
        let total: u64 = all.rows.values().map(|s| s.events).sum();
        assert_eq!(total, 500);
        let cost: u64 = all.rows.values().map(|s| s.cost_micros).sum();
        assert_eq!(
            cost,
            events.iter().filter_map(|e| e.cost_micros).sum::<u64>()
        );
    }

    #[test]
    fn row_json() {
        let k = key(0, "summer-sale", "news", "click");
        let s = Stats {
            events: 3,
            cost_micros: 750_000,
            value: 1.5,
            flagged: [1, 0, 0, 0, 0, 2],
        };
        let mut out = Vec::new();
        write_row(&k, &s, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"hour\":\"2024-02-29T22:00:00Z\",\"campaign\":\"summer-sale\",\"publisher\":\"news\",\"type\":\"click\",\
             \"events\":3,\"cost_micros\":750000,\"value\":1.5,\"over_budget\":1,\"outside_schedule\":0,\
             \"unknown_campaign\":0,\"invalid_campaign\":0,\"inactive_campaign\":0,\"duplicate\":2}\n"
        );
        assert_eq!(hour_start(T0 / US_PER_HOUR + 2), "2024-03-01T00:00:00Z");
        assert_eq!(hour_dir(T0 / US_PER_HOUR + 1), "date=2024-02-29/hour=23");
    }
}

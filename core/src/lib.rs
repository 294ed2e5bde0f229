//! tracker-core: the contract between the nginx module and the shipper.
//!
//! Everything here is plain Rust with no nginx dependency, so `cargo test` and fuzzers reach it:
//! - [`ring`]: the shared-memory ring (layout, producer, consumer), see `docs/ring.md`;
//! - [`filespace`]: reserving a mapped file's blocks up front (no SIGBUS on a full filesystem);
//! - [`event`]: the event schema and its MessagePack encoding, see `docs/event-schema.md`;
//! - [`campaign`]: the campaigns file and the shared-memory campaign table;
//! - [`banker`]: per-campaign counters and budget caps, charged atomically across workers;
//! - [`record`]: one campaign's bytes in shared memory and the index over them;
//! - [`store`]: the campaign store's concurrency (index publication, reader pins, retirement), see `docs/campaign-store.md`;
//! - [`landing`]: landing-URL macros (`{click_id}`, `{campaign}`, `{dim.NAME}`);
//! - [`limits`]: hard limits on request input (`tracker_limits`) and the reasons a request is refused;
//! - [`journal`]: the campaign journal (admin changes appended, replayed, compacted), see `docs/admin-api.md`;
//! - [`input`]: request input handling (percent-decoding, IP anonymization, campaign ids);
//! - [`id`]: 16-byte time-ordered event ids;
//! - [`privacy`]: the daily-keyed address hash (`tracker_ip hash`), DNT/GPC, visitor ids;
//! - [`sign`]: signed tracking URLs (HMAC-SHA256 over campaign, expiry and dimensions);
//! - [`bots`]: bot User-Agents and prefetch headers (`tracker_bots`);
//! - [`state`]: the state file (`tracker_state`): campaign accounts that survive restarts;
//! - [`dedup`]: the recently-seen set (duplicate detection) over shared-memory atomics;
//! - [`useragent`]: User-Agent families (browser, OS, device class, crawler flag) and their per-worker cache.
pub mod banker;
pub mod bots;
pub mod campaign;
pub mod dedup;
pub mod event;
pub mod filespace;
pub mod id;
pub mod input;
pub mod journal;
pub mod landing;
pub mod limits;
pub mod privacy;
pub mod record;
pub mod ring;
pub mod sign;
pub mod state;
pub mod store;
pub mod useragent;

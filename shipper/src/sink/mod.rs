//! Sinks: where the drained events go.
//!
//! The drain ([`crate::drain`]) reads the ring in order, from the sink's cursor, ahead of
//! it; workers decode and serialize the records ([`crate::encode`]); the writer thread
//! ([`crate::batch`]) hands the encoded chunks to the sink in ring order ([`Sink::add`]:
//! events grouped by partition, and the records that do not decode, as dead letters) and
//! every so often asks the sink to [`Sink::commit`] the batch up to a ring position.
//! **Only the sink moves its cursor**, inside `commit`, after whatever the
//! sink needs to consider the batch delivered: that ordering is what a sink's delivery
//! guarantee rests on.
//!
//! # Delivery guarantee (the contract every sink states)
//!
//! - A record is acknowledged in the ring (its space given back to nginx) only after `commit`
//!   has made the batch holding it durable at the destination. A shipper that stops or crashes
//!   at any instant therefore loses nothing: the next run starts at the consumer cursor and
//!   reads again whatever was not acknowledged. This makes every sink **at-least-once**.
//! - A sink may do better by making "delivered" and "acknowledged" one decision it can finish
//!   after a crash: the file sink does, and is **exactly-once into committed files** (see
//!   [`file`]).
//! - Or by finding out, after a crash, what the destination already has: the Kafka sink reads
//!   the events' positions back from the partitions' tails (see [`kafka`]).
//! - Events the ring itself did not keep are not the sink's to deliver: they are counted in the
//!   ring header (`dropped_full`, `dropped_too_large`, `abandoned`) and logged in the summary.
//! - Records that do not decode are never written as events: they go to the dead letters, are
//!   counted and logged, and the drain goes on.
//!
//! Every sink has its own named cursor in the ring ([`Cursor`]): it reads from its own
//! position and acknowledges only its own progress. The ring's consumer cursor (the space
//! nginx may reuse) follows the slowest sink, so a slow or unreachable sink never loses events
//! that another one already delivered, and never holds the others back except by filling the
//! ring.
//!
//! The sinks, each stating its guarantee: [`file`] (exactly-once into committed files),
//! [`kafka`] (exactly once: idempotent producer, and the partitions' tails read back before
//! sending again, [`kafka_tail`]), [`aggregate`] (hourly rows by campaign,
//! publisher and type; exactly-once into committed files, and optionally into a Kafka topic:
//! [`aggregate_topic`]).

pub mod aggregate;
pub mod aggregate_topic;
pub mod file;
pub mod kafka;
pub mod kafka_tail;

use std::io;

use tracker_core::ring::Cursor;

use crate::encode::EncodedChunk;

/// What a commit delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Committed {
    pub events: u64,
    pub dead_letters: u64,
    /// Files (or messages, requests...) the batch became.
    pub files: u64,
    /// Bytes written to the destination (compressed).
    pub bytes: u64,
}

/// A destination for events. See the module documentation for the delivery contract.
pub trait Sink: Send {
    /// A short description for the startup log ("file sink: /data/events, ndjson, gzip 1").
    fn describe(&self) -> String;

    /// Called once before the first read: finishes or undoes whatever a previous run left
    /// half-done (and may move its cursor past batches that run delivered).
    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()>;

    /// Adds an encoded chunk (the next records of the ring, in order: events grouped by
    /// partition, and dead letters) to the current batch.
    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()>;

    /// Whether the sink updates the `written`/`acked`/`dead_letters` metrics itself (as the
    /// destination reports them); otherwise the writer counts a batch's events when its commit
    /// succeeds.
    fn counts_acks_itself(&self) -> bool {
        false
    }

    /// Whether the batch should be committed now whatever its size (e.g. too many open files).
    fn wants_commit(&self) -> bool {
        false
    }

    /// Delivers the current batch, then acknowledges its cursor up to `end` (the end of the
    /// last record read, or skipped). On success the sink is ready for the next batch.
    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed>;

    /// After an error in `add` or `commit`: drops the current batch and brings
    /// the destination back to a state consistent with its cursor (the caller
    /// then reads again from the cursor).
    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()>;
}

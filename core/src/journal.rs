//! The campaign journal: an append-only file of changes beside the campaigns file, so that
//! an admin change costs one small durable write instead of a rewrite of every campaign.
//! See `docs/admin-api.md` ("Persistence") for the protocol; in short:
//!
//! - files: the campaigns file `F`, the journal `F.journal` (`J`), and during a compaction
//!   the rotated journal `F.journal.old` (`O`). The campaigns are `F`, then the records of
//!   `O`, then those of `J`, applied in order ([`load`]).
//! - a record is one change: an upsert of full campaigns (a `PUT`: one; a bulk `POST`: all
//!   of them, so one write) or a delete of ids. Applying a record sets the final state of
//!   the ids it names, whatever they were: replaying a record twice, or replaying records
//!   whose effect is already in `F`, changes nothing ([`replay`]). That is what makes a crash
//!   during a compaction harmless.
//! - framing ([`encode`]): `MAGIC`, payload length (u32 LE), CRC32 of the payload (u32 LE),
//!   the payload (JSON), the length again (u32 LE), `END`. A record is valid when all of it
//!   checks. A write cut short (a killed writer, a crash before the data reached the disk)
//!   leaves an invalid record with no valid record after it: a torn tail, dropped. An
//!   invalid record followed by a valid one is corruption: [`scan`] refuses it, naming the
//!   offset. The magic bytes start with 0xF7, which never occurs in UTF-8 (the JSON payload),
//!   so a valid record is never found inside another one's payload.
//! - appending ([`append`]): under the zone's writer lock (so the journal's order is the
//!   zone's order); the tail is checked first (a writer killed in the middle of its write
//!   leaves a torn record that must not end up in the middle) and cut back to the last valid
//!   record if needed. [`Appended::make_durable`] (fdatasync) runs after the lock is released.
//! - compaction ([`rotate`], [`write_campaigns`], [`finish_compaction`]): under the lock the
//!   journal is renamed to `O` (new appends create a new `J`); then, without the lock, the
//!   state is written as a new `F` (temporary file, fsync, rename, fsync of the directory)
//!   and `O` is removed. A crash anywhere leaves `F ⊕ O ⊕ J` equal to the state before it.
//! - compaction by size, in a worker ([`rotate_when_due`], [`prepare_compaction`],
//!   [`commit_compaction`]): the same from the files (`F ⊕ O`, not the zone), committed under
//!   the lock only if `O` is still the file it rotated (same inode and length); otherwise a
//!   zone init finished `O` meanwhile with a newer state, and the worker's file is dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::campaign::{self, Campaign};

/// The first bytes of every record (0xF7 never occurs in UTF-8).
pub const MAGIC: [u8; 4] = [0xF7, b'T', b'J', b'1'];
/// The last bytes of every record.
pub const END: [u8; 4] = [0xF7, b't', b'j', b'1'];
const HEAD: usize = 12;
const TAIL: usize = 8;
/// The bytes of a record besides its payload.
pub const OVERHEAD: usize = HEAD + TAIL;
/// The largest payload (the admin API's bulk body is at most 64 MB of JSON).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// One change, as the journal stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// These campaigns, whole (created or replaced).
    Upsert(Vec<Campaign>),
    /// These ids deleted (absent ones: nothing to do).
    Delete(Vec<String>),
}

/// Appends the record of `change` to `out`.
pub fn encode(change: &Change, out: &mut Vec<u8>) {
    match change {
        Change::Upsert(list) => encode_upsert(list, out),
        Change::Delete(ids) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            encode_delete(&ids, out)
        }
    }
}

/// Appends the record of an upsert of `list` (whole campaigns) to `out`.
pub fn encode_upsert(list: &[Campaign], out: &mut Vec<u8>) {
    let list: Vec<Value> = list.iter().map(Campaign::to_json).collect();
    frame(
        &serde_json::to_vec(&json!({ "upsert": list })).unwrap_or_default(),
        out,
    );
}

/// Appends the record of a delete of `ids` to `out`.
pub fn encode_delete(ids: &[&str], out: &mut Vec<u8>) {
    frame(
        &serde_json::to_vec(&json!({ "delete": ids })).unwrap_or_default(),
        out,
    );
}

/// Frames `payload` as a record.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&END);
}

/// The change a (valid) record's payload holds.
pub fn decode(payload: &[u8]) -> Result<Change, String> {
    let v: Map<String, Value> =
        serde_json::from_slice(payload).map_err(|e| format!("not a JSON object: {e}"))?;
    match (v.get("upsert"), v.get("delete")) {
        (Some(Value::Array(list)), None) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let Value::Object(obj) = c else {
                    return Err(format!("upsert {}: not a JSON object", i + 1));
                };
                out.push(campaign::parse_object(obj, &format!("upsert {}", i + 1))?);
            }
            Ok(Change::Upsert(out))
        }
        (None, Some(Value::Array(ids))) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Change::Delete)
            .ok_or_else(|| "delete: ids must be strings".to_owned()),
        _ => Err("neither {\"upsert\": [...]} nor {\"delete\": [...]}".to_owned()),
    }
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The record at the start of `b`: its payload's range in `b` and its whole length, or why
/// it is not a valid record.
fn record(b: &[u8]) -> Result<(Range<usize>, usize), &'static str> {
    if b.len() < HEAD {
        return Err("a record cut short");
    }
    if b[..4] != MAGIC {
        return Err("no record starts here");
    }
    let len = u32_at(b, 4);
    if len > MAX_PAYLOAD {
        return Err("a record longer than any the tracker writes");
    }
    let whole = HEAD + len + TAIL;
    if b.len() < whole {
        return Err("a record cut short");
    }
    let payload = HEAD..HEAD + len;
    if u32_at(b, HEAD + len) != len || b[HEAD + len + 4..whole] != END {
        return Err("a record whose end does not match its start");
    }
    if crc32fast::hash(&b[payload.clone()]) as usize != u32_at(b, 8) {
        return Err("a record whose checksum does not match");
    }
    Ok((payload, whole))
}

/// The valid records of a journal.
#[derive(Debug, PartialEq)]
pub struct Scan {
    /// Payload ranges, in order.
    pub records: Vec<Range<usize>>,
    /// Where the last valid record ends (the journal's length without a torn tail).
    pub valid_end: usize,
    /// Bytes after `valid_end` (a torn tail, dropped).
    pub torn: usize,
}

/// A journal that is damaged before its end.
#[derive(Debug, PartialEq)]
pub struct Corrupt {
    pub offset: usize,
    pub reason: &'static str,
}

/// Reads the records of a journal: a torn tail is dropped, an invalid record followed by a
/// valid one is refused.
pub fn scan(bytes: &[u8]) -> Result<Scan, Corrupt> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match record(&bytes[at..]) {
            Ok((p, whole)) => {
                records.push(p.start + at..p.end + at);
                at += whole;
            }
            Err(reason) => {
                if valid_record_after(bytes, at + 1) {
                    return Err(Corrupt { offset: at, reason });
                }
                break;
            }
        }
    }
    Ok(Scan {
        records,
        valid_end: at,
        torn: bytes.len() - at,
    })
}

/// Whether a valid record starts anywhere at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(OVERHEAD - 1))
        .filter(|&i| bytes[i] == MAGIC[0] && bytes[i..].starts_with(&MAGIC))
        .any(|i| record(&bytes[i..]).is_ok())
}

/// Applies changes to a list of campaigns, in order. Each change sets the final state of the
/// ids it names, so replaying a change whose effect is already there changes nothing.
pub fn replay(list: Vec<Campaign>, changes: impl IntoIterator<Item = Change>) -> Vec<Campaign> {
    let mut pos: HashMap<String, usize> = HashMap::with_capacity(list.len());
    let mut slots: Vec<Option<Campaign>> = Vec::with_capacity(list.len());
    for c in list {
        match pos.get(&c.id) {
            Some(&i) => slots[i] = Some(c),
            None => {
                pos.insert(c.id.clone(), slots.len());
                slots.push(Some(c));
            }
        }
    }
    for change in changes {
        match change {
            Change::Upsert(cs) => {
                for c in cs {
                    match pos.get(&c.id) {
                        Some(&i) => slots[i] = Some(c),
                        None => {
                            pos.insert(c.id.clone(), slots.len());
                            slots.push(Some(c));
                        }
                    }
                }
            }
            Change::Delete(ids) => {
                for id in ids {
                    if let Some(i) = pos.remove(&id) {
                        slots[i] = None;
                    }
                }
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// The journal of a campaigns file: `PATH.journal`.
pub fn journal_path(campaigns: &Path) -> PathBuf {
    with_suffix(campaigns, ".journal")
}

/// The journal being compacted: `PATH.journal.old`.
pub fn old_journal_path(campaigns: &Path) -> PathBuf {
    with_suffix(campaigns, ".journal.old")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A journal file read whole.
#[derive(Debug, Default)]
pub struct JournalFile {
    pub changes: Vec<Change>,
    /// Its length without a torn tail.
    pub valid_end: u64,
    /// The bytes of a torn tail (dropped).
    pub torn: u64,
}

/// Reads a journal file (absent: empty). Errors name the file and the offset.
pub fn read_journal(path: &Path) -> Result<JournalFile, String> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut bytes)
            .map_err(|e| format!("journal \"{}\": {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JournalFile::default()),
        Err(e) => return Err(format!("journal \"{}\": {e}", path.display())),
    };
    let s = scan(&bytes).map_err(|c| {
        format!(
            "journal \"{}\" is damaged at byte {}: {} (records follow it, so it is not a torn write; restore the file from a backup or remove the damaged record)",
            path.display(),
            c.offset,
            c.reason
        )
    })?;
    let mut changes = Vec::with_capacity(s.records.len());
    for r in &s.records {
        let at = r.start - HEAD;
        changes.push(decode(&bytes[r.clone()]).map_err(|e| {
            format!(
                "journal \"{}\": the record at byte {at}: {e}",
                path.display()
            )
        })?);
    }
    Ok(JournalFile {
        changes,
        valid_end: s.valid_end as u64,
        torn: s.torn as u64,
    })
}

/// The campaigns of a campaigns file and its journals.
#[derive(Debug)]
pub struct Loaded {
    pub campaigns: Vec<Campaign>,
    /// Records applied (old journal and journal).
    pub records: usize,
    /// Torn tails dropped: file and bytes.
    pub torn: Vec<(PathBuf, u64)>,
}

/// Reads the campaigns file, then applies the old journal and the journal.
pub fn load(campaigns: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(campaigns).map_err(|e| e.to_string())?;
    let list = campaign::parse_file(&text).map_err(|e| e.to_string())?;
    let mut out = Loaded {
        campaigns: list,
        records: 0,
        torn: Vec::new(),
    };
    for path in [old_journal_path(campaigns), journal_path(campaigns)] {
        out = apply_journal(out, &path)?;
    }
    Ok(out)
}

/// Applies the records of the journal at `path` (absent: none) to `to`.
pub fn apply_journal(mut to: Loaded, path: &Path) -> Result<Loaded, String> {
    let j = read_journal(path)?;
    to.records += j.changes.len();
    if j.torn > 0 {
        to.torn.push((path.to_owned(), j.torn));
    }
    to.campaigns = replay(to.campaigns, j.changes);
    Ok(to)
}

/// A record appended, not yet durable.
#[derive(Debug)]
pub struct Appended {
    file: File,
    dir: PathBuf,
    /// Whether the journal was empty (new): its directory entry must be made durable too.
    created: bool,
    /// The journal's length before a torn tail was cut (a writer was killed mid-write).
    pub repaired: Option<u64>,
}

impl Appended {
    /// Makes the record durable: fdatasync of the journal (and fsync of its directory when
    /// the record created it). Blocks: call it off the event loop.
    pub fn make_durable(&self) -> io::Result<()> {
        self.file.sync_data()?;
        if self.created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// fsync of a directory (makes a rename or a new file's entry durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the journal of `len` bytes ends with a whole record (cheap: reads its frame, not
/// its payload).
fn ends_whole(f: &File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    if len < OVERHEAD as u64 {
        return Ok(false);
    }
    let mut tail = [0u8; TAIL];
    f.read_exact_at(&mut tail, len - TAIL as u64)?;
    let plen = u32_at(&tail, 0) as u64;
    if tail[4..] != END || plen + OVERHEAD as u64 > len {
        return Ok(false);
    }
    let mut head = [0u8; 8];
    f.read_exact_at(&mut head, len - plen - OVERHEAD as u64)?;
    Ok(head[..4] == MAGIC && u32_at(&head, 4) as u64 == plen)
}

/// Appends `record` to the journal at `path` (created if absent): call it with the zone's
/// writer lock held. A torn tail is cut first; a damaged journal is an error (nothing written).
pub fn append(path: &Path, record: &[u8]) -> io::Result<Appended> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut len = file.metadata()?.len();
    let mut repaired = None;
    if !ends_whole(&file, len)? {
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let s = scan(&bytes).map_err(|c| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the journal \"{}\" is damaged at byte {}: {}",
                    path.display(),
                    c.offset,
                    c.reason
                ),
            )
        })?;
        file.set_len(s.valid_end as u64)?;
        repaired = Some(len);
        len = s.valid_end as u64;
    }
    if let Err(e) = file.write_all(record) {
        // Nothing half-written stays behind (the next writer would have to cut it).
        let _ = file.set_len(len);
        return Err(e);
    }
    Ok(Appended {
        file,
        dir: parent(path),
        created: len == 0,
        repaired,
    })
}

/// The text of a campaigns file: a JSON array, one campaign a line, sorted by id.
pub fn campaigns_text(list: &[Campaign]) -> Vec<u8> {
    let mut sorted: Vec<&Campaign> = list.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut text = b"[\n".to_vec();
    for (i, c) in sorted.iter().enumerate() {
        if i > 0 {
            text.extend_from_slice(b",\n");
        }
        text.extend_from_slice(b"  ");
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, &c.to_json());
    }
    text.extend_from_slice(b"\n]\n");
    text
}

/// Replaces the campaigns file atomically: a temporary file `.NAME.tmp.PID` in the same
/// directory, fsync, rename, fsync of the directory.
pub fn write_campaigns(path: &Path, list: &[Campaign]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let r = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&campaigns_text(list))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| sync_dir(&parent(path)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Compaction, step 1, under the zone's writer lock: the journal becomes the old journal
/// (appends made after this go to a new journal). Returns false when there was no journal.
/// The old journal must not exist (see [`finish_compaction`]).
pub fn rotate(campaigns: &Path) -> io::Result<bool> {
    let (j, o) = (journal_path(campaigns), old_journal_path(campaigns));
    match std::fs::rename(&j, &o) {
        Ok(()) => {
            sync_dir(&parent(campaigns))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Compaction, step 2: `state` is the campaigns file with the old journal applied (and
/// possibly later records: harmless, they stay in the journal and replay idempotently).
/// Writes it as the campaigns file, then removes the old journal. Returns false when the
/// old journal has grown past `old_len` meanwhile (a writer that had it open before the
/// rotation, with another zone: see the docs): it is kept, to be replayed at the next start.
pub fn finish_compaction(campaigns: &Path, state: &[Campaign], old_len: u64) -> io::Result<bool> {
    write_campaigns(campaigns, state)?;
    let o = old_journal_path(campaigns);
    match std::fs::metadata(&o) {
        Ok(m) if m.len() > old_len => return Ok(false),
        Ok(_) => std::fs::remove_file(&o)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    }
    sync_dir(&parent(campaigns))?;
    Ok(true)
}

/// Whether the journal should be compacted: past `max_bytes` (0: never by size).
pub fn needs_compaction(journal_len: u64, max_bytes: u64) -> bool {
    max_bytes > 0 && journal_len >= max_bytes
}

/// The old journal as a rotation left it: a compaction commits only if it is still this file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rotated {
    ino: u64,
    len: u64,
}

fn rotated_now(campaigns: &Path) -> io::Result<Option<Rotated>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(old_journal_path(campaigns)) {
        Ok(m) => Ok(Some(Rotated {
            ino: m.ino(),
            len: m.len(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Compaction in the background of a worker, step 1, under the zone's writer lock: when no
/// compaction is under way (no old journal) and the journal has reached `max_bytes`, the
/// journal becomes the old journal. None: nothing to do.
pub fn rotate_when_due(campaigns: &Path, max_bytes: u64) -> io::Result<Option<Rotated>> {
    if old_journal_path(campaigns).exists() {
        return Ok(None);
    }
    let len = std::fs::metadata(journal_path(campaigns)).map_or(0, |m| m.len());
    if !needs_compaction(len, max_bytes) || !rotate(campaigns)? {
        return Ok(None);
    }
    rotated_now(campaigns)
}

/// Step 2, without the lock: the campaigns file with the old journal applied, written to a
/// temporary file beside it and fsynced. Returns its path. (The journal's later records are
/// not needed: they stay in the journal.)
pub fn prepare_compaction(campaigns: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(campaigns).map_err(|e| e.to_string())?;
    let list = campaign::parse_file(&text).map_err(|e| e.to_string())?;
    drop(text);
    let l = apply_journal(
        Loaded {
            campaigns: list,
            records: 0,
            torn: Vec::new(),
        },
        &old_journal_path(campaigns),
    )?;
    let name = campaigns
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = campaigns.with_file_name(format!(".{name}.compact.{}", std::process::id()));
    let r = File::create(&tmp).and_then(|mut f| {
        f.write_all(&campaigns_text(&l.campaigns))?;
        f.sync_all()
    });
    match r {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("{}: {e}", tmp.display()))
        }
    }
}

/// Step 3, under the lock: if the old journal is still the one of step 1 (a zone init in the
/// master may have finished it meanwhile, with a newer state), the temporary file replaces the
/// campaigns file and the old journal is removed; else the temporary file is dropped. Returns
/// whether it committed.
pub fn commit_compaction(campaigns: &Path, tmp: &Path, rotated: Rotated) -> io::Result<bool> {
    if rotated_now(campaigns)? != Some(rotated) {
        let _ = std::fs::remove_file(tmp);
        return Ok(false);
    }
    let dir = parent(campaigns);
    std::fs::rename(tmp, campaigns)?;
    sync_dir(&dir)?;
    std::fs::remove_file(old_journal_path(campaigns))?;
    sync_dir(&dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests;

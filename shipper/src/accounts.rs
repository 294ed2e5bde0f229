//! `tracker-shipper accounts rebuild`: writes nginx's state file (`tracker_state`) from the
//! events the file sink stored, with `tracker_core::state::rebuild` (what is restored, and
//! how, is there). This file: reading the output directories and the campaigns file, and
//! refusing while another process (nginx) has the state file open.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use tracker_core::event::Event;
use tracker_core::state::rebuild::Sums;
use tracker_core::state::StateFile;

use crate::config::RebuildArgs;

/// The committed event files under `dir` (`*.ndjson.gz`, not the `.*.tmp` files of a batch in
/// progress), sorted.
fn event_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", d.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                todo.push(path);
            } else if name.ends_with(".ndjson.gz") && !name.starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn add_file(sums: &mut Sums, path: &Path) -> Result<u64, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    let mut n = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line)
            .map_err(|e| format!("{} line {}: not an event: {e}", path.display(), i + 1))?;
        sums.add(&e);
        n += 1;
    }
    Ok(n)
}

fn offsets(path: &Path) -> Result<HashMap<String, i16>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let list = tracker_core::campaign::parse_file(&text)
        .map_err(|e| format!("{} line {}: {}", path.display(), e.line, e.message))?;
    Ok(list
        .into_iter()
        .map(|c| (c.id, c.utc_offset_minutes))
        .collect())
}

/// Runs the command; a one-line summary on success.
pub fn rebuild(a: &RebuildArgs) -> Result<String, String> {
    let offsets = a.campaigns.as_deref().map(offsets).transpose()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut sums = Sums::new(offsets, now);
    let mut events = 0;
    for dir in &a.events {
        for f in event_files(dir)? {
            events += add_file(&mut sums, &f)?;
        }
    }
    let (state, _) = StateFile::open_or_create(&a.state, a.size)
        .map_err(|e| format!("{}: {e}", a.state.display()))?;
    if !state.was_alone() {
        return Err(format!(
            "{} is open in another process (nginx): stop nginx, then run this again",
            a.state.display()
        ));
    }
    let n = sums
        .write(&state.table(), std::process::id())
        .map_err(|_| format!("{} is full: give it a larger size", a.state.display()))?;
    state
        .sync()
        .map_err(|e| format!("msync of {}: {e}", a.state.display()))?;
    Ok(format!(
        "{n} accounts written to {} from {events} events",
        a.state.display()
    ))
}

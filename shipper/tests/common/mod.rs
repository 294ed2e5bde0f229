//! Helpers of the shipper tests: a ring in a temporary directory, events written into it, the
//! real binary, and the output read back.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tracker_core::event::{encode, EventRef, Kind};
use tracker_core::ring::{Ring, RingFile};

pub const BIN: &str = env!("CARGO_BIN_EXE_tracker-shipper");

/// 2024-02-29T22:00:00Z in µs: events spread from here cross hours and midnight.
pub const T0: u64 = 1_709_244_000_000_000;
pub const HOUR_US: u64 = 3_600_000_000;

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub ring_path: PathBuf,
    pub out: PathBuf,
    pub rf: RingFile,
}

impl Fixture {
    pub fn new(ring_size: u64) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let ring_path = tmp.path().join("events.ring");
        let (rf, _) = RingFile::open_or_create(&ring_path, ring_size).unwrap();
        let out = tmp.path().join("out");
        Fixture {
            tmp,
            ring_path,
            out,
            rf,
        }
    }

    pub fn ring(&self) -> &Ring {
        self.rf.ring()
    }

    /// The shipper with --ring, --sink file, --dir and `args`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--ring")
            .arg(&self.ring_path)
            .arg("--sink")
            .arg("file")
            .arg("--dir")
            .arg(&self.out);
        c.args(args);
        c.env_remove(CRASH_ENV);
        c
    }

    /// Runs `--once` with `args` and checks that it succeeded.
    pub fn once(&self, args: &[&str]) -> Output {
        let out = self.cmd(&["--once"]).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "shipper --once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

pub const CRASH_ENV: &str = "TRACKER_SHIPPER_CRASH_AT";

/// What the tests know of an event they wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub id_hex: String,
    pub event_type: String,
    pub ts: u64,
    pub payload: Vec<u8>,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A unique id: time-ordered enough for the tests (a counter in the top bytes, then random).
pub fn new_id() -> [u8; 16] {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    let r = std::process::id() as u64
        ^ (Instant::now().elapsed().as_nanos() as u64)
        ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n + 1);
    id[8..].copy_from_slice(&r.to_be_bytes());
    id
}

pub fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes one event.
pub fn event(event_type: &str, ts: u64, seq: u64) -> Written {
    event_for(event_type, ts, seq, "camp-1", None)
}

/// Encodes one event of `campaign`, with a click id.
pub fn event_for(
    event_type: &str,
    ts: u64,
    seq: u64,
    campaign: &str,
    click_id: Option<&str>,
) -> Written {
    let id = new_id();
    let seq_s = seq.to_string();
    let dims: [(&[u8], &[u8]); 2] = [(b"t", b"shipper-test"), (b"seq", seq_s.as_bytes())];
    let ev = EventRef {
        id,
        ts_us: ts,
        event_type: event_type.as_bytes(),
        campaign: campaign.as_bytes(),
        click_id: click_id.map(str::as_bytes),
        dims: &dims,
        ip: Some(b"192.0.2.0"),
        user_agent: Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
        referer: Some(b"https://example.com/page?x=1"),
        host: Some(b"track.example.com"),
        status: 200,
        flags: 0,
        value: None,
        video_event: None,
        watch_time: None,
        cost_micros: None,
        uid: None,
        browser: Some("chrome"),
        os: Some("linux"),
        device: Some("desktop"),
    };
    let mut payload = Vec::new();
    encode(&ev, &mut payload);
    Written {
        id_hex: hex(&id),
        event_type: event_type.to_string(),
        ts,
        payload,
    }
}

/// Writes `n` events of `types` (round robin), ts from T0 by `step_us`. Panics if the ring is full.
pub fn write_events(ring: &Ring, n: usize, types: &[&str], step_us: u64) -> Vec<Written> {
    (0..n)
        .map(|i| {
            let t = types[i % types.len()];
            let w = event(t, T0 + i as u64 * step_us, i as u64);
            ring.write(Kind::of_type(t).index(), &w.payload, std::process::id())
                .expect("ring write");
            w
        })
        .collect()
}

pub fn sanitize(t: &str) -> String {
    if t.is_empty() {
        return "_".into();
    }
    t.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// `type=T/date=YYYY-MM-DD/hour=HH` computed independently of the shipper.
pub fn expected_partition(event_type: &str, ts: u64) -> String {
    let secs = (ts / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3600;
    // civil_from_days, written again here
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "type={}/date={y:04}-{m:02}-{d:02}/hour={hour:02}",
        sanitize(event_type)
    )
}

/// Every file under `dir` (relative paths), recursively.
pub fn all_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// Committed data files (not hidden) with `ext` under the partitions.
pub fn committed_files(dir: &Path, ext: &str) -> Vec<String> {
    all_files(dir)
        .into_iter()
        .filter(|f| {
            f.starts_with("type=")
                && f.ends_with(ext)
                && !f.rsplit('/').next().unwrap().starts_with('.')
        })
        .collect()
}

pub fn gunzip(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    MultiGzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// One NDJSON line as read back.
#[derive(Debug)]
pub struct Line {
    pub file: String,
    pub line_no: usize,
    pub json: serde_json::Value,
}

impl Line {
    pub fn id(&self) -> &str {
        self.json["id"].as_str().unwrap()
    }
}

/// Every line of every committed `.ndjson.gz` file, in file order.
pub fn read_ndjson(dir: &Path) -> Vec<Line> {
    let mut out = Vec::new();
    for f in committed_files(dir, ".ndjson.gz") {
        let data = gunzip(&dir.join(&f));
        for (i, l) in BufReader::new(&data[..]).lines().enumerate() {
            let l = l.unwrap();
            let json: serde_json::Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("{f} line {}: not JSON ({e}): {l}", i + 1));
            out.push(Line {
                file: f.clone(),
                line_no: i + 1,
                json,
            });
        }
    }
    out
}

/// Checks that the committed files hold exactly the events `expected`, each once, in the right
/// partition, and that each file is named after its first event.
pub fn check_exactly_once(dir: &Path, expected: &[Written]) {
    let lines = read_ndjson(dir);
    let want: HashMap<&str, &Written> = expected.iter().map(|w| (w.id_hex.as_str(), w)).collect();
    assert_eq!(want.len(), expected.len(), "the test wrote duplicate ids");
    let mut seen: HashMap<String, &Line> = HashMap::new();
    for l in &lines {
        let id = l.id().to_string();
        if let Some(prev) = seen.insert(id.clone(), l) {
            panic!(
                "event {id} twice: {}:{} and {}:{}",
                prev.file, prev.line_no, l.file, l.line_no
            );
        }
        let w = want
            .get(id.as_str())
            .unwrap_or_else(|| panic!("unexpected event {id} in {}", l.file));
        let part = expected_partition(&w.event_type, w.ts);
        assert!(
            l.file.starts_with(&format!("{part}/")),
            "event {id} ({} at {}) in {}, expected {part}",
            w.event_type,
            w.ts,
            l.file
        );
        assert_eq!(l.json["type"].as_str().unwrap(), w.event_type);
        assert_eq!(l.json["ts"].as_u64().unwrap(), w.ts);
        if l.line_no == 1 {
            let name = l.file.rsplit('/').next().unwrap();
            assert!(
                name.starts_with(&id),
                "file {} does not start with its first event id {id}",
                l.file
            );
        }
    }
    let missing: Vec<&str> = want
        .keys()
        .filter(|id| !seen.contains_key(**id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events missing, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
}

/// No temporary file and no manifest left.
pub fn check_clean(dir: &Path) {
    let leftovers: Vec<String> = all_files(dir)
        .into_iter()
        .filter(|f| f.rsplit('/').next().unwrap().ends_with(".tmp") || f.ends_with("manifest.json"))
        .collect();
    assert!(leftovers.is_empty(), "left over: {leftovers:?}");
}

/// Sends `sig` to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill only sends a signal to our own child's pid.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

/// Waits for a child to exit, at most `timeout`; kills it (and panics) past that.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let until = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shipper did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The stderr of an exited child.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Splits a concatenation of MessagePack values into the values' bytes.
pub fn split_msgpack(data: &[u8]) -> Vec<Vec<u8>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let mut cur = std::io::Cursor::new(data);
    while (cur.position() as usize) < data.len() {
        let start = cur.position() as usize;
        let mut de = rmp_serde::Deserializer::new(&mut cur);
        serde::de::IgnoredAny::deserialize(&mut de).unwrap();
        let end = cur.position() as usize;
        out.push(data[start..end].to_vec());
    }
    out
}

/// Counts by key.
pub fn counts<K: Ord>(it: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for k in it {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

//! Command line and TOML configuration, merged into one [`Config`] (the command line wins over
//! the file, the file over the defaults). Every option is documented in `docs/shipper.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_MAX_BATCH_EVENTS: usize = 100_000;
pub const DEFAULT_POLL_MS: u64 = 2;
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
pub const DEFAULT_MAX_OPEN_FILES: usize = 128;
pub const DEFAULT_STALE_AFTER_MS: u64 = 2000;

/// Where the events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Hive-partitioned gzip files under --dir.
    File,
}

/// What the files contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`<id>.ndjson.gz`).
    Ndjson,
    /// The ring records as they are: concatenated MessagePack maps (`<id>.msgpack.gz`).
    Msgpack,
}

impl Format {
    /// The file name extension (after the first event's id).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson.gz",
            Format::Msgpack => "msgpack.gz",
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "tracker-shipper",
    version,
    about = "Drains the nginx-tracker event ring into hive-partitioned gzip files",
    after_help = "Every option can also be set in the TOML file given with --config \
                  (key = option name with '_' for '-'); the command line wins. See docs/shipper.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The ring file written by nginx (`tracker_ring`).
    #[arg(long, global = true, value_name = "PATH")]
    pub ring: Option<PathBuf>,

    /// A TOML file with any of the options below.
    #[arg(long, global = true, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,

    /// Where the events go.
    #[arg(long, value_enum)]
    pub sink: Option<SinkKind>,

    /// Output directory of the file sink.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// File contents: NDJSON (default), or the raw MessagePack records.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Commit a batch at the latest this long after its first event [default: 1000].
    #[arg(long, value_name = "N")]
    pub flush_interval_ms: Option<u64>,

    /// Commit a batch when it has this many events [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_batch_events: Option<usize>,

    /// Sleep between polls of an empty ring [default: 2].
    #[arg(long, value_name = "N")]
    pub poll_ms: Option<u64>,

    /// gzip level, 0-9 (1-6 recommended: 1 is fastest) [default: 1].
    #[arg(long, value_name = "N")]
    pub gzip_level: Option<u32>,

    /// Commit a batch early when it spans this many partition files [default: 128].
    #[arg(long, value_name = "N")]
    pub max_open_files: Option<usize>,

    /// Skip a record whose writer has not finished it after this long [default: 2000].
    #[arg(long, value_name = "N")]
    pub stale_after_ms: Option<u64>,

    /// Encoding threads (decode + serialize in parallel) [default: CPUs, at most 4].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Log level: error, warn, info, debug, trace [default: info, or RUST_LOG].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Drain what the ring holds now, commit, and exit.
    #[arg(long)]
    pub once: bool,

    /// Print the ring's cursors and counters as JSON and exit (same as `stats`).
    #[arg(long)]
    pub print_stats: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ring's cursors and counters as JSON and exit.
    Stats,
}

/// The TOML file: the same options as the command line, snake_case keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ring: Option<PathBuf>,
    pub sink: Option<SinkKind>,
    pub dir: Option<PathBuf>,
    pub format: Option<Format>,
    pub flush_interval_ms: Option<u64>,
    pub max_batch_events: Option<usize>,
    pub poll_ms: Option<u64>,
    pub gzip_level: Option<u32>,
    pub max_open_files: Option<usize>,
    pub stale_after_ms: Option<u64>,
    pub threads: Option<usize>,
    pub log_level: Option<String>,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    Run,
    Stats,
}

/// The merged configuration.
#[derive(Debug)]
pub struct Config {
    pub action: Action,
    pub ring: PathBuf,
    pub sink: SinkKind,
    /// Set when `sink` is `file` and action is Run.
    pub dir: PathBuf,
    pub format: Format,
    pub flush_interval: Duration,
    pub max_batch_events: usize,
    pub poll: Duration,
    pub gzip_level: u32,
    pub max_open_files: usize,
    pub stale_after: Duration,
    pub threads: usize,
    pub log_level: log::LevelFilter,
    pub once: bool,
}

/// Reads and parses a TOML config file. Relative paths in it are relative to its directory.
pub fn load_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let mut fc: FileConfig =
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut fc.ring, &mut fc.dir].into_iter().flatten() {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(fc)
}

/// The CPUs available, at most 4 (the encoders; the reader and the writer are two more threads).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

pub fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.trim()
        .parse::<log::LevelFilter>()
        .map_err(|_| format!("bad log level {s:?} (error, warn, info, debug, trace, off)"))
}

impl Config {
    /// Merges the command line over the file (if any) over the defaults, and checks the values.
    /// `env_log`: the RUST_LOG variable, used when no log level is set otherwise.
    pub fn resolve(
        cli: Cli,
        file: Option<FileConfig>,
        env_log: Option<String>,
    ) -> Result<Config, String> {
        let f = file.unwrap_or_default();
        let action = if cli.print_stats || matches!(cli.command, Some(Command::Stats)) {
            Action::Stats
        } else {
            Action::Run
        };
        let ring = cli
            .ring
            .or(f.ring)
            .ok_or("no ring: give --ring PATH (or `ring` in the config file)")?;
        let sink = cli.sink.or(f.sink).unwrap_or(SinkKind::File);
        let dir = cli.dir.or(f.dir);
        let dir = match (&action, sink) {
            (Action::Run, SinkKind::File) => {
                dir.ok_or("the file sink needs --dir DIR (or `dir` in the config file)")?
            }
            _ => dir.unwrap_or_default(),
        };
        let format = cli.format.or(f.format).unwrap_or(Format::Ndjson);
        let flush_interval_ms = cli
            .flush_interval_ms
            .or(f.flush_interval_ms)
            .unwrap_or(DEFAULT_FLUSH_INTERVAL_MS);
        if flush_interval_ms == 0 {
            return Err("flush-interval-ms must be at least 1".into());
        }
        let max_batch_events = cli
            .max_batch_events
            .or(f.max_batch_events)
            .unwrap_or(DEFAULT_MAX_BATCH_EVENTS);
        if max_batch_events == 0 {
            return Err("max-batch-events must be at least 1".into());
        }
        let poll_ms = cli.poll_ms.or(f.poll_ms).unwrap_or(DEFAULT_POLL_MS);
        if !(1..=1000).contains(&poll_ms) {
            return Err(format!("poll-ms must be 1..1000, not {poll_ms}"));
        }
        let gzip_level = cli
            .gzip_level
            .or(f.gzip_level)
            .unwrap_or(DEFAULT_GZIP_LEVEL);
        if gzip_level > 9 {
            return Err(format!("gzip-level must be 0..9, not {gzip_level}"));
        }
        let max_open_files = cli
            .max_open_files
            .or(f.max_open_files)
            .unwrap_or(DEFAULT_MAX_OPEN_FILES);
        if max_open_files == 0 {
            return Err("max-open-files must be at least 1".into());
        }
        let stale_after_ms = cli
            .stale_after_ms
            .or(f.stale_after_ms)
            .unwrap_or(DEFAULT_STALE_AFTER_MS);
        if stale_after_ms == 0 {
            return Err("stale-after-ms must be at least 1".into());
        }
        let threads = cli.threads.or(f.threads).unwrap_or_else(default_threads);
        if !(1..=64).contains(&threads) {
            return Err(format!("threads must be 1..64, not {threads}"));
        }
        let log_level = match cli.log_level.or(f.log_level) {
            Some(s) => parse_level(&s)?,
            None => env_log
                .as_deref()
                .and_then(|s| parse_level(s).ok())
                .unwrap_or(log::LevelFilter::Info),
        };
        Ok(Config {
            action,
            ring,
            sink,
            dir,
            format,
            flush_interval: Duration::from_millis(flush_interval_ms),
            max_batch_events,
            poll: Duration::from_millis(poll_ms),
            gzip_level,
            max_open_files,
            stale_after: Duration::from_millis(stale_after_ms),
            threads,
            log_level,
            once: cli.once,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tracker-shipper").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(
            cli(&["--ring", "/r", "--sink", "file", "--dir", "/d"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.action, Action::Run);
        assert_eq!(c.ring, PathBuf::from("/r"));
        assert_eq!(c.dir, PathBuf::from("/d"));
        assert_eq!(c.format, Format::Ndjson);
        assert_eq!(c.flush_interval, Duration::from_millis(1000));
        assert_eq!(c.max_batch_events, 100_000);
        assert_eq!(c.gzip_level, 1);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert!(!c.once);
    }

    #[test]
    fn cli_wins_over_file() {
        let f: FileConfig = toml::from_str(
            "ring = '/file-ring'\ndir = '/file-dir'\nformat = 'msgpack'\nflush_interval_ms = 50\ngzip_level = 6\nlog_level = 'debug'\n",
        )
        .unwrap();
        let c = Config::resolve(
            cli(&["--dir", "/cli-dir", "--gzip-level", "3", "--once"]),
            Some(f),
            Some("trace".into()),
        )
        .unwrap();
        assert_eq!(c.ring, PathBuf::from("/file-ring"));
        assert_eq!(c.dir, PathBuf::from("/cli-dir"));
        assert_eq!(c.format, Format::Msgpack);
        assert_eq!(c.flush_interval, Duration::from_millis(50));
        assert_eq!(c.gzip_level, 3);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert!(c.once);
    }

    #[test]
    fn errors() {
        assert!(Config::resolve(cli(&["--dir", "/d"]), None, None)
            .unwrap_err()
            .contains("--ring"));
        assert!(Config::resolve(cli(&["--ring", "/r"]), None, None)
            .unwrap_err()
            .contains("--dir"));
        assert!(Config::resolve(
            cli(&["--ring", "/r", "--dir", "/d", "--gzip-level", "10"]),
            None,
            None
        )
        .is_err());
        assert!(Config::resolve(
            cli(&["--ring", "/r", "--dir", "/d", "--max-batch-events", "0"]),
            None,
            None
        )
        .is_err());
        assert!(Config::resolve(
            cli(&["--ring", "/r", "--dir", "/d", "--log-level", "loud"]),
            None,
            None
        )
        .is_err());
        assert!(toml::from_str::<FileConfig>("rnig = '/x'").is_err());
        assert!(Cli::try_parse_from(["tracker-shipper", "--sink", "kafka"]).is_err());
    }

    #[test]
    fn stats_needs_no_dir() {
        let c = Config::resolve(cli(&["stats", "--ring", "/r"]), None, None).unwrap();
        assert_eq!(c.action, Action::Stats);
        let c = Config::resolve(cli(&["--ring", "/r", "--print-stats"]), None, None).unwrap();
        assert_eq!(c.action, Action::Stats);
    }

    #[test]
    fn file_paths_relative_to_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(&p, "ring = 'r.ring'\ndir = '/abs'\n").unwrap();
        let f = load_file(&p).unwrap();
        assert_eq!(f.ring.unwrap(), d.path().join("r.ring"));
        assert_eq!(f.dir.unwrap(), PathBuf::from("/abs"));
    }
}

//! Command line and TOML configuration, merged into one [`Config`] (the command line wins over
//! the file, the file over the defaults). Every option is documented in `docs/shipper.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
pub const DEFAULT_TOPIC_PREFIX: &str = "tracker.";
pub const DEFAULT_CUSTOM_TOPIC: &str = "tracker.custom";
pub const DEFAULT_LINGER_MS: u64 = 5;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 5;
/// The most messages the Kafka sink reads back per partition to find what is stored already
/// (docs/shipper.md, "Exactly once"): a batch of events can be up to `max_batch_events`.
pub const DEFAULT_TAIL_SCAN_MESSAGES: u64 = 200_000;
/// The aggregate sink's batches: one file per hour per batch, so fewer, larger batches.
pub const DEFAULT_AGGREGATE_FLUSH_INTERVAL_MS: u64 = 60_000;

/// Where the events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Hive-partitioned gzip files under --dir.
    File,
    /// Apache Kafka (or a Kafka-protocol broker) at --brokers.
    Kafka,
    /// Hourly aggregates by campaign, publisher and type, as NDJSON files under --aggregate-dir.
    Aggregate,
}

impl SinkKind {
    /// The name of the sink's cursor in the ring and its `sink` label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Aggregate => "aggregate",
        }
    }
}

/// What a Kafka message's key is (the partition it goes to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The campaign id: one campaign's events stay in order in one partition.
    Campaign,
    /// The click id, or the campaign id for events without one.
    #[value(name = "click_id", alias = "click-id")]
    ClickId,
    /// No key: librdkafka spreads the messages over the partitions.
    None,
}

/// Kafka compression codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What the files contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`<id>.ndjson.gz`); for Kafka, one JSON object per message.
    #[value(alias = "json")]
    #[serde(alias = "json")]
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
    about = "Drains the nginx-tracker event ring into Kafka and/or hive-partitioned gzip files",
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

    /// Where the events go: file, kafka, aggregate, or several (`--sink kafka --sink file` or
    /// `--sink kafka,file,aggregate`), each sink with its own cursor in the ring [default: file].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub sink: Vec<SinkKind>,

    /// Kafka bootstrap brokers, HOST:PORT,... (the kafka sink).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,

    /// Kafka compression [default: lz4].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Kafka message key [default: campaign].
    #[arg(long, value_enum)]
    pub key: Option<KeyField>,

    /// Kafka producer linger (ms to wait to fill a batch) [default: 5].
    #[arg(long, value_name = "N")]
    pub linger_ms: Option<u64>,

    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,

    /// Where the kafka sink writes the events Kafka refused for good [default: DIR/_dead_letter
    /// when --dir is given].
    #[arg(long, value_name = "DIR")]
    pub dead_letter_dir: Option<PathBuf>,

    /// Append the log to this file instead of stderr (reopened on SIGHUP, for logrotate).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Output directory of the file sink.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Output directory of the aggregate sink [default: DIR/_aggregates when --dir is given].
    #[arg(long, value_name = "DIR")]
    pub aggregate_dir: Option<PathBuf>,

    /// Commit an aggregate batch at the latest this long after its first event [default: 60000].
    #[arg(long, value_name = "N")]
    pub aggregate_flush_interval_ms: Option<u64>,

    /// Event format: ndjson (alias json) or msgpack (the records as nginx wrote them), for every
    /// sink given [default: ndjson for files, msgpack for Kafka].
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
    /// Print a signed tracking URL (`tracker_signed`): BASE with exp, kid and sig appended,
    /// signed with the newest key of the key file (docs/signing.md).
    SignUrl(SignUrlArgs),
    /// The campaign accounts of nginx's state file (`tracker_state`).
    #[command(subcommand)]
    Accounts(AccountsCommand),
}

/// `accounts ...`.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Write the state file's accounts from the stored events (the sums of their cost_micros
    /// and counts): the recovery after a power loss or a corrupt state file. nginx must be
    /// stopped (docs/stats.md, "What survives what").
    Rebuild(RebuildArgs),
}

/// `accounts rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// The state file (the path of `tracker_state`); created if absent.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// Its size when it is created (as `tracker_state`'s; bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub size: u64,
    /// A directory of the file sink's output (type=*/date=*/hour=*/*.ndjson.gz); repeat for
    /// each. Every event the campaigns ever had must be there.
    #[arg(long = "events", value_name = "DIR", required = true)]
    pub events: Vec<PathBuf>,
    /// The campaigns file (`tracker_campaigns`): only its campaigns, each in its time zone for
    /// the daily counters (without it: every campaign of the events, days in UTC).
    #[arg(long, value_name = "FILE")]
    pub campaigns: Option<PathBuf>,
}

/// `sign-url`: what a publisher's signed URL covers.
#[derive(Debug, clap::Args)]
pub struct SignUrlArgs {
    /// The key file of `tracker_secret` (`NAME BASE64KEY` per line; the last key signs).
    #[arg(long, value_name = "FILE")]
    pub secret: PathBuf,
    /// Sign with this key of the file instead of the newest.
    #[arg(long, value_name = "NAME")]
    pub kid: Option<String>,
    /// The campaign id, as the URL carries it (after percent-decoding).
    #[arg(long, value_name = "ID")]
    pub campaign: String,
    /// Seconds from now until the URL expires.
    #[arg(
        long,
        value_name = "SECONDS",
        conflicts_with = "expires_at",
        required_unless_present = "expires_at"
    )]
    pub expires_in: Option<u64>,
    /// When the URL expires, in unix seconds.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub expires_at: Option<u64>,
    /// A signed dimension, NAME=VALUE (value after percent-decoding), in the order of
    /// `tracker_signed_dimensions`; repeat for each.
    #[arg(long = "dim", value_name = "NAME=VALUE")]
    pub dims: Vec<String>,
    /// The tracking URL to sign, e.g. 'https://t.example.com/c?cid=ID&pub=news'.
    #[arg(long, value_name = "URL")]
    pub base: String,
}

/// The TOML file: the same options as the command line, snake_case keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub ring: Option<PathBuf>,
    /// One sink (the older form of `sinks`).
    pub sink: Option<SinkKind>,
    pub sinks: Option<Vec<SinkKind>>,
    pub metrics: Option<SocketAddr>,
    pub log_file: Option<PathBuf>,
    pub dead_letter_dir: Option<PathBuf>,
    /// The file sink's options, as a table (over the same keys at the top level).
    pub file: Option<FileSinkFile>,
    pub kafka: Option<KafkaFile>,
    /// The aggregate sink's options.
    pub aggregate: Option<AggregateFile>,
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

/// The `[file]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkFile {
    pub dir: Option<PathBuf>,
    pub format: Option<Format>,
    pub gzip_level: Option<u32>,
    pub max_open_files: Option<usize>,
}

/// The `[aggregate]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateFile {
    pub dir: Option<PathBuf>,
    pub publisher_dimension: Option<String>,
    pub flush_interval_ms: Option<u64>,
    /// Only `ndjson`.
    pub format: Option<Format>,
    /// Also publish the rows to this Kafka topic.
    pub topic: Option<String>,
    /// The aggregate topic's brokers.
    pub brokers: Option<String>,
    /// The most messages read back per partition of the aggregate topic at start.
    pub tail_scan_messages: Option<u64>,
    /// librdkafka properties of the aggregate topic's clients.
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Value>,
}

/// The aggregate sink's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateConfig {
    pub dir: PathBuf,
    /// The dimension whose value is the row's publisher.
    pub publisher_dimension: String,
    /// The aggregate sink's flush interval (instead of the other sinks').
    pub flush_interval: Duration,
    /// Also publish the rows to a Kafka topic.
    pub topic: Option<AggregateTopicConfig>,
}

/// The aggregate topic: where the aggregate sink also publishes its rows.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateTopicConfig {
    pub topic: String,
    pub brokers: String,
    /// The most messages read back per partition when reading its tail.
    pub tail_scan_messages: u64,
    pub properties: BTreeMap<String, String>,
}

/// The `[kafka]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    pub brokers: Option<String>,
    pub format: Option<Format>,
    pub key: Option<KeyField>,
    pub compression: Option<Compression>,
    pub linger_ms: Option<u64>,
    pub batch_size: Option<u64>,
    pub max_in_flight: Option<u32>,
    pub message_timeout_ms: Option<u64>,
    /// Read the partitions' tails at start and after a producer reset and skip the events
    /// already stored (docs/shipper.md, "Exactly once"). Default true.
    pub exactly_once: Option<bool>,
    /// The most messages read back per partition when reading its tail.
    pub tail_scan_messages: Option<u64>,
    /// Bad rows (refused for good, undecodable) also go to this topic.
    pub dead_letter_topic: Option<String>,
    pub topic_prefix: Option<String>,
    pub default_topic: Option<String>,
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// librdkafka properties, passed through as they are (values as strings, numbers or
    /// booleans).
    #[serde(default)]
    pub properties: BTreeMap<String, toml::Value>,
}

/// The Kafka sink's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub format: Format,
    pub key: KeyField,
    pub compression: Compression,
    pub linger_ms: u64,
    /// librdkafka `batch.size` (bytes per partition batch); None: librdkafka's default.
    pub batch_size: Option<u64>,
    pub max_in_flight: u32,
    /// librdkafka `message.timeout.ms`; 0: never give up (the default: events wait in the
    /// ring for the broker, however long it is away).
    pub message_timeout_ms: u64,
    /// Skip on replay the events the partitions' tails show already stored.
    pub exactly_once: bool,
    /// The most messages read back per partition when reading its tail.
    pub tail_scan_messages: u64,
    /// Bad rows (refused for good, undecodable) also go to this topic, with the reason in a
    /// header.
    pub dead_letter_topic: Option<String>,
    pub topic_prefix: String,
    pub default_topic: String,
    /// Event type -> topic, over the defaults.
    pub topics: BTreeMap<String, String>,
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The topic of an event type: `topics[type]`, else `<prefix><type>` for the built-in
    /// types, else the default topic (custom types).
    pub fn topic_for(&self, event_type: &str) -> String {
        if let Some(t) = self.topics.get(event_type) {
            return t.clone();
        }
        if tracker_core::event::Kind::of_type(event_type) != tracker_core::event::Kind::Custom {
            format!("{}{event_type}", self.topic_prefix)
        } else {
            self.default_topic.clone()
        }
    }

    /// Every topic the sink may write to (sorted, without repeats): the built-in types',
    /// the default topic, the overrides, the dead-letter topic.
    pub fn all_topics(&self) -> Vec<String> {
        let mut t: std::collections::BTreeSet<String> = tracker_core::event::Kind::ALL
            .iter()
            .map(|k| self.topic_for(k.name()))
            .collect();
        t.insert(self.default_topic.clone());
        t.extend(self.topics.values().cloned());
        t.extend(self.dead_letter_topic.clone());
        t.into_iter().collect()
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Run,
    Stats,
}

/// The merged configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub action: Action,
    pub ring: PathBuf,
    /// The sinks, each once, in the order given.
    pub sinks: Vec<SinkKind>,
    /// Set when the file sink is used and action is Run.
    pub dir: PathBuf,
    /// The file sink's format.
    pub format: Format,
    /// Set when the kafka sink is used and action is Run.
    pub kafka: Option<KafkaConfig>,
    /// Set when the aggregate sink is used and action is Run.
    pub aggregate: Option<AggregateConfig>,
    pub metrics: Option<SocketAddr>,
    pub log_file: Option<PathBuf>,
    /// The kafka sink's dead letters (set when the kafka sink is used and action is Run).
    pub dead_letter_dir: PathBuf,
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
    // The [file] table's keys count as the top-level ones (and win over them).
    if let Some(t) = fc.file.take() {
        fc.dir = t.dir.or(fc.dir.take());
        fc.format = t.format.or(fc.format);
        fc.gzip_level = t.gzip_level.or(fc.gzip_level);
        fc.max_open_files = t.max_open_files.or(fc.max_open_files);
    }
    let agg_dir = fc.aggregate.as_mut().and_then(|a| a.dir.as_mut());
    for p in [
        &mut fc.ring,
        &mut fc.dir,
        &mut fc.log_file,
        &mut fc.dead_letter_dir,
    ]
    .into_iter()
    .flatten()
    .chain(agg_dir)
    {
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
        let kafka_cli = KafkaCli {
            brokers: cli.brokers.clone(),
            linger_ms: cli.linger_ms,
            format: cli.format,
            key: cli.key,
            compression: cli.compression,
        };
        let action = if cli.print_stats || matches!(cli.command, Some(Command::Stats)) {
            Action::Stats
        } else {
            Action::Run
        };
        let ring = cli
            .ring
            .or(f.ring)
            .ok_or("no ring: give --ring PATH (or `ring` in the config file)")?;
        let mut sinks = Vec::new();
        let given = if !cli.sink.is_empty() {
            cli.sink.clone()
        } else if let Some(v) = f.sinks.clone() {
            v
        } else {
            f.sink.into_iter().collect()
        };
        for s in given {
            if !sinks.contains(&s) {
                sinks.push(s);
            }
        }
        if sinks.is_empty() {
            sinks.push(SinkKind::File);
        }
        let run = action == Action::Run;
        let dir = cli.dir.or(f.dir);
        let dir = if run && sinks.contains(&SinkKind::File) {
            dir.ok_or("the file sink needs --dir DIR (or `dir` in the config file)")?
        } else {
            dir.unwrap_or_default()
        };
        let format = cli.format.or(f.format).unwrap_or(Format::Ndjson);
        let kafka = if run && sinks.contains(&SinkKind::Kafka) {
            Some(kafka_config(&kafka_cli, f.kafka.unwrap_or_default())?)
        } else {
            None
        };
        let aggregate = if run && sinks.contains(&SinkKind::Aggregate) {
            Some(aggregate_config(
                cli.aggregate_dir.clone(),
                cli.aggregate_flush_interval_ms,
                f.aggregate.unwrap_or_default(),
                &dir,
                sinks.contains(&SinkKind::File),
            )?)
        } else {
            None
        };
        let dead_letter_dir = match cli.dead_letter_dir.clone().or(f.dead_letter_dir) {
            Some(d) => d,
            None if kafka.is_some() && !dir.as_os_str().is_empty() => dir.join(crate::commit::DEAD_LETTER_DIR),
            None if kafka.is_some() => {
                return Err("the kafka sink needs --dead-letter-dir DIR (or --dir) for the events Kafka refuses".into())
            }
            None => PathBuf::new(),
        };
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
            sinks,
            dir,
            format,
            kafka,
            aggregate,
            metrics: cli.metrics.or(f.metrics),
            log_file: cli.log_file.or(f.log_file),
            dead_letter_dir,
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

/// The aggregate settings: `--aggregate-dir` over `[aggregate]` over the defaults. `dir` is the
/// file sink's directory (empty if none), `with_file` whether the file sink is used too.
fn aggregate_config(
    cli_dir: Option<PathBuf>,
    cli_flush_ms: Option<u64>,
    mut a: AggregateFile,
    dir: &Path,
    with_file: bool,
) -> Result<AggregateConfig, String> {
    let topic = aggregate_topic_config(&mut a)?;
    let agg_dir =
        match cli_dir.or(a.dir) {
            Some(d) => d,
            None if !dir.as_os_str().is_empty() => dir.join("_aggregates"),
            None => return Err(
                "the aggregate sink needs --aggregate-dir DIR (or --dir, or `dir` in [aggregate])"
                    .into(),
            ),
        };
    // Each directory has its own manifest and stray-tmp cleanup: the aggregate directory may be
    // inside the file sink's (recovered first), not the same nor around it.
    if with_file && dir.starts_with(&agg_dir) {
        return Err(format!(
            "the aggregate directory {} must not be the file sink's directory {} nor contain it              (use a directory of its own, e.g. the default DIR/_aggregates)",
            agg_dir.display(),
            dir.display()
        ));
    }
    if a.format.is_some_and(|f| f != Format::Ndjson) {
        return Err("[aggregate] format: the aggregate sink writes ndjson only".into());
    }
    let publisher_dimension = a
        .publisher_dimension
        .unwrap_or_else(|| crate::aggregate::DEFAULT_PUBLISHER_DIMENSION.to_string());
    if publisher_dimension.is_empty() {
        return Err("[aggregate] publisher_dimension must not be empty".into());
    }
    let flush_ms = cli_flush_ms
        .or(a.flush_interval_ms)
        .unwrap_or(DEFAULT_AGGREGATE_FLUSH_INTERVAL_MS);
    if flush_ms == 0 {
        return Err("aggregate-flush-interval-ms must be at least 1".into());
    }
    Ok(AggregateConfig {
        dir: agg_dir,
        publisher_dimension,
        flush_interval: Duration::from_millis(flush_ms),
        topic,
    })
}

/// Checks a Kafka topic name given as `[section] what`.
fn check_topic_name(section: &str, what: &str, t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 249
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && t != "."
        && t != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "[{section}] {what}: {t:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
        ))
    }
}

/// The librdkafka properties of `[section.properties]` as strings.
fn librdkafka_properties(
    section: &str,
    props: BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (name, v) in props {
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "[{section}.properties] {name}: {other} is not a string, number or boolean"
                ))
            }
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// The aggregate topic's settings (`topic`, `brokers`, `tail_scan_messages`, `properties` in
/// `[aggregate]`); None without a topic.
fn aggregate_topic_config(a: &mut AggregateFile) -> Result<Option<AggregateTopicConfig>, String> {
    let Some(topic) = a.topic.take() else {
        if a.brokers.is_some() || !a.properties.is_empty() || a.tail_scan_messages.is_some() {
            return Err(
                "[aggregate] brokers, tail_scan_messages and properties are the aggregate topic's: \
                 set `topic` too, or remove them"
                    .into(),
            );
        }
        return Ok(None);
    };
    check_topic_name("aggregate", "topic", &topic)?;
    let brokers = a
        .brokers
        .take()
        .ok_or("[aggregate] topic needs `brokers = \"HOST:PORT,...\"` in [aggregate]")?;
    if brokers.trim().is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
        return Err(format!(
            "[aggregate] brokers: bad {brokers:?}: expected \"HOST:PORT,...\""
        ));
    }
    let tail_scan_messages = a.tail_scan_messages.unwrap_or(DEFAULT_TAIL_SCAN_MESSAGES);
    if tail_scan_messages == 0 {
        return Err("[aggregate] tail_scan_messages must be at least 1".into());
    }
    Ok(Some(AggregateTopicConfig {
        topic,
        brokers,
        tail_scan_messages,
        properties: librdkafka_properties("aggregate", std::mem::take(&mut a.properties))?,
    }))
}

/// The command-line options of the Kafka sink.
struct KafkaCli {
    brokers: Option<String>,
    linger_ms: Option<u64>,
    format: Option<Format>,
    key: Option<KeyField>,
    compression: Option<Compression>,
}

/// The Kafka settings: command line over `[kafka]` over the defaults.
fn kafka_config(cli: &KafkaCli, k: KafkaFile) -> Result<KafkaConfig, String> {
    let brokers = cli
        .brokers
        .clone()
        .or(k.brokers)
        .ok_or("the kafka sink needs --brokers HOST:PORT,... (or `brokers` in [kafka])")?;
    if brokers.trim().is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
        return Err(format!("bad --brokers {brokers:?}: expected HOST:PORT,..."));
    }
    let linger_ms = cli.linger_ms.or(k.linger_ms).unwrap_or(DEFAULT_LINGER_MS);
    if linger_ms > 60_000 {
        return Err(format!("linger-ms must be 0..60000, not {linger_ms}"));
    }
    let max_in_flight = k.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=5).contains(&max_in_flight) {
        return Err(format!(
            "[kafka] max_in_flight must be 1..5 (the idempotent producer keeps order only up to 5), not {max_in_flight}"
        ));
    }
    let tail_scan_messages = k.tail_scan_messages.unwrap_or(DEFAULT_TAIL_SCAN_MESSAGES);
    if tail_scan_messages == 0 {
        return Err(
            "[kafka] tail_scan_messages must be at least 1 (set exactly_once = false to not read the tails)"
                .into(),
        );
    }
    let check_topic = |what: &str, t: &str| check_topic_name("kafka", what, t);
    let topic_prefix = k
        .topic_prefix
        .unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_string());
    check_topic("topic_prefix", &format!("{topic_prefix}impression"))?;
    let default_topic = k
        .default_topic
        .unwrap_or_else(|| DEFAULT_CUSTOM_TOPIC.to_string());
    check_topic("default_topic", &default_topic)?;
    for (ty, t) in &k.topics {
        check_topic(&format!("topics.{ty}"), t)?;
    }
    if let Some(t) = &k.dead_letter_topic {
        check_topic("dead_letter_topic", t)?;
    }
    let properties = librdkafka_properties("kafka", k.properties)?;
    Ok(KafkaConfig {
        brokers,
        format: cli.format.or(k.format).unwrap_or(Format::Msgpack),
        key: cli.key.or(k.key).unwrap_or(KeyField::Campaign),
        compression: cli
            .compression
            .or(k.compression)
            .unwrap_or(Compression::Lz4),
        linger_ms,
        batch_size: k.batch_size,
        max_in_flight,
        message_timeout_ms: k.message_timeout_ms.unwrap_or(0),
        exactly_once: k.exactly_once.unwrap_or(true),
        tail_scan_messages,
        dead_letter_topic: k.dead_letter_topic,
        topic_prefix,
        default_topic,
        topics: k.topics,
        properties,
    })
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
        assert!(Cli::try_parse_from(["tracker-shipper", "--sink", "s3"]).is_err());
        let e = Config::resolve(cli(&["--ring", "/r", "--sink", "kafka"]), None, None).unwrap_err();
        assert!(e.contains("--brokers"), "{e}");
        let e = Config::resolve(
            cli(&["--ring", "/r", "--sink", "kafka", "--brokers", "b:1"]),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("--dead-letter-dir"), "{e}");
        let f: FileConfig =
            toml::from_str("[kafka]\nbrokers = 'b:1'\nmax_in_flight = 9\n").unwrap();
        let e =
            Config::resolve(cli(&["--ring", "/r", "--sink", "kafka"]), Some(f), None).unwrap_err();
        assert!(e.contains("max_in_flight"), "{e}");
        let f: FileConfig =
            toml::from_str("[kafka]\nbrokers = 'b:1'\n[kafka.topics]\nclick = 'no spaces'\n")
                .unwrap();
        let e =
            Config::resolve(cli(&["--ring", "/r", "--sink", "kafka"]), Some(f), None).unwrap_err();
        assert!(e.contains("topics.click"), "{e}");
        assert!(toml::from_str::<FileConfig>("[kafka]\nbrokrs = 'x'\n").is_err());
    }

    #[test]
    fn kafka_and_file_sinks() {
        let f: FileConfig = toml::from_str(
            "ring = '/r'\ndir = '/d'\nsinks = ['kafka', 'file']\n[kafka]\nbrokers = 'k1:9092,k2:9092'\nkey = 'click_id'\n\
             compression = 'zstd'\ndefault_topic = 'other'\n[kafka.topics]\nclick = 'clicks-v2'\nsignup = 'signups'\n\
             [kafka.properties]\n'socket.keepalive.enable' = true\n'batch.num.messages' = 5000\n",
        )
        .unwrap();
        let c = Config::resolve(cli(&[]), Some(f), None).unwrap();
        assert_eq!(c.sinks, [SinkKind::Kafka, SinkKind::File]);
        assert_eq!(c.format, Format::Ndjson);
        let k = c.kafka.unwrap();
        assert_eq!(k.brokers, "k1:9092,k2:9092");
        assert_eq!(k.format, Format::Msgpack);
        assert_eq!(k.key, KeyField::ClickId);
        assert_eq!(k.compression, Compression::Zstd);
        assert_eq!(k.linger_ms, 5);
        assert_eq!(k.message_timeout_ms, 0);
        assert_eq!(k.topic_for("impression"), "tracker.impression");
        assert_eq!(k.topic_for("click"), "clicks-v2");
        assert_eq!(k.topic_for("signup"), "signups");
        assert_eq!(k.topic_for("newsletter"), "other");
        assert_eq!(k.properties["socket.keepalive.enable"], "true");
        assert_eq!(k.properties["batch.num.messages"], "5000");
        assert!(k.exactly_once);
        assert_eq!(k.tail_scan_messages, DEFAULT_TAIL_SCAN_MESSAGES);
        assert_eq!(
            k.all_topics(),
            [
                "clicks-v2",
                "other",
                "signups",
                "tracker.conversion",
                "tracker.impression",
                "tracker.video"
            ]
        );
        for (text, ok) in [
            ("exactly_once = false\ntail_scan_messages = 10", true),
            ("tail_scan_messages = 0", false),
            ("dead_letter_topic = 'no spaces'", false),
        ] {
            let f: FileConfig =
                toml::from_str(&format!("[kafka]\nbrokers = 'b:1'\n{text}\n")).unwrap();
            let r = Config::resolve(
                cli(&["--ring", "/r", "--sink", "kafka", "--dead-letter-dir", "/x"]),
                Some(f),
                None,
            );
            assert_eq!(r.is_ok(), ok, "{text}: {r:?}");
            if let Ok(c) = r {
                let k = c.kafka.unwrap();
                assert!(!k.exactly_once);
                assert_eq!(k.tail_scan_messages, 10);
            }
        }

        // The command line: repeated or comma-separated sinks, --format json for every sink.
        let c = Config::resolve(
            cli(&[
                "--ring",
                "/r",
                "--sink",
                "kafka,file",
                "--sink",
                "kafka",
                "--brokers",
                "b:1",
                "--dir",
                "/d",
                "--format",
                "json",
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.sinks, [SinkKind::Kafka, SinkKind::File]);
        assert_eq!(c.format, Format::Ndjson);
        assert_eq!(c.kafka.unwrap().format, Format::Ndjson);
    }

    #[test]
    fn aggregate_topic() {
        let resolve = |toml_text: &str| {
            let f: FileConfig = toml::from_str(toml_text).unwrap();
            Config::resolve(
                cli(&["--ring", "/r", "--sink", "aggregate", "--dir", "/d"]),
                Some(f),
                None,
            )
        };
        let c = resolve(
            "[aggregate]\ntopic = 'tracker.aggregates'\nbrokers = 'k1:9092,k2:9092'\n\
             [aggregate.properties]\n'security.protocol' = 'ssl'\n'socket.timeout.ms' = 30000\n",
        )
        .unwrap();
        let t = c.aggregate.unwrap().topic.unwrap();
        assert_eq!(t.topic, "tracker.aggregates");
        assert_eq!(t.brokers, "k1:9092,k2:9092");
        assert_eq!(t.tail_scan_messages, DEFAULT_TAIL_SCAN_MESSAGES);
        assert_eq!(t.properties["security.protocol"], "ssl");
        assert_eq!(t.properties["socket.timeout.ms"], "30000");
        assert_eq!(
            resolve("[aggregate]\n").unwrap().aggregate.unwrap().topic,
            None
        );
        for (text, want) in [
            ("[aggregate]\ntopic = 'a'\n", "needs `brokers"),
            (
                "[aggregate]\ntopic = 'a b'\nbrokers = 'k:1'\n",
                "not a valid Kafka topic",
            ),
            ("[aggregate]\nbrokers = 'k:1'\n", "set `topic` too"),
            (
                "[aggregate]\ntopic = 'a'\nbrokers = 'k:1,'\n",
                "[aggregate] brokers",
            ),
            (
                "[aggregate]\ntopic = 'a'\nbrokers = 'k:1'\ntail_scan_messages = 0\n",
                "at least 1",
            ),
        ] {
            let e = resolve(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn aggregate_sink() {
        // With --dir: DIR/_aggregates, the publisher dimension "publisher".
        let c = Config::resolve(
            cli(&[
                "--ring",
                "/r",
                "--sink",
                "kafka,file,aggregate",
                "--brokers",
                "b:1",
                "--dir",
                "/d",
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            c.sinks,
            [SinkKind::Kafka, SinkKind::File, SinkKind::Aggregate]
        );
        assert_eq!(
            c.aggregate,
            Some(AggregateConfig {
                dir: PathBuf::from("/d/_aggregates"),
                publisher_dimension: "publisher".into(),
                flush_interval: Duration::from_secs(60),
                topic: None,
            })
        );
        // --aggregate-dir over [aggregate] dir; the table's other keys.
        let f: FileConfig =
            toml::from_str("ring = '/r'\nsinks = ['aggregate']\n[aggregate]\ndir = '/agg-file'\npublisher_dimension = 'site'\nformat = 'ndjson'\nflush_interval_ms = 5000\n")
                .unwrap();
        let c = Config::resolve(cli(&["--aggregate-dir", "/agg-cli"]), Some(f), None).unwrap();
        let a = c.aggregate.unwrap();
        assert_eq!(a.dir, PathBuf::from("/agg-cli"));
        assert_eq!(a.publisher_dimension, "site");
        assert_eq!(a.flush_interval, Duration::from_secs(5));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.sinks, [SinkKind::Aggregate]);
        // A relative [aggregate] dir is relative to the config file.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(
            &p,
            "ring = '/r'\nsink = 'aggregate'\n[aggregate]\ndir = 'agg'\n",
        )
        .unwrap();
        let c = Config::resolve(cli(&[]), Some(load_file(&p).unwrap()), None).unwrap();
        assert_eq!(c.aggregate.unwrap().dir, d.path().join("agg"));
        // Errors: no directory, the file sink's directory or one around it, msgpack, unknown keys.
        let e =
            Config::resolve(cli(&["--ring", "/r", "--sink", "aggregate"]), None, None).unwrap_err();
        assert!(e.contains("--aggregate-dir"), "{e}");
        for agg in ["/d", "/"] {
            let e = Config::resolve(
                cli(&[
                    "--ring",
                    "/r",
                    "--sink",
                    "file,aggregate",
                    "--dir",
                    "/d",
                    "--aggregate-dir",
                    agg,
                ]),
                None,
                None,
            )
            .unwrap_err();
            assert!(e.contains("must not be the file sink's directory"), "{e}");
        }
        assert!(Config::resolve(
            cli(&[
                "--ring",
                "/r",
                "--sink",
                "aggregate",
                "--dir",
                "/d",
                "--aggregate-dir",
                "/d"
            ]),
            None,
            None
        )
        .is_ok());
        let f: FileConfig = toml::from_str("[aggregate]\nformat = 'msgpack'\n").unwrap();
        let e = Config::resolve(
            cli(&["--ring", "/r", "--sink", "aggregate", "--dir", "/d"]),
            Some(f),
            None,
        )
        .unwrap_err();
        assert!(e.contains("ndjson only"), "{e}");
        assert!(toml::from_str::<FileConfig>("[aggregate]\npublisher = 'x'\n").is_err());
        // Not used: not resolved (and --format msgpack for the other sinks is fine).
        let c = Config::resolve(
            cli(&["--ring", "/r", "--dir", "/d", "--format", "msgpack"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.aggregate, None);
        let c = Config::resolve(
            cli(&[
                "--ring",
                "/r",
                "--sink",
                "file,aggregate",
                "--dir",
                "/d",
                "--format",
                "msgpack",
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.format, Format::Msgpack);
        assert!(c.aggregate.is_some());
    }

    #[test]
    fn stats_needs_no_dir() {
        let c = Config::resolve(cli(&["stats", "--ring", "/r"]), None, None).unwrap();
        assert_eq!(c.action, Action::Stats);
        let c = Config::resolve(cli(&["--ring", "/r", "--print-stats"]), None, None).unwrap();
        assert_eq!(c.action, Action::Stats);
    }

    #[test]
    fn file_table_and_the_example_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(&p, "ring = '/r'\ndir = '/top'\ngzip_level = 3\n[file]\ndir = 'events'\nformat = 'msgpack'\n").unwrap();
        let c = Config::resolve(cli(&[]), Some(load_file(&p).unwrap()), None).unwrap();
        assert_eq!(c.dir, d.path().join("events"));
        assert_eq!(c.format, Format::Msgpack);
        assert_eq!(c.gzip_level, 3);
        // The example shipped with the systemd unit parses, and so does its Kafka part.
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/shipper.toml.example");
        let c =
            Config::resolve(cli(&[]), Some(load_file(Path::new(example)).unwrap()), None).unwrap();
        assert_eq!(c.sinks, [SinkKind::File]);
        let text = std::fs::read_to_string(example).unwrap();
        let uncommented: String = text
            .lines()
            .filter(|l| !l.starts_with("# sinks"))
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.starts_with('[') || r.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| {
                if l.starts_with("sinks") {
                    "sinks = [\"kafka\", \"file\"]"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&p, uncommented).unwrap();
        let c = Config::resolve(cli(&[]), Some(load_file(&p).unwrap()), None).unwrap();
        assert_eq!(c.sinks, [SinkKind::Kafka, SinkKind::File]);
        assert!(c.kafka.is_some());
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

//! A minimal `log` backend: one line per message on stderr, with a UTC timestamp and the level
//! (`2024-05-06T07:08:09.123Z INFO  message`). stderr is unbuffered and each line is written
//! with a single write, so lines of concurrent threads never interleave.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::layout::rfc3339_ms;

struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let line = format!(
            "{} {:<5} {}\n",
            rfc3339_ms(ms),
            record.level(),
            record.args()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once per process).
pub fn init(level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

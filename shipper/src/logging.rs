//! A minimal `log` backend: one line per message with a UTC timestamp and the level
//! (`2024-05-06T07:08:09.123Z INFO  message`), on stderr or appended to a file (`--log-file`,
//! reopened by [`reopen`] on SIGHUP so that logrotate can move it). Each line is written with a
//! single write, so lines of concurrent threads never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::layout::rfc3339_ms;

struct Logger {
    /// The log file and its path; None: stderr.
    file: Mutex<Option<(PathBuf, File)>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
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
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_mut() {
            Some((_, file)) => {
                if file.write_all(line.as_bytes()).is_err() {
                    let _ = io::stderr().lock().write_all(line.as_bytes());
                }
            }
            None => {
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per process), writing to `file` (appended) or stderr.
pub fn init(level: log::LevelFilter, file: Option<&Path>) -> Result<(), String> {
    let f = match file {
        Some(p) => Some((
            p.to_path_buf(),
            open(p).map_err(|e| format!("cannot open the log file {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let logger = LOGGER.get_or_init(|| Logger {
        file: Mutex::new(None),
    });
    *logger.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
    if log::set_logger(logger).is_ok() || log::max_level() != level {
        log::set_max_level(level);
    }
    Ok(())
}

/// Sets the level of the installed logger.
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

/// Reopens the log file (SIGHUP): a file moved away by logrotate is replaced by a new one at
/// the same path. Does nothing when logging to stderr.
pub fn reopen() -> Result<bool, String> {
    let Some(logger) = LOGGER.get() else {
        return Ok(false);
    };
    let mut f = logger.file.lock().unwrap_or_else(|p| p.into_inner());
    let Some((path, file)) = f.as_mut() else {
        return Ok(false);
    };
    *file =
        open(path).map_err(|e| format!("cannot reopen the log file {}: {e}", path.display()))?;
    Ok(true)
}

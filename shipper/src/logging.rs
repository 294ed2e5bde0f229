//! A minimal `log` backend: one line per message with a UTC timestamp and the level
//! (`2024-05-06T07:08:09.123Z INFO  message`), on stderr or appended to a file (`--log-file`,
//! reopened by [`reopen`] on SIGHUP so that logrotate can move it). Each line is written with a
//! single write, so lines of concurrent threads never interleave.
//!
//! When stderr is the systemd journal (`$JOURNAL_STREAM` names stderr's device and inode, as
//! systemd sets it for a service), each line starts with its syslog priority instead of the
//! time and level (`<4>message` for a warning, sd-daemon(3)'s convention): the journal keeps
//! its own timestamp and `journalctl -p warning` then shows the warnings and errors only.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::layout::rfc3339_ms;

struct Logger {
    /// The log file and its path; None: stderr.
    file: Mutex<Option<(PathBuf, File)>>,
    /// stderr is the systemd journal: lines carry a `<N>` priority prefix.
    journal: bool,
}

/// The syslog priority of a level (sd-daemon(3): `<3>` error, `<4>` warning, `<6>` info,
/// `<7>` debug).
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether `journal_stream` (the value of `$JOURNAL_STREAM`, `DEVICE:INODE`) names the file
/// whose device and inode are `dev` and `ino`.
fn is_journal_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// Whether this process's stderr is the systemd journal.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(js) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| is_journal_stream(&js, m.dev(), m.ino()))
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
        if let Some((_, file)) = f.as_mut() {
            if file.write_all(line.as_bytes()).is_ok() {
                return;
            }
        }
        let line = if self.journal {
            format!("<{}>{}\n", priority(record.level()), record.args())
        } else {
            line
        };
        let _ = io::stderr().lock().write_all(line.as_bytes());
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
        journal: stderr_is_journal(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(is_journal_stream("8:12345", 8, 12345));
        assert!(!is_journal_stream("8:12345", 8, 12346));
        assert!(!is_journal_stream("9:12345", 8, 12345));
        assert!(!is_journal_stream("8-12345", 8, 12345));
        assert!(!is_journal_stream("", 8, 12345));
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
    }
}

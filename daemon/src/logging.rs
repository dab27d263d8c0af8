//! Log records go to stderr without timestamps (journald adds its own) or to syslog.
//! Under journald (`JOURNAL_STREAM` set) each stderr line carries a `<N>` priority prefix so the
//! journal keeps the level; in a terminal the level is written as a word.

use std::io::Write;

use crate::config::LogTarget;

struct StderrLogger {
    journal: bool,
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut err = std::io::stderr().lock();
        // A closed stderr must not take the daemon down; the record is lost either way.
        let _ = if self.journal {
            writeln!(err, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            writeln!(err, "{}: {}", record.level().as_str().to_ascii_lowercase(), record.args())
        };
    }

    fn flush(&self) {}
}

/// Installs the process-wide logger. Called once; the level can change later with
/// `log::set_max_level` (SIGHUP), the target cannot.
pub fn init(target: LogTarget, level: log::LevelFilter) -> Result<(), String> {
    match target {
        LogTarget::Stderr => {
            let journal = std::env::var_os("JOURNAL_STREAM").is_some();
            log::set_boxed_logger(Box::new(StderrLogger { journal })).map_err(|e| e.to_string())?;
        }
        LogTarget::Syslog => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "bci2tokend".into(),
                pid: std::process::id(),
            };
            let logger = syslog::unix(formatter).map_err(|e| format!("cannot connect to syslog: {e}"))?;
            log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).map_err(|e| e.to_string())?;
        }
    }
    log::set_max_level(level);
    Ok(())
}

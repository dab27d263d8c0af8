//! Log records go to the journal through its native protocol when the daemon runs under systemd
//! (stderr is the journal, or `log_target = "journal"`), with fields: `PRIORITY`, and the
//! record's key-values in upper case: `SESSION_ID`, `DRIVER`, `MODEL` where a record is about a
//! session, `CALLER_UID` where it is about a request. Elsewhere records go to stderr without
//! timestamps (the key-values are in the message's words already), or to syslog.

use std::io::Write;

use crate::config::LogTarget;

struct StderrLogger;

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
        let _ = writeln!(err, "{}: {}", record.level().as_str().to_ascii_lowercase(), record.args());
    }

    fn flush(&self) {}
}

/// Installs the process-wide logger. Called once; the level can change later with
/// `log::set_max_level` (SIGHUP), the target cannot. Returns where records go, for the log.
pub fn init(target: LogTarget, level: log::LevelFilter) -> Result<&'static str, String> {
    let journal = match target {
        LogTarget::Journal => true,
        LogTarget::Stderr => systemd_journal_logger::connected_to_journal(),
        LogTarget::Syslog => false,
    };
    let to = if journal {
        systemd_journal_logger::JournalLog::new()
            .map_err(|e| format!("cannot connect to the journal: {e}"))?
            .with_syslog_identifier("bci2tokend".to_string())
            .install()
            .map_err(|e| e.to_string())?;
        "the journal"
    } else if target == LogTarget::Syslog {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "bci2tokend".into(),
            pid: std::process::id(),
        };
        let logger = syslog::unix(formatter).map_err(|e| format!("cannot connect to syslog: {e}"))?;
        log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).map_err(|e| e.to_string())?;
        "syslog"
    } else {
        log::set_boxed_logger(Box::new(StderrLogger)).map_err(|e| e.to_string())?;
        "stderr"
    };
    log::set_max_level(level);
    Ok(to)
}

/// What a session's records are about: the journal fields `SESSION_ID`, `DRIVER` and `MODEL`.
#[derive(Debug, Clone, Default)]
pub struct SessionTag {
    pub id: String,
    pub driver: String,
    /// "" without a model.
    pub model: String,
}

impl SessionTag {
    /// A record `session ID: …` with the session's fields.
    pub fn log(&self, level: log::Level, args: std::fmt::Arguments<'_>) {
        log::log!(
            level,
            session_id = self.id.as_str(),
            driver = self.driver.as_str(),
            model = self.model.as_str();
            "session {}: {args}",
            self.id
        );
    }
}

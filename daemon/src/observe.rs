//! One look at the daemon, taken for `health` and for the metrics: its live sessions, its store,
//! its stuck threads. The verdict of `health` is made here, from that look only.

use bci2token_api::observe::{Finding, HealthReport, SessionHealth, Severity, StoreHealth, Verdict};
use bci2token_api::{BreakerState, SessionInfo, SessionState};

/// A live session as seen at one moment.
pub struct SessionLook {
    pub info: SessionInfo,
    /// Frames per second over the last 10 s.
    pub measured_rate: Option<f64>,
    pub gaps_last_minute: u64,
    pub tokens: u64,
    /// The session's store writes waiting, and the most it may have.
    pub store_queue: (usize, usize),
}

/// The store as seen at one moment.
pub struct StoreLook {
    pub free_bytes: u64,
    pub size_bytes: u64,
    /// From the store itself; `None` when the writer could not answer.
    pub facts: Option<bci2token_store::StoreFacts>,
    pub epsilon_budget: f64,
    /// Why the facts are missing.
    pub error: Option<String>,
}

pub struct Look {
    pub sessions: Vec<SessionLook>,
    /// Sessions by state, including those that ended and are still listed.
    pub states: Vec<(SessionState, usize)>,
    pub store: StoreLook,
    /// Threads that made no progress for too long (`status`'s `stuck`).
    pub stuck: Vec<String>,
    pub uptime_seconds: f64,
    /// Refusals so far, by what was refused.
    pub refusals: Vec<(String, u64)>,
}

/// A measured rate this far below the nominal one is a device falling behind.
const RATE_SHORTFALL: f64 = 0.9;
/// Less free space than this on the store's file system is a warning; a twentieth of it, failing.
const LOW_DISK_BYTES: u64 = 1 << 30;

impl Look {
    /// The `health` report for a caller who may see the sessions `visible` says (the rest are
    /// counted only).
    pub fn health(&self, visible: &dyn Fn(&SessionInfo) -> bool) -> HealthReport {
        let mut findings = Vec::new();
        let mut sessions = Vec::new();
        let mut other_sessions = 0;
        for s in &self.sessions {
            let mine = visible(&s.info);
            let subject = if mine { format!("session {}", s.info.id) } else { "another user's session".to_string() };
            session_findings(s, &subject, &mut findings);
            if !mine {
                other_sessions += 1;
                continue;
            }
            sessions.push(SessionHealth {
                id: s.info.id.clone(),
                driver: s.info.driver.clone(),
                model: s.info.model.clone(),
                state: s.info.state,
                connected: s.info.state == SessionState::Running,
                sample_rate: s.info.sample_rate,
                measured_rate: s.measured_rate,
                gaps_last_minute: s.gaps_last_minute,
                quality: s.info.quality.clone(),
                decoder: s.info.decoder.clone(),
            });
        }
        let store = &self.store;
        if store.free_bytes < LOW_DISK_BYTES / 20 {
            findings.push(finding(Severity::Critical, "store", format!("{} MiB free", store.free_bytes >> 20)));
        } else if store.free_bytes < LOW_DISK_BYTES {
            findings.push(finding(Severity::Warning, "store", format!("{} MiB free", store.free_bytes >> 20)));
        }
        if let Some(e) = &store.error {
            findings.push(finding(Severity::Critical, "store", format!("the store did not answer: {e}")));
        }
        let facts = store.facts.as_ref();
        match facts.and_then(|f| f.last_backup) {
            None => findings.push(finding(Severity::Info, "store", "no backup recorded in the audit log".into())),
            Some(t) => {
                let age = crate::wall_clock::wall_now() - t;
                if age > 2.0 * 86_400.0 {
                    findings.push(finding(
                        Severity::Warning,
                        "store",
                        format!("the last backup is {:.1} days old", age / 86_400.0),
                    ));
                }
            }
        }
        if let Some(f) = facts {
            if f.max_epsilon_spent >= 0.9 * store.epsilon_budget {
                findings.push(finding(
                    Severity::Warning,
                    "privacy budget",
                    format!("a subject has spent ε {:.3} of {:.3}", f.max_epsilon_spent, store.epsilon_budget),
                ));
            }
        }
        for s in &self.stuck {
            findings.push(finding(Severity::Critical, "daemon", format!("thread {s}")));
        }
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let verdict = match findings.first().map(|f| f.severity) {
            Some(Severity::Critical) => Verdict::Failing,
            Some(Severity::Warning) => Verdict::Degraded,
            _ => Verdict::Ok,
        };
        let (seq, mac) = match facts.and_then(|f| f.audit_head.as_ref()) {
            Some((seq, mac)) => (Some(*seq), Some(mac.iter().take(8).map(|b| format!("{b:02x}")).collect())),
            None => (None, None),
        };
        HealthReport {
            verdict,
            findings,
            sessions,
            other_sessions,
            store: StoreHealth {
                queue: self.sessions.iter().map(|s| s.store_queue.0).sum(),
                free_bytes: store.free_bytes,
                size_bytes: store.size_bytes,
                last_backup: facts.and_then(|f| f.last_backup),
                audit_head_seq: seq,
                audit_head_mac: mac,
            },
            uptime_seconds: self.uptime_seconds,
        }
    }
}

fn finding(severity: Severity, subject: &str, message: String) -> Finding {
    Finding { severity, subject: subject.to_string(), message }
}

/// What one live session says about the daemon's health.
fn session_findings(s: &SessionLook, subject: &str, out: &mut Vec<Finding>) {
    let info = &s.info;
    let mut add = |severity, message: String| out.push(finding(severity, subject, message));
    if info.state == SessionState::Reconnecting {
        let why = info.message.as_deref().unwrap_or("no reason given");
        add(Severity::Critical, format!("device disconnected ({why}); the driver is reconnecting"));
    }
    if let Some(e) = &info.recording_error {
        add(Severity::Critical, format!("recording stopped: {e}"));
    }
    if let Some(d) = &info.decoder {
        match d.breaker {
            BreakerState::Closed => {}
            state => add(
                Severity::Critical,
                format!("decoder breaker {} after {} failure(s) in a row", state.as_str(), d.consecutive_failures),
            ),
        }
    }
    if let Some(q) = &info.quality {
        let bad = q.bad_channels();
        if !bad.is_empty() {
            add(Severity::Warning, format!("bad electrodes: {}", bad.join("; ")));
        }
    }
    if let Some(rate) = s.measured_rate {
        if info.state == SessionState::Running && rate < RATE_SHORTFALL * info.sample_rate {
            add(Severity::Warning, format!("{rate:.1} samples/s measured, {} nominal", info.sample_rate));
        }
    }
    if s.gaps_last_minute > 0 {
        add(Severity::Warning, format!("{} gap(s) in the last minute", s.gaps_last_minute));
    }
}

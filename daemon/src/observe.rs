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
    /// The database and its write-ahead log.
    pub size_bytes: u64,
    pub wal_bytes: u64,
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
/// A write-ahead log larger than this has not been checkpointed for long: readers hold it.
const LARGE_WAL_BYTES: u64 = 512 << 20;

impl Look {
    /// The `health` report for a caller who may see the sessions `visible` says: of the others
    /// only the count and what is wrong, in general words (no reason, label or path of theirs).
    /// The audit chain's head is an admin's to see.
    pub fn health(&self, visible: &dyn Fn(&SessionInfo) -> bool, admin: bool) -> HealthReport {
        let mut findings = Vec::new();
        let mut sessions = Vec::new();
        let mut other_sessions = 0;
        for s in &self.sessions {
            let mine = visible(&s.info);
            if mine {
                session_findings(s, &format!("session {}", s.info.id), &mut findings);
            } else {
                let mut theirs = Vec::new();
                session_problems(s, &mut theirs);
                findings.extend(theirs.into_iter().map(|f| Finding {
                    severity: f.severity,
                    subject: "another user's session".into(),
                    message: f.kind.to_string(),
                }));
            }
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
        if store.wal_bytes > LARGE_WAL_BYTES {
            findings.push(finding(
                Severity::Warning,
                "store",
                format!(
                    "the write-ahead log is {} MiB: long exports or backups keep it from being checkpointed",
                    store.wal_bytes >> 20
                ),
            ));
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
        let (seq, mac) = match facts.and_then(|f| f.audit_head.as_ref()).filter(|_| admin) {
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
                wal_bytes: store.wal_bytes,
                last_checkpoint: facts.and_then(|f| f.last_checkpoint),
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

/// A finding about a session, and what it is in general words (for other users' sessions).
struct SessionFinding {
    severity: Severity,
    kind: &'static str,
    message: String,
}

/// What one live session says about the daemon's health.
fn session_findings(s: &SessionLook, subject: &str, out: &mut Vec<Finding>) {
    let mut found = Vec::new();
    session_problems(s, &mut found);
    out.extend(found.into_iter().map(|f| Finding {
        severity: f.severity,
        subject: subject.to_string(),
        message: f.message,
    }));
}

fn session_problems(s: &SessionLook, out: &mut Vec<SessionFinding>) {
    let info = &s.info;
    let mut add = |severity, kind, message: String| out.push(SessionFinding { severity, kind, message });
    if info.state == SessionState::Reconnecting {
        let why = info.message.as_deref().unwrap_or("no reason given");
        add(
            Severity::Critical,
            "device disconnected",
            format!("device disconnected ({why}); the driver is reconnecting"),
        );
    }
    if let Some(e) = &info.recording_error {
        add(Severity::Critical, "recording stopped", format!("recording stopped: {e}"));
    }
    if let Some(d) = &info.decoder {
        match d.breaker {
            BreakerState::Closed => {}
            state => add(
                Severity::Critical,
                "decoder breaker open",
                format!("decoder breaker {} after {} failure(s) in a row", state.as_str(), d.consecutive_failures),
            ),
        }
    }
    if let Some(q) = &info.quality {
        let bad = q.bad_channels();
        if !bad.is_empty() {
            add(Severity::Warning, "bad electrodes", format!("bad electrodes: {}", bad.join("; ")));
        }
    }
    if let Some(rate) = s.measured_rate {
        if info.state == SessionState::Running && rate < RATE_SHORTFALL * info.sample_rate {
            add(
                Severity::Warning,
                "rate below nominal",
                format!("{rate:.1} samples/s measured, {} nominal", info.sample_rate),
            );
        }
    }
    if s.gaps_last_minute > 0 {
        add(Severity::Warning, "gaps", format!("{} gap(s) in the last minute", s.gaps_last_minute));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(state: &str, message: &str) -> Look {
        let info: SessionInfo = serde_json::from_value(serde_json::json!({
            "id": "0a1b2c3d4e5f", "driver": "openbci", "config": {}, "model": null, "state": state,
            "message": message, "description": "", "channels": [], "sample_rate": 250.0, "created": 0.0,
            "started_by": {"uid": 1001, "gid": 1001, "pid": null}, "blocks": 0, "frames": 0, "gaps": 0,
            "annotations": 0, "events_dropped": 0, "subscribers": 0
        }))
        .unwrap();
        Look {
            sessions: vec![SessionLook {
                info,
                measured_rate: None,
                gaps_last_minute: 0,
                tokens: 0,
                store_queue: (0, 0),
            }],
            states: vec![],
            store: StoreLook {
                free_bytes: 100 << 30,
                size_bytes: 0,
                wal_bytes: 0,
                facts: Some(bci2token_store::StoreFacts {
                    audit_head: Some((7, vec![0xab; 32])),
                    last_backup: None,
                    max_epsilon_spent: 0.0,
                    last_checkpoint: None,
                }),
                epsilon_budget: 10.0,
                error: None,
            },
            stuck: vec![],
            uptime_seconds: 1.0,
            refusals: vec![],
        }
    }

    #[test]
    fn a_disconnected_device_fails_health_and_others_see_only_that_it_is() {
        let l = look("reconnecting", "no data from /dev/ttyUSB7 of carol");
        let mine = l.health(&|_| true, true);
        assert_eq!(mine.verdict, Verdict::Failing);
        assert!(mine.findings[0].message.contains("/dev/ttyUSB7"), "{:?}", mine.findings);
        assert_eq!(mine.sessions.len(), 1);
        assert!(!mine.sessions[0].connected);
        assert_eq!(mine.store.audit_head_seq, Some(7));
        // Someone else: failing too, but no session, no reason, no audit head.
        let theirs = l.health(&|_| false, false);
        assert_eq!(theirs.verdict, Verdict::Failing);
        assert_eq!((theirs.sessions.len(), theirs.other_sessions), (0, 1));
        assert_eq!(theirs.findings[0].subject, "another user's session");
        assert_eq!(theirs.findings[0].message, "device disconnected");
        let text = serde_json::to_string(&theirs).unwrap();
        assert!(!text.contains("ttyUSB7") && !text.contains("0a1b2c3d4e5f"), "{text}");
        assert_eq!((theirs.store.audit_head_seq, theirs.store.audit_head_mac), (None, None));
    }

    #[test]
    fn a_running_session_without_problems_is_ok_and_no_backup_is_only_said() {
        let l = look("running", "");
        let h = l.health(&|_| true, false);
        assert_eq!(h.verdict, Verdict::Ok, "{:?}", h.findings);
        assert_eq!(h.findings.len(), 1);
        assert_eq!(h.findings[0].severity, Severity::Info);
    }
}

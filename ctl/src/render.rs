//! Human-readable rendering of replies and events. Pure functions returning strings, so they are
//! easy to test; no colors.

use bci2token_api::{
    AuditEntryInfo, AuditVerification, ConfigMap, DeviceList, DriverList, Event, ModelList, SessionInfo, StatusInfo,
};

use crate::table::{key_values, Align, Table};

use bci2token_api::event::block_flags;

/// At most this many channels and values per channel are shown for `--samples` in human mode.
pub const SHOW_CHANNELS: usize = 8;
pub const SHOW_VALUES: usize = 5;

/// A number with about four significant digits, without exponent for the usual µV range.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// `250 Hz`, `0.5 Hz`, `44.1 kHz` is not attempted: always Hz.
pub fn fmt_rate(hz: f64) -> String {
    if hz.fract() == 0.0 && hz.abs() < 1e12 {
        format!("{} Hz", hz as i64)
    } else {
        format!("{} Hz", fmt_num(hz))
    }
}

/// `3h 2m 5s`, `42s`, `1d 2h 0m 3s`; fractions are dropped.
pub fn fmt_duration(secs: f64) -> String {
    let mut s = if secs.is_finite() && secs > 0.0 { secs as u64 } else { 0 };
    let d = s / 86_400;
    s %= 86_400;
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `3m ago`, `2h ago`, `5d ago`, `just now` (also for times slightly in the future).
pub fn fmt_age(now: f64, then: f64) -> String {
    let age = now - then;
    if !age.is_finite() || age < 1.0 {
        return "just now".into();
    }
    let s = age as u64;
    if s < 60 {
        format!("{s}s ago")
    } else if s < 3600 {
        format!("{}m ago", s / 60)
    } else if s < 86_400 {
        format!("{}h ago", s / 3600)
    } else {
        format!("{}d ago", s / 86_400)
    }
}

/// `2026-05-01 12:34:56 UTC` from Unix seconds.
pub fn fmt_utc(unix: f64) -> String {
    if !unix.is_finite() {
        return "?".into();
    }
    let c = bci2token_api::time::civil(unix.floor() as i64);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

pub fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `key=value` pairs as `--set` would take them (strings bare, anything else as JSON).
pub fn fmt_config(config: &ConfigMap) -> String {
    config
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn fmt_flags(flags: u32) -> String {
    let mut names = Vec::new();
    let mut rest = flags;
    for (bit, name) in
        [(block_flags::GAP, "gap"), (block_flags::SATURATED, "saturated"), (block_flags::RECONNECTED, "reconnected")]
    {
        if flags & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join(",")
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}

pub fn status(s: &StatusInfo) -> String {
    key_values(&[
        ("Version", format!("{} (protocol {})", s.version, s.protocol)),
        ("Mode", s.mode.clone()),
        ("PID", s.pid.to_string()),
        ("Uptime", fmt_duration(s.uptime_seconds)),
        ("Sessions", format!("{} active, {} total, at most {}", s.sessions_active, s.sessions_total, s.max_sessions)),
        ("Drivers", s.drivers.to_string()),
        ("Data dir", s.data_dir.clone()),
        ("Socket", s.socket.clone()),
        ("Your role", s.caller_role.clone()),
        ("Stuck", if s.stuck.is_empty() { "-".into() } else { s.stuck.join("; ") }),
    ])
}

/// Text from elsewhere (a driver's reason, a path) as it may go to a terminal: no control
/// characters (an escape sequence could rewrite what the reader sees).
fn shown(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

pub fn health(h: &bci2token_api::HealthReport) -> String {
    use bci2token_api::observe::Severity;
    let verdict = match h.verdict {
        bci2token_api::Verdict::Ok => "ok",
        bci2token_api::Verdict::Degraded => "DEGRADED",
        bci2token_api::Verdict::Failing => "FAILING",
    };
    let mut out = key_values(&[
        ("Health", verdict.to_string()),
        ("Uptime", fmt_duration(h.uptime_seconds)),
        (
            "Store",
            format!(
                "{} MiB (write-ahead log {} MiB), {} MiB free, {} write(s) queued",
                h.store.size_bytes >> 20,
                h.store.wal_bytes >> 20,
                h.store.free_bytes >> 20,
                h.store.queue
            ),
        ),
        (
            "Last checkpoint",
            match h.store.last_checkpoint {
                Some(t) => format!("{} ago", fmt_duration(now_unix() - t)),
                None => "-".into(),
            },
        ),
        (
            "Last backup",
            match h.store.last_backup {
                Some(t) => format!("{} ago", fmt_duration(now_unix() - t)),
                None => "never".into(),
            },
        ),
        (
            "Audit head",
            match (&h.store.audit_head_seq, &h.store.audit_head_mac) {
                (Some(seq), Some(mac)) => format!("entry {seq}, mac {mac}…"),
                _ => "empty".into(),
            },
        ),
        ("Other sessions", h.other_sessions.to_string()),
    ]);
    if !h.sessions.is_empty() {
        out.push('\n');
        let mut t = Table::new(&[
            ("SESSION", Align::Left),
            ("STATE", Align::Left),
            ("RATE Hz", Align::Right),
            ("GAPS/MIN", Align::Right),
            ("QUALITY", Align::Right),
            ("BREAKER", Align::Left),
            ("QUEUE", Align::Right),
            ("P50/P99 ms", Align::Right),
        ]);
        for s in &h.sessions {
            let rate = match s.measured_rate {
                Some(r) => format!("{r:.1}/{}", fmt_num(s.sample_rate)),
                None => format!("-/{}", fmt_num(s.sample_rate)),
            };
            let quality = s.quality.as_ref().map_or("-".into(), |q| format!("{:.0}%", q.score * 100.0));
            let (breaker, queue, latency) = match &s.decoder {
                Some(d) => (
                    d.breaker.as_str().to_string(),
                    format!("{}/{}", d.queue, d.queue_capacity),
                    match (d.latency_p50_ms, d.latency_p99_ms) {
                        (Some(a), Some(b)) => format!("{a:.1}/{b:.1}"),
                        _ => "-".into(),
                    },
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            t.row(vec![
                s.id.clone(),
                s.state.as_str().to_string(),
                rate,
                s.gaps_last_minute.to_string(),
                quality,
                breaker,
                queue,
                latency,
            ]);
        }
        out.push_str(&t.render());
    }
    if !h.findings.is_empty() {
        out.push('\n');
        for f in &h.findings {
            let level = match f.severity {
                Severity::Critical => "critical",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            out.push_str(&format!("{level}: {}: {}\n", shown(&f.subject), shown(&f.message)));
        }
    }
    out
}

pub fn drivers(d: &DriverList) -> String {
    let mut out = String::new();
    if d.drivers.is_empty() {
        out.push_str("No drivers loaded.\n");
    } else {
        let mut t =
            Table::new(&[("NAME", Align::Left), ("VERSION", Align::Left), ("ABI", Align::Left), ("FILE", Align::Left)]);
        for drv in &d.drivers {
            t.row(vec![drv.name.clone(), drv.version.clone(), drv.abi.clone(), drv.file.clone()]);
        }
        out.push_str(&t.render());
    }
    if !d.failed.is_empty() {
        out.push_str(&format!("\n{} file(s) failed to load:\n", d.failed.len()));
        let mut t = Table::new(&[("FILE", Align::Left), ("ERROR", Align::Left)]).indent(2);
        for f in &d.failed {
            t.row(vec![f.file.clone(), f.error.clone()]);
        }
        out.push_str(&t.render());
    }
    out
}

/// What `model train` made, and how well it cross-validated.
pub fn trained(t: &bci2token_api::Trained) -> String {
    let trials: Vec<String> = t.trials.iter().map(|(label, n)| format!("{n} {label}")).collect();
    let mut out = format!(
        "Trained model `{}` ({}) on {} trial(s) ({}), {} window(s).\n\
         Cross-validated window accuracy {:.3} ({} folds of whole trials), ITR {:.1} bits/min at one decision a {} s window.\n\
         Use it with --model {}.\n",
        t.model.name,
        t.method,
        t.trials.iter().map(|(_, n)| n).sum::<usize>(),
        trials.join(", "),
        t.windows,
        t.cv_accuracy,
        t.cv_folds,
        t.itr_bits_per_minute,
        t.model.window_seconds,
        t.model.name
    );
    for note in &t.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

pub fn models(m: &ModelList) -> String {
    let mut out = String::new();
    if m.models.is_empty() {
        out.push_str("No models found.\n");
    } else {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("OWNER", Align::Left),
            ("VERSION", Align::Left),
            ("CHANNELS", Align::Right),
            ("RATE", Align::Right),
            ("WINDOW", Align::Right),
            ("LABELS", Align::Right),
            ("TOKENIZER", Align::Left),
            ("DIR", Align::Left),
        ]);
        for model in &m.models {
            t.row(vec![
                model.name.clone(),
                model.owner.map_or_else(|| "shared".to_string(), |uid| format!("uid {uid}")),
                model.version.clone(),
                model.channels.len().to_string(),
                format!("{} Hz", fmt_num(model.sample_rate)),
                format!("{} s", fmt_num(model.window_seconds)),
                model.labels.len().to_string(),
                model.tokenizer.clone(),
                model.dir.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if !m.errors.is_empty() {
        out.push_str(&format!("\n{} package(s) could not be read:\n", m.errors.len()));
        let mut t = Table::new(&[("DIR", Align::Left), ("ERROR", Align::Left)]).indent(2);
        for f in &m.errors {
            t.row(vec![f.file.clone(), f.error.clone()]);
        }
        out.push_str(&t.render());
    }
    out
}

pub fn devices(d: &DeviceList) -> String {
    let mut out = String::new();
    if d.devices.is_empty() {
        out.push_str("No devices found.\n");
    } else {
        let mut t = Table::new(&[
            ("DRIVER", Align::Left),
            ("ID", Align::Left),
            ("DESCRIPTION", Align::Left),
            ("CONFIG", Align::Left),
        ]);
        for dev in &d.devices {
            t.row(vec![
                dev.driver.clone(),
                dev.id.clone(),
                or_dash(&dev.description),
                or_dash(&fmt_config(&dev.config)),
            ]);
        }
        out.push_str(&t.render());
    }
    if !d.errors.is_empty() {
        out.push_str(&format!("\n{} driver(s) could not probe for devices:\n", d.errors.len()));
        let mut t = Table::new(&[("DRIVER", Align::Left), ("ERROR", Align::Left)]).indent(2);
        for f in &d.errors {
            t.row(vec![f.file.clone(), f.error.clone()]);
        }
        out.push_str(&t.render());
    }
    out
}

pub fn session_list(sessions: &[SessionInfo], now: f64) -> String {
    if sessions.is_empty() {
        return "No sessions.\n".into();
    }
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("DRIVER", Align::Left),
        ("STATE", Align::Left),
        ("CHANNELS", Align::Right),
        ("RATE", Align::Right),
        ("FRAMES", Align::Right),
        ("CREATED", Align::Left),
    ]);
    for s in sessions {
        t.row(vec![
            s.id.clone(),
            s.driver.clone(),
            s.state.as_str().into(),
            s.channels.len().to_string(),
            fmt_rate(s.sample_rate),
            s.frames.to_string(),
            fmt_age(now, s.created),
        ]);
    }
    let n = sessions.len();
    format!("{}\n{n} session{} listed.\n", t.render(), if n == 1 { "" } else { "s" })
}

/// The audit log as a table.
pub fn audit_list(entries: &[AuditEntryInfo]) -> String {
    if entries.is_empty() {
        return "No audit entries.\n".into();
    }
    let mut t = Table::new(&[
        ("SEQ", Align::Right),
        ("TIME", Align::Left),
        ("UID", Align::Right),
        ("PID", Align::Right),
        ("ACTION", Align::Left),
        ("OBJECT", Align::Left),
        ("OUTCOME", Align::Left),
    ]);
    for e in entries {
        t.row(vec![
            e.seq.to_string(),
            fmt_utc(e.t),
            e.uid.to_string(),
            e.pid.map_or("-".into(), |p| p.to_string()),
            e.action.clone(),
            if e.object.is_empty() { "-".into() } else { e.object.clone() },
            e.outcome.clone(),
        ]);
    }
    format!("{}\n{} entr{} listed.\n", t.render(), entries.len(), if entries.len() == 1 { "y" } else { "ies" })
}

pub fn audit_verification(v: &AuditVerification) -> String {
    match &v.problem {
        None => format!("The audit log is intact: {} entries, every MAC chained to the one before.\n", v.entries),
        Some(p) => format!("The audit log is BROKEN ({} entries): {p}\n", v.entries),
    }
}

pub fn session_show(s: &SessionInfo, now: f64) -> String {
    let state = match &s.message {
        Some(m) if !m.is_empty() => format!("{} ({m})", s.state.as_str()),
        _ => s.state.as_str().into(),
    };
    let recorded = if s.sample_rate > 0.0 {
        format!("{} ({})", s.frames, fmt_duration(s.frames as f64 / s.sample_rate))
    } else {
        s.frames.to_string()
    };
    let started_by = match s.started_by.pid {
        Some(pid) => format!("uid {} gid {} (pid {pid})", s.started_by.uid, s.started_by.gid),
        None => format!("uid {} gid {}", s.started_by.uid, s.started_by.gid),
    };
    let mut out = key_values(&[
        ("ID", s.id.clone()),
        ("Driver", s.driver.clone()),
        ("Description", or_dash(&s.description)),
        ("State", state),
        ("Model", s.model.clone().unwrap_or_else(|| "-".into())),
        ("Config", or_dash(&fmt_config(&s.config))),
        ("Channels", format!("{} @ {}", s.channels.len(), fmt_rate(s.sample_rate))),
        ("Created", format!("{} ({})", fmt_utc(s.created), fmt_age(now, s.created))),
        ("Started by", started_by),
        ("Blocks", s.blocks.to_string()),
        ("Frames", recorded),
        ("Gaps", s.gaps.to_string()),
        ("Annotations", s.annotations.to_string()),
        ("Events dropped", s.events_dropped.to_string()),
        ("Windows dropped", s.windows_dropped.to_string()),
        ("Recording", s.recording_error.clone().unwrap_or_else(|| format!("{} blocks stored", s.stored_blocks))),
        ("Subscribers", s.subscribers.to_string()),
        (
            "Quality",
            s.quality.as_ref().map_or("-".into(), |q| {
                let bad = q.bad_channels();
                let good = q.channels.len() - bad.len();
                format!("{:.0}% ({good}/{} channels good at t={:.1} s)", q.score * 100.0, q.channels.len(), q.t)
            }),
        ),
        (
            "Decoder",
            s.decoder.as_ref().map_or("-".into(), |d| {
                let latency = match (d.latency_p50_ms, d.latency_p99_ms) {
                    (Some(a), Some(b)) => format!(", latency p50 {a:.1} ms p99 {b:.1} ms"),
                    _ => String::new(),
                };
                format!(
                    "breaker {}, {} window(s) decoded, {} failed, queue {}/{}{latency}",
                    d.breaker.as_str(),
                    d.windows_decoded,
                    d.failures,
                    d.queue,
                    d.queue_capacity
                )
            }),
        ),
    ]);
    if !s.channels.is_empty() {
        out.push_str("\nChannels:\n");
        let mut t =
            Table::new(&[("#", Align::Right), ("LABEL", Align::Left), ("UNIT", Align::Left), ("QUALITY", Align::Left)])
                .indent(2);
        for (i, c) in s.channels.iter().enumerate() {
            // The quality's channels are the session's, in order.
            let quality = s.quality.as_ref().and_then(|q| q.channels.get(i)).map_or("-".to_string(), |q| {
                if q.flags.is_empty() {
                    "ok".into()
                } else {
                    q.flags.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
                }
            });
            t.row(vec![i.to_string(), c.label.clone(), c.unit.clone(), quality]);
        }
        out.push_str(&t.render());
    }
    out
}

/// What the event renderer knows about the session (from the initial reply).
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub labels: Vec<String>,
}

impl EventContext {
    pub fn from_session(s: Option<&SessionInfo>) -> Self {
        EventContext { labels: s.map(|s| s.channels.iter().map(|c| c.label.clone()).collect()).unwrap_or_default() }
    }

    fn label(&self, ch: usize) -> String {
        self.labels.get(ch).cloned().unwrap_or_else(|| format!("ch{ch}"))
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// One event as text: one line, plus indented detail lines for sample values and stats.
pub fn event(ev: &Event, ctx: &EventContext) -> String {
    match ev {
        Event::Samples { seq, t, frames, flags, data, .. } => {
            let mut out = format!("seq {seq}  t={t:.3}s  {frames} frames");
            if *flags != 0 {
                out.push_str(&format!("  [{}]", fmt_flags(*flags)));
            }
            out.push('\n');
            if data.channels > 0 && data.frames > 0 {
                let shown = data.channels.min(SHOW_CHANNELS);
                let labels: Vec<String> = (0..shown).map(|c| ctx.label(c)).collect();
                let w = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
                for (c, label) in labels.iter().enumerate() {
                    let vals = data.channel(c);
                    let mut line = format!("  {label:<w$}");
                    for v in vals.iter().take(SHOW_VALUES) {
                        line.push_str(&format!("  {:>8}", fmt_num(f64::from(*v))));
                    }
                    if vals.len() > SHOW_VALUES {
                        line.push_str(&format!("  … ({} values)", vals.len()));
                    }
                    out.push_str(&line);
                    out.push('\n');
                }
                if data.channels > shown {
                    out.push_str(&format!("  … {} more channels\n", data.channels - shown));
                }
            }
            out
        }
        Event::Annotation { onset, duration, text, .. } => match duration {
            Some(d) => format!("t={onset:.3}s  annotation {} ({} s)\n", quoted(text), fmt_num(*d)),
            None => format!("t={onset:.3}s  annotation {}\n", quoted(text)),
        },
        Event::Gap { t, seconds, lost_samples, .. } => match lost_samples {
            Some(n) => format!("t={t:.3}s  gap of {} s ({n} samples lost)\n", fmt_num(*seconds)),
            None => format!("t={t:.3}s  gap of {} s\n", fmt_num(*seconds)),
        },
        Event::State { state, message, .. } => match message {
            Some(m) if !m.is_empty() => format!("state {}: {m}\n", state.as_str()),
            _ => format!("state {}\n", state.as_str()),
        },
        Event::Stats { t, window, channels, .. } => {
            if channels.len() > STATS_TABLE_MAX_CHANNELS {
                return stats_summary(*t, *window, channels);
            }
            let mut out = format!("t={t:.3}s  stats over {} s\n", fmt_num(*window));
            let mut table = Table::new(&[
                ("LABEL", Align::Left),
                ("MEAN µV", Align::Right),
                ("RMS µV", Align::Right),
                ("LINE NOISE µV²", Align::Right),
            ])
            .indent(2);
            for c in channels {
                table.row(vec![c.label.clone(), fmt_num(c.mean), fmt_num(c.rms), fmt_num(c.line_noise)]);
            }
            out.push_str(&table.render());
            out
        }
        Event::Token { t, label, text, confidence, latency_us, .. } => format!(
            "t={t:.3}s  token {text:?}  ({label}, {:.0}%, {:.2} ms)\n",
            confidence * 100.0,
            *latency_us as f64 / 1000.0
        ),
        Event::DecoderError { t, message, .. } => format!("t={t:.3}s  decoder error: {message}\n"),
        Event::DecoderRestart { t, reason, .. } => {
            format!("t={t:.3}s  decoding restarted after an outage ({reason}): next token after a full window\n")
        }
        Event::RecordingStopped { message, .. } => format!("error: {message}\n"),
        Event::Warning { message, .. } => format!("warning: {message}\n"),
        Event::Lost { count, .. } => format!("lost {count} events (you are reading too slowly)\n"),
        Event::Quality { quality, .. } => {
            let bad = quality.bad_channels();
            let good = quality.channels.len() - bad.len();
            let mut out = format!(
                "t={:.3}s  quality {:.0}%: {good}/{} channels good",
                quality.t,
                quality.score * 100.0,
                quality.channels.len()
            );
            if !bad.is_empty() {
                out.push_str(&format!("; {}", bad.join("; ")));
            }
            out.push('\n');
            out
        }
        Event::Breaker { t, state, message, .. } => {
            format!("t={t:.3}s  decoder breaker {}: {message}\n", state.as_str())
        }
    }
}

/// Above this many channels a stats event is summarised on one line instead of a table
/// (`--json` always has every channel).
const STATS_TABLE_MAX_CHANNELS: usize = 8;

/// One line for a stats event of many channels: the median RMS with its extremes, and the
/// channel with the most mains noise.
fn stats_summary(t: f64, window: f64, channels: &[bci2token_api::ChannelStats]) -> String {
    let mut by_rms: Vec<&bci2token_api::ChannelStats> = channels.iter().collect();
    by_rms.sort_by(|a, b| a.rms.total_cmp(&b.rms));
    let (low, mid, high) = (by_rms[0], by_rms[by_rms.len() / 2], by_rms[by_rms.len() - 1]);
    let noisiest = channels.iter().max_by(|a, b| a.line_noise.total_cmp(&b.line_noise)).unwrap_or(low);
    format!(
        "t={t:.3}s  stats over {} s, {} channels: RMS median {} µV (lowest {} {}, highest {} {}); most line noise {} µV² on {}\n",
        fmt_num(window),
        channels.len(),
        fmt_num(mid.rms),
        fmt_num(low.rms),
        low.label,
        fmt_num(high.rms),
        high.label,
        fmt_num(noisiest.line_noise),
        noisiest.label
    )
}

/// A line for an event type this ctl does not know (a newer daemon).
pub fn unknown_event(kind: &str) -> String {
    format!("({kind} event)\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bci2token_api::{
        Caller, ChannelDesc, ChannelMajor, ChannelStats, DeviceEntry, DriverInfo, PluginFailure, SessionState,
    };

    fn session() -> SessionInfo {
        SessionInfo {
            id: "s-1".into(),
            driver: "synthetic".into(),
            config: serde_json::from_str(r#"{"seed":"7","script":[{"label":"13Hz"}]}"#).unwrap(),
            model: None,
            state: SessionState::Running,
            message: None,
            description: "synthetic board".into(),
            channels: vec![
                ChannelDesc { label: "Fp1".into(), unit: "µV".into() },
                ChannelDesc { label: "Fp2".into(), unit: "µV".into() },
            ],
            sample_rate: 250.0,
            created: 1_000_000.0,
            started_by: Caller { uid: 1000, gid: 1000, pid: Some(42), groups: vec![], admin_by_polkit: false },
            blocks: 10,
            quality: None,
            decoder: None,
            frames: 1500,
            gaps: 0,
            annotations: 2,
            events_dropped: 0,
            subscribers: 1,
            stored_blocks: 10,
            stored_events: 3,
            store_dropped: 0,
            recording_error: None,
            windows_dropped: 0,
            subject: None,
        }
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(fmt_num(12.3456), "12.35");
        assert_eq!(fmt_num(-0.5), "-0.5000");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(1e-5), "1.00e-5");
        assert_eq!(fmt_rate(250.0), "250 Hz");
        assert_eq!(fmt_rate(0.5), "0.5000 Hz");
        assert_eq!(fmt_duration(3725.9), "1h 2m 5s");
        assert_eq!(fmt_duration(42.0), "42s");
        assert_eq!(fmt_age(1000.0, 820.0), "3m ago");
        assert_eq!(fmt_age(1000.0, 999.5), "just now");
        assert_eq!(fmt_age(100_000.0, 0.0), "1d ago");
        assert_eq!(fmt_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(1_709_251_199.5), "2024-02-29 23:59:59 UTC");
        assert_eq!(fmt_flags(0), "");
        assert_eq!(fmt_flags(3), "gap,saturated");
        assert_eq!(fmt_flags(4 | 16), "reconnected,0x10");
    }

    #[test]
    fn status_is_key_values() {
        let s = StatusInfo {
            version: "0.1.0".into(),
            protocol: 1,
            mode: "user".into(),
            pid: 7,
            uptime_seconds: 65.0,
            sessions_active: 1,
            sessions_total: 3,
            max_sessions: 8,
            drivers: 2,
            data_dir: "/d".into(),
            socket: "/s".into(),
            caller_role: "admin".into(),
            stuck: vec!["decoder: no progress for 20.0 s".into()],
        };
        let out = status(&s);
        assert!(out.contains("    Stuck: decoder: no progress for 20.0 s\n"), "{out}");
        assert!(out.contains("  Version: 0.1.0 (protocol 1)\n"), "{out}");
        assert!(out.contains(" Sessions: 1 active, 3 total, at most 8\n"), "{out}");
        assert!(out.contains("Your role: admin\n"), "{out}");
    }

    #[test]
    fn drivers_and_failures() {
        let d = DriverList {
            drivers: vec![DriverInfo {
                name: "synthetic".into(),
                version: "0.1.0".into(),
                abi: "1.0".into(),
                file: "/x/libs.so".into(),
            }],
            failed: vec![PluginFailure { file: "/x/libbad.so".into(), error: "ABI 2.0, expected 1.x".into() }],
        };
        assert_eq!(
            drivers(&d),
            "NAME       VERSION  ABI  FILE\n\
             synthetic  0.1.0    1.0  /x/libs.so\n\
             \n1 file(s) failed to load:\n  \
             FILE          ERROR\n  \
             /x/libbad.so  ABI 2.0, expected 1.x\n"
        );
        let empty = DriverList { drivers: vec![], failed: vec![] };
        assert_eq!(drivers(&empty), "No drivers loaded.\n");
    }

    #[test]
    fn devices_table() {
        let d = DeviceList {
            devices: vec![DeviceEntry {
                driver: "replay".into(),
                id: "a.edf".into(),
                description: "".into(),
                config: serde_json::from_str(r#"{"file":"/data/a.edf"}"#).unwrap(),
            }],
            errors: vec![],
        };
        assert_eq!(drivers_header(&devices(&d)), "DRIVER  ID     DESCRIPTION  CONFIG");
        assert!(devices(&d).contains("replay  a.edf  -            file=/data/a.edf\n"));
    }

    fn drivers_header(s: &str) -> &str {
        s.lines().next().unwrap()
    }

    #[test]
    fn session_table_and_show() {
        let list = session_list(&[session()], 1_000_180.0);
        assert_eq!(
            list,
            "ID   DRIVER     STATE    CHANNELS    RATE  FRAMES  CREATED\n\
             s-1  synthetic  running         2  250 Hz    1500  3m ago\n\
             \n1 session listed.\n"
        );
        assert_eq!(session_list(&[], 0.0), "No sessions.\n");
        let show = session_show(&session(), 1_000_180.0);
        assert!(show.contains("     Channels: 2 @ 250 Hz\n"), "{show}");
        // Key order follows serde_json's map (sorted unless its preserve_order feature is on).
        let config = show.lines().find(|l| l.contains("Config:")).unwrap();
        assert!(config.contains("seed=7") && config.contains(r#"script=[{"label":"13Hz"}]"#), "{show}");
        assert!(show.contains("       Frames: 1500 (6s)\n"), "{show}");
        assert!(
            show.contains("\nChannels:\n  #  LABEL  UNIT  QUALITY\n  0  Fp1    µV    -\n  1  Fp2    µV    -\n"),
            "{show}"
        );
        assert!(show.contains("      Quality: -\n") && show.contains("      Decoder: -\n"), "{show}");
        // With a quality and a decoder: the score, each channel's flags, the breaker.
        let mut s = session();
        s.quality = Some(bci2token_api::Quality {
            t: 12.0,
            window: 1.0,
            score: 0.5,
            channels: vec![
                bci2token_api::observe::ChannelQuality {
                    label: "Fp1".into(),
                    flags: vec![],
                    std_uv: 5.0,
                    ptp_uv: 30.0,
                    railed_fraction: 0.0,
                    line_ratio: 0.1,
                },
                bci2token_api::observe::ChannelQuality {
                    label: "Fp2".into(),
                    flags: vec![bci2token_api::QualityFlag::Flat, bci2token_api::QualityFlag::LineNoise],
                    std_uv: 0.0,
                    ptp_uv: 0.0,
                    railed_fraction: 0.0,
                    line_ratio: 2.0,
                },
            ],
        });
        s.decoder = Some(bci2token_api::observe::DecoderHealth {
            breaker: bci2token_api::BreakerState::Open,
            consecutive_failures: 5,
            windows_decoded: 10,
            failures: 5,
            windows_dropped: 0,
            queue: 1,
            queue_capacity: 16,
            latency_p50_ms: Some(2.0),
            latency_p99_ms: Some(4.5),
        });
        let show = session_show(&s, 1_000_180.0);
        assert!(show.contains("      Quality: 50% (1/2 channels good at t=12.0 s)\n"), "{show}");
        assert!(
            show.contains("      Decoder: breaker open, 10 window(s) decoded, 5 failed, queue 1/16, latency p50 2.0 ms p99 4.5 ms\n"),
            "{show}"
        );
        assert!(show.contains("  0  Fp1    µV    ok\n  1  Fp2    µV    flat, line_noise\n"), "{show}");
    }

    #[test]
    fn every_event_kind_renders() {
        let ctx = EventContext::from_session(Some(&session()));
        let samples = Event::Samples {
            session: "s".into(),
            seq: 12,
            t: 1.5,
            frames: 160,
            flags: 1,
            data: ChannelMajor { channels: 0, frames: 0, values: Vec::new().into() },
        };
        assert_eq!(event(&samples, &ctx), "seq 12  t=1.500s  160 frames  [gap]\n");

        let values: Vec<f32> = (0..12).map(|i| i as f32 * 1.5).collect();
        let with_data = Event::Samples {
            session: "s".into(),
            seq: 0,
            t: 0.0,
            frames: 6,
            flags: 0,
            data: ChannelMajor { channels: 2, frames: 6, values: values.into() },
        };
        assert_eq!(
            event(&with_data, &ctx),
            "seq 0  t=0.000s  6 frames\n  \
             Fp1         0     1.500     3.000     4.500     6.000  … (6 values)\n  \
             Fp2     9.000     10.50     12.00     13.50     15.00  … (6 values)\n"
        );

        let ann = Event::Annotation { session: "s".into(), onset: 12.3, duration: Some(4.2), text: "T1".into() };
        assert_eq!(event(&ann, &ctx), "t=12.300s  annotation \"T1\" (4.200 s)\n");
        let ann = Event::Annotation { session: "s".into(), onset: 1.0, duration: None, text: "x".into() };
        assert_eq!(event(&ann, &ctx), "t=1.000s  annotation \"x\"\n");

        let gap = Event::Gap { session: "s".into(), t: 3.0, seconds: 0.25, lost_samples: Some(62) };
        assert_eq!(event(&gap, &ctx), "t=3.000s  gap of 0.2500 s (62 samples lost)\n");

        let st = Event::State { session: "s".into(), state: SessionState::Failed, message: Some("unplugged".into()) };
        assert_eq!(event(&st, &ctx), "state failed: unplugged\n");
        let st = Event::State { session: "s".into(), state: SessionState::Running, message: None };
        assert_eq!(event(&st, &ctx), "state running\n");

        let stats = Event::Stats {
            session: "s".into(),
            t: 5.0,
            window: 1.0,
            channels: vec![ChannelStats { label: "Fp1".into(), mean: 0.5, rms: 10.25, line_noise: 0.003 }],
        };
        assert_eq!(
            event(&stats, &ctx),
            "t=5.000s  stats over 1.000 s\n  LABEL  MEAN µV  RMS µV  LINE NOISE µV²\n  Fp1     0.5000   10.25        0.003000\n"
        );

        let token = Event::Token {
            session: "s".into(),
            seq: 3,
            t: 12.3,
            label: "yes".into(),
            text: " yes".into(),
            tokenizer: "gpt2".into(),
            token_ids: vec![3763],
            confidence: 0.93,
            probabilities: Default::default(),
            logit_bias: Default::default(),
            latency_us: 850,
            entered_ns: 1,
        };
        assert_eq!(event(&token, &ctx), "t=12.300s  token \" yes\"  (yes, 93%, 0.85 ms)\n");
        let failed = Event::DecoderError { session: "s".into(), t: 1.0, message: "boom".into() };
        assert_eq!(event(&failed, &ctx), "t=1.000s  decoder error: boom\n");
        let warn = Event::Warning { session: "s".into(), message: "railed".into() };
        assert_eq!(event(&warn, &ctx), "warning: railed\n");
        let lost = Event::Lost { session: "s".into(), count: 5 };
        assert_eq!(event(&lost, &ctx), "lost 5 events (you are reading too slowly)\n");
    }

    #[test]
    fn stats_of_many_channels_are_one_line() {
        let ctx = EventContext::default();
        let channels = (0..10)
            .map(|i| ChannelStats {
                label: format!("C{i}"),
                mean: 0.0,
                rms: f64::from(i) + 1.0,
                line_noise: if i == 3 { 9.0 } else { 0.5 },
            })
            .collect();
        let stats = Event::Stats { session: "s".into(), t: 2.0, window: 1.0, channels };
        let line = event(&stats, &ctx);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("10 channels") && line.contains("RMS median 6.000 µV"), "{line}");
        assert!(line.contains("lowest 1.000 C0") && line.contains("highest 10.00 C9"), "{line}");
        assert!(line.contains("9.000 µV² on C3"), "{line}");
    }

    #[test]
    fn many_channels_are_abbreviated_and_unknown_labels_numbered() {
        let ctx = EventContext::default();
        let ev = Event::Samples {
            session: "s".into(),
            seq: 1,
            t: 0.0,
            frames: 1,
            flags: 0,
            data: ChannelMajor { channels: 10, frames: 1, values: vec![1.0; 10].into() },
        };
        let out = event(&ev, &ctx);
        assert!(out.contains("  ch0     1.000\n"), "{out}");
        assert!(out.ends_with("  … 2 more channels\n"), "{out}");
        assert_eq!(out.lines().count(), 1 + SHOW_CHANNELS + 1);
    }
}

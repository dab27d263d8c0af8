//! The daemon's metrics in the Prometheus / OpenMetrics text format, written by
//! `prometheus-client`: what sessions, decoders, the store and the process did.
//!
//! Counts that sessions and the store keep anyway are read at each scrape from one [`Look`];
//! only the decode latency histogram is kept here, observed by every session's publisher.
//! Labels are bounded: `session` by `max_sessions` (a session's series go when it is no longer
//! listed), `model` by the installed models, `driver` by the loaded drivers, `channel` by a
//! session's channels.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::observe::Look;

/// Decode latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    session: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriverLabels {
    session: String,
    driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecoderLabels {
    session: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    session: String,
    driver: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    session: String,
    channel: String,
    flag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// A label value as the text formats need it: prometheus-client writes label values as they are,
/// and a channel label, a model or a driver name is outside text (a quote or a newline in it would
/// break the scrape or forge a series).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

type LatencyFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

static DECODE_LATENCY: LazyLock<LatencyFamily> =
    LazyLock::new(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram));

/// Records one window's decode latency (a window's last sample entering the daemon to the model's
/// answer reaching the session's publisher).
pub fn decode_latency(model: &str, seconds: f64) {
    DECODE_LATENCY.get_or_create(&ModelLabels { model: label(model) }).observe(seconds);
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// A family filled once for this scrape.
fn family<L, M>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    items: impl IntoIterator<Item = (L, Box<dyn Fn(&M)>)>,
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    M: Default + 'static,
    Family<L, M>: prometheus_client::registry::Metric,
{
    let f: Family<L, M> = Family::default();
    for (labels, set) in items {
        set(&f.get_or_create(&labels));
    }
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, f),
        None => reg.register(name, help, f),
    }
}

fn counter(v: u64) -> Box<dyn Fn(&Counter)> {
    Box::new(move |c: &Counter| {
        c.inc_by(v);
    })
}

fn gauge(v: f64) -> Box<dyn Fn(&FloatGauge)> {
    Box::new(move |g: &FloatGauge| {
        g.set(v);
    })
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// The two text formats Prometheus reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, what `prometheus-client` writes; Prometheus asks for it first.
    OpenMetrics,
    /// Prometheus' classic text format 0.0.4, which `promtool check metrics` and older scrapers
    /// read: what `bci2tokenctl metrics` prints.
    Classic,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The text of one scrape.
pub fn encode(look: &Look, format: Format) -> String {
    let text = encode_openmetrics(look);
    match format {
        Format::OpenMetrics => text,
        Format::Classic => classic(&text),
    }
}

/// OpenMetrics text as the classic format: the two differ, for what is written here, only in
/// that a counter's family is named with its `_total` suffix, and in the `# UNIT` and `# EOF`
/// lines, which the classic format does not have.
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn encode_openmetrics(look: &Look) -> String {
    let mut root = Registry::default();
    process(&mut root);
    let reg = root.sub_registry_with_prefix("bci2token");
    family(
        reg,
        "build_info",
        "The daemon's version (always 1)",
        None,
        [(VersionLabels { version: env!("CARGO_PKG_VERSION").to_string() }, gauge(1.0))],
    );
    family(
        reg,
        "sessions",
        "Sessions listed, by state (ended sessions stay listed until they are removed)",
        None,
        look.states.iter().map(|(s, n)| (StateLabels { state: s.as_str().to_string() }, gauge(*n as f64))),
    );
    reg.register_with_unit(
        "decode_latency",
        "Time from a window's last sample entering the daemon to the model's answer",
        Unit::Seconds,
        DECODE_LATENCY.clone(),
    );

    let s = &look.sessions;
    let sl = |x: &crate::observe::SessionLook| SessionLabels { session: x.info.id.clone() };
    let dl =
        |x: &crate::observe::SessionLook| DriverLabels { session: x.info.id.clone(), driver: x.info.driver.clone() };
    let decoded: Vec<_> = s.iter().filter_map(|x| Some((x, x.info.decoder.as_ref()?, x.info.model.clone()?))).collect();
    let ml =
        |x: &crate::observe::SessionLook, m: &str| DecoderLabels { session: x.info.id.clone(), model: m.to_string() };
    family(
        reg,
        "session_tokens",
        "Tokens decoded",
        None,
        decoded.iter().map(|(x, _, m)| {
            (
                TokenLabels { session: x.info.id.clone(), driver: x.info.driver.clone(), model: m.clone() },
                counter(x.tokens),
            )
        }),
    );
    family(
        reg,
        "session_windows_decoded",
        "Windows the model answered",
        None,
        decoded.iter().map(|(x, d, m)| (ml(x, m), counter(d.windows_decoded))),
    );
    family(
        reg,
        "session_windows_dropped",
        "Windows not decoded because the session's decode queue was full",
        None,
        decoded.iter().map(|(x, d, m)| (ml(x, m), counter(d.windows_dropped))),
    );
    family(
        reg,
        "session_decoder_failures",
        "Windows the model failed (threw)",
        None,
        decoded.iter().map(|(x, d, m)| (ml(x, m), counter(d.failures))),
    );
    family(
        reg,
        "decoder_breaker_open",
        "1 while the circuit breaker keeps windows from the session's failing model (open or half-open)",
        None,
        decoded.iter().map(|(x, d, m)| (ml(x, m), gauge(flag(d.breaker != bci2token_api::BreakerState::Closed)))),
    );
    family(
        reg,
        "decoder_queue_utilization_ratio",
        "The session's windows in flight over the most it may have",
        None,
        decoded.iter().map(|(x, d, _)| (sl(x), gauge(d.queue as f64 / d.queue_capacity.max(1) as f64))),
    );
    family(
        reg,
        "session_samples",
        "Frames delivered by the device",
        None,
        s.iter().map(|x| (dl(x), counter(x.info.frames))),
    );
    family(
        reg,
        "session_gaps",
        "Outages of the device's stream",
        None,
        s.iter().map(|x| (dl(x), counter(x.info.gaps))),
    );
    family(
        reg,
        "session_events_dropped",
        "Events slow subscribers lost",
        None,
        s.iter().map(|x| (sl(x), counter(x.info.events_dropped))),
    );
    family(
        reg,
        "session_store_dropped",
        "Blocks and events not recorded because the store fell behind",
        None,
        s.iter().map(|x| (sl(x), counter(x.info.store_dropped))),
    );
    family(
        reg,
        "session_store_writes",
        "Blocks and events committed to the store",
        None,
        s.iter().map(|x| (sl(x), counter(x.info.stored_blocks + x.info.stored_events))),
    );
    family(
        reg,
        "device_connected",
        "1 while the device delivers, 0 while its driver reconnects it",
        None,
        s.iter().map(|x| (dl(x), gauge(flag(x.info.state == bci2token_api::SessionState::Running)))),
    );
    family(
        reg,
        "device_sample_rate",
        "Frames per second measured over the last 10 s",
        Some(Unit::Other("hertz".into())),
        s.iter().filter_map(|x| Some((dl(x), gauge(x.measured_rate?)))),
    );
    family(
        reg,
        "device_nominal_sample_rate",
        "The device's stated sampling rate",
        Some(Unit::Other("hertz".into())),
        s.iter().map(|x| (dl(x), gauge(x.info.sample_rate))),
    );
    family(
        reg,
        "session_quality_score",
        "The fraction of the session's channels without a quality flag",
        None,
        s.iter().filter_map(|x| Some((sl(x), gauge(x.info.quality.as_ref()?.score)))),
    );
    family(
        reg,
        "channel_bad",
        "1 while the channel has the quality flag (flat, railed, line_noise, out_of_range)",
        None,
        s.iter().filter_map(|x| Some((x, x.info.quality.as_ref()?))).flat_map(|(x, q)| {
            q.channels.iter().flat_map(move |c| {
                bci2token_api::QualityFlag::ALL.into_iter().map(move |f| {
                    let labels = ChannelLabels {
                        session: x.info.id.clone(),
                        channel: label(&c.label),
                        flag: f.as_str().to_string(),
                    };
                    (labels, gauge(flag(c.flags.contains(&f))))
                })
            })
        }),
    );
    family(
        reg,
        "session_store_queue_utilization_ratio",
        "The session's writes waiting for the store over the most it may have",
        None,
        s.iter()
            .filter(|x| x.store_queue.1 > 0)
            .map(|x| (sl(x), gauge(x.store_queue.0 as f64 / x.store_queue.1 as f64))),
    );
    let store = &look.store;
    let waiting: usize = s.iter().map(|x| x.store_queue.0).sum();
    let room: usize = s.iter().map(|x| x.store_queue.1).sum();
    let plain = |reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: f64| {
        let g = FloatGauge::default();
        g.set(v);
        match unit {
            Some(u) => reg.register_with_unit(name, help, u, g),
            None => reg.register(name, help, g),
        }
    };
    plain(
        reg,
        "store_queue_utilization_ratio",
        "Writes waiting for the store over the room of every recording session",
        None,
        if room == 0 { 0.0 } else { waiting as f64 / room as f64 },
    );
    plain(reg, "store_free", "Free space on the store's file system", Some(Unit::Bytes), store.free_bytes as f64);
    plain(
        reg,
        "store_size",
        "The store's database and its write-ahead log",
        Some(Unit::Bytes),
        store.size_bytes as f64,
    );
    plain(reg, "store_wal", "The store's write-ahead log", Some(Unit::Bytes), store.wal_bytes as f64);
    if let Some(f) = &store.facts {
        plain(
            reg,
            "last_backup_timestamp",
            "Unix time of the last backup the audit log records (0: never)",
            Some(Unit::Seconds),
            f.last_backup.unwrap_or(0.0),
        );
        plain(
            reg,
            "privacy_budget_spent_ratio_max",
            "The most of the ε budget any subject has spent",
            None,
            f.max_epsilon_spent / store.epsilon_budget,
        );
        plain(
            reg,
            "audit_entries",
            "Entries in the audit log (its head's number)",
            None,
            f.audit_head.as_ref().map_or(0.0, |(seq, _)| *seq as f64),
        );
    }
    plain(
        reg,
        "threads_stuck",
        "Worker threads without progress for longer than allowed",
        None,
        look.stuck.len() as f64,
    );
    family(
        reg,
        "refusals",
        "Requests and connections refused (permission, limits, rate), by what was refused",
        None,
        look.refusals.iter().map(|(a, n)| (ActionLabels { action: a.clone() }, counter(*n))),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &root).expect("writing to a String cannot fail");
    out
}

/// The process's own standard metrics, from /proc/self.
fn process(reg: &mut Registry) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let cpu: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
    cpu.inc_by((field(14) + field(15)) / ticks);
    reg.register_with_unit("process_cpu", "User and system CPU time", Unit::Seconds, cpu);
    let rss = FloatGauge::default();
    rss.set(field(24) * page);
    reg.register_with_unit("process_resident_memory", "Resident memory", Unit::Bytes, rss);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok()));
    if let Some(boot) = boot {
        let start = FloatGauge::default();
        start.set(boot + field(22) / ticks);
        reg.register_with_unit("process_start_time", "Start time since the Unix epoch", Unit::Seconds, start);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let open = FloatGauge::default();
        open.set(fds.count() as f64);
        reg.register("process_open_fds", "Open file descriptors", open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_out_of_their_quotes() {
        assert_eq!(label(r#"O1"} 1\nforged{a="#), r#"O1\"} 1\\nforged{a="#);
        assert_eq!(label("a\\b\u{1b}[2J"), "a\\\\b?[2J");
        assert_eq!(label("two\nlines"), "two\\nlines");
    }

    #[test]
    fn the_classic_format_names_counter_families_with_their_suffix_and_has_no_unit_or_eof() {
        let om = "# HELP process_cpu_seconds CPU.\n# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n\
                  process_cpu_seconds_total 0.5\n# HELP x_bytes X.\n# TYPE x_bytes gauge\n# UNIT x_bytes bytes\nx_bytes 3.0\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP process_cpu_seconds_total CPU.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.5\n\
             # HELP x_bytes X.\n# TYPE x_bytes gauge\nx_bytes 3.0\n"
        );
    }
}

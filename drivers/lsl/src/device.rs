//! The `lsl` driver as a plugin: resolve a stream, open an inlet, deliver its samples as µV
//! blocks stamped on this host's clock, and report outages (the inlet recovers by itself when the
//! outlet comes back: liblsl re-resolves it by source id, or by the original query).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::plugin::{
    config_f64, config_string, reject_unknown_keys, Config, Device, Driver, ReadOutcome,
};
use bci2token_driver_abi::types::{ChannelInfo, DeviceInfo, DriverEvent, StreamInfo};
use bci2token_liblsl::{Inlet, Lsl, LslError, TimeCorrection};

use bci2token_driver_abi::units::to_microvolts;

/// Session keys. The liblsl to load is the admin's `[drivers.lsl] library` (host key `_library`):
/// a session that could name a library would run its code as the daemon.
const KEYS: &[&str] = &["name", "type", "source_id", "timeout", "stall_timeout"];
/// Samples per block at most.
const MAX_BLOCK_FRAMES: usize = 256;
/// How often the clock offset is refreshed (liblsl re-measures it in the background).
const CORRECTION_EVERY: Duration = Duration::from_secs(1);
/// Seconds the inlet buffers while we do not read.
const INLET_BUFFER_SECONDS: i32 = 360;

pub struct LslDriver;

/// How much later than one period a time stamp may come before it counts as a gap: outlets that
/// stamp samples in bursts jitter by a few milliseconds, which is not loss.
fn gap_threshold(period: f64) -> f64 {
    (1.5 * period).max(0.010)
}

/// The XPath predicate for the given properties (`name='EEG' and type='EEG'`).
fn predicate(props: &[(&str, &str)]) -> Result<String, String> {
    let mut parts = Vec::new();
    for (prop, value) in props {
        if value.contains('\'') {
            return Err(format!("config key `{prop}`: a value with a ' cannot be matched by liblsl's resolver"));
        }
        parts.push(format!("{prop}='{value}'"));
    }
    Ok(parts.join(" and "))
}

fn describe(info: &bci2token_liblsl::StreamInfo) -> String {
    format!(
        "{:?} (type {:?}): {} channels of {} at {} Hz, source id {:?}, host {:?}",
        info.name(),
        info.type_(),
        info.channel_count(),
        info.channel_format().as_str(),
        info.nominal_rate(),
        info.source_id(),
        info.hostname()
    )
}

impl Driver for LslDriver {
    const NAME: &'static str = "lsl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Device = LslDevice;

    /// The streams visible within two seconds (resolving by unicast to known peers takes about one).
    fn probe() -> Result<Vec<DeviceInfo>, String> {
        let lsl = Lsl::load(None)?;
        let mut list: Vec<DeviceInfo> = lsl
            .resolve_all(2.0)
            .iter()
            .map(|info| {
                let mut config = serde_json::Map::new();
                config.insert("name".into(), info.name().into());
                if !info.source_id().is_empty() {
                    config.insert("source_id".into(), info.source_id().into());
                }
                let id = if info.source_id().is_empty() { info.name() } else { info.source_id() };
                DeviceInfo { id, description: format!("LSL stream {}", describe(info)), config }
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    fn open(config: &Config) -> Result<LslDevice, String> {
        reject_unknown_keys(Self::NAME, config, KEYS)?;
        let mut props = Vec::new();
        for key in ["source_id", "name", "type"] {
            if let Some(v) = config_string(config, key)? {
                props.push((key, v));
            }
        }
        if props.is_empty() {
            return Err("needs `name`, `type` or `source_id` of the stream to read: --set name=MyAmp (or \
                        --set type=EEG); `bci2tokenctl devices --driver lsl` lists the streams visible now"
                .into());
        }
        let timeout = config_f64(config, "timeout")?.unwrap_or(10.0);
        let stall = config_f64(config, "stall_timeout")?.unwrap_or(2.0);
        for (key, v) in [("timeout", timeout), ("stall_timeout", stall)] {
            // A start waits this long at most in `open`, holding a session's place meanwhile.
            let most = if key == "timeout" { 60.0 } else { 3600.0 };
            if !(v.is_finite() && v > 0.0 && v <= most) {
                return Err(format!("config key `{key}`: {v} s is not allowed; use seconds above 0 and up to {most}"));
            }
        }
        let library = config_string(config, "_library")?.map(PathBuf::from);
        let lsl = Lsl::load(library.as_deref())?;

        let refs: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let query = predicate(&refs)?;
        let mut found = lsl.resolve_where(&query, timeout);
        if found.is_empty() {
            let visible: Vec<String> = lsl.resolve_all(0.5).iter().map(describe).collect();
            return Err(format!(
                "no LSL stream with {query} appeared within {timeout} s; {}",
                if visible.is_empty() {
                    "no stream is visible at all (is the outlet running, on this machine or the same network, \
                     with the same LSL SessionID?)"
                        .to_string()
                } else {
                    format!("visible: {}", visible.join("; "))
                }
            ));
        }
        let mut events = VecDeque::new();
        if found.len() > 1 {
            events.push_back(DriverEvent::Warning {
                message: format!(
                    "{} LSL streams match {query}; reading the first, {} (add source_id to choose)",
                    found.len(),
                    describe(&found[0])
                ),
            });
        }
        let info = found.swap_remove(0);
        LslDevice::open(&info, timeout, stall, events)
    }
}

/// Samples pulled and not yet delivered, row-major.
struct Pending {
    data: Vec<f64>,
    stamps: Vec<f64>,
    start: usize,
    len: usize,
}

pub struct LslDevice {
    inlet: Inlet,
    name: String,
    channels: Vec<ChannelInfo>,
    factors: Vec<f64>,
    rate: f64,
    description: String,
    correction: TimeCorrection,
    corrected_at: Instant,
    pending: Pending,
    events: VecDeque<DriverEvent>,
    /// Time stamp (outlet clock) of the last delivered sample.
    last_stamp: Option<f64>,
    last_data: Instant,
    stall: Duration,
    /// Since when no sample came, once that was reported as an outage.
    outage: Option<Instant>,
    next_flags: u32,
}

impl LslDevice {
    fn open(
        info: &bci2token_liblsl::StreamInfo,
        timeout: f64,
        stall: f64,
        events: VecDeque<DriverEvent>,
    ) -> Result<LslDevice, String> {
        let what = describe(info);
        let n = info.channel_count();
        if n == 0 {
            return Err(format!("LSL stream {what} has 0 channels: there is nothing to read"));
        }
        if !info.channel_format().is_numeric() {
            return Err(format!(
                "LSL stream {what}: channel format {} is not supported; the lsl driver reads numeric sample \
                 streams (float32, double64, int8/16/32/64). Marker streams are for recorders, not sessions",
                info.channel_format().as_str()
            ));
        }
        let rate = info.nominal_rate();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "LSL stream {what} has an irregular sampling rate; the lsl driver reads streams with a nominal rate"
            ));
        }
        let mut inlet = Inlet::new(info, INLET_BUFFER_SECONDS)?;
        inlet.open(timeout).map_err(|e| format!("opening LSL stream {what}: {e}"))?;
        let full =
            inlet.full_info(timeout).map_err(|e| format!("reading the description of LSL stream {what}: {e}"))?;
        let desc = full.channels();
        let mut channels = Vec::with_capacity(n);
        let mut factors = Vec::with_capacity(n);
        for i in 0..n {
            let d = desc.get(i).cloned().unwrap_or_default();
            let (factor, unit) = to_microvolts(&d.unit);
            let label = if d.label.trim().is_empty() { format!("Ch{}", i + 1) } else { d.label.trim().to_string() };
            channels.push(ChannelInfo { label, unit });
            factors.push(factor);
        }
        let correction = inlet
            .time_correction(timeout.min(5.0))
            .map_err(|e| format!("measuring the clock offset of LSL stream {what}: {e}"))?;
        let description = format!(
            "LSL stream {what}; clock offset {:+.3} ms ± {:.3} ms",
            correction.offset * 1e3,
            correction.uncertainty * 1e3
        );
        Ok(LslDevice {
            inlet,
            name: info.name(),
            channels,
            factors,
            rate,
            description,
            correction,
            corrected_at: Instant::now(),
            pending: Pending {
                data: vec![0.0; MAX_BLOCK_FRAMES * n],
                stamps: vec![0.0; MAX_BLOCK_FRAMES],
                start: 0,
                len: 0,
            },
            events,
            last_stamp: None,
            last_data: Instant::now(),
            stall: Duration::from_secs_f64(stall),
            outage: None,
            next_flags: 0,
        })
    }

    /// liblsl measures the offset again in the background; take its latest estimate.
    fn refresh_correction(&mut self) {
        if self.corrected_at.elapsed() < CORRECTION_EVERY {
            return;
        }
        self.corrected_at = Instant::now();
        // A failed query keeps the last estimate.
        if let Ok(c) = self.inlet.time_correction(0.0) {
            if c.uncertainty > 0.001 && self.correction.uncertainty <= 0.001 {
                self.events.push_back(DriverEvent::Warning {
                    message: format!(
                        "LSL stream {:?}: the clock offset is uncertain by {:.1} ms (a busy network or host)",
                        self.name,
                        c.uncertainty * 1e3
                    ),
                });
            }
            self.correction = c;
        }
    }

    /// The next block from the pending samples, up to (not across) a break in the time stamps.
    fn block(&mut self, buf: &mut [f32]) -> Result<ReadOutcome, String> {
        let p = &mut self.pending;
        let n = self.channels.len();
        let period = 1.0 / self.rate;
        let first = p.stamps[p.start];
        if let Some(prev) = self.last_stamp {
            let hole = first - prev - period;
            if hole > gap_threshold(period) && self.next_flags & block_flags::GAP == 0 {
                self.next_flags |= block_flags::GAP;
                return Ok(ReadOutcome::Event(DriverEvent::Gap {
                    t: prev + period + self.correction.offset,
                    seconds: hole,
                    lost_samples: Some((hole * self.rate).round() as u64),
                }));
            }
        }
        let mut frames = 1;
        while frames < p.len
            && p.stamps[p.start + frames] - p.stamps[p.start + frames - 1] - period <= gap_threshold(period)
        {
            frames += 1;
        }
        if buf.len() < frames * n {
            return Err(format!("the read buffer of {} values is smaller than a block of {}", buf.len(), frames * n));
        }
        for i in 0..frames {
            let row = &p.data[(p.start + i) * n..(p.start + i + 1) * n];
            for (c, (&v, &f)) in row.iter().zip(&self.factors).enumerate() {
                buf[c * frames + i] = (v * f) as f32;
            }
        }
        self.last_stamp = Some(p.stamps[p.start + frames - 1]);
        p.start += frames;
        p.len -= frames;
        let t = first + self.correction.offset;
        Ok(ReadOutcome::Block { frames, t, flags: std::mem::take(&mut self.next_flags) })
    }
}

impl Device for LslDevice {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            channels: self.channels.clone(),
            sample_rate: self.rate,
            max_block_frames: MAX_BLOCK_FRAMES as u32,
            realtime: true,
            description: self.description.clone(),
            duration: None,
        }
    }

    fn start(&mut self) -> Result<(), String> {
        self.last_data = Instant::now();
        Ok(())
    }

    fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<ReadOutcome, String> {
        if let Some(event) = self.events.pop_front() {
            return Ok(ReadOutcome::Event(event));
        }
        if self.pending.len > 0 {
            return self.block(buf);
        }
        self.refresh_correction();
        let p = &mut self.pending;
        let pulled = match self.inlet.pull_chunk(&mut p.data, &mut p.stamps, timeout.as_secs_f64()) {
            Ok(n) => n,
            Err(LslError::Timeout) => 0,
            Err(e) => return Err(format!("LSL stream {:?}: {e}", self.name)),
        };
        if pulled == 0 {
            let silent = self.last_data.elapsed();
            if self.outage.is_none() && silent >= self.stall {
                self.outage = Some(self.last_data);
                let t = self.last_stamp.map_or(0.0, |s| s + 1.0 / self.rate + self.correction.offset);
                return Ok(ReadOutcome::Event(DriverEvent::Disconnected {
                    t,
                    reason: format!(
                        "no sample from LSL stream {:?} for {:.1} s (stall_timeout {} s): the outlet stopped or \
                         its host is unreachable; waiting for it to come back",
                        self.name,
                        silent.as_secs_f64(),
                        self.stall.as_secs_f64()
                    ),
                }));
            }
            return Ok(ReadOutcome::Timeout);
        }
        p.start = 0;
        p.len = pulled;
        self.last_data = Instant::now();
        if let Some(since) = self.outage.take() {
            self.next_flags |= block_flags::RECONNECTED;
            let t = p.stamps[0] + self.correction.offset;
            return Ok(ReadOutcome::Event(DriverEvent::Reconnected { t, outage: since.elapsed().as_secs_f64() }));
        }
        self.block(buf)
    }

    fn stop(&mut self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_quote_values_and_refuse_quotes() {
        assert_eq!(predicate(&[("name", "Amp 1"), ("type", "EEG")]).unwrap(), "name='Amp 1' and type='EEG'");
        assert!(predicate(&[("name", "it's")]).unwrap_err().contains("`name`"));
    }

    #[test]
    fn open_needs_a_stream_to_look_for() {
        let err = LslDriver::open(&Config::new()).err().unwrap();
        assert!(err.contains("needs `name`, `type` or `source_id`"), "{err}");
        let mut bad = Config::new();
        bad.insert("nme".into(), "x".into());
        assert!(LslDriver::open(&bad).err().unwrap().contains("`nme`"));
    }
}

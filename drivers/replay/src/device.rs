//! The `replay` driver as a plugin: opens a recording, paces it (real time × `speed`, or as fast as
//! the reader takes it with `speed=0`), optionally loops, and turns annotations into events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bci2token_driver_abi::plugin::{
    config_bool, config_f64, config_file, config_string, copy_block, reject_unknown_keys, wait_until_due, Config,
    Device, Driver, ReadOutcome,
};
use bci2token_driver_abi::types::{ChannelInfo, DeviceInfo, DriverEvent, StreamInfo};

use crate::recording::{open_input, Input, Recording, RecordingEvent};
use crate::xdf::StreamChoice;

pub struct ReplayDriver;

const KEYS: &[&str] = &["path", "speed", "loop", "channels", "stream", "stream_type"];

/// `channels` as a JSON array of labels or a comma-separated string.
fn channel_selection(config: &Config) -> Result<Option<Vec<String>>, String> {
    match config.get("channels") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => {
            Ok(Some(s.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()))
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("config key `channels`: {v} is not a label")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!("config key `channels`: expected labels separated by commas, got {other}")),
    }
}

impl Driver for ReplayDriver {
    const NAME: &'static str = "replay";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Device = ReplayDevice;

    /// A file driver has nothing to discover: any readable recording can be opened with `path`.
    fn probe() -> Result<Vec<DeviceInfo>, String> {
        Ok(Vec::new())
    }

    fn open(config: &Config) -> Result<ReplayDevice, String> {
        reject_unknown_keys(Self::NAME, config, KEYS)?;
        let Some(file) = config_file(config, "path")? else {
            return Err("needs `path`: --set path=/path/to/recording.edf".into());
        };
        let speed = config_f64(config, "speed")?.unwrap_or(1.0);
        if !(speed.is_finite() && speed >= 0.0) {
            return Err(format!(
                "config key `speed`: {speed} must be 0 (as fast as possible) or positive (1 = real time)"
            ));
        }
        let looping = config_bool(config, "loop")?.unwrap_or(false);
        let selection = channel_selection(config)?;
        let stream =
            StreamChoice { name: config_string(config, "stream")?, type_: config_string(config, "stream_type")? };
        let input = Input::from_file(file.name, file.file);
        let recording = open_input(input, selection.as_deref(), &stream).map_err(|e| e.to_string())?;
        Ok(ReplayDevice::new(recording, speed, looping))
    }
}

pub struct ReplayDevice {
    recording: Box<dyn Recording>,
    speed: f64,
    looping: bool,
    chunk: Vec<f32>,
    /// Events to hand out before the pending block.
    events: VecDeque<DriverEvent>,
    /// A block read from the file and not yet delivered: (frames, t).
    pending: Option<(usize, f64)>,
    /// Added to file times after each loop.
    offset: f64,
    /// End time (file clock) of the last chunk read, for the loop offset.
    end_of_last: f64,
    started: Option<Instant>,
    finished: bool,
    /// Reader warnings already handed out as events (the reader may add more while reading).
    warnings_sent: usize,
}

impl ReplayDevice {
    fn new(recording: Box<dyn Recording>, speed: f64, looping: bool) -> Self {
        let len = recording.channels().len() * recording.max_chunk_frames();
        ReplayDevice {
            recording,
            speed,
            looping,
            chunk: vec![0.0; len],
            events: VecDeque::new(),
            pending: None,
            offset: 0.0,
            end_of_last: 0.0,
            started: None,
            finished: false,
            warnings_sent: 0,
        }
    }

    /// Queues reader warnings not yet reported.
    fn queue_warnings(&mut self) {
        let warnings = self.recording.warnings();
        for w in &warnings[self.warnings_sent.min(warnings.len())..] {
            self.events.push_back(DriverEvent::Warning { message: w.clone() });
        }
        self.warnings_sent = warnings.len();
    }

    /// Reads the next chunk from the file (rewinding when looping) and queues its events.
    fn fill(&mut self) -> Result<(), String> {
        let rate = self.recording.sample_rate();
        self.queue_warnings();
        let chunk = match self.recording.next_chunk(&mut self.chunk).map_err(|e| e.to_string())? {
            Some(c) => c,
            None if self.looping && self.end_of_last > 0.0 => {
                self.recording.rewind().map_err(|e| e.to_string())?;
                self.offset += self.end_of_last;
                self.end_of_last = 0.0;
                match self.recording.next_chunk(&mut self.chunk).map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => {
                        self.finished = true;
                        return Ok(());
                    }
                }
            }
            None => {
                self.finished = true;
                return Ok(());
            }
        };
        self.queue_warnings();
        for event in chunk.events {
            self.events.push_back(match event {
                RecordingEvent::Annotation { onset, duration, text } => {
                    DriverEvent::Annotation { onset: onset + self.offset, duration, text }
                }
                RecordingEvent::Gap { at, seconds } => {
                    DriverEvent::Gap { t: at + self.offset, seconds, lost_samples: None }
                }
            });
        }
        self.end_of_last = chunk.t + chunk.frames as f64 / rate;
        self.pending = Some((chunk.frames, chunk.t + self.offset));
        Ok(())
    }
}

impl Device for ReplayDevice {
    fn info(&self) -> StreamInfo {
        let name = self.recording.path().file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        StreamInfo {
            channels: self
                .recording
                .channels()
                .iter()
                .map(|c| ChannelInfo { label: c.label.clone(), unit: c.unit.clone() })
                .collect(),
            sample_rate: self.recording.sample_rate(),
            max_block_frames: u32::try_from(self.recording.max_chunk_frames()).unwrap_or(u32::MAX),
            realtime: self.speed > 0.0,
            description: format!(
                "replay of {name} at {}",
                if self.speed > 0.0 { format!("{}× real time", self.speed) } else { "full speed".into() }
            ),
            duration: self.recording.duration_seconds(),
        }
    }

    fn start(&mut self) -> Result<(), String> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<ReadOutcome, String> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Some(event) = self.events.pop_front() {
            return Ok(ReadOutcome::Event(event));
        }
        if self.pending.is_none() && !self.finished {
            self.fill()?;
            if let Some(event) = self.events.pop_front() {
                return Ok(ReadOutcome::Event(event));
            }
        }
        let Some((frames, t)) = self.pending else { return Ok(ReadOutcome::End) };
        if self.speed > 0.0 {
            // A live amplifier hands over a block once its last frame has been sampled.
            let due = (t + frames as f64 / self.recording.sample_rate()) / self.speed;
            if !wait_until_due(started, due, timeout) {
                return Ok(ReadOutcome::Timeout);
            }
        }
        copy_block(&self.chunk[..self.recording.channels().len() * frames], buf)?;
        self.pending = None;
        Ok(ReadOutcome::Block { frames, t, flags: 0 })
    }

    fn stop(&mut self) -> Result<(), String> {
        Ok(())
    }
}

//! The `synthetic` driver as a plugin: a simulated amplifier paced in real time (× `speed`), or as
//! fast as the reader takes it with `speed=0`. Intents of the script become annotations.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bci2token_driver_abi::plugin::{copy_block, wait_until_due, Config, Device, Driver, ReadOutcome};
use bci2token_driver_abi::types::{ChannelInfo, DeviceInfo, DriverEvent, StreamInfo};

use crate::generator::{Generator, SyntheticConfig, CONFIG_KEYS};

pub struct SyntheticDriver;

impl Driver for SyntheticDriver {
    const NAME: &'static str = "synthetic";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Device = SyntheticDevice;

    /// The simulated board is always there.
    fn probe() -> Result<Vec<DeviceInfo>, String> {
        Ok(vec![DeviceInfo {
            id: "synthetic".into(),
            description: format!(
                "simulated EEG board (8 channels at 250 Hz unless set; keys: {})",
                CONFIG_KEYS.join(", ")
            ),
            config: serde_json::Map::new(),
        }])
    }

    fn open(config: &Config) -> Result<SyntheticDevice, String> {
        let cfg = SyntheticConfig::from_json(&serde_json::Value::Object(config.clone())).map_err(|e| e.to_string())?;
        let generator = Generator::try_new(cfg).map_err(|e| e.to_string())?;
        Ok(SyntheticDevice::new(generator))
    }
}

pub struct SyntheticDevice {
    generator: Generator,
    block: Vec<f32>,
    events: VecDeque<DriverEvent>,
    /// A block generated into `block` and not yet delivered: (frames, time of its first frame).
    pending: Option<(usize, f64)>,
    started: Option<Instant>,
}

impl SyntheticDevice {
    fn new(generator: Generator) -> Self {
        let len = generator.channel_count() * generator.config().block_frames;
        SyntheticDevice { generator, block: vec![0.0; len], events: VecDeque::new(), pending: None, started: None }
    }

    fn block_frames(&self) -> usize {
        let frames = self.generator.config().block_frames;
        match self.generator.frames_remaining() {
            Some(left) => frames.min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => frames,
        }
    }
}

impl Device for SyntheticDevice {
    fn info(&self) -> StreamInfo {
        let cfg = self.generator.config();
        StreamInfo {
            channels: self
                .generator
                .channel_labels()
                .into_iter()
                .map(|label| ChannelInfo { label, unit: "uV".into() })
                .collect(),
            sample_rate: cfg.sample_rate,
            max_block_frames: u32::try_from(cfg.block_frames).unwrap_or(u32::MAX),
            realtime: cfg.speed > 0.0,
            description: format!(
                "synthetic board, seed {}, {} channels at {} Hz",
                cfg.seed, cfg.channels, cfg.sample_rate
            ),
            duration: if cfg.loop_script || cfg.script.is_empty() {
                None
            } else {
                Some(cfg.script.iter().map(|i| i.seconds).sum())
            },
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
        let (frames, t) = match self.pending {
            Some(pending) => pending,
            None => {
                let frames = self.block_frames();
                // From the frame index, so block times carry no accumulated rounding.
                let t = self.generator.frame() as f64 / self.generator.sample_rate();
                if frames == 0 {
                    return Ok(ReadOutcome::End);
                }
                let Some(intents) = self.generator.next_block(&mut self.block, frames) else {
                    return Ok(ReadOutcome::End);
                };
                self.events.extend(intents.into_iter().map(|i| DriverEvent::Annotation {
                    onset: i.onset,
                    duration: Some(i.duration),
                    text: i.label,
                }));
                self.pending = Some((frames, t));
                if let Some(event) = self.events.pop_front() {
                    return Ok(ReadOutcome::Event(event));
                }
                (frames, t)
            }
        };
        let speed = self.generator.config().speed;
        // generator.time() is the end of the pending block: it is "sampled" once that time has passed.
        if speed > 0.0 && !wait_until_due(started, self.generator.time() / speed, timeout) {
            return Ok(ReadOutcome::Timeout);
        }
        copy_block(&self.block[..self.generator.channel_count() * frames], buf)?;
        self.pending = None;
        Ok(ReadOutcome::Block { frames, t, flags: 0 })
    }

    fn stop(&mut self) -> Result<(), String> {
        Ok(())
    }
}

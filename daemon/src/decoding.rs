//! A session's decoding: the model's channels are taken from each block, preprocessed and cut
//! into windows (bci2token-dsp) on the acquisition thread; windows go to the shared decode thread
//! (bci2token-decoder's engine); logits come back through the token bridge as token events.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bci2token_api::Event;
use bci2token_decoder::bridge::{Emission, TokenBridge};
use bci2token_decoder::engine::{Engine, Job};
use bci2token_decoder::fit::ChannelMap;
use bci2token_decoder::Model;
use bci2token_dsp::pipeline::Windower;

use crate::hub::Hub;
use crate::lsl_outlets::SessionOutlets;

/// How long a non-real-time source waits between tries when the decode queue is full.
const QUEUE_RETRY: Duration = Duration::from_micros(200);
/// How long the end of a session waits for its windows still being decoded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the decode thread needs to publish a session's results (shared with its callbacks).
struct Output {
    session: String,
    hub: Arc<Hub>,
    bridge: Mutex<TokenBridge>,
    tokenizer: String,
    tokens: AtomicU64,
    /// Windows submitted and not yet answered.
    in_flight: AtomicUsize,
    /// LSL outlets for tokens and probabilities, when the session publishes them (set before
    /// the first window).
    outlets: OnceLock<SessionOutlets>,
}

pub struct Decoding {
    model: Arc<Model>,
    map: ChannelMap,
    windower: Windower,
    /// The model's channels of the current block, channel-major.
    scratch: Vec<f32>,
    engine: Arc<Engine>,
    output: Arc<Output>,
    /// The source can wait for the decoder (file replay at full speed): never drop a window.
    lossless: bool,
    dropped_windows: u64,
}

impl Decoding {
    pub fn new(
        session: &str,
        hub: Arc<Hub>,
        model: Arc<Model>,
        map: ChannelMap,
        sample_rate: f64,
        engine: Arc<Engine>,
        lossless: bool,
    ) -> Result<Decoding, String> {
        let m = &model.manifest;
        let windower = Windower::new(&m.preprocessing, sample_rate, map.len(), m.window_frames(), m.hop_frames())
            .map_err(|e| format!("model `{}`: {e}", m.name))?;
        let bridge = TokenBridge::new(m).map_err(|e| format!("model `{}`: {e}", m.name))?;
        let output = Arc::new(Output {
            session: session.to_string(),
            hub,
            bridge: Mutex::new(bridge),
            tokenizer: m.tokens.tokenizer.clone(),
            tokens: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            outlets: OnceLock::new(),
        });
        Ok(Decoding { model, map, windower, scratch: Vec::new(), engine, output, lossless, dropped_windows: 0 })
    }

    /// Publishes this session's tokens and probabilities on LSL outlets too.
    pub fn publish_to(&self, outlets: SessionOutlets) {
        let _ = self.output.outlets.set(outlets);
    }

    /// Feeds one block (all device channels, channel-major) whose first frame is at stream time
    /// `t` and which left the driver at `received`. Every completed window is submitted.
    pub fn push(&mut self, data: &[f32], frames: usize, t: f64, rate: f64, received: Instant) {
        self.scratch.clear();
        for &ch in &self.map {
            self.scratch.extend_from_slice(&data[ch * frames..(ch + 1) * frames]);
        }
        let mut windows: Vec<(f64, Vec<f32>)> = Vec::new();
        self.windower.push(&mut self.scratch, frames, |info, window| {
            let last = t + (info.frames_into_block as f64 - 1.0) / rate;
            windows.push((last, window.iter().copied().collect()));
        });
        for (last, window) in windows {
            self.submit(last, window, received);
        }
    }

    fn submit(&mut self, t: f64, window: Vec<f32>, received: Instant) {
        let output = Arc::clone(&self.output);
        output.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut job = Job {
            model: Arc::clone(&self.model),
            window,
            done: Box::new(move |result| {
                output.deliver(t, result, received);
                output.in_flight.fetch_sub(1, Ordering::AcqRel);
            }),
        };
        loop {
            match self.engine.submit(job) {
                Ok(()) => return,
                Err(back) if self.lossless => {
                    job = back;
                    std::thread::sleep(QUEUE_RETRY);
                }
                Err(_) => {
                    self.output.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.dropped_windows += 1;
                    if self.dropped_windows.is_power_of_two() {
                        self.output.hub.publish(Event::Warning {
                            session: self.output.session.clone(),
                            message: format!(
                                "the decoder is behind: {} window(s) dropped so far (decode queue full)",
                                self.dropped_windows
                            ),
                        });
                    }
                    return;
                }
            }
        }
    }

    /// Waits until every submitted window has been answered (end of session).
    pub fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.output.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn tokens(&self) -> u64 {
        self.output.tokens.load(Ordering::Relaxed)
    }
}

/// `at` on CLOCK_MONOTONIC in nanoseconds (std's Instant is that clock on Linux, but opaque).
fn monotonic_ns(at: Instant) -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    now.saturating_sub(at.elapsed().as_nanos() as u64)
}

impl Output {
    /// On the decode thread: logits through the bridge to a token event, or a decoder error.
    fn deliver(&self, t: f64, result: Result<Vec<f32>, String>, received: Instant) {
        match result {
            Ok(logits) => {
                if let Some(outlets) = self.outlets.get() {
                    outlets.window(&logits, received);
                }
                let emission = self.bridge.lock().unwrap().push(t, &logits);
                if let Some(e) = emission {
                    self.publish(t, e, received);
                }
            }
            Err(message) => {
                log::warn!("session {}: decoder: {message}", self.session);
                self.hub.publish(Event::DecoderError { session: self.session.clone(), t, message });
            }
        }
    }

    fn publish(&self, t: f64, e: Emission, received: Instant) {
        let seq = self.tokens.fetch_add(1, Ordering::Relaxed);
        let event = Event::Token {
            session: self.session.clone(),
            seq,
            t,
            label: e.label,
            text: e.text,
            tokenizer: self.tokenizer.clone(),
            token_ids: e.token_ids,
            confidence: e.confidence,
            probabilities: e.probabilities.into_iter().collect(),
            logit_bias: e.logit_bias.into_iter().map(|(id, b)| (id.to_string(), b)).collect(),
            latency_us: received.elapsed().as_micros() as u64,
            entered_ns: monotonic_ns(received),
        };
        if let Some(outlets) = self.outlets.get() {
            outlets.token(&event, received);
        }
        self.hub.publish(event);
    }
}

//! A session's decoding, one stage per thread, each with a queue of its own:
//!
//! acquisition thread → windows (bci2token-dsp) → the session's lane into the shared decode
//! thread (bci2token-decoder's engine) → the session's publisher thread: token bridge, LSL
//! outlets, fan-out to subscribers.
//!
//! The lane bounds the session's windows in flight, from submission until their token is
//! published: a real-time session whose lane is full drops the window (and says so); a session
//! that can wait (replay at `speed=0`) waits for room in its own lane. Nothing a subscriber does
//! reaches the decode thread: a lossless follower that stops reading holds up only this
//! session's publisher, then its lane, then its source.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bci2token_api::Event;
use bci2token_decoder::bridge::{Emission, TokenBridge};
use bci2token_decoder::engine::{Engine, Job};
use bci2token_decoder::fit::ChannelMap;
use bci2token_decoder::Model;
use bci2token_dsp::pipeline::Windower;
use bci2token_sched::{Class, Lane};

use crate::breaker::{Breaker, Transition, Try};
use crate::hub::Hub;
use crate::logging::SessionTag;
use crate::lsl_outlets::SessionOutlets;

/// The windows one session may have in flight, in bytes at most (window × `decoder_queue`).
const MAX_QUEUED_WINDOW_BYTES: usize = 1 << 30;

/// How long the end of a session waits for its windows still being decoded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Restart announcements waiting for the publisher at most; more outages meanwhile restart the
/// processing without one each.
const MAX_RESTARTS_WAITING: usize = 64;

/// What the publisher thread receives, in the order it must publish.
enum Output {
    /// The decoder's answer for the window whose last frame is at stream time `t`.
    Window { t: f64, result: Result<Vec<f32>, String>, received: Instant, attempt: Try },
    /// Processing started again at stream time `t` after an outage, once the first `after`
    /// windows submitted are published (their answers may still be on their way when this is
    /// sent; the decode thread answers one session's windows in order).
    Restart { after: u64, t: f64, reason: &'static str },
    /// The acquisition thread's breaker transition (to half-open), in order with the answers.
    Breaker { t: f64, transition: Transition },
}

/// The publisher thread's state.
struct Publisher {
    session: String,
    tag: SessionTag,
    hub: Arc<Hub>,
    bridge: TokenBridge,
    tokenizer: String,
    tokens: Arc<AtomicU64>,
    /// LSL outlets for tokens and probabilities, when the session publishes them (set before
    /// the first window).
    outlets: Arc<OnceLock<SessionOutlets>>,
    /// Windows published so far, and restarts waiting for the windows before them.
    published: u64,
    restarts: std::collections::VecDeque<(u64, f64, &'static str)>,
    /// Restart announcements sent and not yet published (shared with the session's side).
    restarts_waiting: Arc<AtomicUsize>,
    /// The session has ended: what still comes is dropped (it would follow the final state).
    finished: Arc<AtomicBool>,
    breaker: Arc<Breaker>,
    stats: Arc<DecoderStats>,
    model: String,
}

/// Latencies kept for `health`'s last-minute quantiles, at most.
const MAX_LATENCIES: usize = 8192;

/// What a session's decoding did, for `session show`, `health` and the metrics.
#[derive(Default)]
pub struct DecoderStats {
    pub decoded: AtomicU64,
    pub failures: AtomicU64,
    /// Decode latencies of the last minute (when, seconds).
    latencies: std::sync::Mutex<std::collections::VecDeque<(Instant, f64)>>,
}

impl DecoderStats {
    fn latency(&self, at: Instant, seconds: f64) {
        let mut l = self.latencies.lock().unwrap();
        while l.front().is_some_and(|(t, _)| at.duration_since(*t) > Duration::from_secs(60))
            || l.len() >= MAX_LATENCIES
        {
            l.pop_front();
        }
        l.push_back((at, seconds));
    }

    /// The median and 99th percentile of the last minute's decode latencies, seconds.
    pub fn latency_quantiles(&self) -> Option<(f64, f64)> {
        let now = Instant::now();
        let mut v: Vec<f64> = self
            .latencies
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= Duration::from_secs(60))
            .map(|(_, s)| *s)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// A view of a session's decoding for other threads.
#[derive(Clone)]
pub struct DecoderView {
    pub breaker: Arc<Breaker>,
    pub stats: Arc<DecoderStats>,
    lane: Lane<Job>,
    capacity: usize,
    tokens: Arc<AtomicU64>,
}

impl DecoderView {
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    pub fn health(&self, windows_dropped: u64) -> bci2token_api::observe::DecoderHealth {
        let (breaker, consecutive_failures) = self.breaker.state();
        let quantiles = self.stats.latency_quantiles();
        bci2token_api::observe::DecoderHealth {
            breaker,
            consecutive_failures,
            windows_decoded: self.stats.decoded.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            windows_dropped,
            queue: self.lane.in_flight(),
            queue_capacity: self.capacity,
            latency_p50_ms: quantiles.map(|q| q.0 * 1e3),
            latency_p99_ms: quantiles.map(|q| q.1 * 1e3),
        }
    }
}

/// Publishes a breaker transition as the session's event (and says it in the log).
fn publish_transition(hub: &Hub, tag: &SessionTag, t: f64, tr: Transition) {
    let level = if tr.state == bci2token_api::BreakerState::Open { log::Level::Warn } else { log::Level::Info };
    tag.log(level, format_args!("decoder breaker {}: {}", tr.state.as_str(), tr.message));
    hub.publish(Event::Breaker {
        session: tag.id.clone(),
        t,
        state: tr.state,
        failures: tr.failures,
        retry_in: tr.retry_in,
        message: tr.message,
    });
}

pub struct Decoding {
    session: String,
    tag: SessionTag,
    hub: Arc<Hub>,
    model: Arc<Model>,
    map: ChannelMap,
    windower: Windower,
    /// The model's channels of the current block, channel-major.
    scratch: Vec<f32>,
    lane: Lane<Job>,
    /// To the publisher thread (`None` once the session has drained).
    results: Option<mpsc::Sender<Output>>,
    publisher: Option<JoinHandle<()>>,
    tokens: Arc<AtomicU64>,
    outlets: Arc<OnceLock<SessionOutlets>>,
    /// The source can wait for the decoder (file replay at full speed): never drop a window.
    lossless: bool,
    /// Windows handed to the decode thread so far.
    submitted: u64,
    restarts_waiting: Arc<AtomicUsize>,
    finished: Arc<AtomicBool>,
    dropped_windows: u64,
    view: DecoderView,
}

impl Decoding {
    /// `capacity`: the session's windows in flight at most (its lane into the decode thread).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tag: SessionTag,
        hub: Arc<Hub>,
        model: Arc<Model>,
        map: ChannelMap,
        sample_rate: f64,
        engine: &Engine,
        lossless: bool,
        capacity: usize,
        breaker: Breaker,
    ) -> Result<Decoding, String> {
        let m = &model.manifest;
        // The session's lane holds up to `capacity` windows: what a model's window and
        // `decoder_queue` may cost together is bounded, whatever the package says.
        let window_bytes = map.len().saturating_mul(m.window_frames()).saturating_mul(4);
        let queued = window_bytes.saturating_mul(capacity);
        if queued > MAX_QUEUED_WINDOW_BYTES {
            return Err(format!(
                "model `{}`: its window ({} channels × {} frames, {} KiB) times decoder_queue ({capacity}) is {} MiB of \
                 windows in flight, more than the {} MiB a session may hold; lower decoder_queue in the daemon's \
                 configuration or use a model with a shorter window",
                m.name,
                map.len(),
                m.window_frames(),
                window_bytes >> 10,
                queued >> 20,
                MAX_QUEUED_WINDOW_BYTES >> 20
            ));
        }
        let windower = Windower::new(&m.preprocessing, sample_rate, map.len(), m.window_frames(), m.hop_frames())
            .map_err(|e| format!("model `{}`: {e}", m.name))?;
        let bridge = TokenBridge::new(m).map_err(|e| format!("model `{}`: {e}", m.name))?;
        let class = if lossless { Class::Bulk } else { Class::RealTime };
        let lane = engine.lane(class, capacity);
        let tokens = Arc::new(AtomicU64::new(0));
        let outlets = Arc::new(OnceLock::new());
        let restarts_waiting = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let view = DecoderView {
            breaker: Arc::new(breaker),
            stats: Arc::new(DecoderStats::default()),
            lane: lane.clone(),
            capacity,
            tokens: Arc::clone(&tokens),
        };
        let session = tag.id.as_str();
        let publisher = Publisher {
            session: session.to_string(),
            tag: tag.clone(),
            hub: Arc::clone(&hub),
            bridge,
            tokenizer: m.tokens.tokenizer.clone(),
            tokens: Arc::clone(&tokens),
            outlets: Arc::clone(&outlets),
            published: 0,
            restarts: std::collections::VecDeque::new(),
            restarts_waiting: Arc::clone(&restarts_waiting),
            finished: Arc::clone(&finished),
            breaker: Arc::clone(&view.breaker),
            stats: Arc::clone(&view.stats),
            model: m.name.clone(),
        };
        let thread_lane = lane.clone();
        let thread = std::thread::Builder::new()
            .name(format!("out-{session}"))
            .spawn(move || {
                if lossless {
                    // As the session's acquisition thread: the CPU goes to live sessions first.
                    let _ = bci2token_sched::priority::run_in_background();
                }
                publisher.run(&rx, &thread_lane)
            })
            .map_err(|e| format!("cannot start the session's publisher thread: {e}"))?;
        Ok(Decoding {
            session: session.to_string(),
            tag,
            hub,
            model,
            map,
            windower,
            scratch: Vec::new(),
            lane,
            results: Some(tx),
            publisher: Some(thread),
            tokens,
            outlets,
            lossless,
            submitted: 0,
            restarts_waiting,
            finished,
            dropped_windows: 0,
            view,
        })
    }

    /// What other threads may read of this decoding.
    pub fn view(&self) -> DecoderView {
        self.view.clone()
    }

    /// Publishes this session's tokens and probabilities on LSL outlets too.
    pub fn publish_to(&self, outlets: SessionOutlets) {
        let _ = self.outlets.set(outlets);
    }

    /// After an outage: the filters and the window start again from the next block, and the
    /// token stream says so (after the tokens of the windows before the outage).
    pub fn restart(&mut self, t: f64, reason: &'static str) {
        self.windower.restart();
        // Announced unless many announcements already wait for a publisher that is held up (a
        // stalled lossless follower of a file with an outage in every block): bounded memory.
        if self.restarts_waiting.load(Ordering::Acquire) >= MAX_RESTARTS_WAITING {
            return;
        }
        if let Some(tx) = &self.results {
            self.restarts_waiting.fetch_add(1, Ordering::AcqRel);
            let _ = tx.send(Output::Restart { after: self.submitted, t, reason });
        }
    }

    /// Feeds one block (all device channels, channel-major) whose first frame is at stream time
    /// `t` and which left the driver at `received`. Every completed window is submitted. A
    /// lossless session waits for room in its lane, asking `keep_waiting` every 50 ms.
    pub fn push(
        &mut self,
        data: &[f32],
        frames: usize,
        t: f64,
        rate: f64,
        received: Instant,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) {
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
            self.submit(last, window, received, keep_waiting);
        }
    }

    fn submit(&mut self, t: f64, window: Vec<f32>, received: Instant, keep_waiting: &mut dyn FnMut() -> bool) {
        let Some(results) = self.results.clone() else { return };
        // An open breaker: the window is not decoded (the session goes on recording). A
        // transition goes through the publisher, before this window's answer.
        let (attempt, told) = self.view.breaker.admit(Instant::now());
        if let Some(transition) = told {
            let _ = results.send(Output::Breaker { t, transition });
        }
        let Some(attempt) = attempt else { return };
        let tried = results.clone();
        let job = Job {
            model: Arc::clone(&self.model) as Arc<dyn bci2token_decoder::engine::Forward>,
            window,
            // On the decode thread: only a hand-over to this session's publisher.
            done: Box::new(move |result| {
                let _ = results.send(Output::Window { t, result, received, attempt });
            }),
        };
        let pushed = if self.lossless { self.lane.push_wait(job, keep_waiting) } else { self.lane.try_push(job) };
        if pushed.is_ok() {
            self.submitted += 1;
        } else {
            if attempt == Try::HalfOpen {
                if let Some(transition) = self.view.breaker.try_not_sent(Instant::now()) {
                    let _ = tried.send(Output::Breaker { t, transition });
                }
            }
            self.dropped_windows += 1;
            if self.dropped_windows.is_power_of_two() {
                self.hub.publish(Event::Warning {
                    session: self.session.clone(),
                    message: format!(
                        "the decoder is behind: {} window(s) dropped so far (this session's decode queue is full)",
                        self.dropped_windows
                    ),
                });
            }
        }
    }

    /// Waits until every submitted window's token has been published (end of session), then
    /// ends the publisher thread.
    /// `beat` is called while waiting. Returns with nothing left to publish, or with the rest
    /// never to be published (it would come after the session's final state).
    pub fn drain(&mut self, beat: &dyn Fn()) {
        let wait = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while self.lane.in_flight() > 0 && Instant::now() < deadline {
                beat();
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait(DRAIN_TIMEOUT);
        // From here nobody may hold up the end: a lossless follower that stopped reading loses
        // the rest (its final state event still comes, after its lost count).
        self.hub.abort_waits();
        wait(Duration::from_secs(1));
        let late = self.lane.in_flight();
        self.results = None;
        if late > 0 {
            // Still being decoded: dropped when answered, and the publisher ends then.
            self.finished.store(true, Ordering::Release);
            self.tag
                .log(log::Level::Warn, format_args!("{late} window(s) still being decoded at the end of the session"));
            return;
        }
        if let Some(thread) = self.publisher.take() {
            if thread.join().is_err() {
                self.tag.log(log::Level::Error, format_args!("the publisher thread panicked"));
            }
        }
    }

    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    pub fn dropped_windows(&self) -> u64 {
        self.dropped_windows
    }
}

/// `at` on CLOCK_MONOTONIC in nanoseconds (std's Instant is that clock on Linux, but opaque).
fn monotonic_ns(at: Instant) -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    now.saturating_sub(at.elapsed().as_nanos() as u64)
}

impl Publisher {
    /// Publishes what comes, in order, and gives each window's room back to the lane once its
    /// token (or error) is out. Ends when the session and every pending job let go of the sender.
    fn run(mut self, rx: &mpsc::Receiver<Output>, lane: &Lane<Job>) {
        for output in rx {
            let finished = self.finished.load(Ordering::Acquire);
            match output {
                Output::Window { t, result, received, attempt } => {
                    self.account(t, result.is_ok(), received, attempt, finished);
                    if !finished {
                        self.deliver(t, result, received);
                    }
                    self.published += 1;
                    lane.release(1);
                }
                Output::Restart { after, t, reason } => self.restarts.push_back((after, t, reason)),
                Output::Breaker { t, transition } => {
                    if !finished {
                        publish_transition(&self.hub, &self.tag, t, transition);
                    }
                }
            }
            while self.restarts.front().is_some_and(|(after, _, _)| *after <= self.published) {
                let (_, t, reason) = self.restarts.pop_front().expect("just seen");
                self.restarts_waiting.fetch_sub(1, Ordering::AcqRel);
                self.bridge.restart();
                if !finished {
                    self.hub.publish(Event::DecoderRestart { session: self.session.clone(), t, reason: reason.into() });
                }
            }
        }
    }

    /// Counts the answer, times it, and tells the breaker (whose transitions are published while
    /// the session lasts).
    fn account(&mut self, t: f64, ok: bool, received: Instant, attempt: Try, finished: bool) {
        let now = Instant::now();
        if ok {
            self.stats.decoded.fetch_add(1, Ordering::Relaxed);
            let seconds = now.duration_since(received).as_secs_f64();
            self.stats.latency(now, seconds);
            crate::metrics::decode_latency(&self.model, seconds);
        } else {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(transition) = self.breaker.record(attempt, ok, now) {
            if !finished {
                publish_transition(&self.hub, &self.tag, t, transition);
            }
        }
    }

    /// Logits through the bridge to a token event, or a decoder error.
    fn deliver(&mut self, t: f64, result: Result<Vec<f32>, String>, received: Instant) {
        match result {
            Ok(logits) => {
                if let Some(outlets) = self.outlets.get() {
                    outlets.window(&logits, received);
                }
                if let Some(e) = self.bridge.push(t, &logits) {
                    self.publish(t, e, received);
                }
            }
            Err(message) => {
                self.tag.log(log::Level::Warn, format_args!("decoder: {message}"));
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

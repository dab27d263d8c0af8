//! A session binds one open device to a processing pipeline and a hub of subscribers. Its
//! acquisition runs on its own OS thread, never on the async runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bci2token_api::{Caller, ChannelDesc, ChannelMajor, ChannelStats, ConfigMap, Event, SessionInfo, SessionState};
use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::host::{bounded, unprintable, Read};
use bci2token_driver_abi::types::DriverEvent;
use bci2token_dsp::stats::WindowStats;

use bci2token_sched::Heartbeat;

use crate::decoding::Decoding;
use crate::driver_host::Source;
use crate::hub::Hub;
use crate::live_quality::LiveQuality;
use crate::recorder::SessionRecorder;

// The daemon passes driver block flags through to clients unchanged: the two sets must agree.
const _: () = {
    use bci2token_api::event::block_flags as api;
    assert!(block_flags::GAP == api::GAP);
    assert!(block_flags::SATURATED == api::SATURATED);
    assert!(block_flags::RECONNECTED == api::RECONNECTED);
};

/// How long one `read` may wait before the thread checks its stop flag again.
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a device in a driver host gets for its own `stop` when a session ends.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Settings a session takes from the daemon config when it starts.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    pub stats_interval: f64,
    pub line_frequency: f64,
    /// Fail the session when the device delivers nothing for this long (0 = never).
    pub stall_timeout: f64,
    pub quality: bci2token_dsp::quality::QualityConfig,
    pub quality_interval: f64,
}

/// Frames and outages counted once a second over the last minute: the measured rate and the gaps
/// per minute of `health`.
#[derive(Default)]
struct Activity {
    marks: std::collections::VecDeque<(Instant, u64, u64)>,
}

impl Activity {
    const KEEP: Duration = Duration::from_secs(61);

    fn mark(&mut self, now: Instant, frames: u64, gaps: u64) {
        if self.marks.back().is_some_and(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(1)) {
            return;
        }
        while self.marks.front().is_some_and(|(t, _, _)| now.duration_since(*t) > Self::KEEP) {
            self.marks.pop_front();
        }
        self.marks.push_back((now, frames, gaps));
    }

    /// Frames per second over the last 10 s (at least one second of marks), and outages in the
    /// last minute.
    fn rates(&self, frames: u64, gaps: u64) -> (Option<f64>, u64) {
        let now = Instant::now();
        let recent = self.marks.iter().find(|(t, _, _)| now.duration_since(*t) <= Duration::from_secs(10));
        let rate = recent.and_then(|(t, f, _)| {
            let dt = now.duration_since(*t).as_secs_f64();
            (dt >= 1.0).then(|| frames.saturating_sub(*f) as f64 / dt)
        });
        let minute_ago = self.marks.front().map_or(0, |(_, _, g)| *g);
        (rate, gaps.saturating_sub(minute_ago))
    }
}

#[derive(Default)]
struct Counters {
    blocks: AtomicU64,
    frames: AtomicU64,
    gaps: AtomicU64,
    annotations: AtomicU64,
    windows_dropped: AtomicU64,
}

/// A change of the set of sessions or of one session's state (the service's stream of them).
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// A session started (its id).
    Added(String),
    State {
        id: String,
        state: SessionState,
        message: Option<String>,
    },
    Removed(String),
}

pub struct Session {
    pub id: String,
    pub driver: String,
    pub config: ConfigMap,
    pub model: Option<String>,
    pub created: f64,
    pub started_by: Caller,
    pub description: String,
    pub channels: Vec<ChannelDesc>,
    pub sample_rate: f64,
    /// The source can wait for a lossless subscriber (file replay at full speed).
    pub realtime: bool,
    pub hub: Arc<Hub>,
    state: Mutex<(SessionState, Option<String>)>,
    counters: Counters,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Where the session is recorded, when the daemon records sessions.
    recorder: std::sync::OnceLock<Arc<SessionRecorder>>,
    /// The subject's pseudonym, when given at start.
    subject: std::sync::OnceLock<String>,
    /// Where state changes are reported, besides the session's own event stream.
    changes: std::sync::OnceLock<tokio::sync::broadcast::Sender<SessionChange>>,
    /// The acquisition thread's: it beats at every read (at most every 100 ms) and while it
    /// waits for a queue of its own session, so silence means a driver stuck in `read`.
    pub heartbeat: Arc<Heartbeat>,
    /// The latest signal quality (set when the session starts, unless the meter cannot work at
    /// its rate).
    quality: std::sync::OnceLock<Arc<Mutex<Option<bci2token_api::Quality>>>>,
    /// The session's decoding, when it has a model.
    decoder: std::sync::OnceLock<crate::decoding::DecoderView>,
    activity: Mutex<Activity>,
}

/// A fresh random session id: 12 hex digits.
pub fn new_id() -> String {
    let mut bytes = [0u8; 6];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
    {
        // Not secret, only unique: fall back to time and pid.
        log::debug!("/dev/urandom: {e}");
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mix = t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40);
        bytes.copy_from_slice(&mix.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Session {
    pub fn new(
        id: String,
        driver: String,
        config: ConfigMap,
        model: Option<String>,
        started_by: Caller,
        device: &Source,
        subscriber_queue: usize,
    ) -> Self {
        let info = device.info();
        let heartbeat = Heartbeat::new(format!("acq-{id}"));
        if !info.realtime {
            // Its thread runs at the lowest CPU priority (see `run`).
            heartbeat.set_background();
        }
        Session {
            id,
            driver,
            config,
            model,
            created: crate::wall_clock::wall_now(),
            started_by,
            // What a device says goes to logs, terminals, metrics and the journal: no control or
            // invisible formatting characters (a replayed file's labels are anyone's text).
            description: bounded(&info.description),
            channels: info
                .channels
                .iter()
                .map(|c| ChannelDesc { label: bounded(&c.label), unit: bounded(&c.unit) })
                .collect(),
            sample_rate: info.sample_rate,
            realtime: info.realtime,
            hub: Arc::new(Hub::new(subscriber_queue, Arc::clone(&heartbeat))),
            heartbeat,
            state: Mutex::new((SessionState::Starting, None)),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            recorder: std::sync::OnceLock::new(),
            subject: std::sync::OnceLock::new(),
            changes: std::sync::OnceLock::new(),
            quality: std::sync::OnceLock::new(),
            decoder: std::sync::OnceLock::new(),
            activity: Mutex::new(Activity::default()),
        }
    }

    /// The session's journal fields.
    pub fn tag(&self) -> crate::logging::SessionTag {
        crate::logging::SessionTag {
            id: self.id.clone(),
            driver: self.driver.clone(),
            model: self.model.clone().unwrap_or_default(),
        }
    }

    /// A record `session ID: …` with the session's journal fields.
    fn log(&self, level: log::Level, args: std::fmt::Arguments<'_>) {
        self.tag().log(level, args);
    }

    /// Sets the subject's pseudonym (before the session is recorded).
    pub fn set_subject(&self, subject: String) {
        let _ = self.subject.set(subject);
    }

    /// Records the session's blocks (its events reach the recorder through the hub's tap).
    pub fn record_to(&self, recorder: Arc<SessionRecorder>) {
        let _ = self.recorder.set(recorder);
    }

    pub fn state(&self) -> SessionState {
        self.state.lock().unwrap().0
    }

    pub fn is_active(&self) -> bool {
        !self.state().is_final()
    }

    /// Reports this session's state changes to `changes` (set before the session runs).
    pub fn report_changes_to(&self, changes: tokio::sync::broadcast::Sender<SessionChange>) {
        let _ = self.changes.set(changes);
    }

    fn set_state(&self, state: SessionState, message: Option<String>) {
        *self.state.lock().unwrap() = (state, message.clone());
        if let Some(changes) = self.changes.get() {
            // Never waits: a receiver that lags loses the oldest changes.
            let _ = changes.send(SessionChange::State { id: self.id.clone(), state, message: message.clone() });
        }
        let event = Event::State { session: self.id.clone(), state, message };
        if state.is_final() {
            self.hub.finish(event);
        } else {
            self.hub.publish(event);
        }
    }

    pub fn info(&self) -> SessionInfo {
        let (state, message) = self.state.lock().unwrap().clone();
        SessionInfo {
            id: self.id.clone(),
            driver: self.driver.clone(),
            config: self.config.clone(),
            model: self.model.clone(),
            state,
            message,
            description: self.description.clone(),
            channels: self.channels.clone(),
            sample_rate: self.sample_rate,
            created: self.created,
            started_by: self.started_by.clone(),
            blocks: self.counters.blocks.load(Ordering::Relaxed),
            frames: self.counters.frames.load(Ordering::Relaxed),
            gaps: self.counters.gaps.load(Ordering::Relaxed),
            annotations: self.counters.annotations.load(Ordering::Relaxed),
            events_dropped: self.hub.dropped(),
            subscribers: self.hub.subscriber_count(),
            stored_blocks: self.recorder.get().map_or(0, |r| r.counters.stored_blocks.load(Ordering::Acquire)),
            stored_events: self.recorder.get().map_or(0, |r| r.counters.stored_events.load(Ordering::Acquire)),
            store_dropped: self.recorder.get().map_or(0, |r| r.counters.dropped.load(Ordering::Relaxed)),
            recording_error: self.recorder.get().and_then(|r| r.failed().map(str::to_string)),
            windows_dropped: self.counters.windows_dropped.load(Ordering::Relaxed),
            subject: self.subject.get().cloned(),
            quality: self.quality(),
            decoder: self.decoder_health(),
        }
    }

    /// The latest signal quality.
    pub fn quality(&self) -> Option<bci2token_api::Quality> {
        self.quality.get().and_then(|q| q.lock().unwrap().clone())
    }

    pub fn decoder_health(&self) -> Option<bci2token_api::observe::DecoderHealth> {
        self.decoder.get().map(|d| d.health(self.counters.windows_dropped.load(Ordering::Relaxed)))
    }

    /// The session's store writes waiting, and the most it may have ((0, 0) when not recorded).
    pub fn store_queue(&self) -> (usize, usize) {
        self.recorder.get().map_or((0, 0), |r| r.queued())
    }

    pub fn decoder(&self) -> Option<&crate::decoding::DecoderView> {
        self.decoder.get()
    }

    /// Frames per second over the last 10 s, and outages in the last minute.
    pub fn activity(&self) -> (Option<f64>, u64) {
        let frames = self.counters.frames.load(Ordering::Relaxed);
        let gaps = self.counters.gaps.load(Ordering::Relaxed);
        self.activity.lock().unwrap().rates(frames, gaps)
    }

    /// Starts acquisition on a new thread named after the session.
    pub fn spawn(
        self: &Arc<Self>,
        device: Source,
        settings: PipelineSettings,
        decoding: Option<Decoding>,
    ) -> std::io::Result<()> {
        if let Some(d) = &decoding {
            let _ = self.decoder.set(d.view());
        }
        let labels = self.channels.iter().map(|c| c.label.clone()).collect();
        let quality = match LiveQuality::new(
            labels,
            self.sample_rate,
            settings.line_frequency,
            settings.quality,
            settings.quality_interval,
        ) {
            Ok(q) => {
                let _ = self.quality.set(q.latest());
                Some(q)
            }
            Err(e) => {
                self.log(log::Level::Warn, format_args!("no signal quality: {e}"));
                None
            }
        };
        let session = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name(format!("acq-{}", self.id))
            .spawn(move || session.run(device, settings, decoding, quality))?;
        *self.thread.lock().unwrap() = Some(handle);
        Ok(())
    }

    /// Asks the acquisition thread to stop; it publishes the final state itself.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.hub.abort_waits();
    }

    /// Waits for the acquisition thread to finish.
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap().take();
        if let Some(h) = handle {
            if h.join().is_err() {
                self.log(log::Level::Error, format_args!("acquisition thread panicked"));
            }
        }
    }

    fn run(
        self: Arc<Self>,
        mut device: Source,
        settings: PipelineSettings,
        mut decoding: Option<Decoding>,
        mut quality: Option<LiveQuality>,
    ) {
        /// However the thread ends (a panic too), its silence from then on is not a stuck thread.
        struct Retire(Arc<Heartbeat>);
        impl Drop for Retire {
            fn drop(&mut self) {
                self.0.retire();
            }
        }
        let _retire = Retire(Arc::clone(&self.heartbeat));
        // Waiting for a driver host beats; a stop ends the wait (and the host).
        let session = Arc::clone(&self);
        device.while_waiting(Box::new(move || {
            session.heartbeat.beat();
            !session.stop.load(Ordering::Acquire)
        }));
        if !self.realtime {
            // A source that can wait gets the CPU that live sessions leave (see priority).
            if let Err(e) = bci2token_sched::priority::run_in_background() {
                self.log(log::Level::Warn, format_args!("cannot lower the replay's CPU priority: {e}"));
            }
        }
        let (state, message) = match self.acquire(&mut device, settings, decoding.as_mut(), quality.as_mut()) {
            Ok(state) => (state, None),
            Err(message) => {
                self.log(log::Level::Error, format_args!("{message}"));
                (SessionState::Failed, Some(message))
            }
        };
        // The device's own stop gets a few seconds (not a hanging plugin's whole time-out).
        let heartbeat = Arc::clone(&self.heartbeat);
        let until = std::time::Instant::now() + STOP_GRACE;
        device.while_waiting(Box::new(move || {
            heartbeat.beat();
            std::time::Instant::now() < until
        }));
        if let Err(e) = device.stop() {
            self.log(log::Level::Warn, format_args!("stopping the device: {e}"));
        }
        drop(device);
        if let Some(d) = &mut decoding {
            // Tokens of the last windows still belong to this session.
            d.drain(&|| self.heartbeat.beat());
            self.log(log::Level::Info, format_args!("{} token(s) decoded", d.tokens()));
        }
        // Nothing more may hold up the end: a lossless follower that stopped reading loses the
        // rest (its final state event still comes, after its lost count).
        self.hub.abort_waits();
        self.log(
            log::Level::Info,
            format_args!(
                "{} after {} blocks ({} frames)",
                state.as_str(),
                self.counters.blocks.load(Ordering::Relaxed),
                self.counters.frames.load(Ordering::Relaxed)
            ),
        );
        self.set_state(state, message);
    }

    /// The acquisition loop. Returns the final state, or the failure message.
    fn acquire(
        &self,
        device: &mut Source,
        settings: PipelineSettings,
        mut decoding: Option<&mut Decoding>,
        mut quality: Option<&mut LiveQuality>,
    ) -> Result<SessionState, String> {
        device.start().map_err(|e| e.to_string())?;
        self.set_state(SessionState::Running, None);
        self.log(log::Level::Info, format_args!("running ({})", self.description));

        let channels = self.channels.len();
        let rate = self.sample_rate;
        let mut buf = vec![0f32; device.info().buffer_len()];
        let mut stats = WindowStats::new(channels, rate, settings.stats_interval, settings.line_frequency);
        let mut last_data = Instant::now();
        // While the driver reconnects a lost device, the stall time-out is its business.
        let mut reconnecting = false;
        let mut outages = Outages::default();
        let mut seq: u64 = 0;
        let heartbeat = Arc::clone(&self.heartbeat);
        loop {
            heartbeat.beat();
            if self.stop.load(Ordering::Acquire) {
                return Ok(SessionState::Stopped);
            }
            let read = match device.read(READ_TIMEOUT, &mut buf) {
                Ok(read) => read,
                // A stop request races the driver's end (a service stop ends driver hosts too).
                Err(_) if self.stop.load(Ordering::Acquire) => return Ok(SessionState::Stopped),
                Err(e) => return Err(e.to_string()),
            };
            match read {
                Read::Block { frames, t, flags } => {
                    last_data = Instant::now();
                    let received = last_data;
                    let data = &buf[..channels * frames];
                    let outage = outages.block(flags);
                    if outage.count {
                        self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.hub.wants_samples() {
                        self.hub.publish(Event::Samples {
                            session: self.id.clone(),
                            seq,
                            t,
                            frames,
                            flags,
                            data: ChannelMajor { channels, frames, values: Arc::from(data) },
                        });
                    }
                    stats.push(data, frames, |at, window| {
                        let channels = window
                            .iter()
                            .zip(&self.channels)
                            .map(|(s, c)| ChannelStats {
                                label: c.label.clone(),
                                mean: s.mean,
                                rms: s.rms,
                                line_noise: s.line_power,
                            })
                            .collect();
                        self.hub.publish(Event::Stats {
                            session: self.id.clone(),
                            t: t + at as f64 / rate,
                            window: settings.stats_interval,
                            channels,
                        });
                    });
                    if let Some(r) = self.recorder.get() {
                        r.block(seq, t, flags, channels, frames, data);
                    }
                    if let Some(q) = quality.as_deref_mut() {
                        if outage.restart.is_some() {
                            q.restart();
                        }
                        q.push(data, frames, t, &mut |quality| {
                            self.hub.publish(Event::Quality { session: self.id.clone(), quality })
                        });
                    }
                    if let Some(d) = decoding.as_deref_mut() {
                        if let Some(reason) = outage.restart {
                            d.restart(t, reason);
                        }
                        // A lossless source waits here for its own decode lane, beating.
                        d.push(data, frames, t, rate, received, &mut || {
                            heartbeat.beat();
                            !self.stop.load(Ordering::Acquire)
                        });
                        self.counters.windows_dropped.store(d.dropped_windows(), Ordering::Relaxed);
                    }
                    seq += 1;
                    self.counters.blocks.fetch_add(1, Ordering::Relaxed);
                    let total = self.counters.frames.fetch_add(frames as u64, Ordering::Relaxed) + frames as u64;
                    self.activity.lock().unwrap().mark(received, total, self.counters.gaps.load(Ordering::Relaxed));
                }
                Read::Event(event) => {
                    outages.event(&event);
                    if let Some(lost) = self.publish_driver_event(event) {
                        reconnecting = lost;
                        last_data = Instant::now();
                    }
                }
                Read::Timeout => {
                    let idle = last_data.elapsed().as_secs_f64();
                    if !reconnecting && settings.stall_timeout > 0.0 && idle > settings.stall_timeout {
                        return Err(format!(
                            "the device delivered no data for {idle:.1} s (session_timeout is {} s)",
                            settings.stall_timeout
                        ));
                    }
                }
                Read::End => return Ok(SessionState::Finished),
            }
        }
    }

    /// Publishes a driver event; for a connection change, returns whether the device is now lost.
    /// A driver's text goes on to logs, terminals and the journal without control or invisible
    /// formatting characters (an annotation of a replayed file is anyone's text); its length is
    /// the driver ABI's to bound.
    fn publish_driver_event(&self, event: DriverEvent) -> Option<bool> {
        let session = self.id.clone();
        let printable = |text: String| -> String {
            if text.chars().any(unprintable) {
                text.chars().map(|c| if unprintable(c) { '?' } else { c }).collect()
            } else {
                text
            }
        };
        let event = match event {
            DriverEvent::Annotation { onset, duration, text } => {
                self.counters.annotations.fetch_add(1, Ordering::Relaxed);
                Event::Annotation { session, onset, duration, text: printable(text) }
            }
            DriverEvent::Gap { t, seconds, lost_samples } => {
                self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                self.log(log::Level::Warn, format_args!("gap of {seconds:.3} s at t={t:.3} s"));
                Event::Gap { session, t, seconds, lost_samples }
            }
            DriverEvent::Warning { message } => {
                let message = printable(message);
                self.log(log::Level::Warn, format_args!("{message}"));
                Event::Warning { session, message }
            }
            DriverEvent::Disconnected { t, reason } => {
                let reason = printable(reason);
                self.log(log::Level::Warn, format_args!("device lost at t={t:.3} s: {reason}"));
                self.set_state(SessionState::Reconnecting, Some(reason));
                return Some(true);
            }
            DriverEvent::Reconnected { t, outage } => {
                self.log(log::Level::Info, format_args!("device back at t={t:.3} s after {outage:.1} s"));
                self.set_state(SessionState::Running, None);
                return Some(false);
            }
        };
        self.hub.publish(event);
        None
    }
}

/// One outage, one count, one restart of the decoding. Drivers announce an outage with a `gap`
/// event (counted where it is published) before the block they flag GAP; a flagged block counts
/// only when no event announced its outage, for drivers that only flag.
#[derive(Debug, Default)]
pub(crate) struct Outages {
    announced: bool,
}

/// What one block says about an outage before it.
#[derive(Debug, PartialEq)]
pub(crate) struct BlockOutage {
    /// An outage no event counted.
    count: bool,
    /// Processing starts again at this block (`gap` or `reconnected`).
    pub(crate) restart: Option<&'static str>,
}

impl Outages {
    fn event(&mut self, event: &DriverEvent) {
        self.announced |= matches!(event, DriverEvent::Gap { .. });
    }

    /// What a block with these flags says about an outage before it (an announcement is for the
    /// next block only).
    pub(crate) fn block(&mut self, flags: u32) -> BlockOutage {
        let gap = flags & block_flags::GAP != 0;
        let reconnected = flags & block_flags::RECONNECTED != 0;
        let restart = if reconnected {
            Some("reconnected")
        } else if gap || self.announced {
            Some("gap")
        } else {
            None
        };
        let out = BlockOutage { count: gap && !self.announced, restart };
        self.announced = false;
        out
    }
}

#[cfg(test)]
mod outage_tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_once_and_restarts_decoding_once() {
        let gap = DriverEvent::Gap { t: 1.0, seconds: 0.1, lost_samples: Some(25) };
        let b = |count, restart| BlockOutage { count, restart };
        let mut o = Outages::default();
        // Announced, then flagged: the event was the count; the block restarts.
        o.event(&gap);
        assert_eq!(o.block(block_flags::GAP), b(false, Some("gap")));
        // Only flagged: the block is the count.
        assert_eq!(o.block(block_flags::GAP), b(true, Some("gap")));
        // Only announced (a driver that does not flag): the next block restarts, no second count.
        o.event(&gap);
        assert_eq!(o.block(0), b(false, Some("gap")));
        assert_eq!(o.block(0), b(false, None), "an announcement is for the next block only");
        assert_eq!(o.block(block_flags::GAP | block_flags::RECONNECTED), b(true, Some("reconnected")));
        assert_eq!(o.block(block_flags::RECONNECTED), b(false, Some("reconnected")));
        // Other events announce nothing; other flags are no outage.
        o.event(&DriverEvent::Warning { message: "w".into() });
        assert_eq!(o.block(block_flags::SATURATED), b(false, None));
    }
}

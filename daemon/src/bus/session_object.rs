//! `org.bci2token.Session1` at `/org/bci2token/session/<id>`: a session's description as
//! properties, `Stop`, `OpenStream` (a socket carrying the events as the control socket's
//! `follow` writes them), and `Subscribe`: the session's tokens, gaps, states and warnings as
//! signals addressed to the subscriber alone. Subscribing and opening a stream are `follow`
//! to the service: the session's owner or an admin, audited.

// TokenDecoded has seven arguments (its D-Bus signature); the interface macro generates its
// emitter with them and the emitter's receiver.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bci2token_api::dbus::record;
use bci2token_api::{Event, SessionInfo, SessionState};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant;

use super::daemon_object::{stream_options, Dict};
use super::error::BusError;
use super::Ctx;
use crate::hub::{Delivery, Subscription};
use crate::token_bucket::TokenBucket;

pub struct SessionObject {
    ctx: Arc<Ctx>,
    /// The session as it started (what does not change).
    info: SessionInfo,
    /// Its state and why, as the service last reported them. Behind a lock of its own so that
    /// the object is only ever borrowed shared (zbus would make an exclusive borrow wait for a
    /// running method, such as a Stop waiting for the session to end).
    state: std::sync::Mutex<(SessionState, Option<String>)>,
}

impl SessionObject {
    pub fn new(ctx: Arc<Ctx>, info: SessionInfo) -> Self {
        let state = std::sync::Mutex::new((info.state, info.message.clone()));
        SessionObject { ctx, info, state }
    }

    pub fn set_state(&self, state: SessionState, message: Option<String>) {
        *self.state.lock().unwrap() = (state, message);
    }
}

/// Signals one subscriber may receive per second, and at once.
const SIGNALS_PER_SECOND: f64 = 20.0;
const SIGNAL_BURST: f64 = 100.0;
/// How often a subscriber is pinged while there is something to send, and how long it may take
/// to answer: the bus keeps what a subscriber does not read, and counts it against the daemon.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
const PING_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Signals to all subscribers together, per second and at once.
const ALL_SIGNALS_PER_SECOND: f64 = 200.0;
const ALL_SIGNALS_BURST: f64 = 1000.0;

/// The budget of signals all subscribers share.
pub struct Budget(std::sync::Mutex<TokenBucket>);

impl Default for Budget {
    fn default() -> Self {
        Budget(std::sync::Mutex::new(TokenBucket::full(ALL_SIGNALS_BURST)))
    }
}

impl Budget {
    fn take(&self) -> bool {
        self.0.lock().unwrap().take(ALL_SIGNALS_PER_SECOND, ALL_SIGNALS_BURST).is_ok()
    }
}

fn destination_name(sender: &str) -> Result<zbus::names::BusName<'_>, BusError> {
    zbus::names::BusName::try_from(sender).map_err(|e| BusError::ZBus(e.into()))
}

/// A socket whose other end carries `stream`'s events as frames (as `follow` on the control
/// socket), until the session ends or the reader closes it. It holds `place` among the caller's
/// connections meanwhile, as a follow connection does on the socket.
pub fn stream_socket(
    id: &str,
    stream: Subscription,
    place: crate::control::Admitted,
) -> Result<zvariant::OwnedFd, BusError> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| BusError::Internal(format!("cannot make the stream's socket: {e}")))?;
    ours.set_nonblocking(true).map_err(|e| BusError::Internal(e.to_string()))?;
    // Only the daemon writes: what the reader sends is never read.
    let _ = theirs.shutdown(std::net::Shutdown::Write);
    let ours = tokio::net::UnixStream::from_std(ours).map_err(|e| BusError::Internal(e.to_string()))?;
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = crate::control::stream_events(ours, &id, stream).await {
            log::debug!("D-Bus stream of session {id}: {e}");
        }
        drop(place);
    });
    Ok(zvariant::OwnedFd::from(std::os::fd::OwnedFd::from(theirs)))
}

#[zbus::interface(name = "org.bci2token.Session1")]
impl SessionObject {
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.info.id.clone()
    }

    /// starting, running, reconnecting, stopped, finished or failed.
    #[zbus(property)]
    fn state(&self) -> String {
        self.state.lock().unwrap().0.as_str().to_string()
    }

    /// Why the session failed or stopped ("" for nothing to say).
    #[zbus(property)]
    fn message(&self) -> String {
        self.state.lock().unwrap().1.clone().unwrap_or_default()
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn driver(&self) -> String {
        self.info.driver.clone()
    }

    /// The device, as its driver describes it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn device(&self) -> String {
        self.info.description.clone()
    }

    /// The model decoding it ("" for none).
    #[zbus(property(emits_changed_signal = "const"))]
    fn model(&self) -> String {
        self.info.model.clone().unwrap_or_default()
    }

    /// Channel labels, in order.
    #[zbus(property(emits_changed_signal = "const"))]
    fn channels(&self) -> Vec<String> {
        self.info.channels.iter().map(|c| c.label.clone()).collect()
    }

    /// Samples per second and channel.
    #[zbus(property(emits_changed_signal = "const"))]
    fn sample_rate(&self) -> f64 {
        self.info.sample_rate
    }

    /// The uid that started it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn owner(&self) -> u32 {
        self.info.started_by.uid
    }

    /// Unix time of its start, in seconds.
    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> f64 {
        self.info.created
    }

    /// Stops the session (its owner or an admin); returns its record.
    #[zbus(out_args("session"))]
    async fn stop(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        let id = self.info.id.clone();
        self.ctx.run(&h, move |s, c| s.session_stop(c, &id)).await.map(|v| record(&v))
    }

    /// A socket carrying the session's events as length-prefixed JSON frames, as the control
    /// socket's `follow` (docs/control-protocol.md), until the session ends. `options`:
    /// `samples` (b) to include sample blocks.
    #[zbus(out_args("stream"))]
    async fn open_stream(&self, options: Dict, #[zbus(header)] h: Header<'_>) -> Result<zvariant::OwnedFd, BusError> {
        let who = self.ctx.admit(&h).await?;
        let options = stream_options(&options)?;
        let place = self.ctx.stream_place(&who).await?;
        let id = self.info.id.clone();
        let followed = self.ctx.serve(who.caller, move |s, c| s.follow(c, &id, &options)).await?;
        stream_socket(&self.info.id, followed.stream, place)
    }

    /// Sends this session's TokenDecoded, Gap, StateChanged and Warning signals to the caller
    /// (addressed to it alone) until it unsubscribes, leaves the bus, or the session ends.
    async fn subscribe(
        &self,
        #[zbus(header)] h: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), BusError> {
        let sender = h.sender().map(|s| s.to_string()).unwrap_or_default();
        let destination = zbus::names::BusName::try_from(sender.clone()).map_err(|e| BusError::ZBus(e.into()))?;
        let (ctx, id, who) = (Arc::clone(&self.ctx), self.info.id.clone(), sender.clone());
        // The place first, so that a follow the service audits as ok is one that takes place.
        let followed = self
            .ctx
            .run(&h, move |s, c| {
                if let Err(e) = ctx.reserve_subscription(&id, &who) {
                    s.audit_refusal(c, "follow", &id, &e.message);
                    return Err(e);
                }
                let followed = s.follow(c, &id, &bci2token_api::FollowOptions::default());
                if followed.is_err() {
                    ctx.end_subscriptions(Some(&id), Some(&who));
                }
                followed
            })
            .await?;
        let emitter = emitter.to_owned().set_destination(destination.into_owned());
        let conn = emitter.connection().clone();
        let task = tokio::spawn(forward(followed.stream, emitter, Arc::clone(&self.ctx.signals)));
        self.ctx.add_subscription(&self.info.id, &sender, task.abort_handle());
        // A subscriber that left while this call ran was forgotten before its place was filled:
        // its subscription ends now rather than with the session.
        let gone = match zbus::fdo::DBusProxy::new(&conn).await {
            Ok(bus) => matches!(bus.name_has_owner(destination_name(&sender)?).await, Ok(false)),
            Err(_) => false,
        };
        if gone {
            self.ctx.end_subscriptions(Some(&self.info.id), Some(&sender));
        }
        Ok(())
    }

    /// Stops the caller's signals of this session.
    async fn unsubscribe(&self, #[zbus(header)] h: Header<'_>) -> Result<(), BusError> {
        let sender = h.sender().map(|s| s.to_string()).unwrap_or_default();
        self.ctx.end_subscriptions(Some(&self.info.id), Some(&sender));
        Ok(())
    }

    /// A decoded token: the model's label, its text, the text's token ids in the model's
    /// tokenizer, the label's probability, a sparse logit bias (token id → bias) for an LLM's
    /// next token, the stream time of the window's last sample (s) and the latency from that
    /// sample entering the daemon to this token (s).
    #[zbus(signal)]
    async fn token_decoded(
        emitter: &SignalEmitter<'_>,
        label: &str,
        text: &str,
        token_ids: Vec<u32>,
        probability: f64,
        logit_bias: HashMap<u32, f64>,
        stream_time: f64,
        latency: f64,
    ) -> zbus::Result<()>;

    /// Samples were lost: at stream time `stream_time`, `seconds` long, `lost_samples` of them
    /// (0 when unknown).
    #[zbus(signal)]
    async fn gap(emitter: &SignalEmitter<'_>, stream_time: f64, seconds: f64, lost_samples: u64) -> zbus::Result<()>;

    /// The session's new state, and why ("" for nothing to say).
    #[zbus(signal, name = "StateChanged")]
    async fn state_changed_signal(emitter: &SignalEmitter<'_>, state: &str, message: &str) -> zbus::Result<()>;

    /// Something the subscriber should know that does not stop the session (a decoder failure on
    /// one window, events it missed).
    #[zbus(signal)]
    async fn warning(emitter: &SignalEmitter<'_>, message: &str) -> zbus::Result<()>;

    /// The session's signal quality changed (or `quality_interval` passed): `score` is the
    /// fraction of good channels over the window ending at `stream_time`; `bad` maps each flagged
    /// channel's label to its flags (`flat`, `railed`, `line_noise`, `out_of_range`).
    #[zbus(signal)]
    async fn quality_changed(
        emitter: &SignalEmitter<'_>,
        stream_time: f64,
        score: f64,
        bad: HashMap<String, Vec<String>>,
    ) -> zbus::Result<()>;

    /// The circuit breaker around the session's model changed: `state` is `open` (no window
    /// goes to the model for `retry_in` seconds), `half_open` or `closed`; `failures` in a row.
    #[zbus(signal)]
    async fn breaker_changed(
        emitter: &SignalEmitter<'_>,
        state: &str,
        failures: u32,
        retry_in: f64,
        message: &str,
    ) -> zbus::Result<()>;
}

/// Turns a subscription's events into the subscriber's signals until the session ends.
///
/// A send is never cut short (a message half written would corrupt the connection for everyone).
/// What the bus holds for a subscriber that does not read is bounded instead: each subscriber
/// may have [`SIGNALS_PER_SECOND`] (and all of them together [`Budget`]'s rate); beyond, signals
/// are dropped and counted, and the subscriber is told how many with the next one that goes. A
/// subscriber that does not answer a ping within [`PING_WITHIN`] loses its subscription.
async fn forward(mut stream: Subscription, emitter: SignalEmitter<'static>, budget: Arc<Budget>) {
    let mut own = TokenBucket::full(SIGNAL_BURST);
    let mut dropped: u64 = 0;
    // The ping in flight: when it was sent, and its answer (0 none yet, 1 answered, 2 failed).
    let mut ping: Option<(std::time::Instant, Arc<AtomicU8>)> = None;
    let mut last_ping = std::time::Instant::now();
    while let Some(delivery) = stream.recv().await {
        // Liveness: a ping at most every PING_EVERY while there is something to send. The call is
        // never cancelled; its answer is looked at here.
        if let Some((since, answer)) = &ping {
            match answer.load(Ordering::Relaxed) {
                1 => ping = None,
                0 if since.elapsed() <= PING_WITHIN => {}
                _ => {
                    log::warn!(
                        "D-Bus: a subscriber of session signals did not answer a ping within {PING_WITHIN:?}; its \
                         subscription ends"
                    );
                    return;
                }
            }
        } else if last_ping.elapsed() > PING_EVERY {
            last_ping = std::time::Instant::now();
            let answer = Arc::new(AtomicU8::new(0));
            let (conn, dest) = (emitter.connection().clone(), emitter.destination().map(|d| d.to_owned()));
            let reply = Arc::clone(&answer);
            tokio::spawn(async move {
                let ok = conn.call_method(dest, "/", Some("org.freedesktop.DBus.Peer"), "Ping", &()).await.is_ok();
                reply.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            });
            ping = Some((last_ping, answer));
        }
        let important =
            matches!(&delivery, Delivery::Event(e) if matches!(**e, Event::State { .. } | Event::Breaker { .. }));
        if !important && (own.take(SIGNALS_PER_SECOND, SIGNAL_BURST).is_err() || !budget.take()) {
            dropped += 1;
            continue;
        }
        if dropped > 0 {
            let note = format!("{dropped} signal(s) of this session were not sent: more than this subscriber's share");
            dropped = 0;
            if SessionObject::warning(&emitter, &note).await.is_err() {
                return;
            }
        }
        let sent = match delivery {
            Delivery::Event(event) => match &*event {
                Event::Token { label, text, token_ids, confidence, logit_bias, t, latency_us, .. } => {
                    let bias: HashMap<u32, f64> =
                        logit_bias.iter().filter_map(|(k, v)| Some((k.parse().ok()?, f64::from(*v)))).collect();
                    let latency = *latency_us as f64 / 1e6;
                    let probability = f64::from(*confidence);
                    SessionObject::token_decoded(
                        &emitter,
                        label,
                        text,
                        token_ids.clone(),
                        probability,
                        bias,
                        *t,
                        latency,
                    )
                    .await
                }
                Event::Gap { t, seconds, lost_samples, .. } => {
                    SessionObject::gap(&emitter, *t, *seconds, lost_samples.unwrap_or(0)).await
                }
                Event::State { state, message, .. } => {
                    SessionObject::state_changed_signal(&emitter, state.as_str(), message.as_deref().unwrap_or(""))
                        .await
                }
                Event::Warning { message, .. } | Event::RecordingStopped { message, .. } => {
                    SessionObject::warning(&emitter, message).await
                }
                Event::DecoderError { t, message, .. } => {
                    SessionObject::warning(
                        &emitter,
                        &format!("the decoder failed on the window ending at {t} s: {message}"),
                    )
                    .await
                }
                Event::Quality { quality, .. } => {
                    let bad = quality
                        .channels
                        .iter()
                        .filter(|c| !c.flags.is_empty())
                        .map(|c| (c.label.clone(), c.flags.iter().map(|f| f.as_str().to_string()).collect()))
                        .collect();
                    SessionObject::quality_changed(&emitter, quality.t, quality.score, bad).await
                }
                Event::Breaker { state, failures, retry_in, message, .. } => {
                    SessionObject::breaker_changed(
                        &emitter,
                        state.as_str(),
                        *failures,
                        retry_in.unwrap_or(0.0),
                        message,
                    )
                    .await
                }
                Event::DecoderRestart { t, reason, .. } => {
                    SessionObject::warning(
                        &emitter,
                        &format!(
                        "decoding restarted at {t} s after an outage ({reason}); the next token needs a whole window"
                    ),
                    )
                    .await
                }
                _ => Ok(()),
            },
            Delivery::Lost(n) => {
                SessionObject::warning(&emitter, &format!("this subscriber fell behind and missed {n} events")).await
            }
        };
        if let Err(e) = sent {
            log::debug!("D-Bus: a session signal could not be sent: {e}");
            return;
        }
    }
}

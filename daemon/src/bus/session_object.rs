//! `org.bci2token.Session1` at `/org/bci2token/session/<id>`: a session's description as
//! properties, `Stop`, `OpenStream` (a socket carrying the events as the control socket's
//! `follow` writes them), and `Subscribe`: the session's tokens, gaps, states and warnings as
//! signals addressed to the subscriber alone. Subscribing and opening a stream are `follow`
//! to the service: the session's owner or an admin, audited.

// TokenDecoded has seven arguments (its D-Bus signature); the interface macro generates its
// emitter with them and the emitter's receiver.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;
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

/// How long one signal to a subscriber may take to go out: a subscriber that does not read
/// (the bus queues what it has not read) loses its subscription rather than hold the door.
const SIGNAL_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

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
        let task = tokio::spawn(forward(followed.stream, emitter));
        self.ctx.add_subscription(&self.info.id, &sender, task.abort_handle());
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
}

/// Turns a subscription's events into the subscriber's signals until the session ends.
async fn forward(mut stream: Subscription, emitter: SignalEmitter<'static>) {
    while let Some(delivery) = stream.recv().await {
        let sent = tokio::time::timeout(SIGNAL_WITHIN, async {
            match delivery {
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
                    Event::Warning { message, .. } => SessionObject::warning(&emitter, message).await,
                    Event::DecoderError { t, message, .. } => {
                        SessionObject::warning(
                            &emitter,
                            &format!("the decoder failed on the window ending at {t} s: {message}"),
                        )
                        .await
                    }
                    _ => Ok(()),
                },
                Delivery::Lost(n) => {
                    SessionObject::warning(&emitter, &format!("this subscriber fell behind and missed {n} events"))
                        .await
                }
            }
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("D-Bus: a session signal could not be sent: {e}");
                return;
            }
            Err(_) => {
                log::warn!(
                    "D-Bus: a subscriber of session signals did not take one within {SIGNAL_WITHIN:?}; its \
                     subscription ends"
                );
                return;
            }
        }
    }
}

//! The monitor's threads: one reads the followed session's events, one lists the live sessions
//! every few seconds. Both hand what they get to the UI thread through one bounded channel, so
//! the UI never waits on the daemon, and a UI that falls behind makes the reader wait, the daemon
//! drop events for this follower, and a `lost` event say so.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bci2token_api::{Event, FollowOptions, Request, SessionInfo};

use crate::client::{frame_error, FrameReader};
use crate::files::Files;
use crate::transport::Transport;

/// What the threads tell the UI. `generation` tells apart the subscriptions: events of a session
/// the user has switched away from are dropped.
#[derive(Debug)]
pub enum Msg {
    /// The reply to `follow`: the session as it is now.
    Reply {
        generation: u64,
        info: Box<SessionInfo>,
    },
    Event {
        generation: u64,
        event: Box<Event>,
    },
    /// The stream ended: `None` after the final `state` event, else why it broke.
    Closed {
        generation: u64,
        error: Option<String>,
    },
    /// The caller's sessions (all states), or why they could not be listed.
    Sessions(Result<Vec<SessionInfo>, String>),
}

/// The `follow` request of the monitor (with sample blocks).
pub fn follow_request(id: &str) -> Request {
    Request::Follow { id: id.to_string(), options: FollowOptions { samples: true } }
}

/// One session followed on a thread of its own; cancelled when dropped.
pub struct Subscription {
    stop: Arc<AtomicBool>,
    stream: Arc<Mutex<Option<UnixStream>>>,
}

impl Subscription {
    /// Follows `id`: with `connected`, on a stream already answered (the reply was handled by
    /// the caller), otherwise by sending the request from the thread.
    pub fn start(
        generation: u64,
        id: &str,
        transport: &Transport,
        connected: Option<FrameReader<UnixStream>>,
        tx: SyncSender<Msg>,
    ) -> Subscription {
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(Mutex::new(None));
        let sub = Subscription { stop: stop.clone(), stream: stream.clone() };
        let (transport, id, failed) = (transport.clone(), id.to_string(), tx.clone());
        let spawned = std::thread::Builder::new().name("monitor-follow".into()).spawn(move || {
            let error = read(generation, &id, &transport, connected, &tx, &stop, &stream);
            if !stop.load(Ordering::SeqCst) {
                let _ = tx.send(Msg::Closed { generation, error });
            }
        });
        if let Err(e) = spawned {
            // Only when out of threads; said where the stream's state is shown.
            let _ = failed.try_send(Msg::Closed { generation, error: Some(format!("cannot start a thread: {e}")) });
        }
        sub
    }

    /// Stops reading: the thread ends at its next event or at once if it waits for one.
    pub fn cancel(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(guard) = self.stream.lock() {
            if let Some(s) = guard.as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The reading loop; returns why the stream ended (`None`: the session ended).
fn read(
    generation: u64,
    id: &str,
    transport: &Transport,
    connected: Option<FrameReader<UnixStream>>,
    tx: &SyncSender<Msg>,
    stop: &AtomicBool,
    shared: &Mutex<Option<UnixStream>>,
) -> Option<String> {
    let mut frames = match connected {
        Some(frames) => frames,
        None => match transport.call(&follow_request(id), &Files::default()) {
            Ok(answer) => {
                let info = match answer.reply.decode::<SessionInfo>("follow") {
                    Ok(info) => info,
                    Err(e) => return Some(e.message),
                };
                if tx.send(Msg::Reply { generation, info: Box::new(info) }).is_err() {
                    return None;
                }
                match answer.frames {
                    Some(frames) => frames,
                    None => return Some("no event stream came with the reply".into()),
                }
            }
            Err(e) => return Some(e.message),
        },
    };
    // Make the stream reachable by cancel(); it may have come already.
    if let (Ok(mut guard), Ok(clone)) = (shared.lock(), frames.get_ref().try_clone()) {
        *guard = Some(clone);
    }
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    let place = transport.place();
    loop {
        let frame = match frames.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Some(format!("bci2tokend closed the stream of session {id} before it ended")),
            Err(e) => return Some(frame_error(e, &place).message),
        };
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match serde_json::from_slice::<Event>(frame) {
            Ok(event) => {
                let last = event.is_final();
                if tx.send(Msg::Event { generation, event: Box::new(event) }).is_err() {
                    return None;
                }
                if last {
                    return None;
                }
            }
            // An error in place of an event (e.g. the daemon shutting the stream), or an event
            // type newer than this ctl (skipped).
            Err(_) => {
                if let Err(e) = crate::stream::classify(frame) {
                    return Some(e.message);
                }
            }
        }
    }
}

/// Lists the sessions every `every` until `stop`, sending each answer (a first one at once).
pub fn lister(transport: &Transport, tx: SyncSender<Msg>, stop: Arc<AtomicBool>, every: Duration) {
    let transport = transport.clone();
    let _ = std::thread::Builder::new().name("monitor-list".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let listed = transport
                .call(&Request::SessionList, &Files::default())
                .and_then(|a| a.reply.decode::<Vec<SessionInfo>>("session_list"))
                .map_err(|e| e.message);
            if tx.send(Msg::Sessions(listed)).is_err() {
                return;
            }
            let until = Instant::now() + every;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
}

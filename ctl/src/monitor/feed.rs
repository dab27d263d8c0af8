//! The monitor's threads: one reads the followed session's events, one lists the live sessions
//! every few seconds. The reader applies each event at once to the session's [`SessionView`],
//! shared with the UI thread behind a mutex: its memory is bounded in bytes (rings of samples, a
//! few tokens) however far the drawing falls behind, and the reader keeps up with the daemon as
//! long as the CPU does (when it does not, the daemon drops events for this follower and a `lost`
//! event says so). The lister hands its (small) answers to the UI through a bounded channel.
//! Neither waits on the terminal.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bci2token_api::{Event, FollowOptions, Request, SessionInfo};

use crate::client::{frame_error, FrameReader};
use crate::files::Files;
use crate::transport::Transport;

use super::model::SessionView;

/// What the lister tells the UI.
#[derive(Debug)]
pub enum Msg {
    /// The caller's sessions (all states), or why they could not be listed.
    Sessions(Result<Vec<SessionInfo>, String>),
}

/// A session's view, shared by its reader and the UI.
pub type Shared = Arc<Mutex<SessionView>>;

/// Locks a shared view (one left by a panicking thread is still drawn: the panic ends the
/// monitor anyway, see `term`).
pub fn lock(view: &Mutex<SessionView>) -> MutexGuard<'_, SessionView> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `follow` request of the monitor (with sample blocks).
pub fn follow_request(id: &str) -> Request {
    Request::Follow { id: id.to_string(), options: FollowOptions { samples: true } }
}

/// One session followed on a thread of its own, into a view of its own; cancelled when dropped.
/// A session switched away from keeps writing (until its thread sees the cancel) only into its
/// own view, which the UI no longer draws.
pub struct Subscription {
    stop: Arc<AtomicBool>,
    stream: Arc<Mutex<Option<UnixStream>>>,
}

impl Subscription {
    /// Follows `id` into `view`: with `connected`, on a stream already answered (the reply was
    /// handled by the caller), otherwise by sending the request from the thread.
    pub fn start(
        id: &str,
        transport: &Transport,
        connected: Option<FrameReader<UnixStream>>,
        view: Shared,
    ) -> Subscription {
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(Mutex::new(None));
        let sub = Subscription { stop: stop.clone(), stream: stream.clone() };
        let (transport, id, failed) = (transport.clone(), id.to_string(), view.clone());
        let spawned = std::thread::Builder::new().name("monitor-follow".into()).spawn(move || {
            let error = read(&id, &transport, connected, &view, &stop, &stream);
            if !stop.load(Ordering::SeqCst) {
                lock(&view).close(error);
            }
        });
        if let Err(e) = spawned {
            // Only when out of threads; said where the stream's state is shown.
            lock(&failed).close(Some(format!("cannot start a thread: {e}")));
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
    id: &str,
    transport: &Transport,
    connected: Option<FrameReader<UnixStream>>,
    view: &Mutex<SessionView>,
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
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                lock(view).on_reply(&info);
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
                lock(view).apply(&event);
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::PathBuf;

    use bci2token_api::event::ChannelMajor;

    use super::*;
    use crate::monitor::model::{tests::info, Stream};
    use crate::socket::{Resolved, Source};

    fn transport() -> Transport {
        Transport::Socket(Resolved { path: PathBuf::from("/nonexistent"), source: Source::Flag, user_candidate: None })
    }

    fn frame(out: &mut impl Write, event: &serde_json::Value) {
        let body = serde_json::to_vec(event).unwrap();
        out.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        out.write_all(&body).unwrap();
    }

    fn samples(frames: usize, value: f32) -> serde_json::Value {
        let data = ChannelMajor { channels: 2, frames, values: vec![value; 2 * frames].into() };
        serde_json::to_value(Event::Samples { session: "s".into(), seq: 0, t: 0.0, frames, flags: 0, data }).unwrap()
    }

    fn shared(fs: f64) -> Shared {
        let mut view = SessionView::connecting("s");
        view.on_reply(&info("s", &["O1", "O2"], fs));
        Arc::new(Mutex::new(view))
    }

    fn wait_for(view: &Shared, what: &str, ok: impl Fn(&SessionView) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok(&lock(view)) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_reader_keeps_up_without_the_ui_in_bounded_memory() {
        // Nobody draws: the reader still takes every event, into rings of 10 s.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let view = shared(250.0);
        let _sub = Subscription::start("s", &transport(), Some(FrameReader::new(ours)), view.clone());
        let mut out = theirs.try_clone().unwrap();
        for i in 0..2000 {
            frame(&mut out, &samples(25, i as f32));
        }
        frame(
            &mut out,
            &serde_json::json!({"type":"token","session":"s","seq":0,"t":1.0,"label":"h","text":"h",
            "tokenizer":"gpt2","token_ids":[1],"confidence":0.9,"probabilities":{},"logit_bias":{},"latency_us":5,
            "entered_ns":1}),
        );
        frame(&mut out, &serde_json::json!({"type":"state","session":"s","state":"finished","message":null}));
        wait_for(&view, "the end of the session", |v| v.ended());
        let v = lock(&view);
        assert_eq!((v.blocks, v.token_count, v.text.as_str(), v.stream.clone()), (2000, 1, "h", Stream::Ended));
        assert_eq!(v.channels[1].ring.len(), 2500);
        assert_eq!(v.channels[1].ring.last(1).next(), Some(1999.0));
    }

    #[test]
    fn a_broken_stream_is_said_and_a_cancelled_one_is_not() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let view = shared(250.0);
        let _sub = Subscription::start("s", &transport(), Some(FrameReader::new(ours)), view.clone());
        frame(&mut &theirs, &samples(5, 1.0));
        drop(theirs);
        wait_for(&view, "the stream closed", |v| matches!(v.stream, Stream::Closed(_)));
        assert!(matches!(&lock(&view).stream, Stream::Closed(why) if why.contains("before it ended")));

        // Cancelled (the user switched away): the stream is shut, the view left as it was.
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let view = shared(250.0);
        let sub = Subscription::start("s", &transport(), Some(FrameReader::new(ours)), view.clone());
        frame(&mut theirs, &samples(5, 1.0));
        wait_for(&view, "a block", |v| v.blocks == 1);
        let revision = lock(&view).revision;
        drop(sub);
        assert_eq!(theirs.read(&mut [0u8; 1]).unwrap(), 0, "shut");
        std::thread::sleep(Duration::from_millis(100));
        let v = lock(&view);
        assert_eq!((v.stream.clone(), v.revision), (Stream::Live, revision));
    }
}

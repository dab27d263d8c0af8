//! Recording sessions into the encrypted store (bci2token-store) without ever making acquisition
//! wait: the acquisition thread and the event publishers hand their writes to one writer thread
//! through a bounded queue; when it is full (a slow disk), the write is dropped, counted, and the
//! session gets a `warning` event. The writer commits what has queued up in one transaction, then
//! counts those writes as stored: a block counted in `stored_blocks` has been committed.
//!
//! Control operations (delete, audit) run on the same thread, after the writes queued before them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use bci2token_api::Event;
use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Op, Store};

use crate::hub::Hub;

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 512;

/// What a session's recording has done so far.
#[derive(Debug, Default)]
pub struct RecordCounters {
    pub stored_blocks: AtomicU64,
    pub stored_events: AtomicU64,
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
}

type Call = Box<dyn FnOnce(&mut Store) + Send>;

enum Msg {
    Op(Op, Option<Arc<RecordCounters>>),
    Call(Call),
}

/// The writer thread and the way to it.
pub struct StoreWriter {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Opens the store in `data_dir` (master key from `credentials_dir` or `data_dir/master.key`),
    /// marks sessions a crash left `recording` as `interrupted`, and starts the writer.
    pub fn start(data_dir: &Path, credentials_dir: Option<&Path>, queue: usize) -> Result<StoreWriter, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        // The data directory holds the key and every recording: the daemon's user only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: cannot make it private (mode 0700): {e}", data_dir.display()))?;
        }
        let master = Arc::new(MasterKey::load(credentials_dir, data_dir)?);
        if !master.is_locked() {
            log::debug!("the master key could not be locked in memory (RLIMIT_MEMLOCK); it may be swapped");
        }
        let path = data_dir.join("sessions.db");
        let mut store = Store::open(&path, master).map_err(|e| e.to_string())?;
        // A key rotation interrupted by a crash: the new key is in master.key.next; whichever key
        // opens the store is the one to keep.
        let opens = |s: &mut Store| s.master_opens().map_err(|e| e.to_string());
        if let Some(next) = MasterKey::pending_rotation(data_dir)? {
            if opens(&mut store)? {
                let _ = std::fs::remove_file(data_dir.join(bci2token_store::keys::NEXT_KEY_FILE_NAME));
                log::warn!(
                    "store: a key rotation was interrupted before it reached the store; its new key was discarded"
                );
            } else {
                store = Store::open(&path, Arc::new(next)).map_err(|e| e.to_string())?;
                if !opens(&mut store)? {
                    return Err(format!("{}: neither master.key nor master.key.next opens it", path.display()));
                }
                MasterKey::finish_rotation(data_dir)?;
                log::warn!("store: completed a key rotation that was interrupted after the store was re-wrapped");
            }
        } else if !opens(&mut store)? {
            return Err(format!(
                "{}: the master key does not open this store (a different key file or credential than the one it was \
                 written with); restore the right key",
                path.display()
            ));
        }
        let interrupted = store.mark_interrupted().map_err(|e| e.to_string())?;
        if !interrupted.is_empty() {
            log::warn!(
                "store: {} session(s) were still recording when the daemon last ended and are marked interrupted: {}",
                interrupted.len(),
                interrupted.join(", ")
            );
        }
        // A full integrity check reads the whole database: worth it after an unclean end, not at
        // every start of a large store.
        if !interrupted.is_empty() {
            match store.integrity_check() {
                Ok(ok) if ok == "ok" => log::info!("store {}: integrity check ok", path.display()),
                Ok(problems) => log::error!("store {}: integrity check: {problems}", path.display()),
                Err(e) => log::error!("store: {e}"),
            }
        }
        log::info!("recording sessions to {}", path.display());
        let (tx, rx) = sync_channel(queue);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(store, rx))
            .map_err(|e| format!("cannot start the store writer: {e}"))?;
        Ok(StoreWriter { tx, thread: Some(thread) })
    }

    /// Runs `f` on the writer thread after the writes queued so far, and returns its result.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> T + Send + 'static) -> Result<T, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        let call: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.tx.send(Msg::Call(call)).map_err(|_| "the store writer has stopped".to_string())?;
        answer.recv().map_err(|_| "the store writer has stopped".to_string())
    }

    /// Starts recording a session: its metadata now (waiting for room in the queue: this is a
    /// control request, not acquisition), its blocks and events through [`SessionRecorder`].
    /// `lossless`: the source can wait (file replay at full speed), so a full queue holds it up
    /// instead of dropping.
    pub fn record(
        &self,
        session: &str,
        created: f64,
        meta: Vec<u8>,
        hub: &Arc<Hub>,
        lossless: bool,
    ) -> Result<Arc<SessionRecorder>, String> {
        self.tx
            .send(Msg::Op(Op::Create { id: session.to_string(), created, meta }, None))
            .map_err(|_| "the store writer has stopped".to_string())?;
        let recorder = Arc::new(SessionRecorder {
            session: session.to_string(),
            tx: self.tx.clone(),
            counters: Arc::new(RecordCounters::default()),
            next_event: AtomicU64::new(0),
            hub: Arc::downgrade(hub),
            lossless,
            overflow: std::sync::Mutex::new(Vec::new()),
        });
        let tap = Arc::clone(&recorder);
        hub.set_tap(Box::new(move |event| tap.event(event)));
        Ok(recorder)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Closing the queue ends the loop once everything queued is written.
        let (tx, _) = sync_channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Who to tell about one write of a batch.
type Ack = Option<(Arc<RecordCounters>, Kind)>;

fn acknowledge(ack: &Ack) {
    if let Some((c, kind)) = ack {
        let counter = if *kind == Kind::Block { &c.stored_blocks } else { &c.stored_events };
        counter.fetch_add(1, Ordering::Release);
    }
}

fn write_loop(mut store: Store, rx: Receiver<Msg>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    let mut acks: Vec<Ack> = Vec::with_capacity(MAX_BATCH);
    let flush = |store: &mut Store, batch: &mut Vec<Op>, acks: &mut Vec<Ack>| {
        if batch.is_empty() {
            return;
        }
        match store.apply(batch) {
            Ok(()) => acks.iter().for_each(acknowledge),
            Err(e) => {
                // One bad write must not take the others with it: retry each on its own, and count
                // the ones that still fail against their session.
                log::warn!("store: a batch of {} write(s) failed ({e}); writing them one by one", batch.len());
                for (op, ack) in batch.iter().zip(acks.iter()) {
                    match store.apply(std::slice::from_ref(op)) {
                        Ok(()) => acknowledge(ack),
                        Err(e) => {
                            log::error!("store: a write was lost: {e}");
                            if let Some((c, _)) = ack {
                                c.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
        batch.clear();
        acks.clear();
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op, ack) => {
                    acks.push(match (ack, &op) {
                        (Some(c), Op::Chunk { kind, .. }) => Some((c, *kind)),
                        _ => None,
                    });
                    batch.push(op);
                }
                Msg::Call(f) => {
                    flush(&mut store, &mut batch, &mut acks);
                    f(&mut store);
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut store, &mut batch, &mut acks);
    }
    let _ = store.checkpoint();
}

/// One session's way to the store. Never blocks.
pub struct SessionRecorder {
    session: String,
    tx: SyncSender<Msg>,
    pub counters: Arc<RecordCounters>,
    next_event: AtomicU64,
    /// For the overflow warning (weak: the hub owns its tap, which owns this).
    hub: std::sync::Weak<Hub>,
    /// The source can wait (replay at full speed): its acquisition thread waits for room in the
    /// queue. Other threads (the decode thread publishing tokens) never wait: what does not fit
    /// waits here until the acquisition thread's next write carries it.
    lossless: bool,
    overflow: std::sync::Mutex<Vec<Op>>,
}

impl SessionRecorder {
    fn msg(&self, op: Op) -> Msg {
        Msg::Op(op, Some(Arc::clone(&self.counters)))
    }

    /// Waits for room (only on the acquisition thread of a lossless source, or for a session's
    /// last writes), sending first what other threads left waiting.
    fn send_waiting(&self, op: Op) {
        let waiting: Vec<Op> = std::mem::take(&mut *self.overflow.lock().unwrap());
        for earlier in waiting {
            let _ = self.tx.send(self.msg(earlier));
        }
        let _ = self.tx.send(self.msg(op));
    }

    /// Never waits.
    fn send(&self, op: Op) {
        let msg = self.msg(op);
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Op(op, _))) if self.lossless => self.overflow.lock().unwrap().push(op),
            Err(TrySendError::Full(_)) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    log::warn!("session {}: the store is behind; {n} write(s) not recorded", self.session);
                    if let Some(hub) = self.hub.upgrade() {
                        // Published without the tap: a warning about the store is not itself stored.
                        hub.publish_untapped(Event::Warning {
                            session: self.session.clone(),
                            message: format!(
                                "the session store is behind (slow disk?): {n} block(s)/event(s) were not recorded; \
                                 acquisition goes on"
                            ),
                        });
                    }
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// A sample block: its sequence number, stream time, flags and channel-major values.
    pub fn block(&self, seq: u64, t: f64, flags: u32, channels: usize, frames: usize, data: &[f32]) {
        let mut plain = Vec::with_capacity(24 + data.len() * 4);
        plain.extend_from_slice(&t.to_le_bytes());
        plain.extend_from_slice(&flags.to_le_bytes());
        plain.extend_from_slice(&(channels as u32).to_le_bytes());
        plain.extend_from_slice(&(frames as u64).to_le_bytes());
        for v in data {
            plain.extend_from_slice(&v.to_le_bytes());
        }
        let op = Op::Chunk { session: self.session.clone(), kind: Kind::Block, seq, plain };
        if self.lossless {
            self.send_waiting(op);
        } else {
            self.send(op);
        }
    }

    /// An event as its JSON (sample blocks and statistics are not stored as events).
    fn event(&self, event: &Event) {
        if matches!(event, Event::Samples { .. } | Event::Stats { .. } | Event::Lost { .. }) {
            return;
        }
        let Ok(json) = serde_json::to_vec(event) else { return };
        let seq = self.next_event.fetch_add(1, Ordering::Relaxed);
        let op = Op::Chunk { session: self.session.clone(), kind: Kind::Event, seq, plain: json };
        match event {
            // The session's last writes (published by its acquisition thread as it ends, after the
            // decoder drained) wait for room: a full queue must not leave it `recording`.
            Event::State { state, .. } if state.is_final() => {
                self.send_waiting(op);
                let stopped = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                self.send_waiting(Op::Finish {
                    session: self.session.clone(),
                    state: state.as_str().to_string(),
                    stopped,
                });
            }
            _ => self.send(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Delivery;

    /// A store that cannot keep up (nobody drains the queue): a real-time session's writes are
    /// dropped and counted, the session is warned at the 1st, 2nd and 4th drop, and nothing blocks.
    #[test]
    fn a_full_queue_drops_counts_and_warns_without_blocking() {
        let (tx, _rx) = sync_channel(1);
        let hub = Arc::new(Hub::new(64));
        let mut sub = hub.subscribe(false, false).unwrap();
        let recorder = SessionRecorder {
            session: "s".into(),
            tx,
            counters: Arc::new(RecordCounters::default()),
            next_event: AtomicU64::new(0),
            hub: Arc::downgrade(&hub),
            lossless: false,
            overflow: std::sync::Mutex::new(Vec::new()),
        };
        let started = std::time::Instant::now();
        for seq in 0..5 {
            recorder.block(seq, seq as f64, 0, 1, 2, &[1.0, 2.0]);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "acquisition never waits");
        assert_eq!(recorder.counters.dropped.load(Ordering::Relaxed), 4, "the first fits, four are dropped");
        let mut warnings = Vec::new();
        while let Some(Delivery::Event(e)) = sub.try_recv() {
            if let Event::Warning { message, .. } = &*e {
                warnings.push(message.clone());
            }
        }
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[2].contains("4 block(s)/event(s) were not recorded"), "{}", warnings[2]);
    }
}

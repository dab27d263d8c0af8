//! Recording sessions into the encrypted store (bci2token-store) without ever making a live
//! session wait: each session hands its writes to the one writer thread through a lane of its
//! own (bci2token-sched), served fairly, real-time sessions first. When a real-time session's
//! lane is full (a slow disk), the write is dropped, counted, and the session gets a `warning`
//! event; a session that can wait (replay at `speed=0`) waits for room in its own lane, so it
//! never takes room from another. The writer commits what one round gives in one transaction,
//! then counts those writes as stored: a block counted in `stored_blocks` has been committed.
//!
//! Control operations (delete, audit) run on the same thread, after every write queued before
//! them in any lane.
//!
//! A write that fails (the file system is full, an I/O error) stops that session's recording,
//! not the session: its later blocks and events are not tried, it gets a `recording_stopped`
//! event with the cause at its next write, and `recording_error` in its info. A batch that
//! fails is retried write by write, so only the sessions whose own writes fail stop recording.
//! What was committed before stays. After a full file system the store counts as full (new
//! recording sessions are refused) until [`RESUME_FREE_BYTES`] are free again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bci2token_sched::{Class, FairQueue, Heartbeat, Lane, Take, Taken};
use std::thread::JoinHandle;

use bci2token_api::Event;
use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Op, Store, StoreError};

use crate::hub::Hub;

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 512;

/// After a full file system, new recording sessions are refused until this much is free again.
pub const RESUME_FREE_BYTES: u64 = 8 << 20;

/// What a session's recording has done so far.
#[derive(Debug)]
pub struct RecordCounters {
    session: String,
    pub stored_blocks: AtomicU64,
    pub stored_events: AtomicU64,
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Why the recording stopped (the first failed write's cause).
    failed: std::sync::OnceLock<String>,
}

impl RecordCounters {
    fn new(session: &str) -> RecordCounters {
        RecordCounters {
            session: session.to_string(),
            stored_blocks: AtomicU64::new(0),
            stored_events: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: std::sync::OnceLock::new(),
        }
    }

    /// The session's recording stopped on `cause` (logged once, the first cause kept).
    fn fail(&self, cause: &StoreError) {
        let message = format!("recording stopped: {cause}; the session goes on unrecorded");
        if self.failed.set(message).is_ok() {
            log::error!("session {}: recording stopped: {cause}", self.session);
        }
    }
}

type Call = Box<dyn FnOnce(&mut Store) + Send>;

enum Msg {
    Op(Op, Option<Arc<RecordCounters>>),
    Call(Call),
}

/// Control calls waiting at most (callers wait for room beyond that).
const CALL_QUEUE: usize = 64;
/// How long the idle writer waits before it beats again.
const IDLE_BEAT: Duration = Duration::from_millis(500);

/// Free bytes for an unprivileged writer on the file system holding `dir` (0 when unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0)
}

/// The writer thread and the ways to it.
pub struct StoreWriter {
    queue: FairQueue<Msg>,
    /// Set when a write found the file system full; see [`StoreWriter::check_room`].
    full: Arc<AtomicBool>,
    data_dir: PathBuf,
    /// Control calls, each after every write queued before it.
    calls: Lane<Msg>,
    /// Each session's lane holds at most this many writes in flight.
    lane_capacity: usize,
    thread: Option<JoinHandle<()>>,
    heartbeat: Arc<Heartbeat>,
}

impl StoreWriter {
    /// Opens the store in `data_dir` (master key from `credentials_dir` or `data_dir/master.key`),
    /// marks sessions a crash left `recording` as `interrupted`, and starts the writer.
    /// `queue_len`: each session's writes in flight at most.
    pub fn start(data_dir: &Path, credentials_dir: Option<&Path>, queue_len: usize) -> Result<StoreWriter, String> {
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
        // A deletion whose WAL truncation was still owed when the daemon last ended (exports
        // were reading) is completed now, before anything else is written.
        if let Err(e) = store.checkpoint() {
            log::warn!("store: checkpoint at start: {e}");
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
        let heartbeat = Heartbeat::new("store-writer");
        let beat = Arc::clone(&heartbeat);
        store.on_progress(Box::new(move || beat.beat()));
        let queue = FairQueue::new();
        let calls = queue.lane(Class::Ordered, CALL_QUEUE);
        let full = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queue, heartbeat, full) = (queue.clone(), Arc::clone(&heartbeat), Arc::clone(&full));
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(store, &queue, &heartbeat, &full))
                .map_err(|e| format!("cannot start the store writer: {e}"))?
        };
        Ok(StoreWriter {
            queue,
            full,
            data_dir: data_dir.to_path_buf(),
            calls,
            lane_capacity: queue_len,
            thread: Some(thread),
            heartbeat,
        })
    }

    /// Whether a new session may record: not while the store's file system is full, that is
    /// after a write found it full and until [`RESUME_FREE_BYTES`] are free there again.
    pub fn check_room(&self) -> Result<(), String> {
        if !self.full.load(Ordering::Acquire) {
            return Ok(());
        }
        let free = free_bytes(&self.data_dir);
        if free >= RESUME_FREE_BYTES {
            self.full.store(false, Ordering::Release);
            return Ok(());
        }
        Err(format!(
            "the file system holding the session store ({}) is full ({} KiB free): nothing can be recorded; free at \
             least {} MiB there and start the session again",
            self.data_dir.display(),
            free / 1024,
            RESUME_FREE_BYTES >> 20
        ))
    }

    /// The writer thread's heartbeat (it beats between batches, while idle, and as SQLite works).
    pub fn heartbeat(&self) -> &Arc<Heartbeat> {
        &self.heartbeat
    }

    /// As [`StoreWriter::call`], giving up after `limit` (the call still runs when its turn
    /// comes; its result is dropped then).
    pub fn call_within<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, String> {
        let deadline = std::time::Instant::now() + limit;
        let late =
            || format!("the store writer did not answer within {} s (it is behind or stuck)", limit.as_secs_f64());
        let (reply, answer) = std::sync::mpsc::channel();
        let call: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.calls.push_wait(Msg::Call(call), || std::time::Instant::now() < deadline).map_err(|_| late())?;
        answer.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => late(),
            std::sync::mpsc::RecvTimeoutError::Disconnected => "the store writer has stopped".to_string(),
        })
    }

    /// Runs `f` on the writer thread after the writes queued so far, and returns its result.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Store) -> T + Send + 'static) -> Result<T, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        let call: Call = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.calls.push_wait(Msg::Call(call), || true).map_err(|_| "the store writer has stopped".to_string())?;
        answer.recv().map_err(|_| "the store writer has stopped".to_string())
    }

    /// Starts recording a session: its metadata now, its blocks and events through
    /// [`SessionRecorder`] and a lane of the session's own. `lossless`: the source can wait (file
    /// replay at full speed), so a full lane holds it up instead of dropping. `heartbeat`: the
    /// session's, beaten while it waits.
    pub fn record(
        &self,
        session: &str,
        created: f64,
        meta: Vec<u8>,
        hub: &Arc<Hub>,
        lossless: bool,
        heartbeat: Arc<Heartbeat>,
    ) -> Result<Arc<SessionRecorder>, String> {
        let lane = self.queue.lane(if lossless { Class::Bulk } else { Class::RealTime }, self.lane_capacity);
        let counters = Arc::new(RecordCounters::new(session));
        // A creation that fails (a full disk) fails the recording like any other write.
        let create = Op::Create { id: session.to_string(), created, meta };
        lane.push_wait(Msg::Op(create, Some(Arc::clone(&counters))), || true)
            .map_err(|_| "the store writer has stopped".to_string())?;
        let recorder = Arc::new(SessionRecorder {
            session: session.to_string(),
            lane,
            counters,
            next_event: AtomicU64::new(0),
            hub: Arc::downgrade(hub),
            announced: AtomicBool::new(false),
            lossless,
            heartbeat,
        });
        let tap = Arc::clone(&recorder);
        hub.set_tap(Box::new(move |event| tap.event(event)));
        Ok(recorder)
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Closing the queue ends the loop once everything queued is written.
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whose write one write of a batch is, and what it counts as once committed (a block, an event,
/// or nothing: the session's creation).
type Ack = Option<(Arc<RecordCounters>, Option<Kind>)>;

fn acknowledge(ack: &Ack) {
    if let Some((c, Some(kind))) = ack {
        let counter = if *kind == Kind::Block { &c.stored_blocks } else { &c.stored_events };
        counter.fetch_add(1, Ordering::Release);
    }
}

fn fail(ack: &Ack, cause: &StoreError) {
    if let Some((c, _)) = ack {
        c.fail(cause);
    }
}

fn write_loop(mut store: Store, queue: &FairQueue<Msg>, heartbeat: &Heartbeat, full: &AtomicBool) {
    /// However the loop ends (a panic in SQLite's or our code too), nobody may wait for it: what
    /// is queued is dropped, so callers waiting for an answer get "the store writer has stopped".
    struct Abandon<'a>(&'a FairQueue<Msg>);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            self.0.abandon();
        }
    }
    let _abandon = Abandon(queue);
    let mut taken: Vec<Taken<Msg>> = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    let mut acks: Vec<Ack> = Vec::with_capacity(MAX_BATCH);
    let mut lanes: Vec<bci2token_sched::LaneId> = Vec::with_capacity(MAX_BATCH);
    let mut warned = None;
    loop {
        heartbeat.beat();
        match queue.take(MAX_BATCH, &mut taken, IDLE_BEAT) {
            Take::Closed => break,
            Take::Idle => continue,
            Take::Items => {}
        }
        for Taken { lane, value } in taken.drain(..) {
            lanes.push(lane);
            match value {
                Msg::Op(op, ack) => {
                    let ack = ack.map(|c| {
                        let kind = if let Op::Chunk { kind, .. } = &op { Some(*kind) } else { None };
                        (c, kind)
                    });
                    // A stopped recording's later blocks and events are not tried (a full disk
                    // would fail each of them again); its end is, so that it is not left
                    // `recording`.
                    if let Some((c, Some(_))) = &ack {
                        if c.failed.get().is_some() {
                            continue;
                        }
                    }
                    acks.push(ack);
                    batch.push(op);
                }
                Msg::Call(f) => {
                    flush(&mut store, (&mut batch, &mut acks), full, &mut warned);
                    // A control request that panics fails alone (its caller sees its answer
                    // dropped); an open transaction is rolled back as it unwinds.
                    let call = std::panic::AssertUnwindSafe(|| f(&mut store));
                    if std::panic::catch_unwind(call).is_err() {
                        log::error!("store: a control request panicked; the writer goes on");
                    }
                }
            }
        }
        flush(&mut store, (&mut batch, &mut acks), full, &mut warned);
        // Written: the room goes back to each lane.
        for lane in lanes.drain(..) {
            queue.release(lane, 1);
        }
    }
    let _ = store.checkpoint();
}

/// Commits `batch` in one transaction and counts each write for its session. `full` is set
/// when a write found the file system full; `warned`: when a failed batch was last logged.
fn flush(
    store: &mut Store,
    (batch, acks): (&mut Vec<Op>, &mut Vec<Ack>),
    full: &AtomicBool,
    warned: &mut Option<std::time::Instant>,
) {
    if batch.is_empty() {
        return;
    }
    match store.apply(batch) {
        Ok(()) => acks.iter().for_each(acknowledge),
        Err(e) => {
            // One session's write must not take the others' with it (a small write may still
            // fit where a large one did not): each is retried on its own, and a session whose
            // own write fails stops recording; its later writes in this batch are not tried.
            // On a disk nearly full every batch may fail while single writes fit: said once a
            // minute at most.
            if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                log::warn!("store: a batch of {} write(s) failed ({e}); writing them one by one", batch.len());
                *warned = Some(std::time::Instant::now());
            }
            full.fetch_or(e.is_full(), Ordering::AcqRel);
            for (op, ack) in batch.iter().zip(acks.iter()) {
                let stopped = matches!(ack, Some((c, Some(_))) if c.failed.get().is_some());
                if stopped {
                    continue;
                }
                match store.apply(std::slice::from_ref(op)) {
                    Ok(()) => acknowledge(ack),
                    Err(e) => {
                        full.fetch_or(e.is_full(), Ordering::AcqRel);
                        match ack {
                            Some(_) => fail(ack, &e),
                            None => log::error!("store: a write was lost: {e}"),
                        }
                    }
                }
            }
        }
    }
    batch.clear();
    acks.clear();
}

/// One session's way to the store, through its own lane.
pub struct SessionRecorder {
    session: String,
    lane: Lane<Msg>,
    pub counters: Arc<RecordCounters>,
    next_event: AtomicU64,
    /// For the overflow warning (weak: the hub owns its tap, which owns this).
    hub: std::sync::Weak<Hub>,
    /// The `recording_stopped` event was published.
    announced: AtomicBool,
    /// The source can wait (replay at full speed): its threads (acquisition, publisher) wait for
    /// room in this session's lane instead of dropping.
    lossless: bool,
    /// The session's heartbeat, beaten while waiting (waiting for the store is not being stuck;
    /// the writer has a heartbeat of its own).
    heartbeat: Arc<Heartbeat>,
}

impl SessionRecorder {
    /// Writes of this session waiting for the writer thread, and the most it may have.
    pub fn queued(&self) -> (usize, usize) {
        (self.lane.in_flight(), self.lane.capacity())
    }

    /// Why this session's recording stopped, once a write of it has failed.
    pub fn failed(&self) -> Option<&str> {
        self.counters.failed.get().map(String::as_str)
    }

    /// True once the recording stopped; the first time, announces it with a
    /// `recording_stopped` event (from the session's own threads, as the slow-disk warning:
    /// never from the writer thread, which must not wait for a follower).
    fn stopped(&self) -> bool {
        let Some(message) = self.failed() else { return false };
        if !self.announced.swap(true, Ordering::AcqRel) {
            if let Some(hub) = self.hub.upgrade() {
                hub.publish_untapped(Event::RecordingStopped {
                    session: self.session.clone(),
                    message: message.to_string(),
                });
            }
        }
        true
    }

    fn msg(&self, op: Op) -> Msg {
        Msg::Op(op, Some(Arc::clone(&self.counters)))
    }

    /// Waits for room in this session's lane (a lossless source, or a session's last writes).
    fn send_waiting(&self, op: Op) {
        let _ = self.lane.push_wait(self.msg(op), || {
            self.heartbeat.beat();
            true
        });
    }

    /// Waits only for a lossless source; a real-time session's write is dropped when its lane
    /// is full.
    fn send(&self, op: Op) {
        if self.stopped() {
            return;
        }
        if self.lossless {
            return self.send_waiting(op);
        }
        if self.lane.try_push(self.msg(op)).is_ok() {
            return;
        }
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
        self.send(Op::Chunk { session: self.session.clone(), kind: Kind::Block, seq, plain });
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
                // A stopped recording still records its end (the writer tries it).
                if !self.stopped() {
                    self.send_waiting(op);
                }
                let stopped = crate::wall_clock::wall_now();
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
        let queue = FairQueue::new();
        let hub = Arc::new(Hub::new(64, Heartbeat::new("test")));
        let mut sub = hub.subscribe(false, false).unwrap();
        let recorder = SessionRecorder {
            session: "s".into(),
            lane: queue.lane(Class::RealTime, 1),
            counters: Arc::new(RecordCounters::new("s")),
            next_event: AtomicU64::new(0),
            hub: Arc::downgrade(&hub),
            announced: AtomicBool::new(false),
            lossless: false,
            heartbeat: Heartbeat::new("test"),
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

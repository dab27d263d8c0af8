//! The decode threads. Each session submits windows through a lane of its own (see
//! bci2token-sched), so a session that produces faster than it is decoded fills only its own
//! lane. Real-time sessions' lanes go to the `decoder` thread; the lanes of sessions that can
//! wait (replay at full speed) go to `decoder-bulk`, which runs at the lowest CPU priority: a
//! live window never waits for a forward pass of a replay's batch, and replays get the CPU the
//! live sessions leave. Each thread takes what one round gives (round robin over its lanes),
//! groups it by model, and runs one forward pass per model for the whole group (batching
//! across sessions), then hands each window's logits to the job's callback.
//!
//! A panic in a forward pass (a model or libtorch bug) costs only the windows of that pass: they
//! are answered with an error, the panic is counted, and the thread takes the next round.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bci2token_sched::{Class, FairQueue, Heartbeat, Lane, Take, Taken};

use crate::model::Model;

/// Called on the decode thread with the window's logits (`output_len()` floats) or the failure.
/// It must be quick (hand the result to another thread): every session waits while it runs.
pub type Done = Box<dyn FnOnce(Result<Vec<f32>, String>) + Send>;

/// What the decode thread needs of a model.
pub trait Forward: Send + Sync {
    fn name(&self) -> &str;
    /// Floats in one window.
    fn input_len(&self) -> usize;
    /// Floats in one window's output.
    fn output_len(&self) -> usize;
    /// `batch` windows in, `batch * output_len()` floats out.
    fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, String>;
}

impl Forward for Model {
    fn name(&self) -> &str {
        Model::name(self)
    }
    fn input_len(&self) -> usize {
        Model::input_len(self)
    }
    fn output_len(&self) -> usize {
        Model::output_len(self)
    }
    fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, String> {
        Model::forward(self, input, batch).map_err(|e| e.to_string())
    }
}

/// One window to decode.
pub struct Job {
    pub model: Arc<dyn Forward>,
    /// `model.input_len()` floats, channel-major.
    pub window: Vec<f32>,
    pub done: Done,
}

/// Counters a benchmark or `status` can read.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub batches: AtomicU64,
    pub windows: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Forward passes that panicked (the thread went on).
    pub panics: AtomicU64,
}

/// How long the idle thread waits before it beats again.
const IDLE_BEAT: Duration = Duration::from_millis(500);

/// One decode thread and the lanes into it.
struct Worker {
    queue: FairQueue<Job>,
    thread: Option<JoinHandle<()>>,
    heartbeat: Arc<Heartbeat>,
}

impl Worker {
    fn start(name: &str, background: bool, max_batch: usize, stats: &Arc<EngineStats>) -> std::io::Result<Worker> {
        let queue = FairQueue::new();
        let heartbeat = Heartbeat::new(name);
        if background {
            heartbeat.set_background();
        }
        let thread = {
            let (queue, stats, heartbeat) = (queue.clone(), Arc::clone(stats), Arc::clone(&heartbeat));
            let name = name.to_string();
            std::thread::Builder::new().name(name.clone()).spawn(move || {
                if background {
                    if let Err(e) = bci2token_sched::priority::run_in_background() {
                        log::warn!("{name}: cannot lower its CPU priority ({e}); replays compete with live sessions");
                    }
                }
                run(&queue, max_batch, &stats, &heartbeat)
            })?
        };
        Ok(Worker { queue, thread: Some(thread), heartbeat })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Engine {
    live: Worker,
    bulk: Worker,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the decode threads. At most `max_batch` windows go into one forward pass.
    pub fn start(max_batch: usize) -> std::io::Result<Engine> {
        let stats = Arc::new(EngineStats::default());
        let live = Worker::start("decoder", false, max_batch.max(1), &stats)?;
        let bulk = Worker::start("decoder-bulk", true, max_batch.max(1), &stats)?;
        Ok(Engine { live, bulk, stats })
    }

    /// A session's way in: at most `capacity` of its windows in flight (queued, being decoded,
    /// or answered and not yet released by the session). [`Class::RealTime`] lanes go to the
    /// live decode thread, the others to the background one.
    pub fn lane(&self, class: Class, capacity: usize) -> Lane<Job> {
        match class {
            Class::RealTime => self.live.queue.lane(class, capacity),
            Class::Bulk | Class::Ordered => self.bulk.queue.lane(Class::Bulk, capacity),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The decode threads' heartbeats (each beats between forward passes and while idle).
    pub fn heartbeats(&self) -> [&Arc<Heartbeat>; 2] {
        [&self.live.heartbeat, &self.bulk.heartbeat]
    }
}

fn run(queue: &FairQueue<Job>, max_batch: usize, stats: &EngineStats, heartbeat: &Heartbeat) {
    let mut taken: Vec<Taken<Job>> = Vec::with_capacity(max_batch);
    let mut input: Vec<f32> = Vec::new();
    loop {
        heartbeat.beat();
        match queue.take(max_batch, &mut taken, IDLE_BEAT) {
            Take::Closed => return,
            Take::Idle => continue,
            Take::Items => {}
        }
        // The room of a window is given back by whoever finishes it (the session), not here.
        let mut pending: VecDeque<Job> = taken.drain(..).map(|t| t.value).collect();
        while let Some(first) = pending.front() {
            // One forward pass for every waiting window of the first job's model.
            let model = Arc::clone(&first.model);
            let same = |j: &Job| std::ptr::addr_eq(Arc::as_ptr(&j.model), Arc::as_ptr(&model));
            let (mut group, rest): (VecDeque<Job>, VecDeque<Job>) = pending.drain(..).partition(same);
            pending = rest;
            let outcome = catch_unwind(AssertUnwindSafe(|| decode_group(&*model, &mut group, &mut input, stats)));
            if let Err(panic) = outcome {
                stats.panics.fetch_add(1, Ordering::Relaxed);
                let why = panic_message(&*panic);
                log::error!(
                    "decoder: model `{}` panicked ({why}); {} window(s) fail, the decode thread goes on",
                    model.name(),
                    group.len()
                );
                for job in group.drain(..) {
                    let message = format!("the decoder panicked on this window ({why}); decoding goes on");
                    let _ = catch_unwind(AssertUnwindSafe(|| (job.done)(Err(message))));
                }
            }
            heartbeat.beat();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Answers every job of `group` (all of one model), removing each as it is answered, so that a
/// panic leaves exactly the unanswered ones in `group`.
fn decode_group(model: &dyn Forward, group: &mut VecDeque<Job>, input: &mut Vec<f32>, stats: &EngineStats) {
    let (want_in, want_out) = (model.input_len(), model.output_len());
    if want_out == 0 {
        // Nothing to split a batch's output by (no manifest gives this; a custom model might).
        for job in group.drain(..) {
            (job.done)(Err(format!("model `{}` has no outputs", model.name())));
        }
        return;
    }
    // A window of the wrong size fails alone.
    let mut i = 0;
    while i < group.len() {
        if group[i].window.len() == want_in {
            i += 1;
            continue;
        }
        let job = group.remove(i).expect("index checked");
        let got = job.window.len();
        (job.done)(Err(format!("a window of {got} values was submitted; model `{}` takes {want_in}", model.name())));
    }
    let batch = group.len();
    if batch == 0 {
        return;
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.windows.fetch_add(batch as u64, Ordering::Relaxed);
    stats.largest_batch.fetch_max(batch as u64, Ordering::Relaxed);
    if batch > 1 {
        input.clear();
        for job in group.iter() {
            input.extend_from_slice(&job.window);
        }
        if let Ok(logits) = model.forward(input, batch).and_then(|l| checked(model, l, batch * want_out)) {
            for out in logits.chunks_exact(want_out) {
                let job = group.pop_front().expect("one job per output");
                (job.done)(Ok(out.to_vec()));
            }
            return;
        }
        // One bad window must not cost the others their result (they may belong to other
        // sessions): decode them one by one, so only the failing ones fail.
    }
    while let Some(job) = group.front() {
        let result = model.forward(&job.window, 1).and_then(|l| checked(model, l, want_out));
        let job = group.pop_front().expect("the job just decoded");
        (job.done)(result);
    }
}

/// The model returned as many floats as its outputs need.
fn checked(model: &dyn Forward, logits: Vec<f32>, want: usize) -> Result<Vec<f32>, String> {
    if logits.len() == want {
        Ok(logits)
    } else {
        Err(format!("model `{}` returned {} values where {want} were expected", model.name(), logits.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Sums each window; panics on a window that starts with NaN (a stand-in for a model or
    /// libtorch bug: the engine cannot tell the difference).
    struct Summer;

    impl Forward for Summer {
        fn name(&self) -> &str {
            "summer"
        }
        fn input_len(&self) -> usize {
            2
        }
        fn output_len(&self) -> usize {
            1
        }
        fn forward(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, String> {
            assert!(!input[0].is_nan(), "a NaN reached the summer");
            if input.iter().any(|v| v.is_infinite()) {
                return Err("infinite input".into());
            }
            Ok(input.chunks(2).take(batch).map(|w| w[0] + w[1]).collect())
        }
    }

    fn submit(
        lane: &Lane<Job>,
        model: &Arc<dyn Forward>,
        window: Vec<f32>,
        tx: &mpsc::Sender<Result<Vec<f32>, String>>,
    ) {
        let tx = tx.clone();
        let job = Job { model: Arc::clone(model), window, done: Box::new(move |r| tx.send(r).unwrap()) };
        assert!(lane.try_push(job).is_ok());
    }

    #[test]
    fn a_panicking_forward_fails_its_windows_and_the_thread_goes_on() {
        let engine = Engine::start(8).unwrap();
        let model: Arc<dyn Forward> = Arc::new(Summer);
        let bad = engine.lane(Class::RealTime, 16);
        let good = engine.lane(Class::RealTime, 16);
        let (tx, rx) = mpsc::channel();
        submit(&bad, &model, vec![f32::NAN, 1.0], &tx);
        let err = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap_err();
        assert!(err.contains("panicked") && err.contains("NaN reached the summer"), "{err}");
        assert_eq!(engine.stats().panics.load(Ordering::Relaxed), 1);
        // The same thread decodes the next windows, of either session.
        submit(&good, &model, vec![1.0, 2.0], &tx);
        submit(&bad, &model, vec![3.0, 4.0], &tx);
        let mut sums: Vec<f32> =
            (0..2).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap()[0]).collect();
        sums.sort_by(f32::total_cmp);
        assert_eq!(sums, vec![3.0, 7.0]);
        assert!(engine.heartbeats().iter().all(|h| h.silent_for() < Duration::from_secs(5)));
    }

    #[test]
    fn a_failing_window_in_a_batch_fails_alone() {
        let engine = Engine::start(8).unwrap();
        let model: Arc<dyn Forward> = Arc::new(Summer);
        let lane = engine.lane(Class::Bulk, 16);
        let (tx, rx) = mpsc::channel();
        // A first window whose answer holds the thread until the others wait, so that they
        // are taken as one batch: the batch fails, then each is decoded alone.
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate =
            Job { model: Arc::clone(&model), window: vec![0.0, 0.0], done: Box::new(move |_| gate_rx.recv().unwrap()) };
        assert!(lane.try_push(gate).is_ok());
        submit(&lane, &model, vec![1.0, 1.0], &tx);
        submit(&lane, &model, vec![f32::INFINITY, 1.0], &tx);
        submit(&lane, &model, vec![2.0, 2.0], &tx);
        submit(&lane, &model, vec![1.0], &tx);
        gate_tx.send(()).unwrap();
        let answers: Vec<Result<Vec<f32>, String>> =
            (0..4).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        // The three good-sized windows (with the gate, if it had not been taken yet) went into
        // one pass: the batch was tried, and failed, before each was decoded alone.
        assert!(engine.stats().largest_batch.load(Ordering::Relaxed) >= 3);
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 2, "{answers:?}");
        assert!(answers.iter().any(|a| matches!(a, Err(e) if e.contains("infinite input"))), "{answers:?}");
        assert!(answers.iter().any(|a| matches!(a, Err(e) if e.contains("a window of 1 values"))), "{answers:?}");
    }
}

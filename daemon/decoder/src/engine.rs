//! The decode thread. Sessions submit windows; the thread takes everything that is waiting,
//! groups it by model, and runs one forward pass per model for the whole group (batching across
//! sessions), then hands each session its logits through the job's callback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::model::Model;

/// Called on the decode thread with the window's logits (`output_len()` floats) or the failure.
pub type Done = Box<dyn FnOnce(Result<Vec<f32>, String>) + Send>;

/// One window to decode.
pub struct Job {
    pub model: Arc<Model>,
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
}

pub struct Engine {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the decode thread. At most `max_batch` windows go into one forward pass; at most
    /// `queue` windows wait (a full queue refuses new windows instead of delaying acquisition).
    pub fn start(max_batch: usize, queue: usize) -> std::io::Result<Engine> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let stats = Arc::new(EngineStats::default());
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("decoder".into())
            .spawn(move || run(rx, max_batch.max(1), &thread_stats))?;
        Ok(Engine { tx: Some(tx), thread: Some(thread), stats })
    }

    /// Queues a window. When the queue is full the job comes back: the caller decides what a
    /// dropped window means (it never waits).
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let tx = self.tx.as_ref().expect("engine is running");
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Job>, max_batch: usize, stats: &EngineStats) {
    let mut pending: Vec<Job> = Vec::with_capacity(max_batch);
    let mut input: Vec<f32> = Vec::new();
    while let Ok(first) = rx.recv() {
        pending.push(first);
        while pending.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        while !pending.is_empty() {
            // One forward pass for every waiting window of the first job's model.
            let model = Arc::clone(&pending[0].model);
            let (group, rest): (Vec<Job>, Vec<Job>) = pending.drain(..).partition(|j| Arc::ptr_eq(&j.model, &model));
            pending = rest;
            decode_group(&model, group, &mut input, stats);
        }
    }
}

fn decode_group(model: &Model, group: Vec<Job>, input: &mut Vec<f32>, stats: &EngineStats) {
    let batch = group.len();
    input.clear();
    for job in &group {
        input.extend_from_slice(&job.window);
    }
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.windows.fetch_add(batch as u64, Ordering::Relaxed);
    stats.largest_batch.fetch_max(batch as u64, Ordering::Relaxed);
    if input.len() != batch * model.input_len() {
        for job in group {
            let got = job.window.len();
            (job.done)(Err(format!(
                "a window of {got} values was submitted; model `{}` takes {}",
                model.name(),
                model.input_len()
            )));
        }
        return;
    }
    match model.forward(input, batch) {
        Ok(logits) => {
            for (job, out) in group.into_iter().zip(logits.chunks_exact(model.output_len())) {
                (job.done)(Ok(out.to_vec()));
            }
        }
        Err(e) if batch == 1 => {
            let job = group.into_iter().next().expect("one job");
            (job.done)(Err(e.to_string()));
        }
        Err(_) => {
            // One bad window must not cost the others their result (they may belong to other
            // sessions): decode them one by one, so only the failing ones fail.
            for job in group {
                decode_group(model, vec![job], input, stats);
            }
        }
    }
}

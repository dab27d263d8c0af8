//! Heartbeats: each long-running thread beats whenever it goes round its loop (also while it
//! idles, through a timed wait), so a thread that has not beaten for a while is stuck in
//! something (a driver's `read`, a forward pass, a disk write) or dead. The service manager's
//! watchdog is fed only while no registered thread is stuck.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub struct Heartbeat {
    name: String,
    epoch: Instant,
    /// Milliseconds since `epoch` at the last beat.
    last: AtomicU64,
    /// The thread has ended its work: silence is expected.
    retired: AtomicBool,
}

impl Heartbeat {
    /// A heartbeat that has just beaten (not registered anywhere; see [`Heartbeats::register`]).
    pub fn new(name: impl Into<String>) -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            name: name.into(),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            retired: AtomicBool::new(false),
        })
    }

    pub fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// The thread is done (a session's acquisition ended): it is no longer watched.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long ago the thread last beat.
    pub fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }
}

/// The heartbeats the daemon watches. A heartbeat leaves the list when its last `Arc` is dropped
/// (a session's thread that ended). The owner of a worker thread keeps a clone of its heartbeat,
/// so a worker that dies goes silent and is reported rather than forgotten.
#[derive(Default)]
pub struct Heartbeats {
    list: Mutex<Vec<Weak<Heartbeat>>>,
}

impl Heartbeats {
    /// Watches `beat` from now on.
    pub fn register(&self, beat: &Arc<Heartbeat>) {
        beat.beat();
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(beat));
    }

    /// The threads silent for longer than `limit`, with how long, longest first.
    pub fn stuck(&self, limit: Duration) -> Vec<(String, Duration)> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        let mut stuck: Vec<(String, Duration)> = list
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|b| !b.retired.load(Ordering::Relaxed))
            .map(|b| (b.name.clone(), b.silent_for()))
            .filter(|(_, d)| *d > limit)
            .collect();
        stuck.sort_by_key(|s| std::cmp::Reverse(s.1));
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_thread_is_stuck_until_it_beats_and_gone_when_dropped() {
        let beats = Heartbeats::default();
        let a = Heartbeat::new("decoder");
        let b = Heartbeat::new("store-writer");
        beats.register(&a);
        beats.register(&b);
        assert!(beats.stuck(Duration::from_millis(30)).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        a.beat();
        let stuck = beats.stuck(Duration::from_millis(30));
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].0, "store-writer");
        assert!(stuck[0].1 >= Duration::from_millis(60));
        b.retire();
        assert!(beats.stuck(Duration::from_millis(30)).is_empty(), "a retired thread is not stuck");
        let c = Heartbeat::new("acq-1");
        beats.register(&c);
        drop(c);
        std::thread::sleep(Duration::from_millis(60));
        a.beat();
        assert!(beats.stuck(Duration::from_millis(30)).is_empty(), "a dropped heartbeat is not watched");
    }
}

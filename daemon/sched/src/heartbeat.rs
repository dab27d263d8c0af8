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
    /// The thread works at the lowest CPU priority (see `priority`): on a machine busy with
    /// other work it may be starved for long, which is not the daemon being stuck.
    background: AtomicBool,
}

/// A thread that has shown no progress for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub name: String,
    pub silent: Duration,
    /// A background thread: reported, but not a reason to stop feeding the watchdog.
    pub background: bool,
}

impl Stuck {
    /// The name as anyone may see it (STATUS=, a non-admin's `status`): a session's acquisition
    /// thread (`acq-ID`) without the session's id.
    pub fn public_name(&self) -> &str {
        if self.name.starts_with("acq-") {
            "acq"
        } else {
            &self.name
        }
    }
}

impl Heartbeat {
    /// A heartbeat that has just beaten (not registered anywhere; see [`Heartbeats::register`]).
    pub fn new(name: impl Into<String>) -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            name: name.into(),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            background: AtomicBool::new(false),
        })
    }

    pub fn beat(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Marks the thread as one that runs at the lowest CPU priority.
    pub fn set_background(&self) {
        self.background.store(true, Ordering::Relaxed);
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

    /// The threads silent for longer than `limit`, longest first.
    pub fn stuck(&self, limit: Duration) -> Vec<Stuck> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        let mut stuck: Vec<Stuck> = list
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|b| !b.retired.load(Ordering::Relaxed))
            .map(|b| Stuck {
                name: b.name.clone(),
                silent: b.silent_for(),
                background: b.background.load(Ordering::Relaxed),
            })
            .filter(|s| s.silent > limit)
            .collect();
        stuck.sort_by_key(|s| std::cmp::Reverse(s.silent));
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
        assert_eq!(stuck[0].name, "store-writer");
        assert!(stuck[0].silent >= Duration::from_millis(60));
        assert!(!stuck[0].background);
        b.set_background();
        assert!(beats.stuck(Duration::from_millis(30))[0].background);
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

//! Fan-out of a session's events to its subscribers through bounded queues.
//!
//! Acquisition must never wait for a reader: when a subscriber's queue is full, the event is
//! dropped for that subscriber and counted; the count reaches the subscriber as a `lost` notice
//! in the position of the gap. The one exception is a *lossless* subscriber of a source that is
//! not real time (file replay at `speed=0`): there the source may wait, so that a `session start
//! --follow` of a replay gets every block however fast the file is read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bci2token_api::Event;
use bci2token_sched::Heartbeat;
use tokio::sync::mpsc;

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<Event>),
    /// `n` events were dropped here because the subscriber was too slow.
    Lost(u64),
}

struct Subscriber {
    tx: mpsc::Sender<Delivery>,
    samples: bool,
    lossless: bool,
    /// Dropped since the last `Lost` notice that got through; shared with the [`Subscription`]
    /// so that a count still pending when the session ends is reported too.
    pending_lost: Arc<AtomicU64>,
}

pub struct Hub {
    subscribers: Mutex<Vec<Subscriber>>,
    capacity: usize,
    dropped: AtomicU64,
    /// The session's final state event, once it has ended. Every subscription delivers it last,
    /// even one whose queue was full when it was published.
    final_event: Arc<OnceLock<Arc<Event>>>,
    /// Set when the session is being stopped: lossless subscribers stop holding up the source.
    abort_waits: AtomicBool,
    /// Sees every published event first (the session's recorder).
    tap: OnceLock<Tap>,
    /// Beaten while a publisher waits for a lossless subscriber: waiting for a reader is not
    /// being stuck.
    heartbeat: Arc<Heartbeat>,
}

/// A function that sees every event published on a hub.
pub type Tap = Box<dyn Fn(&Event) + Send + Sync>;

/// How often a publisher waiting for a full lossless subscriber checks whether it should give up.
const LOSSLESS_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// The receiving end handed to a transport.
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    pending_lost: Arc<AtomicU64>,
    final_event: Arc<OnceLock<Arc<Event>>>,
    /// Deliveries that come after the channel closed: the last lost count and the final event.
    tail: Option<std::vec::IntoIter<Delivery>>,
    final_seen: bool,
}

impl Subscription {
    fn note(&mut self, d: &Delivery) {
        if matches!(d, Delivery::Event(e) if e.is_final()) {
            self.final_seen = true;
        }
    }

    /// What comes after the queue: a lost count still pending, then the final state event if
    /// the queue did not carry it.
    fn tail(&mut self) -> Option<Delivery> {
        if self.tail.is_none() {
            let mut rest = Vec::new();
            let lost = self.pending_lost.swap(0, Ordering::AcqRel);
            if lost > 0 {
                rest.push(Delivery::Lost(lost));
            }
            if !self.final_seen {
                if let Some(event) = self.final_event.get() {
                    rest.push(Delivery::Event(Arc::clone(event)));
                }
            }
            self.tail = Some(rest.into_iter());
        }
        self.tail.as_mut().and_then(Iterator::next)
    }

    /// The next delivery; `None` once the session has ended and everything was delivered.
    pub async fn recv(&mut self) -> Option<Delivery> {
        if self.tail.is_none() {
            if let Some(d) = self.rx.recv().await {
                self.note(&d);
                return Some(d);
            }
        }
        self.tail()
    }

    /// A delivery that is ready now, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        if self.tail.is_some() {
            return self.tail();
        }
        match self.rx.try_recv() {
            Ok(d) => {
                self.note(&d);
                Some(d)
            }
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => self.tail(),
        }
    }

    /// Blocking form of [`Subscription::recv`], for threads outside the runtime (tests).
    #[cfg(test)]
    pub fn blocking_recv(&mut self) -> Option<Delivery> {
        if self.tail.is_none() {
            if let Some(d) = self.rx.blocking_recv() {
                self.note(&d);
                return Some(d);
            }
        }
        self.tail()
    }
}

impl Hub {
    pub fn new(capacity: usize, heartbeat: Arc<Heartbeat>) -> Self {
        Self {
            subscribers: Mutex::new(Vec::new()),
            capacity,
            dropped: AtomicU64::new(0),
            final_event: Arc::new(OnceLock::new()),
            abort_waits: AtomicBool::new(false),
            tap: OnceLock::new(),
            heartbeat,
        }
    }

    /// Installs the tap (once; later calls are ignored).
    pub fn set_tap(&self, tap: Tap) {
        let _ = self.tap.set(tap);
    }

    /// Adds a subscriber. `samples`: also deliver sample blocks. `lossless`: the publisher waits
    /// instead of dropping (only honoured by the caller for non-real-time sources).
    /// Returns `None` once the hub is closed (the session has ended).
    pub fn subscribe(&self, samples: bool, lossless: bool) -> Option<Subscription> {
        let mut subs = self.subscribers.lock().unwrap();
        if self.final_event.get().is_some() {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        let pending_lost = Arc::new(AtomicU64::new(0));
        subs.push(Subscriber { tx, samples, lossless, pending_lost: Arc::clone(&pending_lost) });
        Some(Subscription {
            rx,
            pending_lost,
            final_event: Arc::clone(&self.final_event),
            tail: None,
            final_seen: false,
        })
    }

    /// True if any subscriber wants sample blocks (so the session only copies them when needed).
    pub fn wants_samples(&self) -> bool {
        self.subscribers.lock().unwrap().iter().any(|s| s.samples)
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().unwrap().len()
    }

    /// Events dropped for slow subscribers so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Delivers `event` to every subscriber. Called from the session's own threads only (its
    /// acquisition and its publisher), never from the async runtime or a shared worker: a
    /// lossless subscriber can make this block (it then beats the session's heartbeat: waiting
    /// for a reader is not being stuck).
    pub fn publish(&self, event: Event) {
        if let Some(tap) = self.tap.get() {
            tap(&event);
        }
        self.publish_untapped(event);
    }

    /// [`Hub::publish`] without the tap (for what the tap itself reports).
    pub fn publish_untapped(&self, event: Event) {
        let is_samples = matches!(event, Event::Samples { .. });
        let event = Arc::new(event);
        let mut must_wait = Vec::new();
        {
            let mut subs = self.subscribers.lock().unwrap();
            subs.retain_mut(|sub| {
                if is_samples && !sub.samples {
                    return true;
                }
                let lost = sub.pending_lost.load(Ordering::Acquire);
                if lost > 0 {
                    match sub.tx.try_send(Delivery::Lost(lost)) {
                        Ok(()) => sub.pending_lost.store(0, Ordering::Release),
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // Still full: this event is lost too.
                            sub.pending_lost.fetch_add(1, Ordering::AcqRel);
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            return true;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                }
                match sub.tx.try_send(Delivery::Event(Arc::clone(&event))) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) if sub.lossless => {
                        must_wait.push((sub.tx.clone(), Arc::clone(&sub.pending_lost)));
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.pending_lost.fetch_add(1, Ordering::AcqRel);
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
        }
        // Outside the lock, so that new subscribers and status queries are not held up. Polled
        // rather than blocking, so that a stop request is never held up by a reader.
        for (tx, pending_lost) in must_wait {
            let mut delivery = Delivery::Event(Arc::clone(&event));
            loop {
                match tx.try_send(delivery) {
                    Ok(()) => break,
                    Err(mpsc::error::TrySendError::Closed(_)) => break, // removed on the next publish
                    Err(mpsc::error::TrySendError::Full(back)) => {
                        if self.abort_waits.load(Ordering::Acquire) {
                            pending_lost.fetch_add(1, Ordering::AcqRel);
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        delivery = back;
                        self.heartbeat.beat();
                        std::thread::sleep(LOSSLESS_POLL);
                    }
                }
            }
        }
    }

    /// From now on nobody may hold up the publisher: lossless subscribers lose events like the
    /// others (the session is stopping).
    pub fn abort_waits(&self) {
        self.abort_waits.store(true, Ordering::Release);
    }

    /// Publishes the session's final state event and ends every subscription after it. A
    /// subscriber whose queue is full still gets the event (and its lost count) after the queue.
    pub fn finish(&self, event: Event) {
        debug_assert!(event.is_final());
        if let Some(tap) = self.tap.get() {
            tap(&event);
        }
        let event = Arc::clone(self.final_event.get_or_init(|| Arc::new(event)));
        let mut subs = self.subscribers.lock().unwrap();
        for sub in subs.iter() {
            let lost = sub.pending_lost.load(Ordering::Acquire);
            if lost > 0 {
                if sub.tx.try_send(Delivery::Lost(lost)).is_err() {
                    continue; // the subscription's tail reports the count, then the final event
                }
                sub.pending_lost.store(0, Ordering::Release);
            }
            // When the queue is full the tail delivers the final event; it is not lost.
            let _ = sub.tx.try_send(Delivery::Event(Arc::clone(&event)));
        }
        subs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotation(i: usize) -> Event {
        Event::Annotation { session: "s".into(), onset: i as f64, duration: None, text: format!("{i}") }
    }

    fn drain(rx: &mut Subscription) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(d) = rx.try_recv() {
            out.push(d);
        }
        out
    }

    fn final_state() -> Event {
        Event::State { session: "s".into(), state: bci2token_api::SessionState::Finished, message: None }
    }

    #[test]
    fn slow_subscriber_is_told_how_many_it_lost_where_it_lost_them() {
        let hub = Hub::new(4, Heartbeat::new("test"));
        let mut slow = hub.subscribe(false, false).unwrap();
        for i in 0..10 {
            hub.publish(annotation(i));
        }
        // Queue held 0..3; 4..9 were dropped (6 events).
        assert_eq!(hub.dropped(), 6);
        let first = drain(&mut slow);
        assert_eq!(first.len(), 4);
        hub.publish(annotation(10));
        let next = drain(&mut slow);
        assert!(matches!(next[0], Delivery::Lost(6)), "{next:?}");
        assert!(matches!(&next[1], Delivery::Event(e) if matches!(&**e, Event::Annotation{text, ..} if text == "10")));
    }

    #[test]
    fn samples_only_reach_subscribers_that_asked() {
        let hub = Hub::new(8, Heartbeat::new("test"));
        let mut plain = hub.subscribe(false, false).unwrap();
        assert!(!hub.wants_samples());
        let mut with = hub.subscribe(true, false).unwrap();
        assert!(hub.wants_samples());
        let block = Event::Samples {
            session: "s".into(),
            seq: 0,
            t: 0.0,
            frames: 1,
            flags: 0,
            data: bci2token_api::ChannelMajor { channels: 1, frames: 1, values: vec![1.0].into() },
        };
        hub.publish(block);
        assert_eq!(drain(&mut plain).len(), 0);
        assert_eq!(drain(&mut with).len(), 1);
    }

    #[test]
    fn lossless_subscriber_gets_everything() {
        let hub = Arc::new(Hub::new(2, Heartbeat::new("test")));
        let mut rx = hub.subscribe(false, true).unwrap();
        let publisher = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                for i in 0..100 {
                    hub.publish(annotation(i));
                }
                hub.finish(final_state());
            })
        };
        let mut got = Vec::new();
        while let Some(d) = rx.blocking_recv() {
            got.push(d);
        }
        publisher.join().unwrap();
        assert_eq!(got.len(), 101);
        assert_eq!(hub.dropped(), 0);
    }

    #[test]
    fn finished_hub_refuses_new_subscribers() {
        let hub = Hub::new(2, Heartbeat::new("test"));
        hub.finish(final_state());
        assert!(hub.subscribe(false, false).is_none());
    }

    #[test]
    fn a_full_queue_still_ends_with_the_lost_count_and_the_final_state() {
        let hub = Hub::new(2, Heartbeat::new("test"));
        let mut rx = hub.subscribe(false, false).unwrap();
        for i in 0..5 {
            hub.publish(annotation(i));
        }
        hub.finish(final_state());
        let got = drain(&mut rx);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(got[2], Delivery::Lost(3)), "3 annotations were dropped, the state was not: {got:?}");
        assert_eq!(hub.dropped(), 3);
        assert!(matches!(&got[3], Delivery::Event(e) if e.is_final()));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_stop_releases_a_publisher_held_up_by_a_lossless_subscriber() {
        let hub = Arc::new(Hub::new(1, Heartbeat::new("test")));
        let _stalled = hub.subscribe(false, true).unwrap();
        hub.publish(annotation(0)); // fills the queue
        let publisher = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || hub.publish(annotation(1)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!publisher.is_finished(), "the lossless subscriber holds the publisher");
        hub.abort_waits();
        publisher.join().unwrap();
        assert_eq!(hub.dropped(), 1);
    }
}

//! Bounded per-client lanes into one worker thread, served fairly.
//!
//! Every client of a worker (a session, for the decode thread and the store writer) pushes into
//! a lane of its own with its own capacity. A client that produces faster than the worker serves
//! fills only its own lane: a real-time client gets "full" and drops, a client that can wait
//! (file replay at full speed) waits for room in *its* lane, and nobody else notices.
//!
//! The worker takes in rounds: real-time lanes first (round robin, one item per lane per turn),
//! then the oldest [`Class::Ordered`] item once everything pushed before it has been taken, then
//! bulk lanes (round robin). A round never mixes real-time and bulk items, so a real-time item
//! waits at most for the round the worker is in. So that a worker that is behind on real-time
//! work still answers control calls and moves replays on, the round after
//! [`REAL_TIME_STREAK`] real-time rounds in a row goes to the others when they wait.
//!
//! A lane whose last handle is dropped stays until the worker has taken and released what it
//! queued (a session's last writes are not lost because the session itself is forgotten).
//!
//! An item counts against its lane's capacity from its push until the worker (or whoever
//! finishes the item, e.g. the thread that publishes a decoded window) releases it, so that the
//! lane bounds everything in flight for its client, not only what waits.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// In which order the worker serves a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A source that cannot wait (a live device): served before every other lane.
    RealTime,
    /// Requests that must come after everything queued before them (the store's control
    /// calls): an item waits until every item pushed earlier, to any lane, has been taken.
    Ordered,
    /// A source that can wait (file replay at full speed): served when no real-time lane has
    /// work.
    Bulk,
}

/// Names a lane for [`FairQueue::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaneId(u64);

/// An item the worker took, and the lane it came from.
pub struct Taken<T> {
    pub lane: LaneId,
    pub value: T,
}

/// What [`FairQueue::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// At least one item.
    Items,
    /// Nothing arrived within the time-out.
    Idle,
    /// The queue is closed and empty.
    Closed,
}

struct Item<T> {
    /// Push order across all lanes (for [`Class::Ordered`]).
    ticket: u64,
    value: T,
}

struct LaneState<T> {
    id: u64,
    class: Class,
    capacity: usize,
    queue: VecDeque<Item<T>>,
    /// Taken and not yet released.
    held: usize,
    /// Every handle is gone: removed once empty.
    orphan: bool,
}

impl<T> LaneState<T> {
    fn has_room(&self) -> bool {
        self.queue.len() + self.held < self.capacity
    }
}

/// Real-time rounds in a row at most while other lanes wait.
pub const REAL_TIME_STREAK: u32 = 4;

struct State<T> {
    lanes: Vec<LaneState<T>>,
    next_id: u64,
    next_ticket: u64,
    /// Where the next round robin of real-time and of bulk lanes starts.
    cursor: [usize; 2],
    /// Real-time rounds in a row.
    streak: u32,
    closed: bool,
}

impl<T> State<T> {
    fn lane(&mut self, id: u64) -> Option<&mut LaneState<T>> {
        self.lanes.iter_mut().find(|l| l.id == id)
    }

    /// Round robin over the lanes of `class`, one item per lane per turn, up to `max` in `out`.
    fn round_robin(&mut self, class: Class, max: usize, out: &mut Vec<Taken<T>>) {
        let slot = usize::from(class == Class::Bulk);
        let n = self.lanes.len();
        if n == 0 {
            return;
        }
        let start = self.cursor[slot] % n;
        loop {
            let before = out.len();
            for k in 0..n {
                if out.len() >= max {
                    break;
                }
                let lane = &mut self.lanes[(start + k) % n];
                if lane.class != class {
                    continue;
                }
                if let Some(item) = lane.queue.pop_front() {
                    lane.held += 1;
                    out.push(Taken { lane: LaneId(lane.id), value: item.value });
                }
            }
            if out.len() == before || out.len() >= max {
                break;
            }
        }
        self.cursor[slot] = start + 1;
    }

    /// The oldest ordered item, if nothing pushed before it is still waiting.
    fn ordered(&mut self, out: &mut Vec<Taken<T>>) {
        let oldest = |class_ok: &dyn Fn(Class) -> bool, lanes: &[LaneState<T>]| {
            lanes.iter().filter(|l| class_ok(l.class)).filter_map(|l| l.queue.front().map(|i| (i.ticket, l.id))).min()
        };
        let Some((ticket, id)) = oldest(&|c| c == Class::Ordered, &self.lanes) else { return };
        if oldest(&|c| c != Class::Ordered, &self.lanes).is_some_and(|(other, _)| other < ticket) {
            return;
        }
        let lane = self.lane(id).expect("the lane just found");
        let item = lane.queue.pop_front().expect("the item just found");
        lane.held += 1;
        out.push(Taken { lane: LaneId(id), value: item.value });
    }

    fn pick(&mut self, max: usize, out: &mut Vec<Taken<T>>) {
        if self.streak < REAL_TIME_STREAK {
            self.round_robin(Class::RealTime, max, out);
        }
        if !out.is_empty() {
            self.streak += 1;
            return;
        }
        self.ordered(out);
        if out.is_empty() {
            self.round_robin(Class::Bulk, max, out);
        }
        if out.is_empty() {
            // Nothing else waits: the real-time lanes again (after a streak).
            self.round_robin(Class::RealTime, max, out);
        }
        self.streak = 0;
    }

    /// Removes the lanes whose handles are gone once they have nothing queued or held.
    fn forget_orphans(&mut self) -> Vec<LaneState<T>> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.lanes.len() {
            let l = &self.lanes[i];
            if l.orphan && l.queue.is_empty() && l.held == 0 {
                gone.push(self.lanes.remove(i));
            } else {
                i += 1;
            }
        }
        gone
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item is pushed or the queue closes (the worker waits on it).
    work: Condvar,
    /// Signalled when a lane gets room (waiting clients wait on it).
    room: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock was held cannot leave the lanes half-changed (every change is
        // one push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's end: takes items from every lane.
pub struct FairQueue<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for FairQueue<T> {
    fn clone(&self) -> Self {
        FairQueue { shared: Arc::clone(&self.shared) }
    }
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    lanes: Vec::new(),
                    next_id: 0,
                    next_ticket: 0,
                    cursor: [0; 2],
                    streak: 0,
                    closed: false,
                }),
                work: Condvar::new(),
                room: Condvar::new(),
            }),
        }
    }
}

impl<T> FairQueue<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new lane holding at most `capacity` items in flight (at least 1).
    pub fn lane(&self, class: Class, capacity: usize) -> Lane<T> {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.lanes.push(LaneState {
            id,
            class,
            capacity: capacity.max(1),
            queue: VecDeque::new(),
            held: 0,
            orphan: false,
        });
        Lane { handle: Arc::new(LaneHandle { shared: Arc::clone(&self.shared), id }) }
    }

    /// Waits up to `timeout` for work and moves at most `max` items into `out` (see the module
    /// documentation for the order).
    pub fn take(&self, max: usize, out: &mut Vec<Taken<T>>, timeout: Duration) -> Take {
        let mut state = self.shared.lock();
        let mut waited = false;
        loop {
            state.pick(max.max(1), out);
            if !out.is_empty() {
                return Take::Items;
            }
            if state.closed && state.lanes.iter().all(|l| l.queue.is_empty()) {
                return Take::Closed;
            }
            if waited {
                return Take::Idle;
            }
            state = self.shared.work.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0;
            waited = true;
        }
    }

    /// Gives back `n` items' room in a lane (a lane that is gone is ignored).
    pub fn release(&self, lane: LaneId, n: usize) {
        release(&self.shared, lane.0, n);
    }

    /// Refuses new items; the worker still takes what is queued, then sees [`Take::Closed`].
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
    }

    /// For a worker that ends without taking the rest (it failed): refuses new items and drops
    /// every queued one, so that whoever waits for an item's answer learns it will not come.
    pub fn abandon(&self) {
        let dropped: Vec<Item<T>> = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.lanes.iter_mut().flat_map(|l| l.queue.drain(..)).collect()
        };
        drop(dropped);
        self.shared.work.notify_all();
        self.shared.room.notify_all();
    }

    /// Items waiting in every lane.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.lock().lanes.iter().map(|l| l.queue.len()).sum()
    }
}

fn release<T>(shared: &Shared<T>, id: u64, n: usize) {
    let gone = {
        let mut state = shared.lock();
        if let Some(lane) = state.lane(id) {
            lane.held = lane.held.saturating_sub(n);
        }
        state.forget_orphans()
    };
    drop(gone);
    shared.room.notify_all();
}

struct LaneHandle<T> {
    shared: Arc<Shared<T>>,
    id: u64,
}

impl<T> Drop for LaneHandle<T> {
    /// The lane goes with its last handle once the worker has taken and released what it holds.
    fn drop(&mut self) {
        let removed = {
            let mut state = self.shared.lock();
            if let Some(lane) = state.lane(self.id) {
                lane.orphan = true;
            }
            state.forget_orphans()
        };
        // Dropped outside the lock: an item's drop may take other locks.
        drop(removed);
    }
}

/// A client's end: pushes into its own lane. Clones share the lane.
pub struct Lane<T> {
    handle: Arc<LaneHandle<T>>,
}

impl<T> Clone for Lane<T> {
    fn clone(&self) -> Self {
        Lane { handle: Arc::clone(&self.handle) }
    }
}

/// How often a waiting [`Lane::push_wait`] asks whether to go on waiting.
const WAIT_SLICE: Duration = Duration::from_millis(50);

impl<T> Lane<T> {
    fn push_locked(&self, state: &mut State<T>, value: T) -> Result<(), T> {
        if state.closed {
            return Err(value);
        }
        let ticket = state.next_ticket;
        let Some(lane) = state.lane(self.handle.id) else { return Err(value) };
        if !lane.has_room() {
            return Err(value);
        }
        lane.queue.push_back(Item { ticket, value });
        state.next_ticket += 1;
        self.handle.shared.work.notify_one();
        Ok(())
    }

    /// Queues `value` if the lane has room; never waits. A full or closed lane gives it back.
    pub fn try_push(&self, value: T) -> Result<(), T> {
        let mut state = self.handle.shared.lock();
        self.push_locked(&mut state, value)
    }

    /// Queues `value`, waiting for room in this lane only. Every 50 ms of waiting
    /// `keep_waiting` is asked whether to go on; the value comes back when it says no or the
    /// queue closes.
    pub fn push_wait(&self, value: T, mut keep_waiting: impl FnMut() -> bool) -> Result<(), T> {
        let shared = &self.handle.shared;
        let full = |state: &mut State<T>| !state.closed && state.lane(self.handle.id).is_some_and(|l| !l.has_room());
        loop {
            let mut state = shared.lock();
            if full(&mut state) {
                state = shared.room.wait_timeout(state, WAIT_SLICE).unwrap_or_else(|p| p.into_inner()).0;
            }
            if !full(&mut state) {
                return self.push_locked(&mut state, value);
            }
            drop(state);
            if !keep_waiting() {
                return Err(value);
            }
        }
    }

    /// Gives back the room of `n` items taken from this lane.
    pub fn release(&self, n: usize) {
        release(&self.handle.shared, self.handle.id, n);
    }

    /// The most items this lane holds in flight.
    pub fn capacity(&self) -> usize {
        self.handle.shared.lock().lane(self.handle.id).map_or(0, |l| l.capacity)
    }

    /// Items queued or taken and not yet released.
    pub fn in_flight(&self) -> usize {
        self.handle.shared.lock().lane(self.handle.id).map_or(0, |l| l.queue.len() + l.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_now<T>(q: &FairQueue<T>, max: usize) -> Vec<Taken<T>> {
        let mut out = Vec::new();
        q.take(max, &mut out, Duration::ZERO);
        out
    }

    fn values<T: Copy>(taken: &[Taken<T>]) -> Vec<T> {
        taken.iter().map(|t| t.value).collect()
    }

    #[test]
    fn real_time_lanes_are_served_first_and_alone() {
        let q = FairQueue::new();
        let bulk = q.lane(Class::Bulk, 100);
        let live = q.lane(Class::RealTime, 100);
        for i in 0..50 {
            bulk.try_push(1000 + i).unwrap();
        }
        live.try_push(1).unwrap();
        live.try_push(2).unwrap();
        assert_eq!(values(&take_now(&q, 16)), vec![1, 2], "only the real-time items, though bulk waited longer");
        assert_eq!(take_now(&q, 16).len(), 16, "then bulk");
    }

    #[test]
    fn lanes_of_one_class_share_the_worker_round_robin() {
        let q = FairQueue::new();
        let a = q.lane(Class::Bulk, 100);
        let b = q.lane(Class::Bulk, 100);
        let c = q.lane(Class::Bulk, 100);
        for i in 0..30 {
            a.try_push(('a', i)).unwrap();
        }
        b.try_push(('b', 0)).unwrap();
        c.try_push(('c', 0)).unwrap();
        c.try_push(('c', 1)).unwrap();
        let got: Vec<char> = take_now(&q, 6).iter().map(|t| t.value.0).collect();
        assert_eq!(got.iter().filter(|&&l| l == 'b').count(), 1, "{got:?}");
        assert_eq!(got.iter().filter(|&&l| l == 'c').count(), 2, "{got:?}");
        assert_eq!(got.iter().filter(|&&l| l == 'a').count(), 3, "{got:?}");
    }

    #[test]
    fn a_full_lane_refuses_only_its_own_client_until_released() {
        let q = FairQueue::new();
        let greedy = q.lane(Class::Bulk, 2);
        let other = q.lane(Class::RealTime, 2);
        greedy.try_push(1).unwrap();
        greedy.try_push(2).unwrap();
        assert_eq!(greedy.try_push(3), Err(3));
        other.try_push(10).unwrap();
        // Taken is still in flight: no room until released.
        let taken = take_now(&q, 8);
        assert_eq!(values(&taken), vec![10]);
        let taken = take_now(&q, 8);
        assert_eq!(values(&taken), vec![1, 2]);
        assert_eq!(greedy.try_push(3), Err(3), "taken but not released still counts");
        assert_eq!(greedy.in_flight(), 2);
        q.release(taken[0].lane, 1);
        greedy.try_push(3).unwrap();
        assert_eq!(greedy.try_push(4), Err(4));
    }

    #[test]
    fn push_wait_waits_for_its_own_room_and_can_give_up() {
        let q = FairQueue::new();
        let lane = q.lane(Class::Bulk, 1);
        lane.try_push(1).unwrap();
        let mut asked = 0;
        assert_eq!(
            lane.push_wait(2, || {
                asked += 1;
                asked < 3
            }),
            Err(2)
        );
        assert_eq!(asked, 3);
        let waiter = {
            let lane = lane.clone();
            std::thread::spawn(move || lane.push_wait(2, || true))
        };
        std::thread::sleep(Duration::from_millis(120));
        assert!(!waiter.is_finished(), "no room yet");
        let taken = take_now(&q, 1);
        q.release(taken[0].lane, 1);
        waiter.join().unwrap().unwrap();
        assert_eq!(values(&take_now(&q, 4)), vec![2]);
    }

    #[test]
    fn an_ordered_item_comes_after_everything_pushed_before_it() {
        let q = FairQueue::new();
        let bulk = q.lane(Class::Bulk, 100);
        let calls = q.lane(Class::Ordered, 100);
        bulk.try_push(1).unwrap();
        bulk.try_push(2).unwrap();
        calls.try_push(100).unwrap();
        bulk.try_push(3).unwrap();
        assert_eq!(values(&take_now(&q, 1)), vec![1]);
        assert_eq!(values(&take_now(&q, 1)), vec![2]);
        assert_eq!(values(&take_now(&q, 8)), vec![100], "before 3, which came after it");
        assert_eq!(values(&take_now(&q, 8)), vec![3]);
    }

    #[test]
    fn closing_drains_then_reports_closed_and_refuses_pushes() {
        let q = FairQueue::new();
        let lane = q.lane(Class::Bulk, 4);
        lane.try_push(1).unwrap();
        q.close();
        assert_eq!(lane.try_push(2), Err(2));
        assert_eq!(lane.push_wait(3, || true), Err(3));
        let mut out = Vec::new();
        assert_eq!(q.take(4, &mut out, Duration::from_secs(5)), Take::Items);
        out.clear();
        assert_eq!(q.take(4, &mut out, Duration::from_secs(5)), Take::Closed);
    }

    #[test]
    fn a_dropped_lane_stays_until_its_items_are_taken_and_released() {
        let q = FairQueue::new();
        let lane = q.lane(Class::Bulk, 4);
        lane.try_push(1).unwrap();
        lane.try_push(2).unwrap();
        drop(lane);
        assert_eq!(q.waiting(), 2, "a forgotten session's last writes are still written");
        let taken = take_now(&q, 8);
        assert_eq!(values(&taken), vec![1, 2]);
        assert_eq!(q.shared.lock().lanes.len(), 1, "held until released");
        q.release(taken[0].lane, 2);
        assert_eq!(q.shared.lock().lanes.len(), 0, "then gone");
        let mut out = Vec::new();
        assert_eq!(q.take(4, &mut out, Duration::from_millis(10)), Take::Idle);
        // A lane dropped empty goes at once.
        drop(q.lane(Class::RealTime, 1));
        assert_eq!(q.shared.lock().lanes.len(), 0);
    }

    #[test]
    fn a_busy_real_time_lane_does_not_starve_calls_or_bulk() {
        let q = FairQueue::new();
        let live = q.lane(Class::RealTime, 1000);
        let calls = q.lane(Class::Ordered, 10);
        let bulk = q.lane(Class::Bulk, 10);
        // Pushed after the call: only a round of their own serves them.
        calls.try_push(-2).unwrap();
        bulk.try_push(-1).unwrap();
        // Real-time work keeps arriving before every round.
        let mut order = Vec::new();
        for i in 0..(3 * REAL_TIME_STREAK as i32) {
            live.try_push(i).unwrap();
            order.extend(values(&take_now(&q, 8)));
        }
        let at = |v: i32| order.iter().position(|&x| x == v).expect("served");
        let streak = REAL_TIME_STREAK as usize;
        assert_eq!(at(-2), streak, "the call after one streak: {order:?}");
        assert!(at(-1) <= 2 * streak + 2, "bulk after the next: {order:?}");
    }

    #[test]
    fn an_abandoned_queue_drops_what_waits_and_refuses_more() {
        let q = FairQueue::new();
        let lane = q.lane(Class::Ordered, 4);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        lane.try_push(tx).unwrap();
        q.abandon();
        assert!(rx.recv().is_err(), "the waiting item was dropped: its answer will not come");
        assert!(lane.try_push(std::sync::mpsc::channel().0).is_err());
    }
}

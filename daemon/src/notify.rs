//! The systemd notification protocol (`sd_notify`). Every call is a no-op without `NOTIFY_SOCKET`.
//!
//! A notification is a datagram, and sending one waits while the receiver's queue is full: a
//! service manager that does not read (a stalled one, a test harness) would hold up whatever
//! sends it, an async worker among them (the soak benchmark's control socket stalled so at 112
//! sessions). So callers only leave their notification here, and one thread of its own sends
//! them: the state changes (`READY=1`, `RELOADING=1`, `STOPPING=1`) in order and never dropped,
//! of the status lines only the latest, and one `WATCHDOG=1` for any pings asked meanwhile.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// What waits for the sending thread.
#[derive(Default)]
struct Pending {
    /// State changes, each with what came with it, in order.
    changes: VecDeque<String>,
    /// The latest status line not sent yet.
    status: Option<String>,
    watchdog: bool,
    /// A send in progress (for [`flush`]).
    sending: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.status.is_none() && !self.watchdog && !self.sending
    }

    /// The next message: state changes first, then the status, then the ping.
    fn take(&mut self) -> Option<String> {
        let next = self
            .changes
            .pop_front()
            .or_else(|| self.status.take())
            .or_else(|| std::mem::take(&mut self.watchdog).then(|| format!("{}\n", NotifyState::Watchdog)));
        self.sending = next.is_some();
        next
    }
}

struct Notifier {
    pending: Mutex<Pending>,
    changed: Condvar,
}

/// The notifier, its thread started at the first notification (`None`: no `NOTIFY_SOCKET`, or no
/// thread to be had, said once).
fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<&'static Notifier>> = OnceLock::new();
    *NOTIFIER.get_or_init(|| {
        std::env::var_os("NOTIFY_SOCKET")?;
        let notifier: &'static Notifier =
            Box::leak(Box::new(Notifier { pending: Mutex::new(Pending::default()), changed: Condvar::new() }));
        let sender = move || loop {
            let message = {
                let mut pending = notifier.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.sending = false;
                notifier.changed.notify_all();
                loop {
                    if let Some(m) = pending.take() {
                        break m;
                    }
                    pending = notifier.changed.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
            };
            let lines: Vec<NotifyState<'_>> = message.lines().map(NotifyState::Custom).collect();
            if let Err(e) = sd_notify::notify(&lines) {
                log::warn!("cannot notify the service manager: {e}");
            }
        };
        match std::thread::Builder::new().name("sd-notify".into()).spawn(sender) {
            Ok(_) => Some(notifier),
            Err(e) => {
                log::warn!("cannot start the thread that notifies the service manager: {e}");
                None
            }
        }
    })
}

/// State changes kept waiting at most (a service manager that never reads them; they are rare).
const MAX_CHANGES: usize = 64;

fn leave(what: impl FnOnce(&mut Pending)) {
    let Some(notifier) = notifier() else { return };
    let mut pending = notifier.pending.lock().unwrap_or_else(|p| p.into_inner());
    what(&mut pending);
    if pending.changes.len() > MAX_CHANGES {
        pending.changes.pop_front();
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| log::warn!("the service manager does not take notifications: the oldest are dropped"));
    }
    notifier.changed.notify_all();
}

/// A state change (`states` in one message), sent in order with the others.
fn send(states: &[NotifyState<'_>]) {
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    leave(|p| p.changes.push_back(message));
}

/// Waits until every notification left so far is sent, `within` at most (before the daemon
/// exits: its `STOPPING=1` must not be lost with the thread).
pub fn flush(within: Duration) {
    let Some(notifier) = notifier() else { return };
    let deadline = Instant::now() + within;
    let mut pending = notifier.pending.lock().unwrap_or_else(|p| p.into_inner());
    while !pending.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { return };
        pending = notifier.changed.wait_timeout(pending, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// The daemon accepts connections: `READY=1` plus a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line a person reads in `systemctl status` (only the latest waiting one is sent).
pub fn status(status: &str) {
    let message = format!("{}\n", NotifyState::Status(status));
    leave(|p| p.status = Some(message));
}

pub fn reloading() {
    send(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    leave(|p| p.watchdog = true);
}

/// The interval at which to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is
/// enabled for this process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2).filter(|d| !d.is_zero())
}

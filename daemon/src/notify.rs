//! The systemd notification protocol (`sd_notify`). Every call is a no-op without `NOTIFY_SOCKET`.
//!
//! A notification is a datagram, and sending one waits while the receiver's queue is full: a
//! service manager that does not read (a stalled one, a test harness) would hold up whatever
//! sends it, an async worker among them (the soak benchmark stalled the control socket so at
//! 112 sessions). So callers only queue their notification; one thread of its own sends them, in
//! order. If it is stuck, later notifications are dropped, and said so once.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

/// Notifications waiting for the sending thread, at most.
const QUEUED: usize = 8;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    static QUEUE: OnceLock<Option<SyncSender<String>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(QUEUED);
        let sender = move || {
            for message in rx {
                let lines: Vec<NotifyState<'_>> = message.lines().map(NotifyState::Custom).collect();
                if let Err(e) = sd_notify::notify(&lines) {
                    log::warn!("cannot notify the service manager: {e}");
                }
            }
        };
        match std::thread::Builder::new().name("sd-notify".into()).spawn(sender) {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("cannot start the thread that notifies the service manager: {e}");
                None
            }
        }
    });
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    match queue.as_ref().map(|q| q.try_send(message)) {
        Some(Ok(())) => {}
        Some(Err(TrySendError::Full(_))) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::warn!("the service manager does not take notifications (its socket is full): some are dropped")
            });
        }
        Some(Err(TrySendError::Disconnected(_))) | None => {}
    }
}

/// The daemon accepts connections: `READY=1` plus a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line a person reads in `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn reloading() {
    send(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The interval at which to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is
/// enabled for this process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2).filter(|d| !d.is_zero())
}

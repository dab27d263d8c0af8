//! Closing descriptors callers passed, away from the threads that serve everyone. A caller's file
//! may make `close` wait: a FUSE file system the caller serves (the kernel sends a flush and waits
//! for the reply), or a socket with a long `SO_LINGER`. Such a close must not hold an async worker
//! or a start slot: descriptors that were refused, unused or failed a check are closed here, on
//! one thread of their own, sockets first told not to linger.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

static CLOSER: OnceLock<Mutex<Sender<Vec<OwnedFd>>>> = OnceLock::new();

fn closer() -> &'static Mutex<Sender<Vec<OwnedFd>>> {
    CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<Vec<OwnedFd>>();
        let spawned = std::thread::Builder::new().name("fd-closer".into()).spawn(move || {
            for fds in rx {
                drop(fds);
            }
        });
        if let Err(e) = spawned {
            log::error!("cannot start the descriptor closer ({e}); callers' descriptors are closed in place");
        }
        Mutex::new(tx)
    })
}

/// Closes `fds` on the closer thread.
pub fn dispose(fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    for fd in &fds {
        // A socket's close waits out its linger time: an abortive close does not.
        let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
        let _ = nix::sys::socket::setsockopt(&fd.as_fd(), nix::sys::socket::sockopt::Linger, &linger);
    }
    if let Err(back) = closer().lock().unwrap().send(fds) {
        drop(back.0);
    }
}

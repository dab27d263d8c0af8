//! Closing descriptors callers passed, away from the threads that serve everyone. A caller's file
//! may make `close` wait: a FUSE file system the caller serves (the kernel sends a flush and waits
//! for the reply), or a socket with a long `SO_LINGER`. Such a close must not hold an async worker
//! or a start slot: descriptors that were refused, unused or failed a check are closed here, on a
//! thread of the uid that passed them (sockets first told not to linger), so a caller whose closes
//! hang only holds up its own. The door refuses a uid with too many closes pending, which bounds
//! the descriptors one uid can leave the daemon holding.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Descriptors of one uid waiting to be closed beyond which its connections are refused.
pub const MAX_PENDING_CLOSES: usize = 64;

struct UidCloser {
    tx: Sender<Vec<OwnedFd>>,
    pending: Arc<AtomicUsize>,
}

static CLOSERS: OnceLock<Mutex<HashMap<u32, UidCloser>>> = OnceLock::new();

fn closers() -> &'static Mutex<HashMap<u32, UidCloser>> {
    CLOSERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Closes the descriptors `uid` passed, on that uid's closer thread.
pub fn dispose(uid: u32, fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    for fd in &fds {
        // A socket's close waits out its linger time: an abortive close does not.
        let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
        let _ = nix::sys::socket::setsockopt(&fd.as_fd(), nix::sys::socket::sockopt::Linger, &linger);
    }
    let mut map = closers().lock().unwrap();
    let closer = map.entry(uid).or_insert_with(|| start(uid));
    closer.pending.fetch_add(fds.len(), Ordering::Relaxed);
    if let Err(back) = closer.tx.send(fds) {
        closer.pending.fetch_sub(back.0.len(), Ordering::Relaxed);
        drop(back.0);
    }
}

/// The refusal of `uid`'s next request while more than [`MAX_PENDING_CLOSES`] of the descriptors
/// it passed are still being closed (its own FUSE server does not answer): the daemon would only
/// pile them up. Both doors ask before serving a request.
pub fn refuse_while_stuck(uid: u32) -> Result<(), bci2token_api::ApiError> {
    let stuck = pending(uid);
    if stuck <= MAX_PENDING_CLOSES {
        return Ok(());
    }
    Err(bci2token_api::ApiError::new(
        bci2token_api::ErrorCode::TooManyConnections,
        format!("{stuck} descriptors uid {uid} passed earlier are still being closed; try again later"),
    ))
}

/// How many descriptors of `uid` wait to be closed.
pub fn pending(uid: u32) -> usize {
    closers().lock().unwrap().get(&uid).map_or(0, |c| c.pending.load(Ordering::Relaxed))
}

/// The descriptors that came with one request, each taken at most once by the operation that
/// uses it ([`crate::caller_files::take_fd`]); whatever is left when it is dropped (unused, or the
/// request was refused) goes to the closer of the uid that passed it. Both doors hand these over.
pub struct Passed {
    uid: u32,
    fds: Vec<Option<OwnedFd>>,
}

impl Passed {
    pub fn new(uid: u32, fds: Vec<OwnedFd>) -> Self {
        Passed { uid, fds: fds.into_iter().map(Some).collect() }
    }

    #[cfg(test)]
    pub fn none(uid: u32) -> Self {
        Passed { uid, fds: Vec::new() }
    }

    /// Descriptor `index`, once.
    pub fn take(&mut self, index: u32) -> Option<OwnedFd> {
        self.fds.get_mut(index as usize).and_then(Option::take)
    }
}

impl Drop for Passed {
    fn drop(&mut self) {
        dispose(self.uid, std::mem::take(&mut self.fds).into_iter().flatten().collect());
    }
}

fn start(uid: u32) -> UidCloser {
    let (tx, rx) = channel::<Vec<OwnedFd>>();
    let pending = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pending);
    let spawned = std::thread::Builder::new().name(format!("fd-closer-{uid}")).spawn(move || {
        for fds in rx {
            let n = fds.len();
            drop(fds);
            counter.fetch_sub(n, Ordering::Relaxed);
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start a descriptor closer for uid {uid} ({e}); its descriptors are closed in place");
    }
    UidCloser { tx, pending }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_closed_and_counted_per_uid() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        dispose(4242, vec![OwnedFd::from(a)]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // The peer sees the end once the closer has closed its side.
        let mut buf = [0u8; 1];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(std::io::Read::read(&mut &b, &mut buf).unwrap(), 0, "closed");
        while pending(4242) > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(pending(4242), 0);
        assert_eq!(pending(4243), 0, "another uid has nothing pending");
    }
}

//! CPU priority of the threads that work for sessions which can wait (file replay at full
//! speed, `evaluate`). Queues alone do not keep a live session on time on a small machine: four
//! replays at full speed keep every core busy preprocessing and decoding, and the kernel shares
//! the cores fairly between all runnable threads. Those threads run at the lowest priority
//! instead (nice 19: about 1.5 % of a core's time against a normal thread that wants it), so a
//! live session's threads get the CPU as soon as they have work, and the replays take the rest.

/// The nice value of the threads of sessions that can wait.
pub const BACKGROUND_NICE: i32 = 19;

/// Lowers the calling thread (only it, not the process) to [`BACKGROUND_NICE`]. Raising one's
/// own nice value needs no privilege; an error is reported, not fatal.
pub fn run_in_background() -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take no pointers; PRIO_PROCESS with a thread id changes
    // only that thread on Linux.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's nice value.
pub fn current_nice() -> std::io::Result<i32> {
    // SAFETY: as above; errno is cleared first because -1 is also a valid nice value.
    unsafe {
        *libc::__errno_location() = 0;
        let tid = libc::gettid();
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(nice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_goes_to_the_background() {
        let before = current_nice().unwrap();
        let inside = std::thread::spawn(|| {
            run_in_background().unwrap();
            current_nice().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inside, BACKGROUND_NICE);
        assert_eq!(current_nice().unwrap(), before, "the other threads keep their priority");
    }
}

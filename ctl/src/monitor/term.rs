//! Taking over the terminal and always giving it back: raw mode, the alternate screen and a hidden
//! cursor while the monitor runs; restored by a guard on every way out (return, error, panic).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;

use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};

/// True while the terminal is taken over.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The thread that draws (the only one that may write to the terminal).
static UI_THREAD: OnceLock<ThreadId> = OnceLock::new();
/// A panic of another thread of the monitor, for the UI thread to report.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Puts the terminal back as it was: leaves the alternate screen, shows the cursor, ends raw
/// mode. Does nothing when it is not taken over (so running it twice is harmless).
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, Show);
        let _ = out.flush();
        let _ = disable_raw_mode();
    }
}

/// The terminal, taken over until this is dropped.
pub struct Guard {
    /// Set by SIGTERM or SIGINT: the UI loop ends as if `q` had been pressed. A second one ends
    /// the process at once, with 128 + the signal's number (for a UI thread stuck writing to a
    /// terminal that does not read; the terminal is left as it is then). SIGHUP (the terminal is
    /// gone: nothing to restore, and crossterm's reader spins on a hung-up terminal instead of
    /// returning) ends the process at once, with 129.
    pub signalled: Arc<AtomicBool>,
    signals: Vec<signal_hook::SigId>,
}

impl Guard {
    pub fn enter() -> io::Result<Guard> {
        let _ = UI_THREAD.set(std::thread::current().id());
        install_panic_hook();
        let signalled = Arc::new(AtomicBool::new(false));
        let mut signals = Vec::new();
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // In this order: the exit looks at the flag before the first signal sets it.
            signals.push(signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, signalled.clone())?);
            signals.push(signal_hook::flag::register(sig, signalled.clone())?);
        }
        let hup = signal_hook::consts::SIGHUP;
        signals.push(signal_hook::flag::register_conditional_shutdown(
            hup,
            128 + hup,
            Arc::new(AtomicBool::new(true)),
        )?);
        let guard = Guard { signalled, signals };
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on a failure is undone by the guard's drop.
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        Ok(guard)
    }

    /// The message of a panic on another of the monitor's threads, once.
    pub fn panicked(&self) -> Option<String> {
        PANIC.lock().ok().and_then(|mut p| p.take())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
        for id in self.signals.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// A panic on the UI thread restores the terminal before the message is printed; one on another
/// thread is kept for the UI thread, which ends the monitor with it as the error (printing it
/// there would land in the middle of the screen).
fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_ui = UI_THREAD.get() == Some(&std::thread::current().id());
        if on_ui || !ACTIVE.load(Ordering::SeqCst) {
            restore();
            previous(info);
        } else if let Ok(mut slot) = PANIC.lock() {
            let name = std::thread::current().name().unwrap_or("a thread").to_string();
            slot.get_or_insert_with(|| format!("internal error in {name}: {info}"));
        }
    }));
}

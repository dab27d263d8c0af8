//! Progress bars (indicatif) on stderr for the commands that take a while: export and backup (the
//! output file growing), restore (how far the daemon has read the backup) and evaluate (files).
//! Silent when stdout or stderr is not a terminal, or with `--json`: scripts see nothing new.

use std::fs::File;
use std::io::{IsTerminal, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a watched file is looked at.
const TICK: Duration = Duration::from_millis(100);

/// Whether bars are drawn at all.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// What a watcher reads the progress from.
pub enum Watched<'a> {
    /// The size of a file the daemon writes (export, backup).
    Written(&'a Path),
    /// The offset of a file the daemon reads through a descriptor we share (restore): out of its
    /// size.
    Read(File),
}

/// Runs `work` (a request to the daemon) while a bar shows the progress `watched` tells; the bar
/// is cleared when `work` returns.
pub fn while_running<T>(json: bool, label: &str, watched: Watched<'_>, work: impl FnOnce() -> T) -> T {
    if !wanted(json) {
        return work();
    }
    let (bar, mut read): (ProgressBar, Box<dyn FnMut() -> Option<u64> + Send>) = match watched {
        Watched::Written(path) => {
            let bar = ProgressBar::new_spinner()
                .with_style(style("{spinner} {msg}: {bytes} written ({bytes_per_sec}, {elapsed})"));
            let path = path.to_path_buf();
            (bar, Box::new(move || std::fs::metadata(&path).ok().map(|m| m.len())))
        }
        Watched::Read(mut file) => {
            let total = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::new(total)
                .with_style(style("{msg}: [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)"));
            (bar, Box::new(move || file.stream_position().ok()))
        }
    };
    bar.set_message(label.to_string());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (bar, done) = (bar.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if let Some(n) = read() {
                    bar.set_position(n);
                }
                bar.tick();
                std::thread::sleep(TICK);
            }
        })
    };
    let result = work();
    done.store(true, Ordering::Release);
    let _ = watcher.join();
    bar.finish_and_clear();
    result
}

/// A bar over the files of `evaluate`.
pub struct FilesBar(Option<ProgressBar>);

impl FilesBar {
    pub fn new(json: bool, files: usize) -> FilesBar {
        if !wanted(json) {
            return FilesBar(None);
        }
        let bar = ProgressBar::new(files as u64).with_style(style("[{bar:30}] {pos}/{len} files ({elapsed}) {msg}"));
        bar.enable_steady_tick(TICK);
        FilesBar(Some(bar))
    }

    /// Now replaying `name`.
    pub fn file(&self, name: &str) {
        if let Some(b) = &self.0 {
            b.set_message(name.to_string());
        }
    }

    /// How far into the current file the replay is (stream seconds).
    pub fn at(&self, name: &str, t: f64) {
        if let Some(b) = &self.0 {
            b.set_message(format!("{name}: {t:.0} s"));
        }
    }

    /// Runs `f` (which prints a file's results) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn done_one(&self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }
}

impl Drop for FilesBar {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

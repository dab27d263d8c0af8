//! Progress bars of bci2tokenctl: drawn on a terminal (tmux), never into a pipe.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bci2token_tests::tmux::{Tmux, PROMPT};
use bci2token_tests::{ssvep_files, start_daemon, DaemonOptions, TempDir};

/// `evaluate` of two recordings in a terminal shows a bar over the files while it runs, and
/// clears it: the pane ends with the results and no bar. The same command into a pipe writes
/// nothing to stderr, and so does an export.
#[test]
fn a_bar_shows_on_a_terminal_and_never_in_a_pipe() {
    let daemon = start_daemon(DaemonOptions::default());
    let files = ssvep_files();
    let (a, b) = (&files[0], &files[1]);
    let args = [
        "evaluate",
        "--model",
        "ssvep-fbcca-3",
        "--classes",
        "13Hz,17Hz,21Hz",
        "--trial-start",
        "stim_start",
        "--trial-length",
        "5",
        a,
        b,
    ];
    let piped = daemon.ctl_command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    assert!(piped.stderr.is_empty(), "stderr of a piped evaluate: {}", String::from_utf8_lossy(&piped.stderr));
    let results = String::from_utf8_lossy(&piped.stdout).to_string();

    let tmux = Tmux::start("progress", 200, 50);
    tmux.wait("the shell's prompt", Duration::from_secs(10), |s| s.contains(PROMPT.trim_end()));
    let ctl = bci2token_tests::bin_dir().join("bci2tokenctl");
    let mut line = format!("{} --socket {}", ctl.display(), daemon.socket.display());
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    line.push_str("; echo EVALUATE-DONE");
    tmux.type_line(&line);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_bar = None;
    let screen = loop {
        let screen = tmux.screen();
        if saw_bar.is_none() {
            saw_bar = screen.lines().find(|l| l.contains("/2 files")).map(str::to_string);
        }
        if screen.lines().any(|l| l.trim() == "EVALUATE-DONE") {
            break screen;
        }
        assert!(Instant::now() < deadline, "evaluate did not end in the pane:\n{screen}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let bar = saw_bar.unwrap_or_else(|| panic!("no progress bar was drawn; the pane:\n{screen}"));
    // It names the file being replayed.
    assert!(bar.contains("subject0"), "{bar}");
    assert!(!screen.lines().any(|l| l.contains("/2 files")), "the bar was not cleared:\n{screen}");
    // The results are the same as into the pipe (the first file's line, but for its session id).
    let first = results.lines().next().unwrap().split_once(", ").unwrap().1;
    assert!(screen.contains(first), "{first:?} not in the pane:\n{screen}");

    // An export into a pipe: nothing on stderr.
    let dir = TempDir::new("progress");
    let out = dir.path().join("s.csv");
    let id = daemon.ctl_json(&["session", "list"])[0]["id"].as_str().unwrap().to_string();
    let o = daemon
        .ctl_command(&["export", &id, "--format", "csv", "--output", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);
}

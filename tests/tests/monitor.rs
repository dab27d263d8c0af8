//! `bci2tokenctl monitor` in a real terminal: tmux runs a shell, the test types the command and
//! reads the screen with `capture-pane`, against the real daemon with a live speller session and a
//! real-time replay of a real recording with O2 zeroed. It checks what a person would look at
//! (traces with their µV scales, the decoded letters, the zeroed electrode flagged flat, an 80×24
//! screen), that the session switcher and the keys work, and that `q` and Ctrl-C give the
//! terminal back as it was (main screen, cooked mode with echo, cursor shown).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use bci2token_tests::tmux::{Tmux, PROMPT};
use bci2token_tests::{bin_dir, data_dir, start_daemon, workspace_root, write_edf, DaemonOptions, Follower, TempDir};

/// The decoded text the monitor shows (its `text  ` line), trimmed.
fn shown_text(screen: &str) -> Option<String> {
    screen.lines().find_map(|l| l.strip_prefix("text  ")).map(|t| t.trim().to_string())
}

/// True when a line of the quality panel (or a strip's label) says `label` is `flag`.
fn flagged(screen: &str, label: &str, flag: &str) -> bool {
    screen.lines().any(|l| {
        l.split('\u{2502}').any(|cell| {
            let words: Vec<&str> = cell.split_whitespace().collect();
            words.first() == Some(&label) && words.get(1).is_some_and(|w| w.trim_end_matches(',') == flag)
        })
    })
}

/// Adds the texts of the token events `live` has received to `texts`.
fn drain_tokens(live: &Follower, texts: &mut BTreeSet<String>) {
    while let Some(ev) = live.next(Duration::from_millis(1)) {
        if ev["type"] == "token" {
            texts.insert(ev["text"].as_str().unwrap().to_string());
        }
    }
}

/// True when the last line with text is the shell's prompt.
fn prompt_is_back(screen: &str) -> bool {
    screen.lines().rev().find(|l| !l.trim().is_empty()).is_some_and(|l| l.trim_end() == PROMPT.trim_end())
}

/// Lines showing a channel's scale (`±20 µV`).
fn scale_labels(screen: &str) -> usize {
    screen.lines().filter(|l| l.contains('\u{b1}') && l.contains("\u{b5}V")).count()
}

fn stty_flags(screen: &str) -> BTreeSet<String> {
    screen.split_whitespace().map(|w| w.trim_end_matches(';').to_string()).collect()
}

#[test]
fn monitor_shows_a_live_speller_and_a_replay_switches_and_gives_the_terminal_back() {
    let dir = TempDir::new("monitor");
    let edf = dir.path().join("o2-zeroed.edf");
    let src = data_dir().join("ssvep/subject01_2012.07.06-19.02.16.edf");
    let labels = write_edf(&src, &edf, 30.0, &["O2"], &[]);
    assert!(labels.iter().any(|l| l == "O2"), "{labels:?}");
    let daemon = start_daemon(DaemonOptions::default());

    // (1) A live speller session, followed here as well to know the tokens it decodes.
    let model = workspace_root().join("models/speller-40").display().to_string();
    let (live, speller) = Follower::live_speller(&daemon, &model, &[]);
    // (2) A real-time replay (looped, so that it is still live whenever the test gets to it).
    let path = format!("path={}", edf.display());
    let replay = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &path,
        "--set",
        "speed=1",
        "--set",
        "loop=true",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let tmux = Tmux::start("monitor", 160, 48);
    tmux.wait("the shell's prompt", Duration::from_secs(10), |s| s.contains(PROMPT.trim_end()));
    let ctl = bin_dir().join("bci2tokenctl");
    let socket = daemon.socket.display().to_string();
    tmux.type_line(&format!("'{}' --socket '{socket}' monitor {speller}", ctl.display()));

    // The texts of the tokens the daemon sends (the monitor shows those decoded after it
    // subscribed, so all of its text is made of them).
    let mut texts: BTreeSet<String> = BTreeSet::new();

    // Traces: every channel of the speller with its own µV scale, and both sessions counted.
    let screen = tmux.wait("the speller's traces", Duration::from_secs(20), |s| {
        drain_tokens(&live, &mut texts);
        s.contains(&format!("session {speller} (")) && s.contains("live)") && scale_labels(s) >= 8
    });
    assert_eq!(tmux.display("#{alternate_on}"), "1", "the monitor draws on the alternate screen");
    for label in ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"] {
        assert!(
            screen.lines().any(|l| l.trim_start_matches(['\u{25b8}', ' ']).starts_with(&format!("{label} "))),
            "no strip for {label}:\n{screen}"
        );
    }
    assert!(screen.contains("8 ch @ 250 Hz") && screen.contains("speller-40"), "{screen}");
    assert!(screen.lines().any(|l| l.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c))), "no trace:\n{screen}");
    assert!(screen.contains("Bands O1"), "{screen}");
    assert!(screen.lines().last().unwrap_or("").starts_with("q quit"), "the keys are shown:\n{screen}");

    // The decoded letters: the text so far is made of the tokens' texts the daemon sent.
    let screen = tmux.wait("decoded letters", Duration::from_secs(40), |s| {
        drain_tokens(&live, &mut texts);
        shown_text(s).is_some_and(|t| !t.is_empty() && t.chars().all(|c| texts.iter().any(|x| x.contains(c))))
    });
    let text = shown_text(&screen).unwrap();
    assert!(text.chars().any(|c| c.is_ascii_alphabetic()), "letters: {text:?}\n{screen}");
    assert!(screen.lines().any(|l| l.starts_with("last  ") && l.contains(" p=")), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("probs ")), "{screen}");
    assert!(screen.contains("breaker closed"), "{screen}");
    // By now a second of signal is in: O1's band powers, in per cent of 1-45 Hz.
    let bands: Vec<&str> = ["delta", "theta", "alpha", "beta", "gamma"]
        .iter()
        .filter_map(|b| screen.lines().find(|l| l.contains(&format!("\u{2502}{b} "))))
        .collect();
    assert_eq!(bands.len(), 5, "{screen}");
    assert!(bands.iter().all(|l| l.contains('%')), "{bands:?}");

    // Both sessions are listed: switch to the replay, where O2 is flat.
    tmux.wait("two live sessions", Duration::from_secs(10), |s| s.contains("/2 live)"));
    tmux.keys(&["Tab"]);
    let screen = tmux.wait("the replay with O2 flagged flat", Duration::from_secs(20), |s| {
        s.contains(&format!("session {replay} ("))
            && flagged(s, "O2", "flat")
            && scale_labels(s) >= 8
            && !s.contains("no samples yet")
    });
    assert!(screen.contains("replay") && screen.contains("8 ch @ 256 Hz"), "{screen}");
    assert!(screen.contains("no model"), "{screen}");
    assert!(!flagged(&screen, "O1", "flat") && flagged(&screen, "O1", "ok"), "only O2:\n{screen}");
    assert!(screen.contains("quality 88% (7/8 ok)"), "{screen}");
    assert!(!screen.contains(&format!("session {speller}")), "{screen}");

    // An 80×24 terminal still shows the traces, the flag and the keys.
    tmux.run(&["resize-window", "-t", "monitor", "-x", "80", "-y", "24"]);
    let screen = tmux.wait("an 80x24 screen", Duration::from_secs(10), |s| {
        s.lines().count() <= 24
            && s.lines().last().unwrap_or("").starts_with("q quit")
            && flagged(s, "O2", "flat")
            && scale_labels(s) >= 8
    });
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");

    // Back to the speller with p (the other direction), then q.
    tmux.keys(&["p"]);
    tmux.wait("the speller again", Duration::from_secs(10), |s| s.contains(&format!("session {speller} (")));
    tmux.keys(&["q"]);
    let screen = tmux.wait("the prompt after q", Duration::from_secs(10), prompt_is_back);
    assert_eq!(tmux.display("#{alternate_on}"), "0", "the main screen is back:\n{screen}");
    assert_eq!(tmux.display("#{cursor_flag}"), "1", "the cursor is shown again");
    tmux.type_line("echo \"rc=$?\"; stty -a");
    let screen = tmux.wait("stty's answer", Duration::from_secs(10), |s| s.contains("rc=") && s.contains("icanon"));
    assert!(screen.contains("rc=0"), "q exits with 0:\n{screen}");
    let flags = stty_flags(&screen);
    for on in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(flags.contains(on) && !flags.contains(&format!("-{on}")), "{on} is not restored:\n{screen}");
    }

    // Without an ID: the first live session (the speller); Ctrl-C quits as q does.
    tmux.type_line("clear");
    tmux.type_line(&format!("'{}' --socket '{socket}' monitor", ctl.display()));
    tmux.wait("the first live session", Duration::from_secs(20), |s| {
        s.contains(&format!("session {speller} (")) && scale_labels(s) >= 8
    });
    tmux.keys(&["C-c"]);
    tmux.wait("the prompt after Ctrl-C", Duration::from_secs(10), prompt_is_back);
    assert_eq!(tmux.display("#{alternate_on}"), "0");
    tmux.type_line("echo \"rc2=$?\"; stty -a");
    let screen = tmux.wait("stty's answer", Duration::from_secs(10), |s| s.contains("rc2=") && s.contains("icanon"));
    assert!(screen.contains("rc2=0"), "Ctrl-C exits with 0:\n{screen}");
    let flags = stty_flags(&screen);
    assert!(flags.contains("icanon") && flags.contains("echo") && !flags.contains("-echo"), "{screen}");
    drop(live);
}

/// The monitor's pid: the child of the pane's shell (once it has started it).
fn child_of(shell: u32) -> u32 {
    let path = format!("/proc/{shell}/task/{shell}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no child of the shell {shell}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True while `pid`'s main thread is blocked writing to its standard output.
fn writing_to_stdout(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.starts_with(&format!("{} 0x1 ", libc::SYS_write)))
}

/// True once `pid` has ended (reaped, or a zombie).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Sends SIGCONT to a stopped process when dropped (also when the test fails).
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Kills a monitor that has not ended when dropped (a failed test leaves none behind).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !ended(self.0) {
            let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// A monitor stuck writing to a terminal that does not read (here: a stopped tmux) cannot end
/// gracefully on SIGTERM; a second SIGTERM ends it at once, with 128 + 15. A monitor whose
/// terminal goes away (tmux killed: SIGHUP, then reads fail) ends at once too.
#[test]
fn a_second_signal_ends_a_monitor_stuck_on_its_terminal_and_a_hangup_ends_it() {
    let daemon = start_daemon(DaemonOptions::default());
    let id = daemon.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    let tmux = Tmux::start("monitor-stuck", 200, 60);
    tmux.wait("the shell's prompt", Duration::from_secs(10), |s| s.contains(PROMPT.trim_end()));
    let ctl = bin_dir().join("bci2tokenctl");
    let socket = daemon.socket.display().to_string();
    tmux.type_line(&format!("'{}' --socket '{socket}' monitor {id}", ctl.display()));
    tmux.wait("the traces", Duration::from_secs(20), |s| {
        s.contains(&format!("session {id} (")) && scale_labels(s) >= 1
    });
    let monitor = child_of(tmux.display("#{pane_pid}").parse().unwrap());
    let _kill = KillOnDrop(monitor);
    let server = Pid::from_raw(tmux.display("#{pid}").parse().unwrap());

    // The terminal stops reading: the traces fill its buffer and the monitor blocks in write(1).
    kill(server, Signal::SIGSTOP).unwrap();
    let resume = Resume(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !writing_to_stdout(monitor) {
        assert!(Instant::now() < deadline, "the monitor never blocked writing to the stopped terminal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let monitor_pid = Pid::from_raw(monitor as i32);
    kill(monitor_pid, Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ended(monitor) && writing_to_stdout(monitor), "the first SIGTERM only asks the UI loop to end");
    kill(monitor_pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(monitor) {
        assert!(Instant::now() < deadline, "the second SIGTERM did not end the monitor");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(resume);

    // The shell got the exit status (the terminal is left as the monitor had it: best effort).
    tmux.type_line("echo \"rc=$?\"");
    let screen = tmux.wait("the exit status", Duration::from_secs(10), |s| s.contains("rc=1"));
    assert!(screen.contains("rc=143"), "{screen}");

    // The terminal goes away under a running monitor.
    let tmux = Tmux::start("monitor-hangup", 80, 24);
    tmux.wait("the shell's prompt", Duration::from_secs(10), |s| s.contains(PROMPT.trim_end()));
    tmux.type_line(&format!("'{}' --socket '{socket}' monitor {id}", ctl.display()));
    tmux.wait("the traces", Duration::from_secs(20), |s| {
        s.contains(&format!("session {id} (")) && scale_labels(s) >= 1
    });
    let monitor = child_of(tmux.display("#{pane_pid}").parse().unwrap());
    let _kill = KillOnDrop(monitor);
    drop(tmux);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(monitor) {
        assert!(Instant::now() < deadline, "the monitor did not end when its terminal went away");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a terminal UI makes no sense, `monitor` says so (usage error, exit 2) before anything.
#[test]
fn monitor_refuses_json_and_an_output_that_is_not_a_terminal() {
    let ctl = bin_dir().join("bci2tokenctl");
    let o = Command::new(&ctl).args(["--socket", "/nonexistent/control.sock", "--json", "monitor"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["error"]["code"], "usage", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no JSON output"), "{err}");
    assert!(o.stdout.is_empty());

    // stdout is a pipe here.
    let o = Command::new(&ctl).args(["--socket", "/nonexistent/control.sock", "monitor", "abc"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("standard output is not a terminal"), "{err}");
    assert!(o.stdout.is_empty(), "nothing drawn: {:?}", String::from_utf8_lossy(&o.stdout));
}

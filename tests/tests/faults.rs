//! Fault injection through the real daemon: `kill -9` at random moments while recording, a data
//! directory on a file system that fills up, a storm of SIGHUPs, steps of the wall clock and a
//! far-off monotonic clock (a time namespace), and followers that read slowly or not at all.
//!
//! This is the short form, run by `cargo test`; `tools/faults` runs the long one (100 kills).
//! Random choices come from a seed printed at the start of each test: `BCI2TOKEN_FAULT_SEED`
//! repeats a run.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Store};
use bci2token_tests::system_users::as_root;
use bci2token_tests::{
    compile_c_library, data_dir, relaxed_speller, spawn_daemon, start_daemon, Daemon, DaemonOptions, Follower, TempDir,
    LIVE_SCRIPT,
};
use nix::sys::signal::Signal;

/// The tests of this file one at a time: each loads the machine (replays at full speed, a disk
/// filling up) or asserts timing (no window lost), and the test harness runs tests in parallel.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: small, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = env_number(
            "BCI2TOKEN_FAULT_SEED",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        )
        .max(1);
        eprintln!("{test}: seed {seed} (BCI2TOKEN_FAULT_SEED={seed} repeats this run)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn options(data: &Path, config: Option<String>) -> DaemonOptions {
    DaemonOptions { env: vec![("BCI2TOKEN_DATA_DIR".into(), data.display().to_string())], config, ..Default::default() }
}

fn open_store(dir: &Path) -> Store {
    let key = MasterKey::load(None, dir).expect("the daemon created the master key");
    Store::open(&dir.join("sessions.db"), Arc::new(key)).unwrap()
}

/// Every stored block of `id` authenticates and they are numbered 0.. without a hole; returns
/// how many there are.
fn stored_blocks(store: &mut Store, id: &str) -> u64 {
    let blocks = store.read_all(id, Kind::Block).unwrap();
    for (i, (seq, block)) in blocks.iter().enumerate() {
        assert_eq!(*seq, i as u64, "session {id}: a hole before block {seq}");
        assert!(block.is_ok(), "session {id}: block {seq}: {:?}", block.as_ref().err());
    }
    blocks.len() as u64
}

/// `session start ARGS` through ctl; the session's id, or None when the daemon did not answer.
fn try_start(daemon: &Daemon, args: &[&str]) -> Option<String> {
    let mut full = vec!["--json", "session", "start"];
    full.extend_from_slice(args);
    let out = daemon.ctl(&full);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    reply["id"].as_str().map(str::to_string)
}

fn show(daemon: &Daemon, id: &str) -> serde_json::Value {
    daemon.ctl_json(&["session", "show", id])
}

fn replay_args(file: &str) -> Vec<String> {
    ["--driver", "replay", "--set", &format!("path={file}"), "--set", "speed=0", "--set", "loop=true"]
        .map(String::from)
        .to_vec()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `kill -9` at random moments: during start-up and recovery, and while a replay at full speed
/// and a live session record. After each kill the store is opened as the next start would: every
/// block the daemon had acknowledged (`stored_blocks`) is there, authenticates and has no hole
/// before it, and the database passes SQLite's integrity check.
#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_block() {
    let _serial = serial();
    let kills = env_number("BCI2TOKEN_FAULT_KILLS", 6);
    let mut rng = Rng::from_env("kill -9");
    let data = TempDir::new("faults-kill");
    let recording = data_dir().join("eegmmidb/S001R04.edf").display().to_string();
    let (mut while_recording, mut before_ready, mut acknowledged_total) = (0, 0, 0);
    for round in 0..kills {
        let mut daemon = spawn_daemon(options(data.path(), None));
        let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
        // One kill in four comes during start-up (recovery of the last kill, key, schema); the
        // others while both sessions record.
        let during_startup = round % 4 == 0;
        let delay = Duration::from_millis(if during_startup { rng.below(1200) } else { rng.below(1500) });
        let kill_later = move || {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            })
        };
        let mut killer = during_startup.then(kill_later);
        let mut acked: BTreeMap<String, u64> = BTreeMap::new();
        let mut ready = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "round {round}: no kill within 60 s; log:\n{}", daemon.log());
            if !ready {
                ready = daemon.notify.wait_for("READY=1", Duration::from_millis(20));
                if ready && killer.is_none() {
                    for args in [
                        replay_args(&recording),
                        ["--driver", "synthetic", "--set", "script=13Hz:2,rest:1"].map(String::from).to_vec(),
                    ] {
                        if let Some(id) = try_start(&daemon, &as_strs(&args)) {
                            acked.insert(id, 0);
                        }
                    }
                }
                continue;
            }
            // What the daemon acknowledged, as a client sees it before the kill.
            for (id, n) in acked.iter_mut() {
                let out = daemon.ctl(&["--json", "session", "show", id]);
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    *n = (*n).max(v["stored_blocks"].as_u64().unwrap_or(0));
                }
            }
            if killer.is_none() && acked.values().any(|&n| n > 0) {
                killer = Some(kill_later());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(k) = killer {
            k.join().unwrap();
        }
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(Signal::SIGKILL as i32),
            "round {round}: the daemon ended on its own ({status}); log:\n{}",
            daemon.log()
        );
        before_ready += u64::from(!ready);
        let mut store = open_store(data.path());
        for (id, &n) in &acked {
            let stored = stored_blocks(&mut store, id);
            assert!(stored >= n, "round {round}: session {id}: {stored} blocks stored, {n} were acknowledged");
        }
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        let total: u64 = acked.values().sum();
        if total > 0 {
            while_recording += 1;
            acknowledged_total += total;
        }
        // The store stays small over a hundred rounds (a deletion rewrites pages, as the
        // daemon's own does).
        for id in acked.keys() {
            store.delete_session(id).unwrap();
        }
    }
    eprintln!(
        "kill -9: {kills} kills, {while_recording} while recording, {before_ready} before READY=1; \
         {acknowledged_total} acknowledged blocks, none lost"
    );
    assert!(while_recording * 2 >= kills, "most kills must come while recording: {while_recording} of {kills}");
}

/// The data directory on a small tmpfs that fills up: the replay at full speed that filled it
/// stops recording with a `recording_stopped` event naming the full file system and goes on
/// unrecorded, as does the live session beside it; the daemon stays up; a session started while
/// the disk is full is refused; what was stored reads back; once space is freed a new session
/// records completely. The database is intact afterwards.
#[test]
fn a_full_file_system_stops_recording_not_sessions_and_recording_resumes_when_freed() {
    let _serial = serial();
    if !as_root("mounting a tmpfs") {
        return;
    }
    let dir = TempDir::new("faults-full");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());

    let mut daemon = start_daemon(options(&data, None));
    // Most of the room taken by something else, as on a shared /var.
    let ballast = data.join("ballast");
    std::fs::write(&ballast, vec![1u8; 16 << 20]).unwrap();
    let recording = data_dir().join("eegmmidb/S001R04.edf").display().to_string();
    let mut args = vec!["--json".to_string(), "session".into(), "start".into()];
    args.extend(replay_args(&recording));
    args.push("--follow".into());
    let replay = Follower::spawn(&daemon, &as_strs(&args));
    let live = try_start(&daemon, &["--driver", "synthetic", "--set", "script=13Hz:2,rest:1"]).expect("live starts");
    let events = replay.collect_until(Duration::from_secs(90), |e| e["type"] == "recording_stopped");
    let replay_id = events[0]["session"].as_str().unwrap().to_string();
    let message = events.last().unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("the file system holding the store is full"), "{message}");
    assert!(message.contains(data.to_str().unwrap()), "the message names the store: {message}");
    // The sessions go on: acquisition does not depend on the disk.
    let replay_now = show(&daemon, &replay_id);
    assert_eq!(replay_now["state"], "running", "{replay_now}");
    assert_eq!(replay_now["recording_error"].as_str(), Some(message.as_str()), "{replay_now}");
    let stored = replay_now["stored_blocks"].as_u64().unwrap();
    assert!(stored > 50, "{replay_now}");
    let live_before = show(&daemon, &live);
    std::thread::sleep(Duration::from_secs(1));
    let live_after = show(&daemon, &live);
    assert_eq!(live_after["state"], "running", "{live_after}");
    assert!(live_after["blocks"].as_u64() > live_before["blocks"].as_u64(), "{live_after}");
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon ended: {}", daemon.log());

    // Started while the file system is still full: refused, saying why and what to do.
    let args = ["--driver", "synthetic", "--set", "speed=0", "--set", "loop=false", "--set", "script=13Hz:2,rest:1"];
    let refused = daemon.ctl(&[&["session", "start"][..], &args[..]].concat());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a session started on a full store");
    assert!(text.contains("is full") && text.contains("free at least 8 MiB"), "{text}");

    // Room again: the sessions' ends are recorded, what was stored before reads back (an export
    // authenticates every block), and a new session records every block.
    std::fs::remove_file(&ballast).unwrap();
    for id in [&replay_id, &live] {
        assert_eq!(daemon.ctl_json(&["session", "stop", id])["state"], "stopped");
    }
    let csv = dir.path().join("replay.csv");
    let out = daemon.ctl(&["export", &replay_id, "--format", "csv", "--output", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() as u64;
    assert!(rows > stored * 160, "{rows} rows for {stored} blocks of 160 frames");
    let out = daemon.ctl(&[&["--json", "session", "start"][..], &args[..], &["--follow"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let again = show(&daemon, first["id"].as_str().unwrap());
    assert_eq!(again["state"], "finished", "{again}");
    assert_eq!(again["stored_blocks"], again["blocks"], "{again}");
    assert!(again.get("recording_error").is_none(), "{again}");

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success(), "{}", daemon.log());
    let mut store = open_store(&data);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert!(stored_blocks(&mut store, &replay_id) >= stored);
    assert_eq!(store.state(&replay_id).unwrap(), "stopped", "the end of a session whose recording stopped");
    assert_eq!(stored_blocks(&mut store, first["id"].as_str().unwrap()), again["blocks"].as_u64().unwrap());
}

/// Three hundred SIGHUPs a millisecond or two apart, the configuration rewritten between them
/// (now and then invalid): the daemon reloads or keeps its configuration each time, and a live
/// session beside it loses no block and records every one.
#[test]
fn a_sighup_storm_costs_a_live_session_nothing() {
    let _serial = serial();
    let mut daemon =
        start_daemon(DaemonOptions { config: Some("log_level = \"info\"\n".into()), ..Default::default() });
    let live = Follower::spawn(
        &daemon,
        &["--json", "session", "start", "--driver", "synthetic", "--set", "script=13Hz:2,rest:1", "--follow"],
    );
    let first = live.next(Duration::from_secs(20)).expect("the live session's first event");
    let id = first["session"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let before = show(&daemon, &id);
    let started = Instant::now();
    for i in 0..300 {
        let config = match i % 50 {
            25 => "retention_days = \"soon\"\n",
            n if n % 2 == 0 => "log_level = \"debug\"\n",
            _ => "log_level = \"info\"\nmax_sessions = 40\n",
        };
        let failures = daemon.log().matches("reload failed").count();
        std::fs::write(&daemon.config_file, config).unwrap();
        daemon.signal(Signal::SIGHUP);
        // Read what it tells systemd (RELOADING=1, READY=1 per reload), as systemd does: a
        // notification socket nobody reads holds the sender up once its queue is full.
        daemon.notify.lines();
        if i % 50 == 25 {
            // Signals sent while a reload runs coalesce: the bad file stays until a reload
            // has read it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while daemon.log().matches("reload failed").count() == failures {
                assert!(Instant::now() < deadline, "the invalid configuration was never read: {}", daemon.log());
                daemon.notify.lines();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_micros(1000 + 1000 * (i % 2)));
    }
    std::fs::write(&daemon.config_file, "log_level = \"info\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    let elapsed = started.elapsed().as_secs_f64();
    let after = show(&daemon, &id);
    assert_eq!(after["state"], "running", "{after}");
    for counter in ["gaps", "windows_dropped", "store_dropped"] {
        assert_eq!(after[counter], 0, "{counter}: {after}");
    }
    let frames = after["frames"].as_u64().unwrap() - before["frames"].as_u64().unwrap();
    assert!(frames as f64 >= 250.0 * elapsed * 0.9, "{frames} frames in {elapsed:.1} s at 250 Hz");
    let log = daemon.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    let failed = log.matches("reload failed, keeping the running configuration").count();
    assert!(failed >= 6, "{log}");
    eprintln!("300 SIGHUPs: {} reloads, {failed} refused", log.matches("configuration reloaded").count());
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    let events = live.collect_until(Duration::from_secs(20), |e| e["type"] == "state" && e["state"] == "stopped");
    assert!(!events.iter().any(|e| e["type"] == "lost" || e["type"] == "warning"), "{events:?}");
    let end = show(&daemon, &id);
    assert_eq!(end["stored_blocks"], end["blocks"], "{stopped} {end}");
    assert!(daemon.ctl_json(&["status"])["version"].is_string());
}

/// The wall clock, as the daemon sees it, offset by the seconds in a file: an LD_PRELOAD
/// library over clock_gettime/gettimeofday/time (a time namespace moves the monotonic and
/// boot-time clocks, never the wall clock).
const CLOCK_SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long offset(void) {
    const char *path = getenv("BCI2TOKEN_FAULT_CLOCK");
    char buf[32] = {0};
    if (!path) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atoll(buf) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(clock, ts);
    if (r == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset();
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    int r = clock_gettime(CLOCK_REALTIME, &ts);
    if (r == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    (void)tz;
    return r;
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t) *t = ts.tv_sec;
    return ts.tv_sec;
}
"#;

/// Steps of the wall clock during a recording, two days forward and then a day back: the live
/// session goes on without a gap or a lost block, and retention (one day) deletes nothing it
/// would not have deleted before the step: deletions by age wait a day after a step.
#[test]
fn wall_clock_steps_during_a_recording_lose_nothing_and_delete_nothing() {
    let _serial = serial();
    let dir = TempDir::new("faults-clock");
    let shim = dir.path().join("libclockshift.so");
    compile_c_library(CLOCK_SHIM, &shim);
    let offset = dir.path().join("offset");
    std::fs::write(&offset, "0").unwrap();
    let daemon = start_daemon(DaemonOptions {
        config: Some("retention_days = 1\nlog_level = \"info\"\n".into()),
        env: vec![
            ("LD_PRELOAD".into(), shim.display().to_string()),
            ("BCI2TOKEN_FAULT_CLOCK".into(), offset.display().to_string()),
        ],
        ..Default::default()
    });
    // A session that ended now, by the clock before the steps.
    let out = daemon.ctl(&[
        "--json",
        "session",
        "start",
        "--driver",
        "synthetic",
        "--set",
        "speed=0",
        "--set",
        "loop=false",
        "--set",
        "script=13Hz:2",
        "--follow",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let kept = kept["id"].as_str().unwrap().to_string();
    let live = Follower::spawn(
        &daemon,
        &[
            "--json",
            "session",
            "start",
            "--driver",
            "synthetic",
            "--set",
            "script=13Hz:2,rest:1",
            "--follow",
            "--samples",
        ],
    );
    let id = live.next(Duration::from_secs(20)).expect("the live session's first event")["session"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(1));
    // Two days forward; a reload runs retention at once.
    std::fs::write(&offset, (2 * 86_400).to_string()).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(daemon.wait_log("the wall clock stepped forward by 172800 s", Duration::from_secs(10)), "{}", daemon.log());
    std::thread::sleep(Duration::from_secs(1));
    // A day back from the real time.
    std::fs::write(&offset, (-86_400).to_string()).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(daemon.wait_log("the wall clock stepped back by 259200 s", Duration::from_secs(10)), "{}", daemon.log());
    std::thread::sleep(Duration::from_secs(1));
    let kept_now = show(&daemon, &kept);
    assert_eq!(kept_now["state"], "finished", "retention deleted a session after a clock step: {kept_now}");

    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let events = live.collect_until(Duration::from_secs(20), |e| e["type"] == "state" && e["state"] == "stopped");
    let seqs: Vec<u64> = events.iter().filter(|e| e["type"] == "samples").map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.len() > 20, "{} blocks", seqs.len());
    assert_eq!(seqs, (seqs[0]..seqs[0] + seqs.len() as u64).collect::<Vec<_>>(), "a block went missing");
    let times: Vec<f64> = events.iter().filter(|e| e["type"] == "samples").map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 1.0), "stream time jumped with the clock");
    assert!(!events.iter().any(|e| ["gap", "lost", "warning"].contains(&e["type"].as_str().unwrap())), "{events:?}");
    let end = show(&daemon, &id);
    assert_eq!(end["gaps"], 0, "{end}");
    assert_eq!(end["stored_blocks"], end["blocks"], "{end}");
    // The audit chain still verifies with entries whose times went back.
    let verify = daemon.ctl_json(&["audit", "verify"]);
    assert_eq!(verify["intact"], true, "{verify}");
}

/// The daemon in a time namespace whose monotonic and boot-time clocks read ten years: a live
/// decoding session emits a token every window (0.25 s) without a hole, as it does at boot.
#[test]
fn a_monotonic_clock_ten_years_on_decodes_as_at_boot() {
    let _serial = serial();
    if !as_root("a time namespace") {
        return;
    }
    let ten_years = (10 * 365 * 86_400).to_string();
    let probe = Command::new("unshare")
        .args(["--time", "--monotonic", &ten_years, "--boottime", &ten_years, "--fork", "cat", "/proc/uptime"])
        .output()
        .unwrap();
    assert!(probe.status.success(), "unshare --time: {}", String::from_utf8_lossy(&probe.stderr));
    let uptime: f64 = String::from_utf8_lossy(&probe.stdout).split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime > 3.0e8, "the namespace's boot-time clock reads {uptime} s");

    let model_dir = TempDir::new("faults-ns-speller");
    let model = relaxed_speller(&model_dir).display().to_string();
    let mut daemon = start_daemon(DaemonOptions {
        wrapper: ["unshare", "--time", "--monotonic", &ten_years, "--boottime", &ten_years, "--kill-child"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let mut stat = String::new();
    let pid = daemon.ctl_json(&["status"])["pid"].as_u64().unwrap();
    std::fs::File::open(format!("/proc/{pid}/timens_offsets")).unwrap().read_to_string(&mut stat).unwrap();
    assert!(stat.contains(&ten_years), "the daemon is not in the namespace: {stat}");
    let (live, id) = Follower::live_speller(&daemon, &model, &[]);
    std::thread::sleep(Duration::from_secs(6));
    daemon.ctl_json(&["session", "stop", &id]);
    let events = live.collect_until(Duration::from_secs(20), |e| e["type"] == "state" && e["state"] == "stopped");
    assert_every_block_and_window(&events, 0, 12);
    assert_kept_everything(&show(&daemon, &id));
    // The daemon is unshare's child: stopped by its own SIGTERM, it ends cleanly, and unshare
    // with it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    assert!(daemon.wait_exit(Duration::from_secs(20)).success(), "{}", daemon.log());
}

/// What a follower that kept up saw of a live decoding session: at least `blocks` blocks with no
/// hole in their numbers, and at least `tokens` tokens one window hop (0.25 s) apart.
fn assert_every_block_and_window(events: &[serde_json::Value], blocks: usize, tokens: usize) {
    let seqs: Vec<u64> = events.iter().filter(|e| e["type"] == "samples").map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.len() >= blocks, "{} blocks", seqs.len());
    if let Some(&first) = seqs.first() {
        let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "the follower that keeps up lost a block");
    }
    let times: Vec<f64> = events.iter().filter(|e| e["type"] == "token").map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(times.len() >= tokens, "{} tokens", times.len());
    for pair in times.windows(2) {
        assert!((pair[1] - pair[0] - 0.25).abs() < 0.01, "a window is missing between t={} and t={}", pair[0], pair[1]);
    }
}

/// A session's counters after it ended: nothing dropped, no gap, every block stored.
fn assert_kept_everything(end: &serde_json::Value) {
    for counter in ["windows_dropped", "store_dropped", "gaps"] {
        assert_eq!(end[counter], 0, "{counter}: {end}");
    }
    assert_eq!(end["stored_blocks"], end["blocks"], "{end}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A follower on the control socket that asks for every sample and then reads one frame every
/// `every` (None: never) until `hurry` is set, then as fast as it can.
fn raw_follower(
    daemon: &Daemon,
    id: &str,
    every: Option<Duration>,
    hurry: &Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<serde_json::Value>> {
    let hurry = Arc::clone(hurry);
    let mut conn = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    let request =
        bci2token_api::Request::Follow { id: id.to_string(), options: bci2token_api::FollowOptions { samples: true } };
    bci2token_api::write_frame(&mut conn, &request).unwrap();
    let reply = bci2token_api::read_frame(&mut conn).unwrap().expect("the follow reply");
    assert!(String::from_utf8_lossy(&reply).contains("\"ok\""), "{}", String::from_utf8_lossy(&reply));
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let Some(every) = every else {
            // Stuck: holds the connection open, reads nothing, until the session ends.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
            std::thread::sleep(Duration::from_secs(12));
            return events;
        };
        while let Ok(Some(frame)) = bci2token_api::read_frame(&mut conn) {
            let event: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            let last = event.get("type") == Some(&"state".into()) && event["state"] == "stopped";
            events.push(event);
            if last {
                break;
            }
            if !hurry.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(every);
            }
        }
        events
    })
}

/// Eight followers that never read and two that read one event a second, all asking for
/// every sample of a live decoding session: the session keeps every block, window and token for
/// a follower that keeps up, the slow ones are told how much they lost instead of the daemon
/// buffering it, and the daemon's memory stays bounded.
#[test]
fn stuck_and_slow_socket_followers_cost_a_live_session_nothing() {
    let _serial = serial();
    let daemon = start_daemon(DaemonOptions {
        env: vec![("BCI2TOKEN_SUBSCRIBER_QUEUE".into(), "16".into())],
        ..Default::default()
    });
    let model_dir = TempDir::new("faults-followers");
    let model = relaxed_speller(&model_dir).display().to_string();
    let (live, id) = Follower::live_speller(&daemon, &model, &["--samples"]);
    let rss_before = rss_kib(daemon.child.id());
    let hurry = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stuck: Vec<_> = (0..8).map(|_| raw_follower(&daemon, &id, None, &hurry)).collect();
    let slow: Vec<_> = (0..2).map(|_| raw_follower(&daemon, &id, Some(Duration::from_secs(1)), &hurry)).collect();
    std::thread::sleep(Duration::from_secs(10));
    hurry.store(true, std::sync::atomic::Ordering::Release);
    let rss_after = rss_kib(daemon.child.id());
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let events = live.collect_until(Duration::from_secs(30), |e| e["type"] == "state" && e["state"] == "stopped");

    assert_every_block_and_window(&events, 30, 30);
    assert!(!events.iter().any(|e| e["type"] == "lost"), "the follower that keeps up was told it lost events");
    assert_kept_everything(&show(&daemon, &id));
    for s in slow {
        let events = s.join().unwrap();
        let lost: u64 = events.iter().filter(|e| e["type"] == "lost").map(|e| e["count"].as_u64().unwrap()).sum();
        assert!(lost > 0, "a follower reading one event a second kept up with 20+ a second");
        assert_eq!(events.last().unwrap()["state"], "stopped", "the slow follower still gets the end");
    }
    for s in stuck {
        s.join().unwrap();
    }
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("8 stuck and 2 slow followers: daemon RSS {rss_before} -> {rss_after} KiB");
    assert!(grown < 64 * 1024, "the daemon grew by {grown} KiB while followers did not read");
    assert!(daemon.child.id() > 0 && show(&daemon, &id)["state"] == "stopped");
}

/// Three apps on the bus that subscribe to a live decoding session's tokens and open its sample
/// stream, then hang without reading either: the session keeps every block, window and token
/// for a follower that keeps up, the daemon's memory stays bounded, and the bus still answers.
#[test]
fn stuck_bus_subscribers_cost_a_live_session_nothing() {
    let _serial = serial();
    use bci2token_tests::private_bus::PrivateBus;
    use bci2token_tests::system_users::{stage_python_client, system_daemon, world, ADMIN_GROUP, OPERATOR_GROUP};
    let Some(w) = world() else { return };
    stage_python_client(&w.alice);
    let models = TempDir::new("faults-bus-models");
    let model = models.path().join("speller-relaxed");
    std::fs::create_dir_all(&model).unwrap();
    let relaxed = TempDir::new("faults-bus-speller");
    let relaxed = relaxed_speller(&relaxed);
    std::fs::copy(relaxed.join("model.pt"), model.join("model.pt")).unwrap();
    let manifest = std::fs::read_to_string(relaxed.join("model.toml")).unwrap();
    std::fs::write(model.join("model.toml"), manifest.replace("name = \"speller-40\"", "name = \"speller-relaxed\""))
        .unwrap();
    let bus = PrivateBus::system_like(OPERATOR_GROUP, ADMIN_GROUP);
    let daemon = system_daemon(&format!("bus = \"{}\"\nmodel_path = [\"{}\"]\n", bus.address, models.path().display()));
    assert!(daemon.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", daemon.log());

    let info = w.alice.ctl_json(
        &daemon,
        &["session", "start", "--driver", "synthetic", "--set", LIVE_SCRIPT, "--model", "speller-relaxed"],
    );
    let id = info["id"].as_str().unwrap().to_string();
    let live = Follower::from_command(w.alice.ctl_command(&daemon, &["--json", "follow", &id, "--samples"]));
    let path = bci2token_api::dbus::session_path(&id);
    let stuck: Vec<std::process::Child> = (0..3)
        .map(|_| {
            let mut cmd = w.alice.setpriv(Path::new("/usr/bin/python3"));
            cmd.arg(w.alice.stage.join("bus_client.py"))
                .args([bus.address.as_str(), "stuck", &path])
                .env("PYTHONPATH", w.alice.stage.join("py"))
                .stdout(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
                .unwrap();
            assert!(line.contains("\"stuck\""), "the app did not subscribe: {line}");
            child
        })
        .collect();
    let rss_before = rss_kib(daemon.child.id());
    std::thread::sleep(Duration::from_secs(10));
    let rss_after = rss_kib(daemon.child.id());
    let version = Command::new("busctl")
        .args(["--address", &bus.address, "get-property", "org.bci2token.Daemon1", "/org/bci2token"])
        .args(["org.bci2token.Daemon1", "Version"])
        .output()
        .unwrap();
    assert!(
        version.status.success(),
        "the daemon stopped answering on the bus: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let stopped = w.alice.ctl_json(&daemon, &["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let events = live.collect_until(Duration::from_secs(30), |e| e["type"] == "state" && e["state"] == "stopped");
    assert_every_block_and_window(&events, 30, 30);
    assert_kept_everything(&w.alice.ctl_json(&daemon, &["session", "show", &id]));
    for mut child in stuck {
        let _ = child.kill();
        let _ = child.wait();
    }
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("3 stuck bus apps: daemon RSS {rss_before} -> {rss_after} KiB");
    assert!(grown < 64 * 1024, "the daemon grew by {grown} KiB while bus apps did not read");
}

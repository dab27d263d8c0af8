//! Nothing a plugin does takes the daemon down: plugins written for this test in C, against the
//! ABI of docs/driver-abi.md, that segfault in `read`, `abort()` in `open`, hang forever in `read`
//! and allocate without bound each fail only their own session, with a message naming the
//! plugin and the cause, while the daemon and a live session on a healthy driver go on, and the
//! next session works.

use std::time::{Duration, Instant};

use bci2token_tests::{bin_dir, compile_c_library, start_daemon, DaemonOptions, TempDir};

/// A driver named `NAME`: one channel at 100 Hz, a block of 10 frames every 100 ms, one device
/// `NAME-1` found by `probe`. `LOAD` runs when the library is loaded, `PROBE` in `probe`, `OPEN`
/// in `open`, `READ` in the 4th and every later `read`.
const PLUGIN: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
typedef struct { const uint8_t *ptr; size_t len; } AbiStr;
typedef struct { uint8_t *ptr; size_t len; size_t cap; } AbiBuf;
typedef struct { uint32_t major, minor, size; } AbiHeader;
typedef struct { float *data; size_t capacity; uint32_t kind, frames, flags; double t; AbiBuf event; } ReadOut;
typedef struct {
    AbiHeader header; AbiStr name; AbiStr version;
    int32_t (*probe)(AbiBuf *);
    int32_t (*open)(AbiStr, void **, AbiBuf *);
    int32_t (*describe)(void *, AbiBuf *);
    int32_t (*start)(void *);
    int32_t (*read)(void *, uint32_t, ReadOut *);
    int32_t (*stop)(void *);
    void (*close)(void *);
    int32_t (*last_error)(void *, AbiBuf *);
    void (*free_buf)(AbiBuf);
} VTable;
static AbiBuf text(const char *s) {
    size_t n = strlen(s);
    uint8_t *p = malloc(n);
    memcpy(p, s, n);
    AbiBuf b = { p, n, n };
    return b;
}
static int device;
static int reads;
__attribute__((constructor)) static void on_load(void) { LOAD; }
static int32_t probe(AbiBuf *out) {
    PROBE;
    *out = text("[{\"id\":\"NAME-1\",\"description\":\"NAME's device\"}]");
    return 0;
}
static int32_t open_(AbiStr config, void **handle, AbiBuf *err) {
    (void)config; (void)err;
    OPEN;
    *handle = &device;
    return 0;
}
static int32_t describe(void *h, AbiBuf *out) {
    (void)h;
    *out = text("{\"channels\":[{\"label\":\"C3\",\"unit\":\"uV\"}],\"sample_rate\":100.0,"
                "\"max_block_frames\":10,\"realtime\":true,\"description\":\"NAME\"}");
    return 0;
}
static int32_t start(void *h) { (void)h; return 0; }
static int32_t read_(void *h, uint32_t timeout_ms, ReadOut *out) {
    (void)h; (void)timeout_ms;
    if (++reads > 3) { READ; }
    struct timespec pause = { 0, 100000000L };
    nanosleep(&pause, 0);
    for (int i = 0; i < 10; i++) out->data[i] = (float)i;
    out->kind = 1; out->frames = 10; out->flags = 0; out->t = (reads - 1) * 0.1;
    return 0;
}
static int32_t stop(void *h) { (void)h; return 0; }
static void close_(void *h) { (void)h; }
static int32_t last_error(void *h, AbiBuf *out) { (void)h; *out = text("no error"); return 0; }
static void free_buf(AbiBuf b) { free(b.ptr); }
static const VTable table = {
    { 1, 2, sizeof(VTable) }, { (const uint8_t *)"NAME", sizeof("NAME") - 1 }, { (const uint8_t *)"1.0.0", 5 },
    probe, open_, describe, start, read_, stop, close_, last_error, free_buf,
};
const void *bci2token_driver_entry(void) { return &table; }
"#;

/// [`PLUGIN`] named `name`, with code at load, in `probe`, `open` and `read`.
fn source(name: &str, [load, probe, open, read]: [&str; 4]) -> String {
    PLUGIN
        .replace("NAME", name)
        .replace("LOAD", load)
        .replace("PROBE", probe)
        .replace("OPEN", open)
        .replace("READ", read)
}

fn plugin(dir: &TempDir, name: &str, open: &str, read: &str) {
    compile_c_library(&source(name, ["", "", open, read]), &dir.path().join(format!("lib{name}.so")));
}

/// The driver host processes whose parent is `daemon`.
fn hosts_of(daemon: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            if !alive(*pid) {
                return false;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1)?.parse().ok());
            let host = b"bci2token-driver-host";
            cmdline.windows(host.len()).any(|w| w == host) && parent == Some(daemon)
        })
        .collect()
}

/// Whether `pid` runs (a zombie is dead: it waits for whoever inherited it to reap it).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
    !stat.is_empty() && !matches!(state, "Z" | "X")
}

/// Waits until `session show ID` is in a final state; returns it.
fn ended(daemon: &bci2token_tests::Daemon, id: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let show = daemon.ctl_json(&["session", "show", id]);
        if matches!(show["state"].as_str(), Some("failed" | "stopped" | "finished")) || Instant::now() > deadline {
            return show;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_crashing_hanging_or_greedy_plugin_fails_only_its_own_session() {
    let dir = TempDir::new("fault-plugins");
    plugin(&dir, "segv", "", "*(volatile int *)0 = 1");
    plugin(&dir, "aborts", "abort()", "");
    plugin(&dir, "hangs", "", "for (;;) pause()");
    plugin(
        &dir,
        "greedy",
        "",
        "for (;;) { char *p = malloc(16 << 20); if (!p) { write(2, \"greedy: out of memory\\n\", 22); abort(); } memset(p, 1, 16 << 20); }",
    );
    let daemon = start_daemon(DaemonOptions {
        driver_path: Some(format!("{}:{}", dir.path().display(), bin_dir().display())),
        env: vec![
            ("BCI2TOKEN_DRIVER_MEMORY_LIMIT".into(), "128".into()),
            // A hang is called after 3 s beyond the read's own time-out (90 s by default).
            ("BCI2TOKEN_DRIVER_HANG_TIMEOUT".into(), "3".into()),
        ],
        ..Default::default()
    });
    // A live session on a healthy driver, running through all of it.
    let live = daemon.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();

    // Its driver host holds nothing of the daemon's: its socket on 3, stdio, nothing else open
    // that the daemon had (the control socket, the store, D-Bus, other sessions' files).
    let daemon_pid = daemon.child.id();
    let host = hosts_of(daemon_pid).into_iter().next().expect("a driver host process of the daemon");
    // Named for ps, top and the journal (not after the descriptor it was executed through).
    let comm = std::fs::read_to_string(format!("/proc/{host}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "bci2token-host", "the host's process name");
    let daemon_fds: Vec<String> = std::fs::read_dir(format!("/proc/{daemon_pid}/fd"))
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).map(|p| p.display().to_string()).collect())
        .unwrap_or_default();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{host}/fd")) {
        let mut open: Vec<(u32, String)> = fds
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name().to_str()?.parse().ok()?, std::fs::read_link(e.path()).ok()?.display().to_string()))
            })
            .collect();
        open.sort();
        // Its own: stdio, its end of the socket pair (the daemon holds the other), the sample
        // buffer the two share.
        let shared = |t: &str| t.starts_with("/memfd:bci2token-samples");
        for (fd, target) in &open {
            let inherited = *fd > 2 && daemon_fds.contains(target) && !shared(target);
            assert!(!inherited, "the host {host} holds the daemon's {target} as fd {fd}: {open:?}");
        }
        let sockets = open.iter().filter(|(fd, t)| *fd > 2 && t.starts_with("socket:")).count();
        assert_eq!(sockets, 1, "{open:?}");
        assert_eq!(open.iter().filter(|(_, t)| shared(t)).count(), 1, "{open:?}");
        assert_eq!(open.len(), 5, "stdio, the socket, the sample buffer: {open:?}");
    } else {
        eprintln!("cannot list the host's descriptors (not root): the check of what it inherited is skipped");
    }

    // abort() in open: the start fails, naming the plugin and the signal.
    let out = daemon.ctl(&["session", "start", "--driver", "aborts"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libaborts.so") && err.contains("SIGABRT") && err.contains("`open`"), "{err}");

    // Faults in read: the host is restarted (driver_restarts, 3 by default, after 1, 2 and 4 s),
    // each time delivering the 3 blocks the plugin reads well; then the session fails with the
    // cause, and the message names the plugin's file. All three at once.
    let cases = [("segv", "SIGSEGV"), ("hangs", "hangs"), ("greedy", "greedy: out of memory")];
    let ids: Vec<String> = cases
        .iter()
        .map(|(name, _)| daemon.ctl_json(&["session", "start", "--driver", name])["id"].as_str().unwrap().to_string())
        .collect();
    for ((name, cause), id) in cases.iter().zip(&ids) {
        let show = ended(&daemon, id, Duration::from_secs(60));
        assert_eq!(show["state"], "failed", "{name}: {show}");
        let message = show["message"].as_str().unwrap();
        assert!(message.contains(&format!("lib{name}.so")) && message.contains(cause), "{name}: {message}");
        assert!(message.contains("`read`") && message.contains("restarted 3 times in a row"), "{name}: {message}");
        // Four hosts, three good blocks each; every restart an outage.
        assert_eq!(show["blocks"], 12, "{name}: {show}");
        assert!(show["gaps"].as_u64().unwrap() >= 3, "{name}: {show}");
        eprintln!("{name}: {message}");
        if *name == "greedy" {
            // Its own last words prove the allocation failed at the limit.
            assert!(message.contains("SIGABRT") && message.contains("greedy: out of memory"), "{message}");
        }
    }

    // The daemon and the live session never noticed.
    let before = daemon.ctl_json(&["session", "show", &live]);
    std::thread::sleep(Duration::from_millis(500));
    let after = daemon.ctl_json(&["session", "show", &live]);
    assert_eq!(after["state"], "running", "{after}");
    assert!(after["blocks"].as_u64() > before["blocks"].as_u64(), "the live session goes on: {before} → {after}");
    assert_eq!(daemon.ctl_json(&["status"])["sessions_active"], 1);

    // The next session on a healthy driver works.
    let next = daemon.ctl_json(&[
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
    ]);
    let show = ended(&daemon, next["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(show["state"], "finished", "{show}");
    assert!(show["blocks"].as_u64().unwrap() > 0, "{show}");
    daemon.ctl_json(&["session", "stop", &live]);

    // A session stopped while its plugin hangs (with the default 90 s before a hang is called)
    // stops at once: the wait for the host gives up and the host is killed.
    let mut patient = start_daemon(DaemonOptions {
        driver_path: Some(format!("{}:{}", dir.path().display(), bin_dir().display())),
        ..Default::default()
    });
    let id = patient.ctl_json(&["session", "start", "--driver", "hangs"])["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500)); // 3 blocks, then the hanging read
    let asked = Instant::now();
    patient.ctl_json(&["session", "stop", &id]);
    let show = ended(&patient, &id, Duration::from_secs(30));
    assert_eq!(show["state"], "stopped", "{show}");
    assert!(asked.elapsed() < Duration::from_secs(5), "stopping took {:?}", asked.elapsed());

    // A daemon killed outright (no systemd cgroup to clean up after it, as for a `--user`
    // daemon in a terminal) leaves no host behind, even one whose plugin hangs in `read`.
    patient.ctl_json(&["session", "start", "--driver", "hangs"]);
    std::thread::sleep(Duration::from_millis(1500));
    let hosts = hosts_of(patient.child.id());
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    patient.child.kill().unwrap();
    patient.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(hosts[0]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(hosts[0]), "the host {} of a killed daemon lives on", hosts[0]);
}

/// A plugin that tries, in `open`, what a malicious one would: read the master key and list the
/// data directory, signal, renice and read the limits of the daemon, signal every process, reach
/// the control socket, write outside /dev; and, as a control, what every driver may do. It
/// reports each outcome (`name=ok` or the errno) in its error.
const NOSY: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
int prlimit(pid_t, int, const struct rlimit *, struct rlimit *);
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static char report[2048];
static void note(const char *name, int ok) {
    char one[128];
    snprintf(one, sizeof one, "%s=%s ", name, ok ? "ok" : strerror(errno));
    strncat(report, one, sizeof report - strlen(report) - 1);
}
/* The string value of "key" in the JSON config (no escapes in what the test sets). */
static void value(const char *json, size_t len, const char *key, char *out, size_t cap) {
    char pat[64], buf[4096];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, json, n); buf[n] = 0;
    char *p = strstr(buf, pat);
    out[0] = 0;
    if (!p) return;
    p += strlen(pat);
    if (*p == '"') p++;
    size_t i = 0;
    while (p[i] && p[i] != '"' && p[i] != ',' && p[i] != '}' && i < cap - 1) { out[i] = p[i]; i++; }
    out[i] = 0;
}
"#;

const NOSY_OPEN: &str = r#"
    char secret[1024], socket_path[1024], pid_text[32];
    value((const char *)config.ptr, config.len, "secret", secret, sizeof secret);
    value((const char *)config.ptr, config.len, "socket", socket_path, sizeof socket_path);
    value((const char *)config.ptr, config.len, "daemon", pid_text, sizeof pid_text);
    pid_t daemon = (pid_t)atoi(pid_text);
    report[0] = 0;
    note("read_key", open(secret, O_RDONLY) >= 0);
    char dir[1024]; strcpy(dir, secret); *strrchr(dir, '/') = 0;
    note("list_data", opendir(dir) != NULL);
    note("signal_daemon", kill(daemon, 0) == 0);
    note("signal_all", kill(-1, 0) == 0);
    note("renice_daemon", setpriority(PRIO_PROCESS, daemon, 0) == 0);
    /* A user without processes: nothing is changed where the call is allowed (ESRCH there). */
    note("renice_user", setpriority(PRIO_USER, 65533, 19) == 0);
    struct rlimit lim;
    note("limits_daemon", prlimit(daemon, RLIMIT_NOFILE, NULL, &lim) == 0);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
    note("control_socket", s >= 0 && connect(s, (struct sockaddr *)&addr, sizeof addr) == 0);
    note("write_tmp", open("/tmp/bci2token-nosy-plugin", O_WRONLY | O_CREAT, 0600) >= 0);
    /* Typing into a terminal: refused before the descriptor is even looked at. */
    char c = ' ';
    note("type_into_tty", ioctl(0, TIOCSTI, &c) == 0);
    /* io_uring would carry a socket and a connect past the filter. */
    note("io_uring", syscall(425 /* io_uring_setup */, 8, calloc(1, 120)) >= 0);
    /* SIGIO to the daemon through a descriptor's owner. */
    int p[2];
    note("sigio_daemon", pipe(p) == 0 && fcntl(p[0], F_SETOWN, daemon) == 0);
    /* The x32 ABI's numbers (getpid with bit 30): not one of the filter's. */
    note("x32_call", syscall(0x40000000 | 39) >= 0);
    /* A Unix socket pair's datagram end could send to a socket's path. */
    int sp[2];
    note("unix_pair", socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) == 0);
    note("unix_raw_pair", socketpair(AF_UNIX, SOCK_RAW | SOCK_CLOEXEC, 0, sp) == 0);
    note("unix_stream_pair", socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    /* clone3 says "not implemented" (glibc then uses clone, whose flags the filter sees). */
    errno = 0;
    long c3 = syscall(435 /* clone3 */, NULL, 0);
    char c3note[64];
    snprintf(c3note, sizeof c3note, "clone3=%s ", c3 < 0 && errno == ENOSYS ? "ENOSYS" : "other");
    strncat(report, c3note, sizeof report - strlen(report) - 1);
    /* A child of the daemon's (CLONE_PARENT) would outlive the host. */
    long cp = syscall(SYS_clone, 0x00008000 /* CLONE_PARENT */ | SIGCHLD, 0, 0, 0, 0);
    if (cp == 0) _exit(0);
    note("clone_parent", cp > 0);
    /* Leaving the host's process group: its children die with it. */
    note("new_session", setsid() >= 0);
    pid_t child = fork();
    /* In the daemon (the control run) the child is a copy of the daemon: it ends in 20 s. */
    if (child == 0) { alarm(20); for (;;) pause(); }
    char forked[32];
    snprintf(forked, sizeof forked, "forked=%d ", (int)child);
    strncat(report, forked, sizeof report - strlen(report) - 1);
    note("read_etc", open("/etc/passwd", O_RDONLY) >= 0);
    note("open_dev", open("/dev/null", O_RDWR) >= 0);
    note("signal_self", kill(getpid(), 0) == 0);
    note("renice_self", setpriority(PRIO_PROCESS, 0, 1) == 0);
    *err = text(report);
    return 1;
"#;

#[test]
fn a_malicious_plugin_in_a_driver_host_reaches_neither_the_key_nor_the_daemon() {
    let dir = TempDir::new("nosy-plugin");
    let source = source("nosy", ["", "", "OPEN", ""]);
    let source = source.replace("#include <unistd.h>", &format!("#include <unistd.h>\n{NOSY}"));
    let source = source.replace("    OPEN;\n", NOSY_OPEN);
    compile_c_library(&source, &dir.path().join("libnosy.so"));
    let probe = |isolation: &str| -> String {
        let daemon = start_daemon(DaemonOptions {
            driver_path: Some(dir.path().display().to_string()),
            env: vec![("BCI2TOKEN_DRIVER_ISOLATION".into(), isolation.into())],
            ..Default::default()
        });
        let key = daemon.dir.path().join("data/master.key");
        assert!(key.exists(), "the daemon's key is at {}", key.display());
        let out = daemon.ctl(&[
            "session",
            "start",
            "--driver",
            "nosy",
            "--set",
            &format!("secret={}", key.display()),
            "--set",
            &format!("socket={}", daemon.socket.display()),
            "--set",
            &format!("daemon={}", daemon.child.id()),
        ]);
        assert!(!out.status.success());
        // The daemon is up and answers.
        assert_eq!(daemon.ctl_json(&["status"])["sessions_active"], 0);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        eprintln!("{isolation}: {err}");
        err
    };
    let confined = probe("process");
    for denied in [
        "read_key=",
        "list_data=",
        "signal_daemon=",
        "signal_all=",
        "renice_daemon=",
        "renice_user=",
        "limits_daemon=",
        "control_socket=",
        "write_tmp=",
        "type_into_tty=",
        "io_uring=",
        "sigio_daemon=",
        "x32_call=",
        "new_session=",
        "unix_pair=",
        "unix_raw_pair=",
        "clone_parent=",
    ] {
        let refused = ["Permission denied", "Operation not permitted"].map(|e| format!("{denied}{e}"));
        assert!(refused.iter().any(|r| confined.contains(r.as_str())), "{denied}: {confined}");
    }
    let allowed =
        ["read_etc=ok", "open_dev=ok", "signal_self=ok", "renice_self=ok", "unix_stream_pair=ok", "clone3=ENOSYS"];
    for allowed in allowed {
        assert!(confined.contains(allowed), "{allowed}: {confined}");
    }
    // The child the plugin forked went with its host's process group.
    let child: u32 = confined.split("forked=").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap();
    assert!(child > 0, "{confined}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(child), "the plugin's child {child} outlived its host");
    // The same plugin inside the daemon reaches all of it: the probes above can tell.
    let inside = probe("in-process");
    for reached in ["read_key=ok", "list_data=ok", "signal_daemon=ok", "control_socket=ok", "sigio_daemon=ok"] {
        assert!(inside.contains(reached), "{reached}: {inside}");
    }
    // (In the daemon, the plugin's child is the daemon's: it goes when the test's daemon does.)
    let _ = std::fs::remove_file("/tmp/bci2token-nosy-plugin");
}

/// Which of `files` the process `pid` has mapped.
fn mapped(pid: u32, files: &[std::path::PathBuf]) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    files.iter().map(|f| f.display().to_string()).filter(|f| maps.contains(f.as_str())).collect()
}

/// With process isolation the daemon never loads a plugin: hosts describe them at start and at a
/// reload, and probe for devices. A plugin that crashes or hangs as it is loaded is listed as
/// failed with the cause (and delays the start by its time-out at most); one that crashes in
/// `probe` is an error in `devices`; the daemon, the other drivers and their sessions go on.
#[test]
fn plugins_are_described_and_probed_in_driver_hosts_never_loaded_by_the_daemon() {
    let dir = TempDir::new("host-scan");
    let lib = |name: &str| dir.path().join(format!("lib{name}.so"));
    compile_c_library(&source("calm", ["", "", "", ""]), &lib("calm"));
    compile_c_library(&source("crashload", ["*(volatile int *)0 = 1", "", "", ""]), &lib("crashload"));
    compile_c_library(&source("hangload", ["for (;;) pause()", "", "", ""]), &lib("hangload"));
    compile_c_library(&source("segvprobe", ["", "*(volatile int *)0 = 1", "", ""]), &lib("segvprobe"));
    // Starts a child when loaded, and says which.
    let fork = r#"pid_t c = fork(); if (c == 0) { for (;;) pause(); }
        char m[64]; int n = snprintf(m, sizeof m, "forked child=%d\n", (int)c); write(2, m, n)"#;
    compile_c_library(&source("forks", [fork, "", "", ""]), &lib("forks"));
    let started = Instant::now();
    let daemon = start_daemon(DaemonOptions {
        driver_path: Some(format!("{}:{}", dir.path().display(), bin_dir().display())),
        ..Default::default()
    });
    eprintln!("READY=1 after {:.1} s (a plugin that hangs when loaded costs 10 s)", started.elapsed().as_secs_f64());

    let list = daemon.ctl_json(&["drivers"]);
    let names: Vec<&str> = list["drivers"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    for name in ["calm", "segvprobe", "synthetic", "replay"] {
        assert!(names.contains(&name), "{name}: {list}");
    }
    let calm = list["drivers"].as_array().unwrap().iter().find(|d| d["name"] == "calm").unwrap();
    assert_eq!((calm["version"].as_str(), calm["abi"].as_str()), (Some("1.0.0"), Some("1.2")), "{calm}");
    let error_of = |file: &str| -> String {
        let failed = list["failed"].as_array().unwrap();
        let f = failed.iter().find(|f| f["file"].as_str().unwrap().ends_with(file));
        f.unwrap_or_else(|| panic!("{file} not reported: {list}"))["error"].as_str().unwrap().to_string()
    };
    let crash = error_of("libcrashload.so");
    assert!(
        crash.contains("SIGSEGV")
            && crash.contains("`describe`")
            && crash.contains(&lib("crashload").display().to_string()),
        "{crash}"
    );
    let hang = error_of("libhangload.so");
    assert!(hang.contains("hangs") && hang.contains("`describe` was not answered within"), "{hang}");

    // The child the plugin started when it was loaded is gone, though no session ever ran it.
    // (Without a daemon to kill the group, a_host_ends_with_what_its_plugin_started_… checks it.)
    let log = daemon.log();
    let child: u32 = log
        .split("forked child=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or_else(|| panic!("the plugin's child is not in the log: {log}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(child), "the child {child} of a plugin loaded to describe it lives on");

    // `devices`: every driver probed in a host; the one that crashes is an error, the rest list.
    let devices = daemon.ctl_json(&["devices"]);
    let ids: Vec<&str> = devices["devices"].as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
    assert!(ids.contains(&"calm-1"), "{devices}");
    let errors = devices["errors"].as_array().unwrap();
    let segv = errors.iter().find(|e| e["file"].as_str().unwrap().ends_with("libsegvprobe.so"));
    let segv = segv.unwrap_or_else(|| panic!("no error for segvprobe: {devices}"))["error"].as_str().unwrap();
    assert!(segv.contains("SIGSEGV"), "{segv}");
    let only = daemon.ctl_json(&["devices", "--driver", "calm"]);
    assert_eq!(only["devices"].as_array().unwrap().len(), 1, "{only}");

    // A session on a plugin found this way runs (in its host).
    let id = daemon.ctl_json(&["session", "start", "--driver", "calm"])["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let show = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(show["state"], "running", "{show}");
    daemon.ctl_json(&["session", "stop", &id]);

    // The file of a listed driver replaced by another driver: neither a session nor a probe runs
    // what was not listed.
    let other = dir.path().join("other.c.so");
    compile_c_library(&source("other", ["", "", r#"write(2, "other: open ran\n", 16)"#, ""]), &other);
    std::fs::rename(&other, lib("calm")).unwrap();
    let out = daemon.ctl(&["session", "start", "--driver", "calm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused by the host before the plugin's `open` ran (which could have reset a board with
    // this session's settings); what the host wrote before it ended is in the log by now.
    assert!(!out.status.success() && err.contains("now holds driver `other`") && err.contains("reload"), "{err}");
    assert!(err.contains("its open was not run"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!daemon.log().contains("other: open ran"), "{}", daemon.log());
    std::thread::sleep(Duration::from_secs(2)); // past the probe answer shared with later requests
    let probed = daemon.ctl_json(&["devices", "--driver", "calm"]);
    assert!(probed["errors"][0]["error"].as_str().unwrap_or("").contains("now holds driver `other`"), "{probed}");

    // A plugin added later is found at a reload, also by a host. (The one that hangs is taken
    // away first: each reload would describe it again.)
    std::fs::remove_file(lib("hangload")).unwrap();
    compile_c_library(&source("late", ["", "", "", ""]), &lib("late"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.child.id() as i32), nix::sys::signal::SIGHUP).unwrap();
    assert!(daemon.wait_log("loaded new drivers: late", Duration::from_secs(20)), "{}", daemon.log());

    // None of it was ever mapped into the daemon: not the test's plugins, not the shipped ones.
    let mut files: Vec<std::path::PathBuf> =
        ["calm", "crashload", "segvprobe", "forks", "late"].iter().map(|n| lib(n)).collect();
    let shipped = std::fs::read_dir(bin_dir()).unwrap().filter_map(|e| Some(e.ok()?.path()));
    files.extend(shipped.filter(|p| p.extension().is_some_and(|e| e == "so")));
    assert!(files.len() >= 8, "{files:?}");
    assert_eq!(mapped(daemon.child.id(), &files), Vec::<String>::new(), "plugins mapped into the daemon");
    assert_eq!(daemon.ctl_json(&["status"])["sessions_active"], 0);

    // In-process isolation loads them into the daemon (what the check above tells apart).
    let plain = TempDir::new("host-scan-in-process");
    compile_c_library(&source("calm", ["", "", "", ""]), &plain.path().join("libcalm.so"));
    let inside = start_daemon(DaemonOptions {
        driver_path: Some(format!("{}:{}", plain.path().display(), bin_dir().display())),
        env: vec![("BCI2TOKEN_DRIVER_ISOLATION".into(), "in-process".into())],
        ..Default::default()
    });
    let synthetic = bin_dir().join("libbci2token_driver_synthetic.so");
    let here = mapped(inside.child.id(), &[plain.path().join("libcalm.so"), synthetic]);
    assert_eq!(here.len(), 2, "in-process: {here:?}");
}

/// A host that has answered ends with everything its plugin started, on its own: here no daemon
/// is left to kill its process group (the host is started as the daemon starts it, by the test,
/// which then neither closes its socket nor kills anything).
#[test]
fn a_host_ends_with_what_its_plugin_started_with_no_daemon_to_clean_up() {
    use std::io::{BufRead, Read as _};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    use bci2token_driver_host::{parse_frame, write_frame, HostReply, HostRequest, Load};

    let dir = TempDir::new("host-alone");
    let fork = r#"pid_t c = fork(); if (c == 0) { for (;;) pause(); }
        char m[64]; int n = snprintf(m, sizeof m, "forked child=%d\n", (int)c); write(2, m, n)"#;
    let plugin = dir.path().join("libforks.so");
    compile_c_library(&source("forks", [fork, "", "", ""]), &plugin);
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(bin_dir().join("bci2token-driver-host"));
    cmd.arg("--socket").arg(fd.to_string()).stderr(std::process::Stdio::piped());
    // SAFETY: fcntl and setsid only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut host = cmd.spawn().unwrap();
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let load =
        Load { plugin: plugin.clone(), memory_mib: 1024, readable: vec![dir.path().to_path_buf()], preload: vec![] };
    write_frame(&mut ours, &HostRequest::Describe { load, probe: false }).unwrap();
    let mut len = [0u8; 4];
    ours.read_exact(&mut len).unwrap();
    let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
    ours.read_exact(&mut frame).unwrap();
    let reply: HostReply = parse_frame(&frame).unwrap();
    assert!(matches!(&reply, HostReply::Described { name, .. } if name == "forks"), "{reply:?}");
    // Read on a thread of its own: the paused child holds the pipe open.
    let stderr = std::io::BufReader::new(host.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = stderr.lines().map_while(Result::ok).find(|l| l.contains("forked child="));
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).ok().flatten().expect("the child's pid");
    let child: u32 = line.rsplit('=').next().unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(child), "the plugin's child {child} outlived its host");
    // The host went too (it killed its own group), though its socket is still open here.
    let status = host.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status:?}");
    drop(ours);
}

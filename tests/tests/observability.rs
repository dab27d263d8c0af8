//! What the daemon tells about how it is doing, end to end with the real daemon, ctl and plugins:
//! live signal quality on a real recording, the decoder's circuit breaker, `health`'s verdict and
//! exit status, and the metrics (checked by promtool and scraped by a real Prometheus).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bci2token_tests::{
    data_dir, reference_python, start_daemon, workspace_root, write_edf, DaemonOptions, Follower, TempDir, WRITE_EDF,
};
use serde_json::Value;

/// An EDF of the `throws` model's 8 channels at its 250 Hz: noise of 10 µV, and O1 a constant
/// +50 µV before `flip_at` seconds and −50 µV after.
fn write_o1_edf(dst: &Path, seconds: f64, flip_at: f64) {
    const SCRIPT: &str = r#"
dst, seconds, flip = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
labels = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"]
fs = 250.0
n = int(seconds * fs)
rng = np.random.default_rng(7)
rows = [rng.normal(0.0, 10.0, n) for _ in labels]
rows[0] = np.where(np.arange(n) / fs < flip, 50.0, -50.0)
write(dst, labels, fs, rows)
"#;
    let py = reference_python(&["pyedflib", "numpy"]);
    let script = format!("{WRITE_EDF}{SCRIPT}");
    let o = Command::new(py)
        .args(["-c", &script])
        .arg(dst)
        .arg(seconds.to_string())
        .arg(flip_at.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "writing {}: {}", dst.display(), String::from_utf8_lossy(&o.stderr));
}

fn ssvep_recording() -> PathBuf {
    data_dir().join("ssvep/subject01_2012.07.06-19.02.16.edf")
}

fn flagged(ev: &Value) -> Vec<(String, Vec<String>)> {
    ev["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["flags"].as_array().unwrap().is_empty())
        .map(|c| {
            let flags = c["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
            (c["label"].as_str().unwrap().to_string(), flags)
        })
        .collect()
}

/// A real SSVEP recording (8 occipital channels at 256 Hz) with O2 zeroed and PO3 clipped: the
/// first quality of the replay, at 1 s of stream time, flags exactly those two (flat, railed),
/// and no healthy channel is flagged at any time of the 60 s; `session show` has the latest.
#[test]
fn a_zeroed_and_a_clipped_channel_are_flagged_within_two_seconds_and_only_they() {
    let dir = TempDir::new("quality");
    let edf = dir.path().join("edited.edf");
    let labels = write_edf(&ssvep_recording(), &edf, 60.0, &["O2"], &["PO3"]);
    assert!(labels.contains(&"O2".to_string()) && labels.contains(&"PO3".to_string()), "{labels:?}");
    let daemon = start_daemon(DaemonOptions::default());
    let path = format!("path={}", edf.display());
    let f = Follower::spawn(
        &daemon,
        &["--json", "session", "start", "--driver", "replay", "--set", &path, "--set", "speed=0", "--follow"],
    );
    let events = f.collect_until(Duration::from_secs(60), |ev| ev["type"] == "state" && ev["state"] == "finished");
    let quality: Vec<&Value> = events.iter().filter(|e| e["type"] == "quality").collect();
    assert!(!quality.is_empty(), "no quality event: {:?}", events.iter().map(|e| &e["type"]).collect::<Vec<_>>());
    let first = quality[0];
    assert!(first["t"].as_f64().unwrap() <= 2.0, "first quality at t={} s", first["t"]);
    let want = vec![("O2".to_string(), vec!["flat".to_string()]), ("PO3".to_string(), vec!["railed".to_string()])];
    assert_eq!(flagged(first), want, "{first}");
    assert!((first["score"].as_f64().unwrap() - 6.0 / 8.0).abs() < 1e-9, "{first}");
    for q in &quality {
        let bad = flagged(q);
        assert!(
            bad.iter().all(|(l, _)| l == "O2" || l == "PO3"),
            "a healthy channel was flagged at t={}: {bad:?}",
            q["t"]
        );
        assert_eq!(bad.len(), 2, "the edited channels stay flagged at t={}: {bad:?}", q["t"]);
    }
    // Sent on change and every quality_interval (5 s): about 12 over 60 s, not every hop (240).
    assert!(quality.len() >= 11 && quality.len() <= 14, "{} quality events", quality.len());
    let id = first["session"].as_str().unwrap();
    let show = daemon.ctl_json(&["session", "show", id]);
    assert_eq!(flagged(&show["quality"]), want, "{show}");
    let human = String::from_utf8(daemon.ctl(&["session", "show", id]).stdout).unwrap();
    assert!(human.contains("75% (6/8 channels good"), "{human}");
    let row =
        |label: &str| human.lines().find(|l| l.split_whitespace().nth(1) == Some(label)).unwrap_or("").to_string();
    assert!(row("O2").ends_with("flat") && row("PO3").ends_with("railed") && row("Oz").ends_with("ok"), "{human}");
}

/// The `throws` fixture model refuses a window whose last O1 sample is positive. With O1 at +50 µV
/// for the first 4 s and −50 µV after, the model fails for its first windows and then recovers:
/// the breaker opens after `breaker_failures` (3) failures, tries again after the back-off, opens
/// again for twice as long while O1 is still positive, and closes once the model answers; tokens
/// come again. `health` is failing (exit 11) while it is open.
#[test]
fn a_failing_model_opens_the_breaker_which_closes_when_the_model_recovers() {
    let dir = TempDir::new("breaker");
    let edf = dir.path().join("o1.edf");
    write_o1_edf(&edf, 10.0, 4.0);
    let model = workspace_root().join("tests/fixtures/models/throws");
    let daemon = start_daemon(DaemonOptions {
        config: Some("breaker_failures = 3\nbreaker_backoff = 0.6\n".into()),
        ..DaemonOptions::default()
    });
    let path = format!("path={}", edf.display());
    let model_arg = model.display().to_string();
    let f = Follower::spawn(
        &daemon,
        &["--json", "session", "start", "--driver", "replay", "--set", &path, "--model", &model_arg, "--follow"],
    );
    let mut health_while_open = None;
    let events = f.collect_until(Duration::from_secs(30), |ev| {
        if ev["type"] == "breaker" && ev["state"] == "open" && health_while_open.is_none() {
            let o = daemon.ctl(&["--json", "health"]);
            health_while_open = Some((o.status.code(), String::from_utf8_lossy(&o.stdout).to_string()));
        }
        ev["type"] == "state" && ev["state"] == "finished"
    });
    let breaker: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["type"] == "breaker")
        .map(|e| (e["state"].as_str().unwrap(), e["failures"].as_u64().unwrap()))
        .collect();
    let states: Vec<&str> = breaker.iter().map(|b| b.0).collect();
    assert!(states.len() >= 5, "{breaker:?}");
    assert_eq!(&states[..2], ["open", "half_open"], "{breaker:?}");
    assert_eq!(breaker[0].1, 3, "opens after breaker_failures failures: {breaker:?}");
    assert_eq!(*states.last().unwrap(), "closed", "{breaker:?}");
    // In order: open, then half_open and open again until a try is answered, then closed.
    for pair in states.windows(2) {
        let ok = matches!(pair, ["open", "half_open"] | ["half_open", "open"] | ["half_open", "closed"]);
        assert!(ok, "transition {pair:?} in {breaker:?}");
    }
    assert!(states.iter().filter(|s| **s == "open").count() >= 2, "it fails again half-open: {breaker:?}");
    let retries: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "breaker" && e["state"] == "open")
        .map(|e| e["retry_in"].as_f64().unwrap())
        .collect();
    assert!((retries[0] - 0.6).abs() < 1e-9 && (retries[1] - 1.2).abs() < 1e-9, "back-off doubles: {retries:?}");
    // Every failure until it closed was told (the count the breaker gives when it closes), and
    // far fewer windows failed than the 35 that end before O1 turns negative: while open, none
    // went to the model (beyond those already queued when it opened: 16 at most).
    let errors_before_close = events
        .iter()
        .take_while(|e| !(e["type"] == "breaker" && e["state"] == "closed"))
        .filter(|e| e["type"] == "decoder_error")
        .count() as u64;
    assert_eq!(errors_before_close, breaker.last().unwrap().1, "{breaker:?}");
    let opens = states.iter().filter(|s| **s == "open").count() as u64;
    assert!(errors_before_close <= 3 + opens + 16, "{errors_before_close} windows failed: {breaker:?}");
    let closed_at = events.iter().position(|e| e["type"] == "breaker" && e["state"] == "closed").unwrap();
    assert!(events[closed_at..].iter().any(|e| e["type"] == "token"), "tokens come again after it closed");
    let (code, report) = health_while_open.unwrap();
    assert_eq!(code, Some(11), "health while the breaker is open: {report}");
    assert!(report.contains("breaker"), "{report}");
}

/// `health` exits 0 for an idle daemon and while a clean synthetic session runs (its report has
/// the session, connected, at its rate), and 11 (failing) while an OpenBCI board's stream has
/// stalled and the driver reconnects it; the human form names what is wrong.
#[test]
fn health_is_ok_for_a_clean_session_and_failing_while_the_device_is_lost() {
    use bci2token_tests::cyton_emulator::{Emulator, EmulatorConfig};
    let dir = TempDir::new("health");
    let daemon = start_daemon(DaemonOptions::default());
    let health = |args: &[&str]| {
        let o = daemon.ctl(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, text, _) = health(&["health"]);
    assert_eq!(code, Some(0), "idle daemon: {text}");

    let started = daemon.ctl_json(&["session", "start", "--driver", "synthetic"]);
    let clean = started["id"].as_str().unwrap().to_string();
    let f = Follower::start(&daemon, &clean);
    f.collect_until(Duration::from_secs(10), |ev| ev["type"] == "quality");
    // The measured rate needs a second of marks.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, text, _) = health(&["--json", "health"]);
    assert_eq!(code, Some(0), "a clean session: {text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["verdict"], "ok");
    let session = &report["sessions"][0];
    assert_eq!(session["id"], clean.as_str());
    assert_eq!(session["connected"], true);
    let rate = session["measured_rate"].as_f64().unwrap();
    let nominal = session["sample_rate"].as_f64().unwrap();
    assert!((rate - nominal).abs() < 0.1 * nominal, "measured {rate} Hz, nominal {nominal} Hz");
    assert_eq!(session["quality"]["score"], 1.0, "{session}");
    daemon.ctl_json(&["session", "stop", &clean]);
    drop(f);

    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    let port = format!("port={}", emulator.path().display());
    let started = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "openbci",
        "--set",
        &port,
        "--set",
        "stall_timeout=0.5",
        "--set",
        "reply_timeout=0.3",
    ]);
    let id = started["id"].as_str().unwrap().to_string();
    let f = Follower::start(&daemon, &id);
    f.collect_until(Duration::from_secs(10), |ev| ev["type"] == "quality");
    emulator.stall(Duration::from_secs(3));
    f.collect_until(Duration::from_secs(5), |ev| ev["state"] == "reconnecting");
    let (code, text, stderr) = health(&["health"]);
    assert_eq!(code, Some(11), "{text}");
    assert!(text.contains("FAILING") && text.contains("device disconnected"), "{text}");
    assert!(stderr.contains("failing"), "{stderr}");
    let (_, json, _) = health(&["--json", "health"]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["sessions"][0]["connected"], false, "{report}");
    daemon.ctl_json(&["session", "stop", &id]);
}

/// The metrics of a decoding synthetic session: `promtool check metrics` finds nothing to say about
/// `bci2tokenctl metrics`, and a real Prometheus scraping the daemon's `/metrics` listener answers
/// PromQL queries with what the session did: its tokens (as `session show` counts them), the
/// decode latency's quantiles (between the fastest and slowest token latency the session reported)
/// and its channels' quality.
#[test]
fn prometheus_scrapes_what_a_decoding_session_did() {
    let promtool = which("promtool");
    let prometheus = which("prometheus");
    let port = free_port();
    let daemon = start_daemon(DaemonOptions {
        config: Some(format!("metrics_listen = \"127.0.0.1:{port}\"\n")),
        ..DaemonOptions::default()
    });
    let model = workspace_root().join("models/speller-40").display().to_string();
    let (live, id) = Follower::live_speller(&daemon, &model, &[]);
    // Prometheus, scraping every second.
    let dir = TempDir::new("prometheus");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: bci2token\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let mut server = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(&mut server);
    // 20 s of decoding, then the session stops; its last scrape must see every token.
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Some(ev) = live.next(Duration::from_millis(200)) {
            if ev["type"] == "token" {
                latencies.push(ev["latency_us"].as_f64().unwrap() / 1e6);
            }
        }
    }
    let text = String::from_utf8(daemon.ctl(&["metrics"]).stdout).unwrap();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");
    // Prometheus has the session's windows as the daemon counts them (between what it had when
    // the wait began and what it has now).
    let tokens = daemon.ctl_json(&["session", "show", &id])["decoder"]["windows_decoded"].as_u64().unwrap();
    assert!(tokens > 20, "{tokens} windows decoded");
    let query = |q: &str| -> Vec<Value> {
        let out = Command::new(&promtool)
            .args(["query", "instant", "-o", "json", &format!("http://127.0.0.1:{web}"), q])
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool query {q}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v.as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
    };
    let value = |v: &Value| v["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    // Prometheus has scraped the session's series.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sel = format!("bci2token_session_windows_decoded_total{{session=\"{id}\"}}");
    loop {
        let shown = daemon.ctl_json(&["session", "show", &id]);
        let decoded = shown["decoder"]["windows_decoded"].as_u64().unwrap();
        let got = query(&sel);
        if got.first().is_some_and(|v| value(v) >= tokens as f64 && value(v) <= decoded as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus never scraped {sel}: {got:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let tokens_total = query(&format!("bci2token_session_tokens_total{{session=\"{id}\"}}"));
    assert_eq!(tokens_total.len(), 1, "{tokens_total:?}");
    assert!(
        value(&tokens_total[0]) as usize >= latencies.len().saturating_sub(5),
        "{tokens_total:?} vs {} tokens seen",
        latencies.len()
    );
    // The quantiles Prometheus computes from the histogram lie in the bucket of the exact
    // quantiles the daemon computes from the same minute of windows (`session show`), give or take
    // the bucket next to it (the two minutes are not exactly the same windows).
    let p99 = query("histogram_quantile(0.99, sum by (le) (rate(bci2token_decode_latency_seconds_bucket[1m])))");
    let p50 = query("histogram_quantile(0.5, sum by (le) (rate(bci2token_decode_latency_seconds_bucket[1m])))");
    let (p50, p99) = (value(&p50[0]), value(&p99[0]));
    let exact = daemon.ctl_json(&["session", "show", &id])["decoder"].clone();
    let (e50, e99) = (exact["latency_p50_ms"].as_f64().unwrap() / 1e3, exact["latency_p99_ms"].as_f64().unwrap() / 1e3);
    const BOUNDS: [f64; 16] =
        [0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, f64::INFINITY];
    let bucket = |x: f64| BOUNDS.iter().position(|b| x <= *b).unwrap();
    for (name, prom, exact) in [("p50", p50, e50), ("p99", p99, e99)] {
        let (a, b) = (bucket(prom), bucket(exact));
        assert!(a.abs_diff(b) <= 1, "{name}: Prometheus {prom} s, the daemon {exact} s ({exact:?})");
    }
    assert!(p50 <= p99, "{p50} {p99}");
    assert!(!latencies.is_empty());
    let score = query(&format!("bci2token_session_quality_score{{session=\"{id}\"}}"));
    let shown = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(value(&score[0]), shown["quality"]["score"].as_f64().unwrap(), "{score:?} {}", shown["quality"]);
    let bad = query(&format!("sum(bci2token_channel_bad{{session=\"{id}\"}})"));
    let flagged_now: usize =
        shown["quality"]["channels"].as_array().unwrap().iter().map(|c| c["flags"].as_array().unwrap().len()).sum();
    assert_eq!(value(&bad[0]) as usize, flagged_now, "{bad:?}");
    let up = query("up{job=\"bci2token\"}");
    assert_eq!(value(&up[0]), 1.0);

    // The listener itself: OpenMetrics when asked for, the classic format otherwise; nothing but
    // GET/HEAD /metrics; no host name but an address or localhost (DNS rebinding).
    let http = |request: &str| -> String {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    };
    let om =
        http("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n");
    assert!(
        om.starts_with("HTTP/1.1 200")
            && om.contains("application/openmetrics-text")
            && om.trim_end().ends_with("# EOF")
    );
    let classic = http("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(classic.contains("text/plain; version=0.0.4") && !classic.contains("# EOF") && classic.contains("_total"));
    assert!(http("HEAD /metrics HTTP/1.1\r\n\r\n").ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"));
    assert!(http("GET /metrics HTTP/1.1\r\nHost: rebind.example:9464\r\n\r\n").starts_with("HTTP/1.1 421"));
    assert!(http("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(http("GET /admin HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert!(http(&big).starts_with("HTTP/1.1 431"));
}

fn which(program: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{program}` is not installed: run tools/setup (it installs Debian's prometheus package)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

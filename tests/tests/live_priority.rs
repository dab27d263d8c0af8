//! A person wearing the cap must never lose decoding because of something else the daemon does:
//! a live session keeps every window, token and stored block while replays at full speed
//! (`evaluate`) load the decode thread and the store, and while a lossless follower of another
//! session has stopped reading.

use std::time::{Duration, Instant};

use bci2token_tests::{relaxed_speller, start_daemon, DaemonOptions, EvaluateLoad, Follower, TempDir};

#[test]
fn a_live_session_loses_nothing_to_four_evaluations_and_a_stalled_lossless_follower() {
    // Small queues, so that a shared queue (what there was before) would fill within a second
    // of replaying at full speed, and a decode thread held up for 4 s (16 live windows) would
    // cost the live session windows: its own lanes and threads must be what protects it.
    let daemon = start_daemon(DaemonOptions {
        env: vec![
            ("BCI2TOKEN_DECODER_QUEUE".into(), "16".into()),
            ("BCI2TOKEN_STORE_QUEUE".into(), "64".into()),
            ("BCI2TOKEN_LOG_LEVEL".into(), "info".into()),
        ],
        ..Default::default()
    });
    // Every window of the relaxed speller emits a token: a lost window is a hole in the tokens.
    let model_dir = TempDir::new("live-speller");
    let model = relaxed_speller(&model_dir).display().to_string();
    let (live, id) = Follower::live_speller(&daemon, &model, &[]);

    // Four evaluations at once, each started again as soon as it ends, and a replay whose
    // lossless follower has stopped reading, for 20 s.
    let load = EvaluateLoad::start(&daemon, 4);
    std::thread::sleep(Duration::from_secs(19));
    // The stalled follower really holds its replay up (its source waits for it).
    let blocks = |d: &bci2token_tests::Daemon| d.ctl_json(&["session", "show", &load.stalled_id]);
    let before = blocks(&daemon);
    std::thread::sleep(Duration::from_secs(1));
    let after = blocks(&daemon);
    assert_eq!(after["state"], "running", "{after}");
    assert_eq!(before["blocks"], after["blocks"], "the replay waits for its stalled follower: {after}");
    assert!(after["blocks"].as_u64().unwrap() > 0, "{after}");
    let runs = load.finish().unwrap();
    eprintln!("evaluate runs per worker in 20 s: {runs:?}");
    assert!(runs.iter().all(|&n| n >= 1), "{runs:?}");

    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let events = live.collect_until(Duration::from_secs(30), |e| e["type"] == "state" && e["state"] == "stopped");

    // No window lost: one token per hop (0.25 s), without a hole, from the first full window on.
    let tokens: Vec<&serde_json::Value> = events.iter().filter(|e| e["type"] == "token").collect();
    let times: Vec<f64> = tokens.iter().map(|t| t["t"].as_f64().unwrap()).collect();
    assert!(times.len() >= 60, "{} tokens in 20 s of a 4-windows-per-second session", times.len());
    for pair in times.windows(2) {
        let step = pair[1] - pair[0];
        assert!((step - 0.25).abs() < 0.01, "a window is missing between t={} and t={}", pair[0], pair[1]);
    }
    assert!(
        !events.iter().any(|e| e["type"] == "lost" || e["type"] == "warning"),
        "{:?}",
        events.iter().filter(|e| e["type"] == "lost" || e["type"] == "warning").collect::<Vec<_>>()
    );
    let mut latency: Vec<u64> = tokens.iter().map(|t| t["latency_us"].as_u64().unwrap()).collect();
    latency.sort();
    eprintln!(
        "live token latency under load: p50 {} µs, p99 {} µs, max {} µs ({} tokens)",
        latency[latency.len() / 2],
        latency[latency.len() * 99 / 100],
        latency[latency.len() - 1],
        latency.len()
    );

    // No block lost on the way to the store: every block committed once the session is over.
    let deadline = Instant::now() + Duration::from_secs(20);
    let show = loop {
        let show = daemon.ctl_json(&["session", "show", &id]);
        if show["stored_blocks"] == show["blocks"] || Instant::now() > deadline {
            break show;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(show["windows_dropped"], 0, "{show}");
    assert_eq!(show["store_dropped"], 0, "{show}");
    assert_eq!(show["events_dropped"], 0, "{show}");
    assert_eq!(show["stored_blocks"], show["blocks"], "{show}");
    assert!(show["blocks"].as_u64().unwrap() > 0, "{show}");
}

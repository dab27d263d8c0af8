//! Benchmark (not a test): a token's way to a D-Bus subscriber (`TokenDecoded`, a signal
//! addressed to it) against its way to a control-socket `follow` subscriber, same session, same run.
//! Both subscribers live in this process and share its CLOCK_MONOTONIC with the daemon's
//! `entered_ns` (when the window's last sample entered the daemon); a bus token is matched to its
//! socket twin by its stream time. `cargo bench -p bci2token-tests --bench dbus` (as root: the
//! bus policy lets root own the daemon's name). Reports only.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bci2token_api::dbus::{next, session_path, Session1Proxy};
use bci2token_api::{read_frame, write_frame, FollowOptions, Request};
use bci2token_tests::private_bus::PrivateBus;
use bci2token_tests::{start_daemon, DaemonOptions, TempDir};

const SECONDS: f64 = 30.0;

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Stream time in µs, the key both subscribers see.
fn key(t: f64) -> i64 {
    (t * 1e6).round() as i64
}

fn percentiles(mut v: Vec<f64>) -> (usize, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n, v[n / 2], v[(n * 99 / 100).min(n - 1)])
}

fn main() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("the D-Bus benchmark needs root (the bus policy lets root own the daemon's name)");
        return;
    }
    let bus = PrivateBus::system_like("bci2token", "bci2token-admin");
    let daemon =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), bus.address.clone())], ..Default::default() });
    assert!(daemon.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)));
    let tmp = TempDir::new("bench-dbus");
    let model = bci2token_tests::relaxed_speller(&tmp).display().to_string();
    // The board is real time: both subscribers attach within its first second of rest, and only
    // tokens both saw are compared.
    let info = daemon.ctl_json(&[
        "session",
        "start",
        "--driver",
        "synthetic",
        "--set",
        "speed=4",
        "--set",
        "script=rest:1,14.1Hz:3,rest:1,17.7Hz:3,rest:1",
        "--model",
        &model,
    ]);
    let id = info["id"].as_str().unwrap().to_string();

    // The bus subscriber, on a thread of its own.
    let (tx, rx) = mpsc::channel::<(i64, u64)>();
    let (address, path) = (bus.address.clone(), session_path(&id));
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
            let session = Session1Proxy::builder(&conn).path(path).unwrap().build().await.unwrap();
            let mut tokens = session.receive_token_decoded().await.unwrap();
            session.subscribe().await.unwrap();
            ready_tx.send(()).unwrap();
            while let Some(signal) = next(&mut tokens).await {
                let now = monotonic_ns();
                let args = signal.args().unwrap();
                if tx.send((key(*args.stream_time()), now)).is_err() {
                    return;
                }
            }
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).expect("the bus subscriber subscribed");

    // The socket subscriber, here.
    let mut sock = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    write_frame(&mut sock, &Request::Follow { id: id.clone(), options: FollowOptions::default() }).unwrap();
    read_frame(&mut sock).unwrap();
    let mut socket_side: HashMap<i64, (u64, u64)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs_f64(SECONDS);
    while Instant::now() < deadline {
        let Some(body) = read_frame(&mut sock).unwrap() else { break };
        let now = monotonic_ns();
        let ev: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if ev["type"] == "token" {
            socket_side.insert(key(ev["t"].as_f64().unwrap()), (ev["entered_ns"].as_u64().unwrap(), now));
        }
    }
    daemon.ctl_json(&["session", "stop", &id]);
    std::thread::sleep(Duration::from_millis(200));
    let (mut via_socket, mut via_bus) = (Vec::new(), Vec::new());
    for (t, arrived) in rx.try_iter() {
        if let Some((entered, at_socket)) = socket_side.get(&t) {
            via_bus.push(arrived.saturating_sub(*entered) as f64 / 1e3);
            via_socket.push(at_socket.saturating_sub(*entered) as f64 / 1e3);
        }
    }
    assert!(via_bus.len() > 20, "too few tokens seen by both ({} of {})", via_bus.len(), socket_side.len());
    let (n, s50, s99) = percentiles(via_socket);
    let (_, b50, b99) = percentiles(via_bus);
    println!(
        "token latency, speller-40 on CPU, last sample in the daemon → subscriber ({n} tokens seen by both):\n  \
         socket follow:      p50 {s50:.0} µs, p99 {s99:.0} µs\n  D-Bus TokenDecoded: p50 {b50:.0} µs, p99 {b99:.0} µs \
         (×{:.2} at p50, ×{:.2} at p99)",
        b50 / s50,
        b99 / s99
    );
}

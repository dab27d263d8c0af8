//! Benchmarks of the openbci driver (not tests; nothing here fails on speed):
//! - parser throughput: packets per second through the packet parser and row assembler, against
//!   what the serial line can carry at all (115200 baud: 349 packets/s) and the board's 250/s;
//! - latency from a packet's last byte written to the pty to its block reaching a `follow`
//!   subscriber of the daemon, against a peer in the same run: this process reading the same pty
//!   directly (what any program gets at best from the kernel).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bci2token_driver_openbci::packet::{scale_uv, PacketParser};
use bci2token_driver_openbci::rows::{RowAssembler, Step};
use bci2token_tests::cyton_emulator::{follow_latency, Emulator, EmulatorConfig};
use bci2token_tests::{start_daemon, DaemonOptions, TempDir};

const SECONDS: f64 = 20.0;

fn packet(counter: u8, k: u32) -> [u8; 33] {
    let mut p = [0u8; 33];
    p[0] = 0xA0;
    p[1] = counter;
    for ch in 0..8 {
        let v = (k.wrapping_mul(2_654_435_761).wrapping_add(ch * 40_503) & 0xFF_FFFF).to_be_bytes();
        p[2 + 3 * ch as usize..5 + 3 * ch as usize].copy_from_slice(&v[1..]);
    }
    p[32] = 0xC0;
    p
}

fn parser_throughput() {
    // 1 M packets with a few bytes of garbage every 1000 packets, read in 1 KiB pieces.
    let n = 1_000_000u32;
    let mut stream = Vec::with_capacity(n as usize * 34);
    for k in 0..n {
        if k % 1000 == 999 {
            stream.extend_from_slice(b"\x00\x13\xc0");
        }
        stream.extend_from_slice(&packet(k as u8, k));
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut parser = PacketParser::new();
        let mut rows = RowAssembler::new(false);
        let mut out = vec![0f32; 8];
        let scale = scale_uv(24);
        let started = Instant::now();
        let mut got = 0u64;
        for piece in stream.chunks(1024) {
            parser.push(piece, |p| {
                if let Step::Row { .. } = rows.push(&p) {
                    for (o, &c) in out.iter_mut().zip(rows.row()) {
                        *o = (f64::from(c) * scale) as f32;
                    }
                    got += 1;
                }
            });
        }
        std::hint::black_box(&out);
        assert_eq!(got, u64::from(n) - 1, "all but the last (unconfirmed) packet");
        best = best.min(started.elapsed().as_secs_f64());
    }
    let rate = f64::from(n) / best;
    println!(
        "openbci parser + rows: {:.1} M packets/s ({:.0}x the 349 packets/s a 115200-baud line can carry, \
         {:.0}x the board's 250/s)",
        rate / 1e6,
        rate / 349.1,
        rate / 250.0
    );
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Packet index carried by channel 1 (see cyton_emulator::counts).
fn index_from_counts(counts: i32) -> u64 {
    counts as u64
}

/// The peer: this process reads the emulator's pty itself and parses the packets.
fn direct_latency(dir: &TempDir) -> Vec<f64> {
    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    emulator.record_write_times();
    let mut port = std::fs::OpenOptions::new().read(true).write(true).open(emulator.path()).unwrap();
    port.write_all(b"b").unwrap();
    let mut parser = PacketParser::new();
    let mut lat = Vec::new();
    let mut buf = [0u8; 1024];
    let end = Instant::now() + Duration::from_secs_f64(SECONDS);
    while Instant::now() < end {
        let n = port.read(&mut buf).unwrap();
        let now = Instant::now();
        let mut last = None;
        parser.push(&buf[..n], |p| last = Some(index_from_counts(p.counts[0])));
        if let Some(t) = last.and_then(|k| emulator.write_time(k)) {
            lat.push(now.duration_since(t).as_secs_f64() * 1e6);
        }
    }
    port.write_all(b"s").unwrap();
    lat
}

/// Through the daemon: a socket subscriber with samples, timing each block's last row.
fn daemon_latency(dir: &TempDir) -> Vec<f64> {
    let emulator = Emulator::start(dir.path(), EmulatorConfig::default());
    emulator.record_write_times();
    let daemon = start_daemon(DaemonOptions::default());
    let port = format!("port={}", emulator.path().display());
    let info = daemon.ctl_json(&["session", "start", "--driver", "openbci", "--set", &port]);
    let id = info["id"].as_str().unwrap().to_string();
    let lat = follow_latency(&daemon, &id, &emulator, SECONDS);
    daemon.ctl_json(&["session", "stop", &id]);
    lat
}

fn main() {
    parser_throughput();
    let dir = TempDir::new("bench-openbci");
    let mut direct = direct_latency(&dir);
    let mut daemon = daemon_latency(&dir);
    let (d50, d99) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    let (s50, s99) = (percentile(&mut daemon, 0.5), percentile(&mut daemon, 0.99));
    println!(
        "openbci latency, packet's last byte on the pty → block at a follow subscriber ({} blocks): p50 {s50:.0} µs, \
         p99 {s99:.0} µs; the same pty read directly by this process ({} reads): p50 {d50:.0} µs, p99 {d99:.0} µs; \
         the daemon's path adds p50 {:.0} µs",
        daemon.len(),
        direct.len(),
        s50 - d50
    );
}

//! Benchmark (not a test): the store's encrypted writes against plain SQLite inserts of the same
//! blocks, in the same run, on the same disk, with the same pragmas (WAL, synchronous = FULL,
//! secure_delete) and the same batching (one transaction per 40 blocks: one second of a 64-channel
//! 1 kHz session in 25-frame blocks). Reports blocks/s, MB/s, the ratio, and how many such
//! sessions the encrypted path could take at once (40 blocks/s each).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Op, Store};

const CHANNELS: usize = 64;
const FRAMES: usize = 25;
const BATCH: usize = 40;
const BATCHES: usize = 150;

fn block(seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + CHANNELS * FRAMES * 4);
    b.extend_from_slice(&(seq as f64 * 0.025).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(CHANNELS as u32).to_le_bytes());
    b.extend_from_slice(&(FRAMES as u64).to_le_bytes());
    for i in 0..CHANNELS * FRAMES {
        b.extend_from_slice(&((seq as f32).sin() * 50.0 + i as f32 * 0.01).to_le_bytes());
    }
    b
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bci2token-bench-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn encrypted(blocks: &[Vec<u8>]) -> f64 {
    let d = dir("enc");
    let mut store = Store::open(&d.join("s.db"), Arc::new(MasterKey::generate().unwrap())).unwrap();
    store.create_session("bench", 0.0, b"{}").unwrap();
    let started = Instant::now();
    for (b, chunk) in blocks.chunks(BATCH).enumerate() {
        let ops: Vec<Op> = chunk
            .iter()
            .enumerate()
            .map(|(i, plain)| Op::Chunk {
                session: "bench".into(),
                kind: Kind::Block,
                seq: (b * BATCH + i) as u64,
                plain: plain.clone(),
            })
            .collect();
        store.apply(&ops).unwrap();
    }
    let t = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&d);
    t
}

fn plain(blocks: &[Vec<u8>]) -> f64 {
    let d = dir("plain");
    let mut conn = rusqlite::Connection::open(d.join("p.db")).unwrap();
    conn.execute_batch(
        "PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE blocks (session TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL,
                              PRIMARY KEY (session, seq)) WITHOUT ROWID;",
    )
    .unwrap();
    let started = Instant::now();
    for (b, chunk) in blocks.chunks(BATCH).enumerate() {
        let tx = conn.transaction().unwrap();
        for (i, data) in chunk.iter().enumerate() {
            tx.execute(
                "INSERT INTO blocks (session, seq, data) VALUES ('bench', ?1, ?2)",
                rusqlite::params![(b * BATCH + i) as i64, data.clone()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let t = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&d);
    t
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let blocks: Vec<Vec<u8>> = (0..(BATCH * BATCHES) as u64).map(block).collect();
    let n = blocks.len() as f64;
    let bytes = blocks.iter().map(Vec::len).sum::<usize>() as f64;
    let mut enc = Vec::new();
    let mut pla = Vec::new();
    for _ in 0..5 {
        pla.push(plain(&blocks));
        enc.push(encrypted(&blocks));
    }
    let (e, p) = (median(enc), median(pla));
    println!(
        "store writes, {} blocks of {CHANNELS} ch × {FRAMES} frames ({} KB each), {BATCH} per transaction, median of 5:",
        blocks.len(),
        bytes / n / 1024.0
    );
    println!(
        "  encrypted (AES-256-GCM + SQLite): {:.0} blocks/s, {:.1} MB/s;  plain SQLite inserts: {:.0} blocks/s, {:.1} MB/s;  \
         encrypted / plain = {:.2}×",
        n / e,
        bytes / e / 1e6,
        n / p,
        bytes / p / 1e6,
        p / e
    );
    println!(
        "  a 64-channel 1 kHz session writes 40 such blocks/s: the encrypted path takes about {:.0} of them at once \
         on this disk (store alone; see tests/benches/store_sessions.rs for sessions through the daemon)",
        (n / e) / 40.0
    );
}

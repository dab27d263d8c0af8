//! Reading a session one chunk at a time: `Store::for_each` and the read-only `StoreReader` (a
//! connection of its own, for exports on the requester's thread while the writer goes on).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Store, StoreError, StoreReader};
use bci2token_tests::TempDir;

fn block(seq: u64) -> Vec<u8> {
    (0..200u32).flat_map(|i| (seq as f32 * 100.0 + i as f32).to_le_bytes()).collect()
}

fn event(seq: u64) -> Vec<u8> {
    format!("{{\"type\":\"annotation\",\"n\":{seq}}}").into_bytes()
}

fn record(store: &mut Store, id: &str, from: u64, to: u64) {
    if from == 0 {
        store.create_session(id, 1.0, b"{\"device\":\"synthetic\"}").unwrap();
    }
    for seq in from..to {
        store.append(id, Kind::Block, &[(seq, &block(seq))]).unwrap();
        store.append(id, Kind::Event, &[(seq, &event(seq))]).unwrap();
    }
}

fn seqs_and_errors(chunks: &[(u64, Result<Vec<u8>, StoreError>)]) -> (Vec<u64>, Vec<u64>) {
    (chunks.iter().map(|(s, _)| *s).collect(), chunks.iter().filter(|(_, r)| r.is_err()).map(|(s, _)| *s).collect())
}

#[test]
fn for_each_walks_in_order_one_chunk_at_a_time_and_stops_when_asked() {
    let dir = TempDir::new("for-each");
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Arc::new(MasterKey::generate().unwrap())).unwrap();
    // Appended out of order: the walk is by sequence number.
    store.create_session("s", 1.0, b"{}").unwrap();
    for seq in [3u64, 0, 7, 1, 2, 6, 5, 4] {
        store.append("s", Kind::Block, &[(seq, &block(seq))]).unwrap();
    }
    store
        .connection()
        .execute(
            "UPDATE blocks SET data = CAST(substr(data, 1, 40) || x'00' || substr(data, 42) AS BLOB) WHERE seq = 5",
            [],
        )
        .unwrap();
    let mut seen = Vec::new();
    let stopped = store
        .for_each("s", Kind::Block, |seq, chunk| {
            match chunk {
                Ok(plain) => assert_eq!(plain, block(seq)),
                Err(e) => assert!(e.to_string().contains("block 5 failed authentication"), "{e}"),
            }
            seen.push(seq);
            ControlFlow::<()>::Continue(())
        })
        .unwrap();
    assert_eq!(stopped, None, "every chunk was seen");
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    // read_all is the same walk, collected.
    let all = store.read_all("s", Kind::Block).unwrap();
    assert_eq!(seqs_and_errors(&all), ((0..8).collect(), vec![5]));
    // Break ends the walk with its value.
    let mut calls = 0;
    let found = store
        .for_each("s", Kind::Block, |seq, _| {
            calls += 1;
            if seq == 2 {
                ControlFlow::Break("two")
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((found, calls), (Some("two"), 3));
    let meta = store.read_all("s", Kind::Meta).unwrap();
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0].1.as_ref().unwrap(), b"{}");
    assert!(matches!(
        store.for_each("nope", Kind::Event, |_, _| ControlFlow::<()>::Continue(())),
        Err(StoreError::NoSession(_))
    ));
    assert!(matches!(store.read_all("nope", Kind::Meta), Err(StoreError::NoSession(_))));
}

#[test]
fn a_reader_sees_one_snapshot_authenticates_every_chunk_and_never_writes() {
    let dir = TempDir::new("reader");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, Arc::clone(&master)).unwrap();
    record(&mut store, "a", 0, 10);
    let mut reader = store.reader().unwrap();
    // Written after the reader began: not in its snapshot.
    record(&mut store, "a", 10, 15);
    record(&mut store, "b", 0, 3);
    let blocks = reader.read_all("a", Kind::Block).unwrap();
    assert_eq!(seqs_and_errors(&blocks), ((0..10).collect(), vec![]));
    assert!(blocks.iter().all(|(seq, r)| r.as_ref().unwrap() == &block(*seq)));
    assert!(matches!(reader.read_all("b", Kind::Block), Err(StoreError::NoSession(_))));
    assert_eq!(reader.state("a").unwrap(), "recording");
    // Chunks by number, in any order, through one lookup.
    {
        let mut lookup = reader.lookup("a", Kind::Block).unwrap();
        for seq in [9u64, 0, 4, 4] {
            assert_eq!(lookup.get(seq).unwrap().unwrap(), block(seq));
        }
        assert_eq!(lookup.get(12).unwrap(), None, "written after the snapshot");
    }
    assert_eq!(reader.chunk("a", Kind::Meta, 0).unwrap().unwrap(), b"{\"device\":\"synthetic\"}");
    assert_eq!(reader.chunk("a", Kind::Meta, 1).unwrap(), None);
    drop(reader);

    // A fresh reader sees everything; a damaged chunk is an error in its place, alone.
    store
        .connection()
        .execute("UPDATE events SET data = CAST(x'00' || substr(data, 2) AS BLOB) WHERE session = 'a' AND seq = 12", [])
        .unwrap();
    let mut reader = StoreReader::open(&db, Arc::clone(&master)).unwrap();
    let events = reader.read_all("a", Kind::Event).unwrap();
    assert_eq!(seqs_and_errors(&events), ((0..15).collect(), vec![12]));
    assert!(matches!(reader.chunk("a", Kind::Event, 12), Err(StoreError::Chunk { seq: 12, kind: Kind::Event, .. })));
    assert_eq!(reader.chunk("b", Kind::Event, 2).unwrap().unwrap(), event(2));
    assert!(matches!(reader.lookup("nope", Kind::Block), Err(StoreError::NoSession(_))));
    // Read-only: the connection cannot write.
    assert!(StoreReader::open(&dir.path().join("missing.db"), Arc::clone(&master)).is_err());
    assert!(!dir.path().join("missing.db").exists(), "opening a reader creates nothing");
    // Another master key opens nothing.
    let mut stranger = StoreReader::open(&db, Arc::new(MasterKey::generate().unwrap())).unwrap();
    assert!(matches!(stranger.read_all("a", Kind::Block), Err(StoreError::Key { .. })));
}

/// The writer commits while a reader walks a long session on another thread: neither waits for
/// the other, and the walk sees exactly its snapshot.
#[test]
fn a_reader_on_another_thread_does_not_hold_up_the_writer() {
    let dir = TempDir::new("reader-concurrent");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, Arc::clone(&master)).unwrap();
    store.create_session("long", 1.0, b"{}").unwrap();
    let blocks: Vec<Vec<u8>> = (0..2000).map(block).collect();
    let chunks: Vec<(u64, &[u8])> = blocks.iter().enumerate().map(|(seq, b)| (seq as u64, &b[..])).collect();
    store.append("long", Kind::Block, &chunks).unwrap();
    let reader = store.reader().unwrap();
    let walk = std::thread::spawn(move || {
        let mut reader = reader;
        let mut n = 0u64;
        reader
            .for_each("long", Kind::Block, |seq, chunk| {
                assert_eq!(chunk.unwrap(), block(seq));
                n += 1;
                // A slow consumer (a disk being written): the writer must not wait for it.
                std::thread::sleep(Duration::from_micros(500));
                ControlFlow::<()>::Continue(())
            })
            .unwrap();
        n
    });
    let mut worst = Duration::ZERO;
    record(&mut store, "live", 0, 1);
    let mut during_walk = 0;
    for seq in 1..200 {
        let t = Instant::now();
        store.append("live", Kind::Block, &[(seq, &block(seq))]).unwrap();
        worst = worst.max(t.elapsed());
        during_walk += u32::from(!walk.is_finished());
    }
    // The walk takes over a second (2000 × 0.5 ms): the first writes committed while it went on.
    assert!(during_walk > 0, "no write committed while the reader walked");
    assert!(worst < Duration::from_secs(1), "a commit waited {worst:?} for the reader");
    assert_eq!(walk.join().unwrap(), 2000, "the reader saw its snapshot, whole");
    assert_eq!(store.read_all("live", Kind::Block).unwrap().len(), 200);
}

/// A deletion while a reader reads: the reader keeps its snapshot; the rows are gone for everyone
/// else; the WAL is checkpointed and truncated once the reader is dropped.
#[test]
fn a_reader_keeps_its_snapshot_through_a_deletion() {
    let dir = TempDir::new("reader-delete");
    let db = dir.path().join("store.db");
    let mut store = Store::open(&db, Arc::new(MasterKey::generate().unwrap())).unwrap();
    record(&mut store, "gone", 0, 5);
    let mut reader = store.reader().unwrap();
    store.delete_session_rows("gone").unwrap();
    assert!(matches!(store.read_all("gone", Kind::Block), Err(StoreError::NoSession(_))));
    assert!(matches!(store.reader().unwrap().read_all("gone", Kind::Block), Err(StoreError::NoSession(_))));
    let held = reader.read_all("gone", Kind::Block).unwrap();
    assert_eq!(seqs_and_errors(&held), ((0..5).collect(), vec![]));
    drop(reader);
    store.checkpoint().unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("store.db-wal")).unwrap().len(), 0);
}

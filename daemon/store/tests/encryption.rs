//! What the store promises about the bytes on disk, checked on real SQLite files: nothing of a
//! session's samples or token texts appears in the database, its WAL or shared memory; tampering
//! is detected chunk by chunk; deletion leaves none of the session's ciphertext behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Store, StoreError};
use bci2token_tests::TempDir;

/// A recognisable sample block: 64 channels × 25 frames of f32 (6400 bytes).
fn block(seq: u64) -> Vec<u8> {
    (0..64 * 25).flat_map(|i| ((seq as f32) * 1000.0 + i as f32 * 0.37 - 123.456).to_le_bytes()).collect()
}

fn token(seq: u64) -> Vec<u8> {
    format!("{{\"type\":\"token\",\"text\":\" secret-word-{seq}\"}}").into_bytes()
}

fn files(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| {
            let p = PathBuf::from(format!("{}{s}", db.display()));
            std::fs::read(&p).ok().map(|b| (p.display().to_string(), b))
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn record(store: &mut Store, id: &str, blocks: u64) {
    store.create_session(id, 1.0, b"{\"device\":\"synthetic\",\"subject\":\"P-042\"}").unwrap();
    for seq in 0..blocks {
        let b = block(seq);
        let t = token(seq);
        store.append(id, Kind::Block, &[(seq, &b)]).unwrap();
        store.append(id, Kind::Event, &[(seq, &t)]).unwrap();
    }
}

#[test]
fn a_copy_taken_while_recording_holds_no_plaintext_and_needs_the_key() {
    let dir = TempDir::new("copy");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, Arc::clone(&master)).unwrap();
    record(&mut store, "s1", 40);
    // Copy the three files while the store is open and the WAL holds the recent pages.
    let copy = dir.path().join("copy.db");
    for (path, bytes) in files(&db) {
        assert!(!bytes.is_empty() || path.ends_with("-shm"));
        std::fs::write(path.replace("store.db", "copy.db"), bytes).unwrap();
    }
    let copied = files(&copy);
    assert!(copied.iter().any(|(p, b)| p.ends_with("-wal") && !b.is_empty()), "the WAL was copied mid-recording");
    for seq in 0..40 {
        let b = block(seq);
        for (path, bytes) in &copied {
            // Any 32 bytes of the samples, and the token text and subject pseudonym.
            assert!(!contains(bytes, &b[..32]) && !contains(bytes, &b[3200..3232]), "samples of block {seq} in {path}");
            assert!(!contains(bytes, format!("secret-word-{seq}\"").as_bytes()), "token text {seq} in {path}");
            assert!(!contains(bytes, b"P-042"), "the subject pseudonym in {path}");
        }
    }
    // The copy opens with the key, and only with it.
    let mut with_key = Store::open(&copy, Arc::clone(&master)).unwrap();
    assert_eq!(with_key.read_all("s1", Kind::Block).unwrap().len(), 40);
    let mut without = Store::open(&copy, Arc::new(MasterKey::generate().unwrap())).unwrap();
    assert!(matches!(without.read_all("s1", Kind::Block), Err(StoreError::Key { .. })));
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn a_flipped_byte_or_swapped_chunks_fail_exactly_where_they_are() {
    let dir = TempDir::new("tamper");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, master).unwrap();
    record(&mut store, "a", 10);
    record(&mut store, "b", 10);
    let c = store.connection();
    // One flipped byte in block 3 of a.
    c.execute("UPDATE blocks SET data = CAST(substr(data, 1, 100) || x'FF' || substr(data, 102) AS BLOB) WHERE session = 'a' AND seq = 3", [])
        .unwrap();
    // Blocks 5 and 6 of a swapped.
    c.execute_batch(
        "UPDATE blocks SET seq = -1 WHERE session = 'a' AND seq = 5;
         UPDATE blocks SET seq = 5 WHERE session = 'a' AND seq = 6;
         UPDATE blocks SET seq = 6 WHERE session = 'a' AND seq = -1;",
    )
    .unwrap();
    // Event 2 of b replaced by event 2 of a (another session's chunk at the same position).
    c.execute("UPDATE events SET data = (SELECT data FROM events WHERE session = 'a' AND seq = 2) WHERE session = 'b' AND seq = 2", [])
        .unwrap();
    let failed = |store: &mut Store, s: &str, kind: Kind| -> Vec<u64> {
        let all = store.read_all(s, kind).unwrap();
        for (seq, r) in &all {
            if let Err(e) = r {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("session {s}")) && msg.contains(&format!("{} {seq} failed", kind.as_str())),
                    "{msg}"
                );
            }
        }
        all.iter().filter(|(_, r)| r.is_err()).map(|(s, _)| *s).collect()
    };
    assert_eq!(failed(&mut store, "a", Kind::Block), [3, 5, 6]);
    assert_eq!(failed(&mut store, "b", Kind::Event), [2]);
    assert!(failed(&mut store, "a", Kind::Event).is_empty() && failed(&mut store, "b", Kind::Block).is_empty());
    // The intact chunks read back exactly.
    let a = store.read_all("a", Kind::Block).unwrap();
    assert_eq!(a[4].1.as_ref().unwrap(), &block(4));
}

#[test]
fn a_deleted_session_leaves_no_ciphertext_and_no_key() {
    let dir = TempDir::new("delete");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, master).unwrap();
    record(&mut store, "gone", 30);
    record(&mut store, "kept", 30);
    let c = store.connection();
    let ciphertexts: Vec<Vec<u8>> = {
        let mut stmt = c.prepare("SELECT data FROM blocks WHERE session = 'gone' UNION ALL SELECT data FROM events WHERE session = 'gone' UNION ALL SELECT sealed FROM session_keys WHERE session = 'gone' UNION ALL SELECT meta FROM sessions WHERE id = 'gone'").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(ciphertexts.len(), 62);
    store.delete_session("gone").unwrap();
    for (path, bytes) in files(&db) {
        for (i, ct) in ciphertexts.iter().enumerate() {
            let probe = &ct[..ct.len().min(24)];
            assert!(!contains(&bytes, probe), "ciphertext {i} of the deleted session is still in {path}");
        }
    }
    let key_rows: i64 = store
        .connection()
        .query_row("SELECT count(*) FROM session_keys WHERE session = 'gone'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(key_rows, 0);
    assert!(matches!(store.read_all("gone", Kind::Block), Err(StoreError::NoSession(_))));
    let kept = store.read_all("kept", Kind::Block).unwrap();
    assert!(kept.iter().all(|(seq, r)| r.as_ref().unwrap() == &block(*seq)));
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert!(matches!(store.delete_session("gone"), Err(StoreError::NoSession(_))));
}

#[test]
fn rotating_the_master_key_rewraps_every_session() {
    let dir = TempDir::new("rotate");
    let db = dir.path().join("store.db");
    let old = Arc::new(MasterKey::generate().unwrap());
    let mut store = Store::open(&db, Arc::clone(&old)).unwrap();
    record(&mut store, "x", 3);
    record(&mut store, "y", 3);
    let new = Arc::new(MasterKey::generate().unwrap());
    assert_eq!(store.rotate_master(Arc::clone(&new)).unwrap(), 2);
    drop(store);
    let mut reopened = Store::open(&db, new).unwrap();
    assert_eq!(reopened.read_all("y", Kind::Event).unwrap()[2].1.as_ref().unwrap(), &token(2));
    let mut with_old = Store::open(&db, old).unwrap();
    assert!(matches!(with_old.read_all("x", Kind::Block), Err(StoreError::Key { .. })));
}

#[test]
fn a_database_from_a_newer_daemon_is_refused() {
    let dir = TempDir::new("newer");
    let db = dir.path().join("store.db");
    let master = Arc::new(MasterKey::generate().unwrap());
    drop(Store::open(&db, Arc::clone(&master)).unwrap());
    rusqlite_set_version(&db, 99);
    let err = Store::open(&db, master).unwrap_err().to_string();
    assert!(err.contains("schema version 99") && err.contains("upgrade bci2tokend"), "{err}");
}

fn rusqlite_set_version(db: &Path, v: u32) {
    let master = Arc::new(MasterKey::generate().unwrap());
    let store = Store::open(db, master).unwrap();
    store.connection().pragma_update(None, "user_version", v).unwrap();
}

//! The audit log on a real SQLite file: `audit_verify` names the entry that was edited, deleted
//! or moved; and a database of every earlier schema version opens and migrates.

use std::sync::Arc;

use bci2token_store::audit::Break;
use bci2token_store::schema::{current_version, MIGRATIONS};
use bci2token_store::seal::{self, Kind};
use bci2token_store::{MasterKey, Store};
use bci2token_tests::TempDir;

/// A store with 10 audit entries.
fn logged(tag: &str) -> (TempDir, Store) {
    let dir = TempDir::new(tag);
    let mut store = Store::open(&dir.path().join("store.db"), Arc::new(MasterKey::generate().unwrap())).unwrap();
    for i in 1..=10u32 {
        let action = if i % 2 == 0 { "session_start" } else { "session_stop" };
        store
            .audit_append(1_700_000_000.0 + f64::from(i), 1000 + i, Some(4000 + i), action, &format!("s{i}"), "ok")
            .unwrap();
    }
    assert_eq!(store.audit_verify().unwrap(), Ok(10));
    (dir, store)
}

#[test]
fn an_edited_entry_is_named() {
    let (_dir, mut store) = logged("edit");
    store.connection().execute("UPDATE audit SET outcome = 'refused' WHERE seq = 6", []).unwrap();
    let err = store.audit_verify().unwrap().unwrap_err();
    assert_eq!(err, Break::Edited { seq: 6 });
    assert_eq!(err.to_string(), "audit entry 6 was altered: its MAC does not match its contents");
}

#[test]
fn a_deleted_entry_is_named() {
    let (_dir, mut store) = logged("delete");
    store.connection().execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let err = store.audit_verify().unwrap().unwrap_err();
    assert_eq!(err, Break::Deleted { from: 4, to: 4 });
    assert_eq!(err.to_string(), "audit entry 4 was deleted");
}

#[test]
fn reordered_entries_are_named() {
    let (_dir, mut store) = logged("reorder");
    store
        .connection()
        .execute_batch(
            "UPDATE audit SET seq = -1 WHERE seq = 7; UPDATE audit SET seq = 7 WHERE seq = 8; UPDATE audit SET seq = 8 WHERE seq = -1;",
        )
        .unwrap();
    let err = store.audit_verify().unwrap().unwrap_err();
    assert_eq!(err, Break::Moved { seq: 7, written_as: 8 });
    assert!(err.to_string().contains("entry 7 is out of place: it was written as entry 8"), "{err}");
}

#[test]
fn the_chain_survives_a_master_key_rotation_and_lists_since_a_time() {
    let (_dir, mut store) = logged("rotate");
    store.rotate_master(Arc::new(MasterKey::generate().unwrap())).unwrap();
    assert_eq!(store.audit_verify().unwrap(), Ok(10));
    store.audit_append(1_700_000_100.0, 0, None, "key_rotate", "store", "ok").unwrap();
    assert_eq!(store.audit_verify().unwrap(), Ok(11));
    let since = store.audit_list(Some(1_700_000_008.0)).unwrap();
    assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10, 11]);
}

/// Builds a database of schema version `v` the way that version's bci2tokend left it (the
/// migrations up to `v`, and data in the tables that existed then), and opens it with this one.
#[test]
fn a_database_of_every_earlier_version_opens_and_migrates() {
    for v in 1..current_version() {
        let dir = TempDir::new(&format!("v{v}"));
        let db = dir.path().join("store.db");
        let master = Arc::new(MasterKey::generate().unwrap());
        {
            let mut conn = rusqlite::Connection::open(&db).unwrap();
            for (i, step) in MIGRATIONS.iter().enumerate().take(v as usize) {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(step).unwrap();
                tx.pragma_update(None, "user_version", i as u32 + 1).unwrap();
                tx.commit().unwrap();
            }
        }
        // Data as that version wrote it: a session (every version has had sessions) with a
        // sealed block, inserted with the version's own tables.
        {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let wrapped = seal::new_wrapped_key(&master, "old").unwrap();
            let cipher = seal::unwrap(&master, "old", &wrapped).unwrap();
            conn.execute(
                "INSERT INTO sessions (id, created, state, meta) VALUES ('old', 1.0, 'stopped', ?1)",
                [cipher.seal(Kind::Meta, 0, b"{\"device\":\"v1\"}")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO session_keys (session, nonce, sealed) VALUES ('old', ?1, ?2)",
                rusqlite::params![&wrapped.nonce[..], wrapped.sealed],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO blocks (session, seq, data) VALUES ('old', 0, ?1)",
                [cipher.seal(Kind::Block, 0, b"old samples")],
            )
            .unwrap();
        }
        let mut store = Store::open(&db, Arc::clone(&master)).unwrap();
        let version: u32 = store.connection().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, current_version(), "migrated from version {v}");
        let blocks = store.read_all("old", Kind::Block).unwrap();
        assert_eq!(blocks[0].1.as_ref().unwrap(), b"old samples", "version {v} data reads after migration");
        store.audit_append(1.0, 0, None, "session_start", "m", "ok").unwrap();
        assert_eq!(store.audit_verify().unwrap(), Ok(1));
        assert_eq!(store.integrity_check().unwrap(), "ok");
    }
}

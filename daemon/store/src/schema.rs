//! The store's tables, and the ladder of migrations that brings any earlier database to the
//! current version (`PRAGMA user_version`). Each step runs in its own transaction.

use rusqlite::Connection;

/// Version 1: sessions (plain: id, times, state; everything describing the recording sealed in the
/// metadata chunk), their wrapped data keys, sealed blocks and events.
const V1: &str = "
CREATE TABLE sessions (
    id       TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    stopped  REAL,
    state    TEXT NOT NULL,
    meta     BLOB NOT NULL
);
CREATE TABLE session_keys (
    session  TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    nonce    BLOB NOT NULL,
    sealed   BLOB NOT NULL
);
CREATE TABLE blocks (
    session  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE events (
    session  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
";

/// Version 2: the audit log (hash-chained by an HMAC of each entry over the previous one) and
/// store-wide secrets wrapped by the master key (the audit log's MAC key).
const V2: &str = "
CREATE TABLE secrets (
    name     TEXT PRIMARY KEY,
    nonce    BLOB NOT NULL,
    sealed   BLOB NOT NULL
);
CREATE TABLE audit (
    seq      INTEGER PRIMARY KEY,
    t        REAL NOT NULL,
    uid      INTEGER NOT NULL,
    pid      INTEGER,
    action   TEXT NOT NULL,
    object   TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    mac      BLOB NOT NULL
);
";

/// Version 3: the privacy budget spent per subject by differentially private releases.
const V3: &str = "
CREATE TABLE dp_budget (
    subject  TEXT PRIMARY KEY,
    epsilon  REAL NOT NULL,
    delta    REAL NOT NULL
);
";

/// Every migration, in order: `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// Indexes that change no data, made at every open: a daemon of an earlier version reads the
/// store as it is (no schema version for them).
pub const INDEXES: &str = "
-- `health` and the metrics find the last backup without reading the whole audit log.
CREATE INDEX IF NOT EXISTS audit_by_action ON audit (action, t);
";

/// The version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the database to [`current_version`]. A database from a newer bci2tokend is refused.
pub fn migrate(conn: &mut Connection) -> Result<u32, String> {
    let found: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("reading the schema version: {e}"))?;
    if found > current_version() {
        return Err(format!(
            "the database has schema version {found}, newer than this bci2tokend's {}; upgrade bci2tokend \
             (or restore a backup made by this version)",
            current_version()
        ));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i as u32 + 1;
        let tx = conn.transaction().map_err(|e| format!("migrating to version {to}: {e}"))?;
        tx.execute_batch(step).map_err(|e| format!("migrating to version {to}: {e}"))?;
        tx.pragma_update(None, "user_version", to).map_err(|e| format!("migrating to version {to}: {e}"))?;
        tx.commit().map_err(|e| format!("migrating to version {to}: {e}"))?;
    }
    Ok(found)
}

//! The store: a SQLite file in the data directory, opened with WAL, foreign keys and
//! `secure_delete` (freed pages are overwritten with zeros).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::audit::{self, AuditEntry, Break};
use crate::keys::MasterKey;
use crate::schema;
use crate::seal::{self, Kind, SessionCipher, WrappedKey};

/// What went wrong, with what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Database { path: PathBuf, message: String },
    #[error("no session {0} in the store")]
    NoSession(String),
    #[error(
        "session {session}: its data key does not open with this master key (a different or rotated key, or the \
         wrapped key was altered); nothing of the session can be read"
    )]
    Key { session: String },
    #[error("session {session}: {} {seq} failed authentication (altered, moved from another session or position, or damaged)", kind.as_str())]
    Chunk { session: String, kind: Kind, seq: u64 },
    #[error("the store's {name} key does not open with this master key")]
    Secret { name: String },
    /// SQLite's SQLITE_FULL: the file system holding the store has no room (ENOSPC) or a quota
    /// is reached. What was committed before stays readable.
    #[error(
        "{}: the file system holding the store is full; nothing more can be recorded until space is freed there",
        path.display()
    )]
    Full { path: PathBuf },
}

impl StoreError {
    /// The store's file system is full (a condition the operator fixes, not a damaged store).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
}

/// A connection set up as the store needs it, its schema migrated.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let fail = |m: String| StoreError::Database { path: path.to_path_buf(), message: m };
    // The database and its side files are the daemon's alone (SQLite gives -wal and -shm the
    // database's mode); an older install's 0644 file is tightened too.
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| fail(format!("cannot create: {e}")))?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = format!("{}{suffix}", path.display());
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(fail(format!("cannot make {p} private (mode 0600): {e}")))
                }
                _ => {}
            }
        }
    }
    let mut conn = Connection::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    // secure_delete before anything is written; WAL for concurrent readers (backup) and crash
    // safety; FULL: a committed block survives power loss, not only a crash.
    conn.execute_batch(
        "PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
    )
    .map_err(|e| fail(format!("setting up: {e}")))?;
    schema::migrate(&mut conn).map_err(fail)?;
    conn.execute_batch(schema::INDEXES).map_err(|e| fail(format!("creating indexes: {e}")))?;
    Ok(conn)
}

/// One write of a batch ([`Store::apply`]).
#[derive(Debug, Clone)]
pub enum Op {
    /// A new session with its sealed metadata.
    Create { id: String, created: f64, meta: Vec<u8> },
    /// A chunk (block or event) of a session.
    Chunk { session: String, kind: Kind, seq: u64, plain: Vec<u8> },
    /// The session ended in `state` at `stopped` (Unix seconds).
    Finish { session: String, state: String, stopped: f64 },
}

/// (ε, δ) of a privacy budget.
pub type Budget = (f64, f64);

/// Chunks in order, each opened or failed on its own.
pub type Chunks = Vec<(u64, Result<Vec<u8>, StoreError>)>;

/// See [`Store::facts`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoreFacts {
    /// The last audit entry's number and MAC.
    pub audit_head: Option<(u64, Vec<u8>)>,
    /// Unix time of the last backup the audit log records as done.
    pub last_backup: Option<f64>,
    /// The most ε any subject has spent.
    pub max_epsilon_spent: f64,
    /// Unix time of the last truncating checkpoint since the store was opened (at the daemon's
    /// start, after deletions, restores and key rotations; SQLite checkpoints on its own too).
    pub last_checkpoint: Option<f64>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    master: Arc<MasterKey>,
    ciphers: HashMap<String, SessionCipher>,
    /// The progress handler's argument; after `conn`, so that it is freed after the connection
    /// that calls it has closed.
    progress: Option<Progress>,
    /// Unix time of the last truncating checkpoint of this connection.
    last_checkpoint: Option<f64>,
}

/// A boxed progress callback owned by the store (see [`Store::on_progress`]).
struct Progress(*mut Box<dyn Fn() + Send + Sync>);

// SAFETY: the box is `Send + Sync` itself; the raw pointer only stops the compiler seeing that.
unsafe impl Send for Progress {}

impl Drop for Progress {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw in on_progress, freed once, here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database { path: self.path.clone(), message: e.to_string() }
    }

    /// Opens (or creates) the store at `path`, migrating it to the current schema.
    pub fn open(path: &Path, master: Arc<MasterKey>) -> Result<Store, StoreError> {
        Ok(Store {
            conn: connect(path)?,
            path: path.to_path_buf(),
            master,
            ciphers: HashMap::new(),
            progress: None,
            last_checkpoint: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `beat` every few thousand SQLite instructions, however long a statement runs: a
    /// long delete or restore shows progress, a write waiting for another process's lock does
    /// not (the daemon's watchdog heartbeat). `beat` must not panic.
    ///
    /// Through SQLite's C API: rusqlite's `progress_handler` needs SQLite 3.44 (client data),
    /// and Debian 12 has 3.40.
    pub fn on_progress(&mut self, beat: Box<dyn Fn() + Send + Sync>) {
        unsafe extern "C" fn call(arg: *mut std::ffi::c_void) -> std::ffi::c_int {
            // SAFETY: `arg` is the `Progress` box registered below, alive while the connection is.
            let beat = unsafe { &*(arg as *const Box<dyn Fn() + Send + Sync>) };
            beat();
            0 // go on
        }
        let progress = Progress(Box::into_raw(Box::new(beat)));
        // SAFETY: the handle is this open connection's; the argument outlives it (`progress` is
        // dropped after `conn`, see the field order), and SQLite calls the handler only on the
        // thread running a statement of this connection, which owns the store.
        unsafe {
            rusqlite::ffi::sqlite3_progress_handler(self.conn.handle(), 10_000, Some(call), progress.0.cast());
        }
        self.progress = Some(progress);
    }

    /// The master key in use.
    pub fn master(&self) -> &Arc<MasterKey> {
        &self.master
    }

    /// Creates a session with its own data key; `meta` (the recording's description) is sealed.
    pub fn create_session(&mut self, id: &str, created: f64, meta: &[u8]) -> Result<(), StoreError> {
        self.apply(&[Op::Create { id: id.to_string(), created, meta: meta.to_vec() }])
    }

    /// Applies `ops` in one transaction: all or nothing. Sealing happens before the transaction.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let created: Vec<String> =
            ops.iter().filter_map(|op| if let Op::Create { id, .. } = op { Some(id.clone()) } else { None }).collect();
        let result = self.apply_rows(ops);
        if result.is_err() {
            // A session whose creation did not commit has no key in the store: forget it here too.
            for id in created {
                self.ciphers.remove(&id);
            }
        }
        result
    }

    fn apply_rows(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        enum Row {
            Create { id: String, created: f64, meta: Vec<u8>, nonce: Vec<u8>, key: Vec<u8> },
            Chunk { table: &'static str, session: String, seq: u64, data: Vec<u8> },
            Finish { session: String, state: String, stopped: f64 },
        }
        let mut rows = Vec::with_capacity(ops.len());
        for op in ops {
            rows.push(match op {
                Op::Create { id, created, meta } => {
                    let wrapped = seal::new_wrapped_key(&self.master, id).map_err(|e| self.err(e))?;
                    let cipher = seal::unwrap(&self.master, id, &wrapped)
                        .map_err(|_| StoreError::Key { session: id.clone() })?;
                    let sealed = cipher.seal(Kind::Meta, 0, meta);
                    self.ciphers.insert(id.clone(), cipher);
                    Row::Create {
                        id: id.clone(),
                        created: *created,
                        meta: sealed,
                        nonce: wrapped.nonce.to_vec(),
                        key: wrapped.sealed,
                    }
                }
                Op::Chunk { session, kind, seq, plain } => {
                    let table = match kind {
                        Kind::Block => "blocks",
                        Kind::Event => "events",
                        Kind::Meta => return Err(self.err("metadata is written with the session")),
                    };
                    let data = self.cipher(session)?.seal(*kind, *seq, plain);
                    Row::Chunk { table, session: session.clone(), seq: *seq, data }
                }
                Op::Finish { session, state, stopped } => {
                    Row::Finish { session: session.clone(), state: state.clone(), stopped: *stopped }
                }
            });
        }
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full { path: path.clone() },
            _ => StoreError::Database { path: path.clone(), message: format!("writing: {e}") },
        };
        let tx = self.conn.transaction().map_err(fail)?;
        for row in rows {
            match row {
                Row::Create { id, created, meta, nonce, key } => {
                    tx.execute(
                        "INSERT INTO sessions (id, created, state, meta) VALUES (?1, ?2, 'recording', ?3)",
                        params![id, created, meta],
                    )
                    .and_then(|_| {
                        tx.execute(
                            "INSERT INTO session_keys (session, nonce, sealed) VALUES (?1, ?2, ?3)",
                            params![id, nonce, key],
                        )
                    })
                    .map_err(fail)?;
                }
                Row::Chunk { table, session, seq, data } => {
                    tx.execute(
                        &format!("INSERT INTO {table} (session, seq, data) VALUES (?1, ?2, ?3)"),
                        params![session, seq as i64, data],
                    )
                    .map_err(fail)?;
                }
                Row::Finish { session, state, stopped } => {
                    tx.execute(
                        "UPDATE sessions SET state = ?2, stopped = ?3 WHERE id = ?1",
                        params![session, state, stopped],
                    )
                    .map_err(fail)?;
                }
            }
        }
        tx.commit().map_err(fail)
    }

    /// Sessions left `recording` by a daemon that did not stop them (a crash, `kill -9`, power
    /// loss) become `interrupted`; returns their ids.
    pub fn mark_interrupted(&mut self) -> Result<Vec<String>, StoreError> {
        let ids = {
            let mut stmt =
                self.conn.prepare("SELECT id FROM sessions WHERE state = 'recording'").map_err(|e| self.err(e))?;
            let ids: Vec<String> =
                stmt.query_map([], |r| r.get(0)).and_then(|it| it.collect()).map_err(|e| self.err(e))?;
            ids
        };
        self.conn
            .execute("UPDATE sessions SET state = 'interrupted' WHERE state = 'recording'", [])
            .map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// Sessions that ended (any state but `recording`) before `cutoff` (Unix seconds; a session
    /// without a stop time counts from its creation), oldest first.
    pub fn ended_before(&self, cutoff: f64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id FROM sessions WHERE state != 'recording' AND coalesce(stopped, created) < ?1
                 ORDER BY coalesce(stopped, created)",
            )
            .map_err(|e| self.err(e))?;
        let ids = stmt.query_map([cutoff], |r| r.get(0)).and_then(|it| it.collect()).map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// A stored session's state (`recording`, `stopped`, `finished`, `failed`, `interrupted`).
    pub fn state(&self, session: &str) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT state FROM sessions WHERE id = ?1", [session], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoSession(session.to_string()))
    }

    fn cipher(&mut self, session: &str) -> Result<&SessionCipher, StoreError> {
        session_cipher(&self.conn, &self.path, &self.master, &mut self.ciphers, session)
    }

    /// Seals and stores `chunks` (sequence number, plaintext) of one kind in one transaction.
    pub fn append(&mut self, session: &str, kind: Kind, chunks: &[(u64, &[u8])]) -> Result<(), StoreError> {
        let sealed: Vec<(u64, Vec<u8>)> = {
            let cipher = self.cipher(session)?;
            chunks.iter().map(|&(seq, plain)| (seq, cipher.seal(kind, seq, plain))).collect()
        };
        let table = match kind {
            Kind::Block => "blocks",
            Kind::Event => "events",
            Kind::Meta => return Err(self.err("metadata is written with the session")),
        };
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| StoreError::Database {
            path: path.clone(),
            message: format!("session {session}: writing {table}: {e}"),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        {
            let mut stmt =
                tx.prepare(&format!("INSERT INTO {table} (session, seq, data) VALUES (?1, ?2, ?3)")).map_err(fail)?;
            for (seq, data) in &sealed {
                stmt.execute(params![session, *seq as i64, data]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    /// Every chunk of one kind, in order, each opened on its own: a damaged chunk is an error in
    /// its place and the others still read. Holds them all in memory: for long sessions, see
    /// [`Store::for_each`].
    pub fn read_all(&mut self, session: &str, kind: Kind) -> Result<Chunks, StoreError> {
        let mut all = Vec::new();
        self.for_each(session, kind, |seq, chunk| {
            all.push((seq, chunk));
            ControlFlow::<()>::Continue(())
        })?;
        Ok(all)
    }

    /// Calls `f` with every chunk of one kind of `session`, in sequence order, one at a time
    /// (nothing is collected), each opened on its own as [`Store::read_all`] does; `f` may stop the
    /// walk by returning `Break`, whose value is then returned (`None`: every chunk was seen).
    pub fn for_each<B>(
        &mut self,
        session: &str,
        kind: Kind,
        f: impl FnMut(u64, Result<Vec<u8>, StoreError>) -> ControlFlow<B>,
    ) -> Result<Option<B>, StoreError> {
        for_each_chunk(&self.conn, &self.path, &self.master, &mut self.ciphers, session, kind, f)
    }

    /// A read-only connection of its own to this store's file, with the same master key
    /// ([`StoreReader`]).
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        StoreReader::open(&self.path, Arc::clone(&self.master))
    }

    /// Session ids, oldest first.
    pub fn sessions(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id FROM sessions ORDER BY created, id").map_err(|e| self.err(e))?;
        let ids = stmt.query_map([], |r| r.get(0)).and_then(|it| it.collect()).map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// Deletes a session for good: its wrapped key first (from then on its chunks are noise to
    /// anyone), then its rows, with `secure_delete` zeroing the freed pages; then the WAL is
    /// checkpointed and truncated so no older page image of the session survives in it.
    pub fn delete_session(&mut self, session: &str) -> Result<(), StoreError> {
        self.delete_session_rows(session)?;
        // The session is gone; a WAL still holding its old pages is truncated at the next
        // checkpoint if a reader (a backup) keeps this one from completing.
        if let Err(e) = self.checkpoint() {
            log::warn!("{e}");
        }
        Ok(())
    }

    /// [`Store::delete_session`] but the checkpoint: for a caller that knows readers hold the WAL
    /// now (a checkpoint would wait for them) and checkpoints when they are done.
    pub fn delete_session_rows(&mut self, session: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| StoreError::Database {
            path: path.clone(),
            message: format!("deleting session {session}: {e}"),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        let keys = tx.execute("DELETE FROM session_keys WHERE session = ?1", [session]).map_err(fail)?;
        if keys == 0
            && tx
                .query_row("SELECT 1 FROM sessions WHERE id = ?1", [session], |_| Ok(()))
                .optional()
                .map_err(fail)?
                .is_none()
        {
            return Err(StoreError::NoSession(session.to_string()));
        }
        tx.execute("DELETE FROM blocks WHERE session = ?1", [session]).map_err(fail)?;
        tx.execute("DELETE FROM events WHERE session = ?1", [session]).map_err(fail)?;
        tx.execute("DELETE FROM sessions WHERE id = ?1", [session]).map_err(fail)?;
        tx.commit().map_err(fail)?;
        self.ciphers.remove(session);
        Ok(())
    }

    /// Copies the WAL into the database and truncates it to zero bytes.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        let (busy, _, _): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(format!("checkpointing the WAL: {e}")))?;
        if busy != 0 {
            return Err(
                self.err("checkpointing the WAL: a reader kept it busy; retry when backups and exports are done")
            );
        }
        self.last_checkpoint =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
        Ok(())
    }

    /// Re-wraps every session key under `new` in one transaction; afterwards only `new` opens the
    /// store. Returns the number of sessions.
    pub fn rotate_master(&mut self, new: Arc<MasterKey>) -> Result<usize, StoreError> {
        let secrets: Vec<(String, Vec<u8>, Vec<u8>)> = {
            let mut stmt = self.conn.prepare("SELECT name, nonce, sealed FROM secrets").map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|it| it.collect())
                .map_err(|e| self.err(e))?;
            rows
        };
        let mut rewrapped_secrets = Vec::new();
        for (name, nonce, sealed) in secrets {
            let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Secret { name: name.clone() })?;
            let w = seal::rewrap(&self.master, &new, &format!("secret:{name}"), &WrappedKey { nonce, sealed })
                .map_err(|_| StoreError::Secret { name: name.clone() })?;
            rewrapped_secrets.push((name, w));
        }
        let rows: Vec<(String, Vec<u8>, Vec<u8>)> = {
            let mut stmt =
                self.conn.prepare("SELECT session, nonce, sealed FROM session_keys").map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|it| it.collect())
                .map_err(|e| self.err(e))?;
            rows
        };
        let mut rewrapped = Vec::with_capacity(rows.len());
        for (session, nonce, sealed) in rows {
            let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Key { session: session.clone() })?;
            let w =
                seal::rewrap(&self.master, &new, &session, &WrappedKey { nonce, sealed }).map_err(|e| self.err(e))?;
            rewrapped.push((session, w));
        }
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| StoreError::Database {
            path: path.clone(),
            message: format!("rotating the master key: {e}"),
        };
        let tx = self.conn.transaction().map_err(fail)?;
        for (name, w) in &rewrapped_secrets {
            tx.execute(
                "UPDATE secrets SET nonce = ?2, sealed = ?3 WHERE name = ?1",
                params![name, &w.nonce[..], w.sealed],
            )
            .map_err(fail)?;
        }
        for (session, w) in &rewrapped {
            tx.execute(
                "UPDATE session_keys SET nonce = ?2, sealed = ?3 WHERE session = ?1",
                params![session, &w.nonce[..], w.sealed],
            )
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        self.master = new;
        self.ciphers.clear();
        Ok(rewrapped.len())
    }

    /// The audit log's MAC key, created (random, wrapped by the master key) on first use.
    fn audit_key(&mut self) -> Result<ring::hmac::Key, StoreError> {
        const NAME: &str = "audit";
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row("SELECT nonce, sealed FROM secrets WHERE name = ?1", [NAME], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let wrapped = match row {
            Some((nonce, sealed)) => {
                let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Secret { name: NAME.into() })?;
                WrappedKey { nonce, sealed }
            }
            None => {
                let w = seal::new_wrapped_key(&self.master, &format!("secret:{NAME}")).map_err(|e| self.err(e))?;
                self.conn
                    .execute(
                        "INSERT INTO secrets (name, nonce, sealed) VALUES (?1, ?2, ?3)",
                        params![NAME, &w.nonce[..], w.sealed],
                    )
                    .map_err(|e| self.err(e))?;
                w
            }
        };
        let bytes = seal::unwrap_bytes(&self.master, &format!("secret:{NAME}"), &wrapped)
            .map_err(|_| StoreError::Secret { name: NAME.into() })?;
        Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes[..]))
    }

    /// Appends an audit entry chained to the last one; returns it (with its sequence number and MAC).
    pub fn audit_append(
        &mut self,
        t: f64,
        uid: u32,
        pid: Option<u32>,
        action: &str,
        object: &str,
        outcome: &str,
    ) -> Result<AuditEntry, StoreError> {
        let key = self.audit_key()?;
        let last: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let (seq, prev) = match last {
            Some((s, m)) => (s as u64 + 1, m),
            None => (1, audit::GENESIS.to_vec()),
        };
        let mut entry = AuditEntry {
            seq,
            t,
            uid,
            pid,
            action: action.into(),
            object: object.into(),
            outcome: outcome.into(),
            mac: Vec::new(),
        };
        entry.mac = audit::mac(&key, &prev, &entry);
        self.conn
            .execute(
                "INSERT INTO audit (seq, t, uid, pid, action, object, outcome, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![seq as i64, t, uid, pid, action, object, outcome, entry.mac],
            )
            .map_err(|e| self.err(format!("writing audit entry {seq}: {e}")))?;
        Ok(entry)
    }

    /// Audit entries in order, those at or after `since` (Unix seconds) when given.
    pub fn audit_list(&self, since: Option<f64>) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, t, uid, pid, action, object, outcome, mac FROM audit WHERE t >= ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since.unwrap_or(f64::NEG_INFINITY)], |r| {
                Ok(AuditEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    t: r.get(1)?,
                    uid: r.get(2)?,
                    pid: r.get(3)?,
                    action: r.get(4)?,
                    object: r.get(5)?,
                    outcome: r.get(6)?,
                    mac: r.get(7)?,
                })
            })
            .and_then(|it| it.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// What `health` and the metrics tell of the store: the audit log's head, the last backup
    /// the audit log records as done, and the most of the ε budget any subject has spent.
    pub fn facts(&self) -> Result<StoreFacts, StoreError> {
        let head: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let last_backup: Option<f64> = self
            .conn
            .query_row(
                "SELECT max(t) FROM audit INDEXED BY audit_by_action WHERE action = 'backup' AND outcome LIKE 'ok%'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let max_epsilon: Option<f64> =
            self.conn.query_row("SELECT max(epsilon) FROM dp_budget", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(StoreFacts {
            audit_head: head.map(|(seq, mac)| (seq as u64, mac)),
            last_backup,
            max_epsilon_spent: max_epsilon.unwrap_or(0.0),
            last_checkpoint: self.last_checkpoint,
        })
    }

    /// Checks the whole chain: the number of entries, or the first break.
    pub fn audit_verify(&mut self) -> Result<Result<usize, Break>, StoreError> {
        let key = self.audit_key()?;
        let entries = self.audit_list(None)?;
        Ok(audit::verify(&key, &entries).map(|()| entries.len()))
    }

    /// Whether the master key opens this store (it unwraps the audit key, or else a session key;
    /// an empty store accepts any key).
    pub fn master_opens(&mut self) -> Result<bool, StoreError> {
        let secret: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row("SELECT nonce, sealed FROM secrets WHERE name = 'audit'", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((nonce, sealed)) = secret {
            let Ok(nonce) = <[u8; 12]>::try_from(nonce) else { return Ok(false) };
            return Ok(seal::unwrap_bytes(&self.master, "secret:audit", &WrappedKey { nonce, sealed }).is_ok());
        }
        let first: Option<(String, Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row("SELECT session, nonce, sealed FROM session_keys LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match first {
            None => true,
            Some((session, nonce, sealed)) => <[u8; 12]>::try_from(nonce)
                .map(|nonce| seal::unwrap_bytes(&self.master, &session, &WrappedKey { nonce, sealed }).is_ok())
                .unwrap_or(false),
        })
    }

    /// Copies the store at `db` to `dst` (an existing empty file, or a new path) with SQLite's
    /// online backup, in one step: a consistent snapshot, taken on a connection of its own, so
    /// recording goes on meanwhile. The copy stays encrypted: it needs the same master key.
    /// Returns the pages copied.
    pub fn backup(db: &Path, dst: &Path) -> Result<i32, StoreError> {
        let fail = |m: String| StoreError::Database { path: db.to_path_buf(), message: m };
        let src = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(format!("opening for backup: {e}")))?;
        let mut out = Connection::open(dst).map_err(|e| fail(format!("backup to {}: {e}", dst.display())))?;
        let backup = rusqlite::backup::Backup::new(&src, &mut out).map_err(|e| fail(format!("backup: {e}")))?;
        match backup.step(-1).map_err(|e| fail(format!("backup: {e}")))? {
            rusqlite::backup::StepResult::Done => Ok(backup.progress().pagecount),
            other => Err(fail(format!("backup did not complete ({other:?}); try again"))),
        }
    }

    /// Replaces this store's sessions (their keys, blocks and events) with those of the backup at
    /// `src`, after checking that it is a store this master key opens and that it passes SQLite's
    /// integrity check. `src` is migrated to the current schema first, so it must be a copy the
    /// daemon owns. The audit log, the privacy budgets and the audit key stay this store's own: a
    /// restore neither rewrites history nor gives back spent budget. Sessions that were recording
    /// when the backup was taken become `interrupted`.
    pub fn restore(&mut self, src: &Path) -> Result<(), StoreError> {
        let fail = |m: String| StoreError::Database { path: src.to_path_buf(), message: m };
        {
            let mut candidate = Store::open(src, Arc::clone(&self.master))?;
            if !candidate.master_opens()? {
                return Err(fail("this backup was written under another master key; restore needs that key".into()));
            }
            let check = candidate.integrity_check()?;
            if check != "ok" {
                return Err(fail(format!("the backup fails SQLite's integrity check: {check}")));
            }
            candidate.checkpoint()?;
        }
        self.conn
            .execute("ATTACH DATABASE ?1 AS restored", [src.to_string_lossy()])
            .map_err(|e| fail(format!("opening the backup: {e}")))?;
        let copied = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            tx.execute_batch(
                "DELETE FROM main.blocks; DELETE FROM main.events; DELETE FROM main.session_keys; DELETE FROM main.sessions;
                 INSERT INTO main.sessions SELECT * FROM restored.sessions;
                 INSERT INTO main.session_keys SELECT * FROM restored.session_keys;
                 INSERT INTO main.blocks SELECT * FROM restored.blocks;
                 INSERT INTO main.events SELECT * FROM restored.events;",
            )?;
            tx.commit()
        })();
        let _ = self.conn.execute("DETACH DATABASE restored", []);
        copied.map_err(|e| fail(format!("restore: {e}")))?;
        self.ciphers.clear();
        self.mark_interrupted()?;
        self.checkpoint()
    }

    /// Spends (ε, δ) of `subject`'s privacy budget, in one transaction: refused (nothing spent)
    /// when the totals would exceed the limits. Returns the totals spent, this release included
    /// (`Ok(Err(spent so far))` when refused).
    pub fn dp_spend(
        &mut self,
        subject: &str,
        epsilon: f64,
        delta: f64,
        limit: Budget,
    ) -> Result<Result<Budget, Budget>, StoreError> {
        let path = self.path.clone();
        let fail =
            |e: rusqlite::Error| StoreError::Database { path: path.clone(), message: format!("privacy budget: {e}") };
        let tx = self.conn.transaction().map_err(fail)?;
        let spent: (f64, f64) = tx
            .query_row("SELECT epsilon, delta FROM dp_budget WHERE subject = ?1", [subject], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(fail)?
            .unwrap_or((0.0, 0.0));
        let total = (spent.0 + epsilon, spent.1 + delta);
        // A little slack for floating-point sums of budgets meant to add up exactly.
        if total.0 > limit.0 * (1.0 + 1e-9) || total.1 > limit.1 * (1.0 + 1e-9) {
            return Ok(Err(spent));
        }
        tx.execute(
            "INSERT INTO dp_budget (subject, epsilon, delta) VALUES (?1, ?2, ?3)
             ON CONFLICT(subject) DO UPDATE SET epsilon = ?2, delta = ?3",
            params![subject, total.0, total.1],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Ok(total))
    }

    /// `PRAGMA integrity_check`: "ok" or SQLite's list of problems.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// For tests and tools: the raw connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The table holding chunks of `kind` (`None` for metadata, a column of `sessions`).
fn chunk_table(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Block => Some("blocks"),
        Kind::Event => Some("events"),
        Kind::Meta => None,
    }
}

/// The data key of `session`, unwrapped with `master` once and kept in `ciphers`.
fn session_cipher<'c>(
    conn: &Connection,
    path: &Path,
    master: &MasterKey,
    ciphers: &'c mut HashMap<String, SessionCipher>,
    session: &str,
) -> Result<&'c SessionCipher, StoreError> {
    if !ciphers.contains_key(session) {
        let row: Option<(Vec<u8>, Vec<u8>)> = conn
            .query_row("SELECT nonce, sealed FROM session_keys WHERE session = ?1", [session], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| StoreError::Database { path: path.to_path_buf(), message: e.to_string() })?;
        let (nonce, sealed) = row.ok_or_else(|| StoreError::NoSession(session.to_string()))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Key { session: session.into() })?;
        let cipher = seal::unwrap(master, session, &WrappedKey { nonce, sealed })
            .map_err(|_| StoreError::Key { session: session.into() })?;
        ciphers.insert(session.to_string(), cipher);
    }
    Ok(&ciphers[session])
}

/// Opens one stored chunk: the one place where a chunk read back is authenticated.
fn open_chunk(
    cipher: &SessionCipher,
    session: &str,
    kind: Kind,
    seq: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    cipher.open(kind, seq, sealed).map_err(|_| StoreError::Chunk { session: session.to_string(), kind, seq })
}

/// Walks the chunks of one kind of `session` in sequence order, opening each as it is read: at
/// most one chunk is held at a time. A session the store does not have is `NoSession` (before
/// `f` is called), a data key that does not open `Key`.
fn for_each_chunk<B>(
    conn: &Connection,
    path: &Path,
    master: &MasterKey,
    ciphers: &mut HashMap<String, SessionCipher>,
    session: &str,
    kind: Kind,
    mut f: impl FnMut(u64, Result<Vec<u8>, StoreError>) -> ControlFlow<B>,
) -> Result<Option<B>, StoreError> {
    let fail = |e: rusqlite::Error| StoreError::Database { path: path.to_path_buf(), message: e.to_string() };
    let Some(table) = chunk_table(kind) else {
        let meta: Option<Vec<u8>> = conn
            .query_row("SELECT meta FROM sessions WHERE id = ?1", [session], |r| r.get(0))
            .optional()
            .map_err(fail)?;
        let meta = meta.ok_or_else(|| StoreError::NoSession(session.into()))?;
        let cipher = session_cipher(conn, path, master, ciphers, session)?;
        return Ok(f(0, open_chunk(cipher, session, kind, 0, &meta)).break_value());
    };
    let cipher = session_cipher(conn, path, master, ciphers, session)?;
    let mut stmt =
        conn.prepare(&format!("SELECT seq, data FROM {table} WHERE session = ?1 ORDER BY seq")).map_err(fail)?;
    let mut rows = stmt.query([session]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let seq = row.get::<_, i64>(0).map_err(fail)? as u64;
        let sealed = row.get_ref(1).and_then(|v| v.as_blob().map_err(Into::into)).map_err(fail)?;
        if let ControlFlow::Break(b) = f(seq, open_chunk(cipher, session, kind, seq, sealed)) {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// A read-only connection of its own to a store's file, for long reads (exports) on the calling
/// thread while the writer goes on (WAL lets readers and one writer work at once). It reads one
/// snapshot: the store as it was committed when the reader was opened, until it is dropped
/// (meanwhile a checkpoint cannot truncate the WAL: keep readers short-lived). Chunks are opened
/// with the master key given, as [`Store`] opens them.
pub struct StoreReader {
    conn: Connection,
    path: PathBuf,
    master: Arc<MasterKey>,
    ciphers: HashMap<String, SessionCipher>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StoreReader {
    /// Opens the existing store at `path` read-only and begins its snapshot. The store must have
    /// this build's schema (the writer's [`Store::open`] migrates it).
    pub fn open(path: &Path, master: Arc<MasterKey>) -> Result<StoreReader, StoreError> {
        let fail = |m: String| StoreError::Database { path: path.to_path_buf(), message: m };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(format!("opening for reading: {e}")))?;
        // The snapshot starts with the transaction's first read.
        conn.execute_batch("BEGIN").map_err(|e| fail(format!("beginning a read: {e}")))?;
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(format!("reading the schema version: {e}")))?;
        if version != schema::current_version() {
            return Err(fail(format!(
                "the database has schema version {version}; this reader needs {} (the daemon's writer migrates it)",
                schema::current_version()
            )));
        }
        Ok(StoreReader { conn, path: path.to_path_buf(), master, ciphers: HashMap::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// As [`Store::state`].
    pub fn state(&self, session: &str) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT state FROM sessions WHERE id = ?1", [session], |r| r.get(0))
            .optional()
            .map_err(|e| StoreError::Database { path: self.path.clone(), message: e.to_string() })?
            .ok_or_else(|| StoreError::NoSession(session.to_string()))
    }

    /// As [`Store::read_all`].
    pub fn read_all(&mut self, session: &str, kind: Kind) -> Result<Chunks, StoreError> {
        let mut all = Vec::new();
        self.for_each(session, kind, |seq, chunk| {
            all.push((seq, chunk));
            ControlFlow::<()>::Continue(())
        })?;
        Ok(all)
    }

    /// As [`Store::for_each`]: one chunk at a time, in sequence order.
    pub fn for_each<B>(
        &mut self,
        session: &str,
        kind: Kind,
        f: impl FnMut(u64, Result<Vec<u8>, StoreError>) -> ControlFlow<B>,
    ) -> Result<Option<B>, StoreError> {
        for_each_chunk(&self.conn, &self.path, &self.master, &mut self.ciphers, session, kind, f)
    }

    /// One chunk by its sequence number, opened: `None` when the session has no such chunk, a
    /// `Chunk` error when it fails authentication. For many, [`StoreReader::lookup`].
    pub fn chunk(&mut self, session: &str, kind: Kind, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.lookup(session, kind)?.get(seq)
    }

    /// Chunks of one kind of `session` by sequence number, in any order, through one prepared
    /// statement (a session the store does not have is `NoSession` here).
    pub fn lookup(&mut self, session: &str, kind: Kind) -> Result<ChunkLookup<'_>, StoreError> {
        session_cipher(&self.conn, &self.path, &self.master, &mut self.ciphers, session)?;
        let sql = match chunk_table(kind) {
            Some(table) => format!("SELECT data FROM {table} WHERE session = ?1 AND seq = ?2"),
            None => "SELECT meta FROM sessions WHERE id = ?1 AND ?2 = 0".to_string(),
        };
        let stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| StoreError::Database { path: self.path.clone(), message: e.to_string() })?;
        Ok(ChunkLookup { stmt, cipher: &self.ciphers[session], session: session.to_string(), kind, path: &self.path })
    }
}

/// Chunks of one session and kind by sequence number ([`StoreReader::lookup`]).
pub struct ChunkLookup<'r> {
    stmt: rusqlite::Statement<'r>,
    cipher: &'r SessionCipher,
    session: String,
    kind: Kind,
    path: &'r Path,
}

impl std::fmt::Debug for ChunkLookup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkLookup").field("session", &self.session).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl ChunkLookup<'_> {
    /// Chunk `seq`, opened: `None` when there is none, a `Chunk` error when it fails
    /// authentication.
    pub fn get(&mut self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path;
        let fail = |e: rusqlite::Error| StoreError::Database { path: path.to_path_buf(), message: e.to_string() };
        let mut rows = self.stmt.query(params![self.session, seq as i64]).map_err(fail)?;
        match rows.next().map_err(fail)? {
            None => Ok(None),
            Some(row) => {
                let sealed = row.get_ref(0).and_then(|v| v.as_blob().map_err(Into::into)).map_err(fail)?;
                open_chunk(self.cipher, &self.session, self.kind, seq, sealed).map(Some)
            }
        }
    }
}

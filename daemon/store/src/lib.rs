//! The session store of bci2tokend: SQLite (WAL, foreign keys, `secure_delete`) holding every
//! session's sample blocks and events encrypted.
//!
//! - [`keys`]: the master key (a systemd credential or a 0600 key file), held in `zeroize` memory,
//!   locked with `mlock` where allowed, never printed.
//! - [`seal`]: AES-256-GCM with a random data key per session, wrapped by the master key; every
//!   chunk's nonce and associated data bind it to its session, its kind and its sequence number.
//! - [`schema`]: the tables and the migration ladder.
//! - [`store`]: sessions, blocks and events in and out, and deletion that destroys the session's
//!   key first (crypto-shredding), then its rows, then checkpoints and truncates the WAL. Long
//!   reads (exports) walk a session chunk by chunk ([`Store::for_each`]) on a read-only connection
//!   of their own ([`StoreReader`]), off the writer's thread.

pub mod audit;
pub mod keys;
pub mod schema;
pub mod seal;
pub mod store;

pub use keys::MasterKey;
pub use store::{ChunkLookup, Op, Store, StoreError, StoreFacts, StoreReader};

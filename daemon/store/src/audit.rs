//! The audit log: append-only entries (time, caller uid/pid, action, object, outcome), each
//! carrying an HMAC-SHA256 over its own fields and the previous entry's MAC, under an audit key
//! that is kept wrapped by the master key (so rotating the master key keeps the chain valid).
//!
//! [`verify`](crate::Store::audit_verify) walks the chain and names the first entry that breaks
//! it, and how: edited (its MAC does not match its fields), deleted (a sequence number is
//! missing), or moved (its MAC matches another position in the chain).
//!
//! What the chain cannot show by itself: the loss of the newest entries (a truncated tail). The
//! daemon writes each new entry's sequence number and MAC to its log (the journal), which anchors
//! the head outside the database.

use ring::hmac;

/// One entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub t: f64,
    pub uid: u32,
    pub pid: Option<u32>,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub mac: Vec<u8>,
}

/// The MAC of the first entry's predecessor.
pub const GENESIS: [u8; 32] = [0; 32];

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The MAC of an entry's fields chained to `prev` (length-prefixed, so no two field lists encode
/// alike).
pub fn mac(key: &hmac::Key, prev: &[u8], e: &AuditEntry) -> Vec<u8> {
    let mut msg = b"bci2token audit v1\0".to_vec();
    field(&mut msg, prev);
    field(&mut msg, &e.seq.to_be_bytes());
    field(&mut msg, &e.t.to_bits().to_be_bytes());
    field(&mut msg, &e.uid.to_be_bytes());
    field(&mut msg, &e.pid.map_or(u64::MAX, u64::from).to_be_bytes());
    field(&mut msg, e.action.as_bytes());
    field(&mut msg, e.object.as_bytes());
    field(&mut msg, e.outcome.as_bytes());
    hmac::sign(key, &msg).as_ref().to_vec()
}

/// The first break in a chain, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Entry `seq`'s fields or MAC were changed.
    Edited { seq: u64 },
    /// Entries `from..=to` are missing (deleted) before entry `to + 1`.
    Deleted { from: u64, to: u64 },
    /// The entry stored as `seq` was written as entry `written_as` (entries were reordered).
    Moved { seq: u64, written_as: u64 },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Edited { seq } => write!(f, "audit entry {seq} was altered: its MAC does not match its contents"),
            Break::Deleted { from, to } if from == to => write!(f, "audit entry {from} was deleted"),
            Break::Deleted { from, to } => write!(f, "audit entries {from} to {to} were deleted"),
            Break::Moved { seq, written_as } => {
                write!(
                    f,
                    "audit entry {seq} is out of place: it was written as entry {written_as} (entries were reordered)"
                )
            }
        }
    }
}

/// Walks `entries` (in stored order) and returns the first break.
pub fn verify(key: &hmac::Key, entries: &[AuditEntry]) -> Result<(), Break> {
    let mut prev = GENESIS.to_vec();
    let mut expected = entries.first().map_or(1, |e| e.seq.min(1));
    for (i, e) in entries.iter().enumerate() {
        if e.seq > expected {
            return Err(Break::Deleted { from: expected, to: e.seq - 1 });
        }
        if mac(key, &prev, e) != e.mac {
            return Err(match written_as(key, entries, i) {
                Some(original) => Break::Moved { seq: e.seq, written_as: original },
                None => Break::Edited { seq: e.seq },
            });
        }
        prev = e.mac.clone();
        expected = e.seq + 1;
    }
    Ok(())
}

/// How far from a failing entry its true place is looked for.
const MOVE_WINDOW: usize = 16;

/// The sequence number entry `i` was written with, when its MAC matches it after some nearby
/// entry (or at the start): then its fields are intact and only its place changed.
fn written_as(key: &hmac::Key, entries: &[AuditEntry], i: usize) -> Option<u64> {
    let lo = i.saturating_sub(MOVE_WINDOW);
    let hi = (i + MOVE_WINDOW + 1).min(entries.len());
    let window = &entries[lo..hi];
    let e = &entries[i];
    let mut candidates: Vec<(&[u8], u64)> = vec![(&GENESIS[..], 1)];
    for p in window {
        for q in window {
            candidates.push((&p.mac, q.seq));
        }
    }
    candidates
        .into_iter()
        .find(|(prev, seq)| *seq != e.seq && mac(key, prev, &AuditEntry { seq: *seq, ..e.clone() }) == e.mac)
        .map(|(_, seq)| seq)
}

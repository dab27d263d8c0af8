//! AES-256-GCM for the store. Each session has its own random data key, kept only wrapped by
//! the master key. Chunks are sealed under the data key with a nonce made of the chunk's kind and
//! sequence number (unique per key: a (kind, seq) pair is a primary key, and no key outlives its
//! session), and with associated data naming the session, kind and sequence number, so a chunk
//! moved to another session or position fails to open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keys::{MasterKey, KEY_LEN};

/// What a sealed chunk holds; part of its nonce and associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The session's metadata (one chunk, seq 0).
    Meta = 1,
    /// A sample block.
    Block = 2,
    /// An event (annotation, gap, token, ...).
    Event = 3,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Meta => "metadata",
            Kind::Block => "block",
            Kind::Event => "event",
        }
    }
}

/// A sealed value that does not open: wrong key, altered, or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

/// A data key wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub nonce: [u8; NONCE_LEN],
    /// The data key encrypted, with its tag.
    pub sealed: Vec<u8>,
}

fn key_of(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key"))
}

fn wrap_aad(session: &str) -> Vec<u8> {
    let mut aad = b"bci2token data key v1\0".to_vec();
    aad.extend_from_slice(session.as_bytes());
    aad
}

/// A new random data key for `session`, wrapped by `master` (the key itself is not returned).
pub fn new_wrapped_key(master: &MasterKey, session: &str) -> Result<WrappedKey, String> {
    let rng = SystemRandom::new();
    let mut data = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(&mut data[..]).map_err(|_| "the system random generator failed".to_string())?;
    wrap(master, session, &data, &rng)
}

fn wrap(master: &MasterKey, session: &str, data: &[u8; KEY_LEN], rng: &SystemRandom) -> Result<WrappedKey, String> {
    let mut nonce = [0u8; NONCE_LEN];
    // Random nonces for wrapping: a master key wraps at most a few million keys, far from the
    // 2^32 random-nonce bound of GCM.
    rng.fill(&mut nonce).map_err(|_| "the system random generator failed".to_string())?;
    let mut sealed = data.to_vec();
    key_of(master.bytes())
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(wrap_aad(session)), &mut sealed)
        .map_err(|_| "sealing the data key failed".to_string())?;
    Ok(WrappedKey { nonce, sealed })
}

/// The data key of `session`, or an error when `master` is not the key that wrapped it (or the
/// wrapped key was altered or belongs to another session).
pub fn unwrap(master: &MasterKey, session: &str, wrapped: &WrappedKey) -> Result<SessionCipher, Unauthentic> {
    let key = unwrap_bytes(master, session, wrapped)?;
    Ok(SessionCipher { key: key_of(&key[..]), session: session.to_string() })
}

/// The raw key wrapped for `binding` (a session id, or `secret:NAME` for store-wide secrets).
pub fn unwrap_bytes(
    master: &MasterKey,
    binding: &str,
    wrapped: &WrappedKey,
) -> Result<Zeroizing<[u8; KEY_LEN]>, Unauthentic> {
    let mut buf = Zeroizing::new(wrapped.sealed.clone());
    let plain = key_of(master.bytes())
        .open_in_place(Nonce::assume_unique_for_key(wrapped.nonce), Aad::from(wrap_aad(binding)), &mut buf[..])
        .map_err(|_| Unauthentic)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(Unauthentic);
    }
    key.copy_from_slice(plain);
    Ok(key)
}

/// Re-wraps a data key under another master key (key rotation); the chunks stay as they are.
pub fn rewrap(old: &MasterKey, new: &MasterKey, session: &str, wrapped: &WrappedKey) -> Result<WrappedKey, String> {
    let mut buf = Zeroizing::new(wrapped.sealed.clone());
    let plain = key_of(old.bytes())
        .open_in_place(Nonce::assume_unique_for_key(wrapped.nonce), Aad::from(wrap_aad(session)), &mut buf[..])
        .map_err(|_| format!("session {session}: its data key does not open with the current master key"))?;
    let data: &[u8; KEY_LEN] =
        (&*plain).try_into().map_err(|_| format!("session {session}: a data key of the wrong size"))?;
    wrap(new, session, data, &SystemRandom::new())
}

/// Seals and opens one session's chunks.
pub struct SessionCipher {
    key: LessSafeKey,
    session: String,
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCipher").field("session", &self.session).finish_non_exhaustive()
    }
}

fn nonce(kind: Kind, seq: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&(kind as u32).to_be_bytes());
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn chunk_aad(session: &str, kind: Kind, seq: u64) -> Vec<u8> {
    let mut aad = b"bci2token chunk v1\0".to_vec();
    aad.extend_from_slice(session.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&(kind as u32).to_be_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad
}

impl SessionCipher {
    pub fn seal(&self, kind: Kind, seq: u64, plain: &[u8]) -> Vec<u8> {
        let mut out = plain.to_vec();
        self.key
            .seal_in_place_append_tag(nonce(kind, seq), Aad::from(chunk_aad(&self.session, kind, seq)), &mut out)
            .expect("AES-GCM sealing cannot fail for in-memory data");
        out
    }

    /// The plaintext, or `Err` when the chunk was altered, moved, or is not this session's.
    pub fn open(&self, kind: Kind, seq: u64, sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        let mut buf = sealed.to_vec();
        let n = self
            .key
            .open_in_place(nonce(kind, seq), Aad::from(chunk_aad(&self.session, kind, seq)), &mut buf)
            .map_err(|_| Unauthentic)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_open_only_in_their_place() {
        let master = MasterKey::generate().unwrap();
        let w = new_wrapped_key(&master, "s1").unwrap();
        let c = unwrap(&master, "s1", &w).unwrap();
        let sealed = c.seal(Kind::Block, 7, b"samples");
        assert_eq!(c.open(Kind::Block, 7, &sealed).unwrap(), b"samples");
        assert!(c.open(Kind::Block, 8, &sealed).is_err(), "another position");
        assert!(c.open(Kind::Event, 7, &sealed).is_err(), "another kind");
        let other = unwrap(&master, "s2", &new_wrapped_key(&master, "s2").unwrap()).unwrap();
        assert!(other.open(Kind::Block, 7, &sealed).is_err(), "another session");
        assert!(unwrap(&master, "s2", &w).is_err(), "a wrapped key bound to its session");
        assert!(unwrap(&MasterKey::generate().unwrap(), "s1", &w).is_err(), "another master key");
    }

    #[test]
    fn rewrapping_keeps_the_data_key() {
        let (old, new) = (MasterKey::generate().unwrap(), MasterKey::generate().unwrap());
        let w = new_wrapped_key(&old, "s").unwrap();
        let sealed = unwrap(&old, "s", &w).unwrap().seal(Kind::Event, 1, b"token");
        let w2 = rewrap(&old, &new, "s", &w).unwrap();
        assert_eq!(unwrap(&new, "s", &w2).unwrap().open(Kind::Event, 1, &sealed).unwrap(), b"token");
        assert!(unwrap(&old, "s", &w2).is_err());
    }
}

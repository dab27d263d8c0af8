//! The master key: 32 random bytes that wrap every session's data key.
//!
//! Where it comes from, in order: the systemd credential `$CREDENTIALS_DIRECTORY/master-key`
//! (`LoadCredentialEncrypted=` in the unit: the key then never rests in plain text on disk), else
//! the key file `<data_dir>/master.key`, created at first start with mode 0600 and refused later
//! if anyone but its owner can read it. Either holds the 32 bytes raw or as 64 hex digits.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Name of the credential and of the key file.
pub const CREDENTIAL_NAME: &str = "master-key";
pub const KEY_FILE_NAME: &str = "master.key";
/// A new key being rotated in: it replaces the key file only after the store is re-wrapped.
pub const NEXT_KEY_FILE_NAME: &str = "master.key.next";
pub const KEY_LEN: usize = 32;

/// Where the key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Credential(PathBuf),
    KeyFile { path: PathBuf, created: bool },
}

/// The master key. Zeroed when dropped; `Debug` never shows it.
pub struct MasterKey {
    bytes: Box<Zeroizing<[u8; KEY_LEN]>>,
    locked: bool,
    source: KeySource,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("source", &self.source).field("locked", &self.locked).finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        if self.locked {
            // SAFETY: the same region that was locked; it is still allocated (zeroed by Zeroizing
            // after this).
            let _ = unsafe { nix::sys::mman::munlock(self.ptr(), KEY_LEN) };
        }
    }
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new().fill(&mut bytes[..]).map_err(|_| "the system random generator failed".to_string())?;
    Ok(bytes)
}

fn write_key_file(path: &Path, key: &[u8; KEY_LEN]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: cannot create the master key file: {e}", path.display()))?;
    f.write_all(key).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(path: &Path, raw: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let trimmed = raw.trim_ascii();
    if raw.len() == KEY_LEN {
        key.copy_from_slice(raw);
    } else if trimmed.len() == 2 * KEY_LEN && trimmed.iter().all(u8::is_ascii_hexdigit) {
        for (i, pair) in trimmed.chunks_exact(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16).expect("checked hex digit") as u8;
            key[i] = hex(pair[0]) << 4 | hex(pair[1]);
        }
    } else {
        return Err(format!(
            "{}: a master key is 32 bytes, raw or as 64 hex digits; this file has {} bytes",
            path.display(),
            raw.len()
        ));
    }
    Ok(key)
}

impl MasterKey {
    fn new(key: Zeroizing<[u8; KEY_LEN]>, source: KeySource) -> MasterKey {
        let mut k = MasterKey { bytes: Box::new(key), locked: false, source };
        // Keep the key out of swap where the limits allow it (RLIMIT_MEMLOCK); not fatal.
        // SAFETY: a live heap allocation of KEY_LEN bytes that does not move (boxed).
        k.locked = unsafe { nix::sys::mman::mlock(k.ptr(), KEY_LEN) }.is_ok();
        k
    }

    fn ptr(&self) -> std::ptr::NonNull<std::ffi::c_void> {
        std::ptr::NonNull::from(&**self.bytes).cast()
    }

    /// A key from bytes (tests and key rotation).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey::new(Zeroizing::new(bytes), KeySource::Credential(PathBuf::new()))
    }

    /// A fresh random key (not stored anywhere).
    pub fn generate() -> Result<MasterKey, String> {
        Ok(MasterKey::new(random_key()?, KeySource::Credential(PathBuf::new())))
    }

    /// Loads the key: the credential if `credentials_dir` (`$CREDENTIALS_DIRECTORY`) has one,
    /// else `data_dir/master.key`, creating it (0600) if it does not exist.
    pub fn load(credentials_dir: Option<&Path>, data_dir: &Path) -> Result<MasterKey, String> {
        if let Some(dir) = credentials_dir {
            let path = dir.join(CREDENTIAL_NAME);
            if path.exists() {
                let raw = Zeroizing::new(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
                return Ok(MasterKey::new(parse(&path, &raw)?, KeySource::Credential(path)));
            }
        }
        let path = data_dir.join(KEY_FILE_NAME);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                if !meta.file_type().is_file() {
                    return Err(format!(
                        "{}: the master key must be a regular file, not a link or directory",
                        path.display()
                    ));
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "{}: the master key file has mode {mode:04o}; it must be readable by its owner only \
                         (chmod 600 {})",
                        path.display(),
                        path.display()
                    ));
                }
                if meta.uid() != nix::unistd::geteuid().as_raw() {
                    return Err(format!(
                        "{}: the master key file belongs to uid {}, not to the daemon's user (uid {})",
                        path.display(),
                        meta.uid(),
                        nix::unistd::geteuid()
                    ));
                }
                let raw = Zeroizing::new(std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?);
                Ok(MasterKey::new(parse(&path, &raw)?, KeySource::KeyFile { path, created: false }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_key()?;
                write_key_file(&path, &bytes)?;
                Ok(MasterKey::new(bytes, KeySource::KeyFile { path, created: true }))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the key to a new file with mode 0600 (fails if the file exists).
    pub fn write_new(&self, path: &Path) -> Result<(), String> {
        write_key_file(path, &self.bytes)
    }

    /// Starts a rotation: a new random key written to `data_dir/master.key.next` (0600). Only
    /// for key files; a credential is replaced by the administrator.
    pub fn begin_rotation(&self, data_dir: &Path) -> Result<MasterKey, String> {
        if let KeySource::Credential(path) = &self.source {
            return Err(format!(
                "the master key comes from the systemd credential {}; rotate it by storing the new key as that \
                 credential (systemd-creds encrypt) after re-wrapping offline, or use a key file",
                path.display()
            ));
        }
        let next = data_dir.join(NEXT_KEY_FILE_NAME);
        let _ = std::fs::remove_file(&next); // a leftover of an attempt that never reached the store
        let bytes = random_key()?;
        write_key_file(&next, &bytes)?;
        Ok(MasterKey::new(bytes, KeySource::KeyFile { path: next, created: true }))
    }

    /// Ends a rotation whose store transaction committed: the new key becomes the key file.
    pub fn finish_rotation(data_dir: &Path) -> Result<(), String> {
        let (next, key) = (data_dir.join(NEXT_KEY_FILE_NAME), data_dir.join(KEY_FILE_NAME));
        std::fs::rename(&next, &key).map_err(|e| format!("{}: {e}", next.display()))?;
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The key of a rotation that was interrupted, if any (`data_dir/master.key.next`).
    pub fn pending_rotation(data_dir: &Path) -> Result<Option<MasterKey>, String> {
        let next = data_dir.join(NEXT_KEY_FILE_NAME);
        match std::fs::read(&next) {
            Ok(raw) => {
                let raw = Zeroizing::new(raw);
                Ok(Some(MasterKey::new(parse(&next, &raw)?, KeySource::KeyFile { path: next, created: false })))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", next.display())),
        }
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Whether the key's memory is locked against swapping.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bci2token-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_key_file_is_created_0600_and_read_back() {
        let d = dir("create");
        let first = MasterKey::load(None, &d).unwrap();
        assert!(matches!(first.source(), KeySource::KeyFile { created: true, .. }));
        let meta = std::fs::metadata(d.join(KEY_FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = MasterKey::load(None, &d).unwrap();
        assert_eq!(first.bytes(), again.bytes());
        assert!(!format!("{again:?}").contains(&format!("{:?}", &again.bytes()[..4])), "Debug never shows the key");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_readable_key_file_or_a_bad_length_is_refused() {
        let d = dir("refuse");
        MasterKey::load(None, &d).unwrap();
        let p = d.join(KEY_FILE_NAME);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(None, &d).unwrap_err();
        assert!(err.contains("mode 0644") && err.contains("chmod 600"), "{err}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"short").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(MasterKey::load(None, &d).unwrap_err().contains("32 bytes"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_credential_wins_and_may_be_hex() {
        let d = dir("cred");
        let creds = d.join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join(CREDENTIAL_NAME), format!("{}\n", "ab".repeat(32))).unwrap();
        let k = MasterKey::load(Some(&creds), &d).unwrap();
        assert_eq!(k.bytes(), &[0xAB; 32]);
        assert!(matches!(k.source(), KeySource::Credential(_)));
        assert!(!d.join(KEY_FILE_NAME).exists(), "no key file when a credential is given");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

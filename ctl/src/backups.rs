//! `backup --into DIR [--keep-days N]`: backups named by their time in a directory of their own
//! (what the backup timer runs), and the old ones pruned once a new one is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{CtlError, Kind};

/// Backups this tool names: `bci2token-YYYYMMDDTHHMMSSZ.backup`.
const PREFIX: &str = "bci2token-";
const SUFFIX: &str = ".backup";

/// A new file's path in `dir`, named by the UTC time `now`.
pub fn new_path(dir: &Path, now: SystemTime) -> PathBuf {
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let c = bci2token_api::time::civil(secs);
    dir.join(format!(
        "{PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}Z{SUFFIX}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    ))
}

/// Removes the backups in `dir` (files named as [`new_path`] names them, and only those) last
/// modified more than `days` days before `now`, never `keep` (the one just written). Returns
/// the files removed.
pub fn prune(dir: &Path, days: u32, keep: &Path, now: SystemTime) -> Result<Vec<PathBuf>, CtlError> {
    let cutoff = now - Duration::from_secs(u64::from(days) * 86_400);
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CtlError::new(Kind::Io, format!("--keep-days: cannot list {}: {e}", dir.display())))?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if !name.starts_with(PREFIX) || !name.ends_with(SUFFIX) || path == keep {
            continue;
        }
        // Plain files only (a link is not followed, let alone its target removed).
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || meta.modified().map_or(true, |m| m >= cutoff) {
            continue;
        }
        std::fs::remove_file(&path)
            .map_err(|e| CtlError::new(Kind::Io, format!("--keep-days: cannot remove {}: {e}", path.display())))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_only_old_backups_go() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_037_396);
        let dir = std::env::temp_dir().join(format!("bci2tokenctl-backups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(new_path(&dir, t), dir.join("bci2token-20261130T111636Z.backup"));
        let old = dir.join("bci2token-20261001T000000Z.backup");
        let recent = dir.join("bci2token-20261129T000000Z.backup");
        let other = dir.join("notes.txt");
        for p in [&old, &recent, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let file = std::fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(t - Duration::from_secs(40 * 86_400)).unwrap();
        let file = std::fs::File::options().write(true).open(&other).unwrap();
        file.set_modified(t - Duration::from_secs(40 * 86_400)).unwrap();
        let file = std::fs::File::options().write(true).open(&recent).unwrap();
        file.set_modified(t - Duration::from_secs(86_400)).unwrap();
        let removed = prune(&dir, 30, &recent, t).unwrap();
        assert_eq!(removed, vec![old.clone()]);
        assert!(!old.exists() && recent.exists() && other.exists(), "only backups older than 30 days go");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

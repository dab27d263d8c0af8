//! Files a request names cross to the daemon as descriptors: this command opens (or creates) them
//! with the caller's own rights and passes them with the request (SCM_RIGHTS). The daemon never
//! opens a path for a caller, so it cannot be made to read or write what the caller could not.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bci2token_api::{is_file_key, ConfigMap, FileArg, MAX_REQUEST_FDS};

use crate::error::{CtlError, Kind};

/// The files going with one request, in descriptor order.
#[derive(Default)]
pub struct Files {
    open: Vec<File>,
    /// Outputs this command created: removed again when the request fails.
    created: Vec<PathBuf>,
}

fn name_of(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

impl Files {
    fn push(&mut self, file: File, path: &Path) -> Result<FileArg, CtlError> {
        if self.open.len() >= MAX_REQUEST_FDS {
            return Err(CtlError::new(Kind::Usage, format!("a request can carry at most {MAX_REQUEST_FDS} files")));
        }
        self.open.push(file);
        Ok(FileArg::Fd { fd: (self.open.len() - 1) as u32, name: name_of(path) })
    }

    /// A file to be read by the daemon.
    pub fn input(&mut self, path: &Path) -> Result<FileArg, CtlError> {
        let file = File::open(path).map_err(|e| CtlError::new(Kind::Usage, format!("{}: {e}", path.display())))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(CtlError::new(Kind::Usage, format!("{}: not a regular file", path.display())));
        }
        self.push(file, path)
    }

    /// The regular files of a model package directory (not its subdirectories, not hidden files),
    /// each to be read.
    pub fn package(&mut self, dir: &Path) -> Result<Vec<FileArg>, CtlError> {
        let usage = |e: std::io::Error| CtlError::new(Kind::Usage, format!("{}: {e}", dir.display()));
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(usage)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(usage)?;
        // Hidden files (.gitignore, .DS_Store) are not part of a package.
        paths.retain(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
        paths.sort();
        paths.iter().map(|p| self.input(p)).collect()
    }

    /// A new file (mode 0600, never an existing one) for the daemon to write.
    pub fn output(&mut self, path: &Path) -> Result<FileArg, CtlError> {
        // O_EXCL: never an existing file, nor through a symbolic link.
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            let message = match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    "is a symbolic link; give a new file name (nothing is written through a link)".to_string()
                }
                Ok(_) => "already exists; give a new file name (nothing is overwritten)".to_string(),
                Err(_) => e.to_string(),
            };
            CtlError::new(Kind::Usage, format!("{}: {message}", path.display()))
        })?;
        self.created.push(path.to_path_buf());
        self.push(file, path)
    }

    /// Replaces the file-valued `--set`s of `config` by descriptors.
    pub fn config_inputs(&mut self, config: &mut ConfigMap) -> Result<(), CtlError> {
        for (key, value) in config.iter_mut() {
            if let (true, Some(path)) = (is_file_key(key), value.as_str()) {
                let arg = self
                    .input(Path::new(path))
                    .map_err(|e| CtlError::new(e.kind, format!("--set {key}: {}", e.message)))?;
                *value = serde_json::to_value(arg).expect("a file argument serialises");
            }
        }
        Ok(())
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.open.iter().map(AsFd::as_fd).collect()
    }

    /// The first output file this command created, if any.
    pub fn first_output(&self) -> Option<&Path> {
        self.created.first().map(PathBuf::as_path)
    }

    /// The first file as a second descriptor sharing its offset (to see how far the daemon read).
    pub fn first_shared(&self) -> Option<File> {
        self.open.first().and_then(|f| f.try_clone().ok())
    }

    /// Removes the outputs this command created (the request failed).
    pub fn discard_outputs(&mut self) {
        self.open.clear();
        for p in self.created.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_become_descriptors_and_outputs_are_new_files() {
        let dir = std::env::temp_dir().join(format!("bci2tokenctl-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rec = dir.join("a.edf");
        std::fs::write(&rec, b"0       ").unwrap();
        let mut config = ConfigMap::new();
        config.insert("path".into(), rec.display().to_string().into());
        config.insert("speed".into(), "0".into());
        let mut files = Files::default();
        files.config_inputs(&mut config).unwrap();
        assert_eq!(config["path"]["fd"], 0);
        assert!(config["path"]["name"].as_str().unwrap().ends_with("a.edf"));
        assert_eq!(config["speed"], "0", "other keys stay as they are");
        assert!(files.output(&rec).unwrap_err().message.contains("nothing is overwritten"));
        let out = dir.join("out.edf");
        assert_eq!(files.output(&out).unwrap(), FileArg::Fd { fd: 1, name: out.display().to_string() });
        assert_eq!(files.fds().len(), 2);
        files.discard_outputs();
        assert!(!out.exists() && rec.exists(), "only what this command created is removed");
        let mut missing = ConfigMap::new();
        missing.insert("path".into(), dir.join("nope.edf").display().to_string().into());
        let e = Files::default().config_inputs(&mut missing).unwrap_err();
        assert!(e.message.starts_with("--set path: ") && e.message.contains("nope.edf"), "{}", e.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

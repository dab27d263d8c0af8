//! Files the daemon writes or reads on a caller's behalf (backups, exports, restores, recordings).
//! The daemon may run as root or hold the master key, so it must not become a way around file
//! permissions. A file normally arrives as a descriptor the caller opened with its own rights
//! (`{"fd": N}`): the daemon only reads or writes it. A path (`--user` only, where the caller is
//! the daemon's own user) is opened here without following symbolic links, never overwriting, and
//! only where the caller could have written (or read) the file itself.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bci2token_api::{ApiError, Caller, ErrorCode, FileArg};

use crate::closer::Passed;
use crate::config::Mode;

/// What a passed descriptor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read: a regular file open for reading.
    Read,
    /// Written: a new, empty regular file open for writing.
    Write,
}

/// Takes descriptor `index` of a request (each may be used once) and checks it for `usage`: a
/// regular file open for that, not on FUSE (a file system the caller may serve themselves and
/// leave a read, a write or a close hanging for ever). One that fails goes to the closer.
pub fn take_fd(caller: &Caller, fds: &mut Passed, index: u32, usage: Use, shown: &str) -> Result<OwnedFd, ApiError> {
    let fd = fds.take(index).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{shown}: descriptor {index} did not come with the request (or is used twice)"),
        )
    })?;
    match check(fd.as_fd(), usage) {
        Ok(()) => Ok(fd),
        Err(why) => {
            crate::closer::dispose(caller.uid, vec![fd]);
            Err(ApiError::new(ErrorCode::BadRequest, format!("{shown}: {why}")))
        }
    }
}

fn check(fd: BorrowedFd<'_>, usage: Use) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, SFlag};
    // The file system first: on FUSE even a stat may wait on the caller's server.
    match nix::sys::statfs::fstatfs(fd) {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => {
            return Err("on a FUSE file system, which the daemon does not use; copy it to a local disk first".into())
        }
        Ok(_) => {}
        Err(e) => return Err(format!("cannot inspect its file system: {e}")),
    }
    let flags = fcntl(fd, FcntlArg::F_GETFL).map(OFlag::from_bits_truncate).map_err(|e| e.to_string())?;
    let access = flags & OFlag::O_ACCMODE;
    let stat = fstat(fd).map_err(|e| e.to_string())?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err("not a regular file".into());
    }
    match usage {
        _ if flags.contains(OFlag::O_PATH) => Err("opened without access (O_PATH)".into()),
        Use::Read if access == OFlag::O_WRONLY => Err("not open for reading".into()),
        Use::Write if access == OFlag::O_RDONLY => Err("not open for writing".into()),
        Use::Write if stat.st_size != 0 => Err("the output must be a new, empty regular file".into()),
        _ => Ok(()),
    }
}

fn no_paths(arg: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "{arg}: the system daemon opens no file by a caller's path; pass the file as a descriptor \
             (bci2tokenctl does this)"
        ),
    )
}

/// A file the daemon writes for a caller, and what to call it.
pub struct Output {
    pub file: File,
    pub shown: String,
    /// A file the daemon created itself (`--user` path): removed when the operation fails. A passed
    /// descriptor's file is the caller's to remove.
    created: Option<PathBuf>,
}

impl Output {
    /// Removes what the daemon created after a failure.
    pub fn discard(&self) {
        if let Some(p) = &self.created {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens the output `arg` names: a passed descriptor of an empty regular file open for writing,
/// or (`--user` mode) a new file at a path.
pub fn output(caller: &Caller, mode: Mode, arg: &FileArg, fds: &mut Passed) -> Result<Output, ApiError> {
    let shown = bounded(arg.display());
    match arg {
        FileArg::Fd { fd, .. } => {
            let file = File::from(take_fd(caller, fds, *fd, Use::Write, &shown)?);
            Ok(Output { file, shown, created: None })
        }
        FileArg::Path(p) if mode == Mode::User => {
            let file = create_for(caller, Path::new(p))?;
            Ok(Output { file, shown, created: Some(PathBuf::from(p)) })
        }
        FileArg::Path(p) => Err(no_paths(p)),
    }
}

/// Opens the input `arg` names: a passed descriptor of a regular file, or (`--user` mode) a path.
pub fn input(caller: &Caller, mode: Mode, arg: &FileArg, fds: &mut Passed) -> Result<File, ApiError> {
    match arg {
        FileArg::Fd { fd, .. } => Ok(File::from(take_fd(caller, fds, *fd, Use::Read, &bounded(arg.display()))?)),
        FileArg::Path(p) if mode == Mode::User => open_for(caller, Path::new(p)),
        FileArg::Path(p) => Err(no_paths(p)),
    }
}

/// Outside text made fit for a message (one place for it: the driver ABI's).
pub use bci2token_driver_abi::host::bounded;

fn refuse(message: String) -> ApiError {
    ApiError::new(ErrorCode::PermissionDenied, message)
}

/// Whether a file with this owner, group and mode grants `bits` (4 read, 2 write) to the caller.
fn grants(caller: &Caller, uid: u32, gid: u32, mode: u32, bits: u32) -> bool {
    if caller.uid == 0 {
        return true;
    }
    if caller.uid == uid {
        return mode & (bits << 6) != 0;
    }
    if caller.gid == gid {
        return mode & (bits << 3) != 0;
    }
    mode & bits != 0
}

/// Creates `path` (absolute, new, not through a symlink) for the caller: mode 0600, owned by the
/// caller when the daemon can give it away.
pub fn create_for(caller: &Caller, path: &Path) -> Result<File, ApiError> {
    if !path.is_absolute() {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("{}: the path must be absolute", path.display())));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let what = if meta.file_type().is_symlink() { "is a symbolic link" } else { "already exists" };
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{}: {what}; give a new file name (nothing is overwritten)", path.display()),
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let meta =
        std::fs::metadata(dir).map_err(|e| ApiError::new(ErrorCode::NotFound, format!("{}: {e}", dir.display())))?;
    if !meta.is_dir() || !grants(caller, meta.uid(), meta.gid(), meta.mode(), 2) {
        return Err(refuse(format!(
            "{}: uid {} may not create files in this directory, so the daemon will not do it for them",
            dir.display(),
            caller.uid
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", path.display())))?;
    // Give the file to the caller (possible when the daemon runs as root).
    let _ = std::os::unix::fs::fchown(&file, Some(caller.uid), Some(caller.gid));
    Ok(file)
}

/// Opens `path` for reading on the caller's behalf: not through a symbolic link, a regular file,
/// readable by the caller (checked on the opened file, so it cannot be swapped in between).
pub fn open_for(caller: &Caller, path: &Path) -> Result<File, ApiError> {
    if !path.is_absolute() {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("{}: the path must be absolute", path.display())));
    }
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(path).map_err(
            |e| {
                let code =
                    if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::NotFound } else { ErrorCode::BadRequest };
                ApiError::new(code, format!("{}: {e} (symbolic links are refused)", path.display()))
            },
        )?;
    let meta = file.metadata().map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("{}: not a regular file", path.display())));
    }
    if !grants(caller, meta.uid(), meta.gid(), meta.mode(), 4) {
        return Err(refuse(format!(
            "{}: uid {} may not read this file, so the daemon will not do it for them",
            path.display(),
            caller.uid
        )));
    }
    Ok(file)
}

/// A private scratch directory inside `parent`, removed on drop unless kept.
pub struct ScratchDir(Option<PathBuf>);

impl ScratchDir {
    pub fn new(parent: &Path, tag: &str) -> std::io::Result<ScratchDir> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = parent.join(format!(".{tag}-{}-{nanos}", std::process::id()));
        // The daemon's alone whatever the umask (a package may be a person's model).
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir)?;
        Ok(ScratchDir(Some(dir)))
    }

    /// Moves the existing directory `dir` aside into a scratch directory inside `parent`.
    pub fn adopt(dir: &Path, parent: &Path, tag: &str) -> std::io::Result<ScratchDir> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let aside = parent.join(format!(".{tag}-{}-{nanos}", std::process::id()));
        std::fs::rename(dir, &aside)?;
        Ok(ScratchDir(Some(aside)))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("a scratch directory until kept")
    }

    /// Gives up the directory: it is no longer removed on drop.
    pub fn release(mut self) -> PathBuf {
        self.0.take().expect("a scratch directory until kept")
    }

    /// Moves the directory to `dest` (one rename) and keeps it.
    pub fn keep_as(mut self, dest: &Path) -> std::io::Result<()> {
        let dir = self.0.take().expect("a scratch directory until kept");
        std::fs::rename(&dir, dest).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A private scratch file in the daemon's data directory, removed (with SQLite's side files) on drop.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(dir: &Path, tag: &str) -> Scratch {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Scratch(dir.join(format!(".{tag}-{}-{nanos}.db", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_those_of_the_caller() {
        let alice = Caller { uid: 1000, gid: 1000, pid: None, groups: vec![], admin_by_polkit: false };
        assert!(grants(&alice, 1000, 50, 0o700, 2));
        assert!(!grants(&alice, 0, 0, 0o755, 2), "root's directory");
        assert!(grants(&alice, 0, 1000, 0o775, 2), "group-writable for her group");
        assert!(grants(&alice, 0, 0, 0o1777, 2), "like /tmp");
        assert!(!grants(&alice, 1000, 1000, 0o077, 4), "the owner bits decide for the owner");
    }

    #[test]
    fn symlinks_and_existing_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("bci2token-callerfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = Caller {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: None,
            groups: vec![],
            admin_by_polkit: false,
        };
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        assert!(create_for(&me, &dir.join("link")).unwrap_err().message.contains("symbolic link"));
        assert!(open_for(&me, &dir.join("link")).unwrap_err().message.contains("symbolic links are refused"));
        create_for(&me, &dir.join("new")).unwrap();
        assert!(create_for(&me, &dir.join("new")).unwrap_err().message.contains("already exists"));
        assert!(create_for(&me, Path::new("relative")).is_err());
        // A system daemon takes no path at all, however harmless.
        // An input must be readable: a write-only descriptor is refused.
        let wo = std::fs::OpenOptions::new().write(true).open(dir.join("new")).unwrap();
        let arg = FileArg::Fd { fd: 0, name: "new".into() };
        let e = input(&me, Mode::System, &arg, &mut Passed::new(me.uid, vec![OwnedFd::from(wo)])).err().unwrap();
        assert!(e.message.contains("not open for reading"), "{}", e.message);
        assert!(input(
            &me,
            Mode::System,
            &arg,
            &mut Passed::new(me.uid, vec![OwnedFd::from(File::open(&dir).unwrap())])
        )
        .err()
        .unwrap()
        .message
        .contains("not a regular file"));
        let new = FileArg::Path(dir.join("other").display().to_string());
        let e = output(&me, Mode::System, &new, &mut Passed::none(me.uid)).err().unwrap();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(!dir.join("other").exists());
        // A descriptor must be an empty file open for writing, and is used once.
        let ro = File::open(dir.join("new")).unwrap();
        let mut fds = Passed::new(me.uid, vec![OwnedFd::from(ro)]);
        let arg = FileArg::Fd { fd: 0, name: "new".into() };
        assert!(output(&me, Mode::System, &arg, &mut fds).err().unwrap().message.contains("not open for writing"));
        assert!(output(&me, Mode::System, &arg, &mut fds).err().unwrap().message.contains("used twice"));
        std::fs::write(dir.join("full"), b"x").unwrap();
        let full = std::fs::OpenOptions::new().write(true).open(dir.join("full")).unwrap();
        let mut fds = Passed::new(me.uid, vec![OwnedFd::from(full)]);
        assert!(output(&me, Mode::System, &arg, &mut fds).err().unwrap().message.contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

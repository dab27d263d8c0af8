//! Which control socket to talk to, and connecting to it with errors that say what to do.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use bci2token_api::paths;

use crate::error::{CtlError, Kind};

/// Where the socket path came from (for error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--socket PATH`
    Flag,
    /// `BCI2TOKEN_SOCKET`
    Env,
    /// `$XDG_RUNTIME_DIR/bci2token/control.sock` (a per-user daemon)
    User,
    /// `/run/bci2token/control.sock`
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    pub source: Source,
    /// The per-user socket that was considered but not used (it did not exist, or we are root).
    pub user_candidate: Option<PathBuf>,
}

/// Inputs of the resolution, so it can be tested without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `BCI2TOKEN_SOCKET`
    pub socket: Option<OsString>,
    /// `$XDG_RUNTIME_DIR/bci2token`
    pub user_runtime_dir: Option<PathBuf>,
    pub is_root: bool,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            socket: std::env::var_os(paths::SOCKET_ENV),
            user_runtime_dir: paths::user_runtime_dir(),
            is_root: effective_uid() == Some(0),
        }
    }
}

/// `--socket PATH`, else `BCI2TOKEN_SOCKET`, else the per-user daemon's socket if it exists and
/// we are not root, else the system daemon's socket.
pub fn resolve(flag: Option<&Path>, env: &Env, exists: impl Fn(&Path) -> bool) -> Resolved {
    if let Some(p) = flag {
        return Resolved { path: p.to_path_buf(), source: Source::Flag, user_candidate: None };
    }
    if let Some(p) = env.socket.as_ref().filter(|s| !s.is_empty()) {
        return Resolved { path: PathBuf::from(p), source: Source::Env, user_candidate: None };
    }
    let user = env.user_runtime_dir.as_ref().map(|d| d.join(paths::SOCKET_NAME));
    if let Some(u) = &user {
        if !env.is_root && exists(u) {
            return Resolved { path: u.clone(), source: Source::User, user_candidate: None };
        }
    }
    Resolved { path: paths::system_socket(), source: Source::System, user_candidate: user }
}

/// The effective uid, from /proc (no libc dependency); `None` if it cannot be read.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn connect(r: &Resolved) -> Result<UnixStream, CtlError> {
    UnixStream::connect(&r.path).map_err(|e| connect_error(r, &e))
}

/// Turns a failed connect into a message that names the path and says what to do.
pub fn connect_error(r: &Resolved, e: &io::Error) -> CtlError {
    let path = r.path.display();
    let origin = match r.source {
        Source::Flag => " (from --socket)",
        Source::Env => " (from BCI2TOKEN_SOCKET)",
        Source::User | Source::System => "",
    };
    let not_running = |what: String| {
        let mut msg = format!("bci2tokend is not running: {what}.");
        if let Some(u) = &r.user_candidate {
            if r.source == Source::System {
                msg.push_str(&format!(" (No per-user daemon socket at {} either.)", u.display()));
            }
        }
        msg.push_str(
            "\nStart the system daemon with `systemctl start bci2tokend`, or a per-user one with \
             `bci2tokend --user`; or point --socket / BCI2TOKEN_SOCKET at a running daemon's socket.",
        );
        CtlError::new(Kind::NotRunning, msg)
    };
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            not_running(format!("no control socket at {path}{origin}"))
        }
        io::ErrorKind::ConnectionRefused => {
            not_running(format!("nothing accepts connections on {path}{origin}, the socket is stale"))
        }
        io::ErrorKind::PermissionDenied => {
            let mut msg = format!(
                "permission denied on the control socket {path}{origin}: using the daemon needs \
                 membership in the group 'bci2token' (e.g. `sudo usermod -aG bci2token $USER`, \
                 then log in again)"
            );
            if r.source == Source::System {
                msg.push_str(", or run a per-user daemon with `bci2tokend --user`");
            }
            msg.push('.');
            CtlError::new(Kind::SocketPermission, msg)
        }
        _ => CtlError::new(Kind::Io, format!("cannot connect to the control socket {path}{origin}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(socket: Option<&str>, xdg: Option<&str>, root: bool) -> Env {
        Env {
            socket: socket.map(OsString::from),
            user_runtime_dir: xdg.map(|d| PathBuf::from(d).join("bci2token")),
            is_root: root,
        }
    }

    #[test]
    fn flag_wins_over_everything() {
        let r =
            resolve(Some(Path::new("/tmp/a.sock")), &env(Some("/tmp/b.sock"), Some("/run/user/1"), false), |_| true);
        assert_eq!(r.path, PathBuf::from("/tmp/a.sock"));
        assert_eq!(r.source, Source::Flag);
    }

    #[test]
    fn env_var_comes_next_and_empty_is_ignored() {
        let r = resolve(None, &env(Some("/tmp/b.sock"), Some("/run/user/1"), false), |_| true);
        assert_eq!((r.path, r.source), (PathBuf::from("/tmp/b.sock"), Source::Env));
        let r = resolve(None, &env(Some(""), None, false), |_| true);
        assert_eq!(r.source, Source::System);
    }

    #[test]
    fn user_socket_only_if_it_exists_and_not_root() {
        let user = PathBuf::from("/run/user/1000/bci2token/control.sock");
        let r = resolve(None, &env(None, Some("/run/user/1000"), false), |p| p == user);
        assert_eq!((r.path.clone(), r.source), (user.clone(), Source::User));

        let r = resolve(None, &env(None, Some("/run/user/1000"), false), |_| false);
        assert_eq!((r.path.clone(), r.source), (PathBuf::from("/run/bci2token/control.sock"), Source::System));
        assert_eq!(r.user_candidate, Some(user.clone()));

        let r = resolve(None, &env(None, Some("/run/user/0"), true), |_| true);
        assert_eq!(r.source, Source::System);

        let r = resolve(None, &env(None, None, false), |_| true);
        assert_eq!(
            (r.path, r.source, r.user_candidate),
            (PathBuf::from("/run/bci2token/control.sock"), Source::System, None)
        );
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let r = Resolved { path: "/nonexistent/x.sock".into(), source: Source::System, user_candidate: None };
        let e = connect(&r).unwrap_err();
        assert_eq!(e.kind, Kind::NotRunning);
        assert!(e.message.contains("/nonexistent/x.sock"), "{}", e.message);
        assert!(e.message.contains("systemctl start bci2tokend"));
        assert!(e.message.contains("bci2tokend --user"));

        let refused = connect_error(&r, &io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.exit_code(), 3);
        let denied = connect_error(&r, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.exit_code(), 5);
        assert!(denied.message.contains("'bci2token'"), "{}", denied.message);
    }

    #[test]
    fn effective_uid_is_readable() {
        assert!(effective_uid().is_some());
    }
}

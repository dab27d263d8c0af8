//! Well-known locations shared by daemon and ctl.

use std::path::PathBuf;

/// Name of the control socket inside the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Runtime directory of the system daemon.
pub const SYSTEM_RUNTIME_DIR: &str = "/run/bci2token";
/// Environment variable `bci2tokenctl` reads for the socket path.
pub const SOCKET_ENV: &str = "BCI2TOKEN_SOCKET";

/// The system daemon's control socket.
pub fn system_socket() -> PathBuf {
    PathBuf::from(SYSTEM_RUNTIME_DIR).join(SOCKET_NAME)
}

/// The `--user` daemon's runtime directory: `$XDG_RUNTIME_DIR/bci2token`, if XDG_RUNTIME_DIR is set.
pub fn user_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()).map(|dir| PathBuf::from(dir).join("bci2token"))
}

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

/// The `--user` daemon's runtime directory: `$XDG_RUNTIME_DIR/bci2token`; without a runtime
/// directory (no login session), a private directory in the XDG state directory
/// (`$XDG_STATE_HOME/bci2token/run`, else `$HOME/.local/state/bci2token/run`). Relative values are
/// ignored, as the XDG specification says. `env` looks up environment variables.
pub fn user_runtime_dir_with(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let absolute = |var: &str| env(var).filter(|v| std::path::Path::new(v).is_absolute()).map(PathBuf::from);
    if let Some(dir) = absolute("XDG_RUNTIME_DIR") {
        return Some(dir.join("bci2token"));
    }
    let state = absolute("XDG_STATE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".local/state")))?;
    Some(state.join("bci2token/run"))
}

/// [`user_runtime_dir_with`] on this process's environment.
pub fn user_runtime_dir() -> Option<PathBuf> {
    user_runtime_dir_with(&|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_runtime_dir_falls_back_to_the_state_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let with_runtime = env(&[("XDG_RUNTIME_DIR", "/run/user/7"), ("HOME", "/h")]);
        assert_eq!(user_runtime_dir_with(&with_runtime), Some(PathBuf::from("/run/user/7/bci2token")));
        let relative = env(&[("XDG_RUNTIME_DIR", "run"), ("HOME", "/h")]);
        assert_eq!(user_runtime_dir_with(&relative), Some(PathBuf::from("/h/.local/state/bci2token/run")));
        let state = env(&[("XDG_STATE_HOME", "/s")]);
        assert_eq!(user_runtime_dir_with(&state), Some(PathBuf::from("/s/bci2token/run")));
        assert_eq!(user_runtime_dir_with(&env(&[])), None);
    }
}

//! Errors of `bci2tokenctl` and their exit codes.
//!
//! Every failure the user can see is a [`CtlError`]: a class (which decides the exit code and
//! the machine-readable `code` printed with `--json`) and a message that says what failed, on
//! which input, and what to do.

use std::fmt;
use std::io;

use bci2token_api::ErrorCode;

/// Exit codes, documented in `--help` and docs/bci2tokenctl.md.
pub mod exit {
    pub const OK: u8 = 0;
    /// Anything not covered below: internal daemon errors, protocol and I/O errors.
    pub const GENERIC: u8 = 1;
    /// Bad command line (clap's own errors use 2 too).
    pub const USAGE: u8 = 2;
    /// The daemon is not running (no socket, connection refused).
    pub const NOT_RUNNING: u8 = 3;
    /// No such session, driver or device.
    pub const NOT_FOUND: u8 = 4;
    /// Permission denied by the daemon or on the socket.
    pub const PERMISSION_DENIED: u8 = 5;
    /// Invalid configuration or bad request.
    pub const INVALID: u8 = 6;
    /// A driver failed, or a followed session ended in state `failed`.
    pub const DRIVER: u8 = 7;
    /// A limit was reached (e.g. maximum number of sessions).
    pub const LIMIT: u8 = 8;
    /// A check found damage: `audit verify` found the audit log's chain broken.
    pub const INTEGRITY: u8 = 9;
    /// `health`: the daemon works with warnings (bad electrodes, gaps, an old backup).
    pub const DEGRADED: u8 = 10;
    /// `health`: something is failing (a device disconnected, a model's breaker open, a stuck
    /// thread, recording stopped).
    pub const FAILING: u8 = 11;
}

/// Help text listing the exit codes (shown after `--help`).
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success (for follow: the session finished or was stopped, or --count was reached)
  1  generic failure (internal daemon error, protocol or I/O error)
  2  usage error (bad command line, e.g. --set without '=')
  3  the daemon is not running (no control socket, connection refused)
  4  not found (no such session, driver or device)
  5  permission denied (by the daemon, or on the control socket: join group 'bci2token')
  6  invalid configuration or bad request
  7  driver error, or the followed session ended in state 'failed'
  8  limit reached (e.g. too many sessions)
  9  audit verify found the audit log's chain broken
 10  health: degraded (warnings)
 11  health: failing (a device disconnected, a decoder breaker open, ...)

Environment:
  BCI2TOKEN_SOCKET  control socket to use when --socket is not given
  XDG_RUNTIME_DIR   a per-user daemon's socket is $XDG_RUNTIME_DIR/bci2token/control.sock

With --json, results go to stdout (one JSON document per line) and errors to stderr as one
line {\"error\":{\"code\":\"...\",\"message\":\"...\"}}.";

/// What kind of failure; decides the exit code and the `code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An error reply from the daemon.
    Api(ErrorCode),
    /// A daemon error reply whose code this ctl does not know (a newer daemon).
    UnknownApi,
    /// No socket / connection refused.
    NotRunning,
    /// EACCES/EPERM on connecting to the socket.
    SocketPermission,
    /// The followed session ended in state `failed`.
    SessionFailed,
    /// The daemon sent something that does not follow the protocol.
    Protocol,
    /// Any other I/O error on the socket.
    Io,
    /// No reply in time.
    Timeout,
    /// A usage error found after argument parsing.
    Usage,
    /// stdout was closed by the reader (`| head`): exit quietly with 0.
    StdoutClosed,
    /// A verification found damage (the audit log's chain).
    Integrity,
    /// `health` answered: degraded.
    Degraded,
    /// `health` answered: failing.
    Failing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    pub kind: Kind,
    /// The machine-readable code string (for `Kind::UnknownApi` the daemon's own code).
    code: Option<String>,
    pub message: String,
}

impl CtlError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self { kind, code: None, message: message.into() }
    }

    pub fn api(err: bci2token_api::ApiError) -> Self {
        Self::new(Kind::Api(err.code), err.message)
    }

    pub fn unknown_api(code: String, message: String) -> Self {
        Self { kind: Kind::UnknownApi, code: Some(code), message }
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(Kind::Protocol, message)
    }

    /// The same error with `prefix: ` in front of its message (e.g. the file it happened on).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    pub fn stdout_closed() -> Self {
        Self::new(Kind::StdoutClosed, "stdout was closed")
    }

    /// Maps a failed write to stdout: EPIPE becomes a quiet exit.
    pub fn from_stdout(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Self::stdout_closed()
        } else {
            Self::new(Kind::Io, format!("cannot write to stdout: {err}"))
        }
    }

    pub fn exit_code(&self) -> u8 {
        exit_code(self.kind)
    }

    /// The `code` of the JSON error object.
    pub fn code(&self) -> String {
        if let Some(code) = &self.code {
            return code.clone();
        }
        match self.kind {
            Kind::Api(code) => api_code_str(code),
            Kind::UnknownApi => "internal".into(),
            Kind::NotRunning => "not_running".into(),
            Kind::SocketPermission => "permission_denied".into(),
            Kind::SessionFailed => "session_failed".into(),
            Kind::Protocol => "protocol_error".into(),
            Kind::Io => "io_error".into(),
            Kind::Timeout => "timeout".into(),
            Kind::Usage => "usage".into(),
            Kind::StdoutClosed => "stdout_closed".into(),
            Kind::Integrity => "integrity".into(),
            Kind::Degraded => "degraded".into(),
            Kind::Failing => "failing".into(),
        }
    }

    /// One JSON line `{"error":{"code":..,"message":..}}` (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::json!({"error": {"code": self.code(), "message": self.message}}).to_string()
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}

/// The wire name of an error code (`not_found`, ...).
pub fn api_code_str(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// The exit code of each error class.
pub fn exit_code(kind: Kind) -> u8 {
    match kind {
        Kind::Api(code) => match code {
            ErrorCode::NotFound => exit::NOT_FOUND,
            ErrorCode::PermissionDenied => exit::PERMISSION_DENIED,
            ErrorCode::BadRequest | ErrorCode::InvalidConfig => exit::INVALID,
            ErrorCode::DriverError => exit::DRIVER,
            // The daemon's limits on its callers: wait, or do less at once.
            ErrorCode::LimitReached
            | ErrorCode::RateLimited
            | ErrorCode::TooManyConnections
            | ErrorCode::RequestTooLarge => exit::LIMIT,
            ErrorCode::Internal | ErrorCode::Timeout => exit::GENERIC,
        },
        Kind::UnknownApi | Kind::Protocol | Kind::Io | Kind::Timeout => exit::GENERIC,
        Kind::NotRunning => exit::NOT_RUNNING,
        Kind::SocketPermission => exit::PERMISSION_DENIED,
        Kind::SessionFailed => exit::DRIVER,
        Kind::Usage => exit::USAGE,
        Kind::StdoutClosed => exit::OK,
        Kind::Integrity => exit::INTEGRITY,
        Kind::Degraded => exit::DEGRADED,
        Kind::Failing => exit::FAILING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bci2token_api::ApiError;

    #[test]
    fn api_error_codes_map_to_distinct_exit_codes() {
        let cases = [
            (ErrorCode::BadRequest, 6, "bad_request"),
            (ErrorCode::InvalidConfig, 6, "invalid_config"),
            (ErrorCode::NotFound, 4, "not_found"),
            (ErrorCode::PermissionDenied, 5, "permission_denied"),
            (ErrorCode::DriverError, 7, "driver_error"),
            (ErrorCode::LimitReached, 8, "limit_reached"),
            (ErrorCode::Internal, 1, "internal"),
        ];
        for (code, exit, name) in cases {
            let e = CtlError::api(ApiError::new(code, "msg"));
            assert_eq!(e.exit_code(), exit, "{code:?}");
            assert_eq!(e.code(), name);
        }
    }

    #[test]
    fn local_error_classes() {
        assert_eq!(CtlError::new(Kind::NotRunning, "x").exit_code(), 3);
        assert_eq!(CtlError::new(Kind::SocketPermission, "x").exit_code(), 5);
        assert_eq!(CtlError::new(Kind::SessionFailed, "x").exit_code(), 7);
        assert_eq!(CtlError::new(Kind::Protocol, "x").exit_code(), 1);
        assert_eq!(CtlError::new(Kind::Usage, "x").exit_code(), 2);
        assert_eq!(CtlError::stdout_closed().exit_code(), 0);
        let pipe = CtlError::from_stdout(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(pipe.kind, Kind::StdoutClosed);
        let other = CtlError::from_stdout(io::Error::other("disk full"));
        assert_eq!(other.exit_code(), 1);
    }

    #[test]
    fn context_keeps_the_class_and_code() {
        let e = CtlError::unknown_api("quota_exceeded".into(), "m".into()).context("a.edf");
        assert_eq!((e.code(), e.message.as_str()), ("quota_exceeded".to_string(), "a.edf: m"));
        let e = CtlError::api(ApiError::new(ErrorCode::InvalidConfig, "8 channels, model wants 64")).context("b.edf");
        assert_eq!((e.exit_code(), e.message.as_str()), (6, "b.edf: 8 channels, model wants 64"));
    }

    #[test]
    fn json_error_line() {
        let e = CtlError::api(ApiError::new(ErrorCode::NotFound, "no session \"x\""));
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v, serde_json::json!({"error": {"code": "not_found", "message": "no session \"x\""}}));
        let u = CtlError::unknown_api("quota_exceeded".into(), "m".into());
        assert_eq!(u.code(), "quota_exceeded");
        assert_eq!(u.exit_code(), 1);
    }
}

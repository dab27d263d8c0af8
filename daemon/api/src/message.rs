//! Requests, replies and error codes of the control socket.

use serde::{Deserialize, Serialize};

use crate::event::SessionState;

pub type ConfigMap = serde_json::Map<String, serde_json::Value>;

/// A file a request names: a descriptor passed with the request (SCM_RIGHTS), or a path.
///
/// `{"fd": N, "name": "..."}` is the `N`th descriptor (from 0) that came with the request's frame;
/// `name` is what the caller called it (shown in messages, and its extension may tell a format),
/// never opened. A plain string is a path the daemon opens itself: accepted only by a `--user`
/// daemon, whose callers are its own user. A system daemon opens no file by a caller's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileArg {
    Fd {
        fd: u32,
        #[serde(default)]
        name: String,
    },
    Path(String),
}

impl FileArg {
    /// What to call the file in messages and the audit log.
    pub fn display(&self) -> &str {
        match self {
            FileArg::Fd { name, .. } if !name.is_empty() => name,
            FileArg::Fd { .. } => "(descriptor)",
            FileArg::Path(p) => p,
        }
    }
}

/// Whether a driver config key names a file, by the drivers' convention: `path`, or a name ending
/// in `_path` or `_file`; and BrainFlow's own names for its files (`file`, `file_aux`, `file_anc`,
/// which the brainflow driver passes through). bci2tokenctl passes such files as descriptors; a
/// system daemon refuses a path for them.
pub fn is_file_key(key: &str) -> bool {
    matches!(key, "path" | "file" | "file_aux" | "file_anc") || key.ends_with("_path") || key.ends_with("_file")
}

/// Most descriptors one request may carry.
pub const MAX_REQUEST_FDS: usize = 8;

/// A request: `{"method": "...", "params": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Request {
    Status,
    Drivers,
    Devices {
        #[serde(default)]
        driver: Option<String>,
    },
    /// Model packages found in the daemon's model path.
    Models,
    /// One model package, by name (looked up in the model path) or directory.
    ModelShow {
        model: String,
    },
    /// Installs a model package into the daemon's own model directory (`data_dir/models`): its
    /// files (at least `model.toml` and `model.pt`, named by their file names) passed as
    /// descriptors; checked (manifest, TorchScript) before it replaces anything; admin only.
    ModelInstall {
        files: Vec<FileArg>,
        /// Replace an installed package of the same name.
        #[serde(default)]
        replace: bool,
    },
    /// Fits a per-person model to stored sessions of the caller's (see [`TrainRequest`]) and keeps
    /// it as the caller's own, under `data_dir/personal-models/UID/NAME`.
    ModelTrain(TrainRequest),
    /// Deletes one of the caller's own trained models (an admin: anyone's, with `owner`).
    ModelDelete {
        model: String,
        #[serde(default)]
        owner: Option<u32>,
    },
    /// Starts a session. With `follow`, the reply is followed on the same connection by the
    /// session's events from its very first block (see [`crate::Event`]).
    SessionStart {
        driver: String,
        #[serde(default)]
        config: ConfigMap,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        follow: Option<FollowOptions>,
        /// Publish the session's tokens and class probabilities as LSL outlets (also on when the
        /// daemon's `lsl_outlets` is true).
        #[serde(default)]
        lsl_outlets: bool,
        /// The subject's pseudonym (never a name): stored with the session, the key of its privacy
        /// budget.
        #[serde(default)]
        subject: Option<String>,
    },
    SessionList,
    SessionShow {
        id: String,
    },
    SessionStop {
        id: String,
    },
    /// Deletes a stored session for good (its key first, then its rows); admin only.
    SessionDelete {
        id: String,
    },
    /// Audit entries, those at or after `since` (Unix seconds) when given; admin only.
    AuditList {
        #[serde(default)]
        since: Option<f64>,
    },
    /// Checks the audit log's hash chain; admin only.
    AuditVerify,
    /// Replaces the master key and re-wraps every session key under it; admin only.
    KeyRotate,
    /// Copies the store (still encrypted) into `path`: a descriptor of an empty file the caller
    /// created, or (`--user`) a new file's path; admin only.
    Backup {
        path: FileArg,
    },
    /// Replaces the store with the backup `path` (a descriptor open for reading, or a path with
    /// `--user`); no session may be running; admin only.
    Restore {
        path: FileArg,
    },
    /// Writes a stored session, decrypted, into `path` (a descriptor of an empty file the caller
    /// created, or a new file's path with `--user`) as `edf`, `bdf` or `csv`; the session's owner
    /// or an admin. With `features` (`bandpower`), writes instead differentially private per-window
    /// features (CSV) with the Gaussian mechanism for `dp_epsilon`, `dp_delta` and `dp_clip`.
    Export {
        id: String,
        format: String,
        path: FileArg,
        #[serde(default)]
        features: Option<String>,
        #[serde(default)]
        dp_epsilon: Option<f64>,
        #[serde(default)]
        dp_delta: Option<f64>,
        #[serde(default)]
        dp_clip: Option<f64>,
    },
    /// How the daemon is doing: devices, decoders, store, audit chain, and a verdict.
    Health,
    /// The daemon's metrics in Prometheus' text exposition format (the reply is a string).
    Metrics,
    /// Subscribes to a running session; the reply is followed by events until the session ends.
    Follow {
        id: String,
        #[serde(default)]
        options: FollowOptions,
    },
}

impl Request {
    /// Short name for logs and errors.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Drivers => "drivers",
            Request::Devices { .. } => "devices",
            Request::Models => "models",
            Request::ModelShow { .. } => "model_show",
            Request::ModelInstall { .. } => "model_install",
            Request::ModelTrain(_) => "model_train",
            Request::ModelDelete { .. } => "model_delete",
            Request::SessionStart { .. } => "session_start",
            Request::SessionList => "session_list",
            Request::SessionShow { .. } => "session_show",
            Request::SessionStop { .. } => "session_stop",
            Request::SessionDelete { .. } => "session_delete",
            Request::AuditList { .. } => "audit_list",
            Request::AuditVerify => "audit_verify",
            Request::KeyRotate => "key_rotate",
            Request::Backup { .. } => "backup",
            Request::Restore { .. } => "restore",
            Request::Export { .. } => "export",
            Request::Health => "health",
            Request::Metrics => "metrics",
            Request::Follow { .. } => "follow",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowOptions {
    /// Include sample blocks with their data (otherwise only annotations, stats, gaps, states).
    #[serde(default)]
    pub samples: bool,
}

/// A reply: `{"ok": <result>}` or `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(ApiError),
}

/// Machine-readable error classes; `message` says what failed, on which input, and what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    PermissionDenied,
    InvalidConfig,
    DriverError,
    LimitReached,
    Internal,
    /// A request frame larger than the daemon accepts (see `MAX_REQUEST_BYTES`).
    RequestTooLarge,
    /// A request frame was started and not finished in time.
    Timeout,
    /// The caller (or everyone together) holds as many connections as the daemon allows.
    TooManyConnections,
    /// The caller sent requests faster than its rate limit; wait and retry.
    RateLimited,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::PermissionDenied,
        ErrorCode::InvalidConfig,
        ErrorCode::DriverError,
        ErrorCode::LimitReached,
        ErrorCode::Internal,
        ErrorCode::RequestTooLarge,
        ErrorCode::Timeout,
        ErrorCode::TooManyConnections,
        ErrorCode::RateLimited,
    ];

    /// The D-Bus error name of this code: `org.bci2token.Error.` and the code in CamelCase
    /// (`permission_denied` is `org.bci2token.Error.PermissionDenied`; `driver_error` is `.Driver`).
    pub fn dbus_name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "org.bci2token.Error.BadRequest",
            ErrorCode::NotFound => "org.bci2token.Error.NotFound",
            ErrorCode::PermissionDenied => "org.bci2token.Error.PermissionDenied",
            ErrorCode::InvalidConfig => "org.bci2token.Error.InvalidConfig",
            ErrorCode::DriverError => "org.bci2token.Error.Driver",
            ErrorCode::LimitReached => "org.bci2token.Error.LimitReached",
            ErrorCode::Internal => "org.bci2token.Error.Internal",
            ErrorCode::RequestTooLarge => "org.bci2token.Error.RequestTooLarge",
            ErrorCode::Timeout => "org.bci2token.Error.Timeout",
            ErrorCode::TooManyConnections => "org.bci2token.Error.TooManyConnections",
            ErrorCode::RateLimited => "org.bci2token.Error.RateLimited",
        }
    }

    /// The code of a D-Bus error name, if it is one of ours.
    pub fn from_dbus_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.dbus_name() == name)
    }
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub version: String,
    pub protocol: u32,
    /// `system` or `user`.
    pub mode: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub sessions_active: usize,
    pub sessions_total: usize,
    pub max_sessions: usize,
    pub drivers: usize,
    pub data_dir: String,
    pub socket: String,
    /// What the caller may do: `admin`, `operator` or `reader`.
    pub caller_role: String,
    /// Worker threads that have shown no progress for longer than the watchdog allows, e.g.
    /// `store-writer: no progress for 12.5 s` (empty when all is well; while not empty the daemon
    /// stops feeding systemd's watchdog).
    #[serde(default)]
    pub stuck: Vec<String>,
}

/// One loaded driver plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    pub name: String,
    pub version: String,
    /// `major.minor`
    pub abi: String,
    pub file: String,
}

/// A file in the driver path that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFailure {
    pub file: String,
    pub error: String,
}

/// Reply to `drivers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverList {
    pub drivers: Vec<DriverInfo>,
    pub failed: Vec<PluginFailure>,
}

/// Something a driver can open now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub driver: String,
    pub id: String,
    pub description: String,
    /// `--set` keys that open this device.
    pub config: ConfigMap,
}

/// Reply to `devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceEntry>,
    /// Drivers whose probe failed, with the message.
    pub errors: Vec<PluginFailure>,
}

/// A model package.
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// The package directory (what `--model` takes, as does the name).
    pub dir: String,
    pub channels: Vec<String>,
    pub sample_rate: f64,
    pub window_seconds: f64,
    pub hop_seconds: f64,
    pub labels: Vec<String>,
    /// The label that emits nothing (rest); empty for none.
    #[serde(default)]
    pub null_label: String,
    pub tokenizer: String,
    /// Data a learned model was trained on (empty for analytic models).
    pub trained_on: Vec<String>,
    /// The uid whose trained model this is (`model train`); none for the shared models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u32>,
}

/// `model_train`: what to fit, to which of the caller's stored sessions, cut into trials by the
/// same rules as `bci2tokenctl evaluate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// The model's name (letters, digits, `.`, `-`, `_`).
    pub name: String,
    /// `csp-lda`, `riemann-mdm`, `riemann-ts` (motor imagery), `trca` or `fbtrca` (SSVEP).
    pub method: String,
    /// Stored sessions (ids) to train on: the caller's own, ended.
    pub sessions: Vec<String>,
    /// Annotation texts that are class cues [default: every text `map` maps].
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// Annotation text → the model's label for it (e.g. T1 → hands).
    #[serde(default)]
    pub map: Vec<(String, String)>,
    #[serde(default)]
    pub trial_start: Option<String>,
    /// Seconds [default: the cue annotation's duration].
    #[serde(default)]
    pub trial_length: Option<f64>,
    /// Only trials FIRST to LAST (from 1, in time order) of each session.
    #[serde(default)]
    pub trials: Option<(usize, usize)>,
    /// The model's window, seconds [default: the method's].
    #[serde(default)]
    pub window_seconds: Option<f64>,
    /// Seconds after a trial's start before the first training window [default: the method's].
    #[serde(default)]
    pub offset_seconds: Option<f64>,
    /// Seconds between training windows in a trial, and between the model's windows when it
    /// decodes [default: 0.25].
    #[serde(default)]
    pub hop_seconds: Option<f64>,
    /// The channels the model reads, by label [default: all of the recording's].
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Band-pass of the model's preprocessing, Hz [default: the method's].
    #[serde(default)]
    pub bandpass_hz: Option<[f64; 2]>,
    /// Mains notch of the model's preprocessing: 50 or 60 Hz, 0 for none [default: none].
    #[serde(default)]
    pub notch_hz: Option<f64>,
    /// SSVEP: each class's stimulus frequency, in class order [default: read from the labels, e.g. 13Hz].
    #[serde(default)]
    pub frequencies: Option<Vec<f64>>,
    /// Folds of the cross-validation [default: 5].
    #[serde(default)]
    pub folds: Option<usize>,
    /// Replace the caller's trained model of the same name.
    #[serde(default)]
    pub replace: bool,
}

/// Reply to `model_train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    pub model: ModelInfo,
    pub method: String,
    /// Trials per class (the model's labels, in order).
    pub trials: Vec<(String, usize)>,
    pub windows: usize,
    /// Window accuracy, cross-validated by folds of whole trials.
    pub cv_accuracy: f64,
    pub cv_folds: usize,
    /// Wolpaw's ITR at one decision a window.
    pub itr_bits_per_minute: f64,
    /// Cues that gave no trial, windows refused, and the like.
    pub notes: Vec<String>,
}

/// Reply to `models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    /// Directories with a `model.toml` that could not be read, and why.
    pub errors: Vec<PluginFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelDesc {
    pub label: String,
    pub unit: String,
}

/// Who asked for something, as the kernel reported it (`SO_PEERCRED`, `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups of the caller's process when it connected (not stored with sessions).
    #[serde(default, skip_serializing)]
    pub groups: Vec<u32>,
    /// polkit authorized this call's admin action for a caller outside the admin group (set by
    /// the daemon's D-Bus door for one call only; never stored).
    #[serde(default, skip)]
    pub admin_by_polkit: bool,
}

impl Caller {
    /// True when the caller's primary or a supplementary group is `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A session as `session list/show` and `session start` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub driver: String,
    pub config: ConfigMap,
    pub model: Option<String>,
    pub state: SessionState,
    /// Why the session failed or stopped, when there is something to say.
    pub message: Option<String>,
    pub description: String,
    pub channels: Vec<ChannelDesc>,
    pub sample_rate: f64,
    /// Unix time in seconds.
    pub created: f64,
    pub started_by: Caller,
    pub blocks: u64,
    pub frames: u64,
    pub gaps: u64,
    pub annotations: u64,
    /// Events that slow subscribers lost (summed over subscribers).
    pub events_dropped: u64,
    pub subscribers: usize,
    /// Blocks and events committed to the session store (0 when the daemon does not record).
    #[serde(default)]
    pub stored_blocks: u64,
    #[serde(default)]
    pub stored_events: u64,
    /// Blocks and events not recorded because the store fell behind.
    #[serde(default)]
    pub store_dropped: u64,
    /// Why the session's recording stopped while the session went on (a full file system, an
    /// I/O error); absent while it records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_error: Option<String>,
    /// Windows a real-time session could not hand to the decoder because its decode queue was
    /// full (no token was decoded from them).
    #[serde(default)]
    pub windows_dropped: u64,
    /// The subject's pseudonym given at start.
    #[serde(default)]
    pub subject: Option<String>,
    /// The latest signal quality (absent until the first quality window is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::observe::Quality>,
    /// The session's decoding (absent without a model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<crate::observe::DecoderHealth>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntryInfo {
    pub seq: u64,
    /// Unix time in seconds.
    pub t: f64,
    pub uid: u32,
    pub pid: Option<u32>,
    pub action: String,
    pub object: String,
    pub outcome: String,
    /// The entry's HMAC, hex.
    pub mac: String,
}

/// The result of `audit_verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub entries: u64,
    pub intact: bool,
    /// The first break, when the chain is broken.
    pub problem: Option<String>,
}

/// The result of `session_delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// The id of the session deleted.
    pub deleted: String,
}

/// The result of `key_rotate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotation {
    /// Session keys re-wrapped under the new master key.
    pub rewrapped_sessions: u64,
}

/// The result of `backup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupDone {
    /// The file written, as the caller named it.
    pub path: String,
    /// SQLite pages copied.
    pub pages: u64,
}

/// The result of `restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    pub restored_from: String,
}

/// The result of `export`: a recording, or a private release of features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportDone {
    Features(FeatureRelease),
    Recording(Exported),
}

/// A session written as EDF+, BDF+ or CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    pub id: String,
    pub format: String,
    pub path: String,
}

/// A differentially private release of a session's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRelease {
    pub id: String,
    pub path: String,
    /// Features per window.
    pub features: u64,
    pub windows: u64,
    pub epsilon: f64,
    pub delta: f64,
    /// µV² a feature is clipped to.
    pub clip: f64,
    /// The Gaussian noise's standard deviation.
    pub sigma: f64,
    /// The subject whose budget paid.
    pub subject: String,
    pub budget: PrivacyBudget,
}

/// A subject's privacy budget after a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyBudget {
    pub epsilon_spent: f64,
    pub delta_spent: f64,
    pub epsilon_limit: f64,
    pub delta_limit: f64,
}

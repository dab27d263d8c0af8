//! Daemon configuration: defaults per mode, the TOML file, then `BCI2TOKEN_*` environment
//! variables, each key validated with an error that names it.
//!
//! A crate of its own, without libtorch, so that the config file's parser can be fuzzed
//! (fuzz/fuzz_targets/config.rs); the daemon uses it as its `config` module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bci2token_driver_host::{client::DEFAULT_HANG_SECONDS, DEFAULT_MEMORY_MIB};
pub use bci2token_manifest::DevicePreference;

/// Where the daemon runs: as the system service or as a user's own process (`--user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    System,
    User,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::System => "system",
            Mode::User => "user",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// stderr; the journal's native protocol when stderr is the journal (a systemd service).
    Stderr,
    Syslog,
    /// The journal's native protocol always.
    Journal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    /// The file the config was read from, if any.
    pub file: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    pub log_target: LogTarget,
    pub data_dir: PathBuf,
    /// Holds the control socket.
    pub runtime_dir: PathBuf,
    /// Directories searched for driver plugins, in order.
    pub driver_path: Vec<PathBuf>,
    /// Where sessions' devices run: a driver host process each (default) or in the daemon.
    pub driver_isolation: Isolation,
    /// A driver host's address space above what it maps at start, MiB.
    pub driver_memory_limit: u64,
    /// Seconds a driver host's `read` may take beyond its time-out before it is killed as hung.
    pub driver_hang_timeout: f64,
    /// Restarts in a row of a live device's driver host that died in `read` (0: none).
    pub driver_restarts: u32,
    pub max_sessions: usize,
    /// A running session that delivers nothing for this long fails (seconds, 0 = never).
    pub session_timeout: f64,
    /// Window of the per-channel statistics (seconds).
    pub stats_interval: f64,
    /// Mains frequency for line-noise measurements (50 or 60 Hz).
    pub line_frequency: f64,
    /// Events buffered per subscriber before a slow one starts losing events.
    pub subscriber_queue: usize,
    /// Group that owns the control socket in system mode (members may start and follow sessions).
    pub socket_group: String,
    /// Group whose members may do everything, like root.
    pub admin_group: String,
    /// Mode of the control socket: 0660 (the socket group and admins only) by default; 0666 lets
    /// anyone connect with the reader role (status only).
    pub socket_mode: u32,
    /// Where models run: `auto` (CUDA when available), `cpu` or `cuda`.
    pub decoder_device: DevicePreference,
    /// libtorch intra-op threads (0 = libtorch's default: one per core). 1 by default: a window is
    /// too small to split, and spinning thread pools cost latency on a busy machine.
    pub decoder_threads: usize,
    /// Most windows in one forward pass.
    pub decoder_max_batch: usize,
    /// Each session's windows in flight to the decoder at most; beyond, a live session drops them.
    pub decoder_queue: usize,
    /// Directories searched for model packages by name (`bci2tokenctl models`, `--model NAME`).
    pub model_path: Vec<PathBuf>,
    /// Model attached to sessions started without `--model` (a name or a directory; empty = none).
    pub default_model: String,
    /// Publish every decoding session's tokens and probabilities as LSL outlets.
    pub lsl_outlets: bool,
    /// liblsl to load (empty: $BCI2TOKEN_LIBLSL, then the library search path).
    pub lsl_library: Option<PathBuf>,
    /// Record every session to the encrypted store in data_dir.
    pub record: bool,
    /// Each session's writes waiting for the store at most (blocks and events); beyond, a live
    /// session's are dropped and counted.
    pub store_queue: usize,
    /// Stored sessions that ended more than this many days ago are deleted (0 = keep forever).
    pub retention_days: f64,
    /// The privacy budget of each subject across differentially private releases.
    pub dp_epsilon_budget: f64,
    pub dp_delta_budget: f64,
    /// A request frame started and not finished within this many seconds is refused.
    pub request_timeout: f64,
    /// A connection idle this many seconds between requests is closed.
    pub idle_timeout: f64,
    /// Connections to the control socket at once, from everyone together and from one uid.
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// Each uid's token bucket of requests: refilled at this rate, holding at most `request_burst`.
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// Sessions one uid may have running at once (admins included; root is not limited).
    pub max_sessions_per_uid: usize,
    /// Refusals of one uid written to the audit log individually per minute; beyond, they are
    /// counted and the count is written with the next entry.
    pub audit_refusals_per_minute: usize,
    /// Signal-quality thresholds (`[quality]`; its mains frequency is `line_frequency`).
    pub quality: bci2token_dsp::quality::QualityConfig,
    /// A session's quality is sent at least this often while no flag changes (seconds).
    pub quality_interval: f64,
    /// A session's model failing this many windows in a row opens its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before it tries the model again (seconds; doubled at each
    /// failed try, up to 32 times).
    pub breaker_backoff: f64,
    /// Where the Prometheus `/metrics` listener listens (`None`: no listener).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Let `metrics_listen` be an address other than loopback.
    pub metrics_listen_public: bool,
    /// The admin's per-driver settings (`[drivers.NAME]` tables): passed to the driver as host keys
    /// (`_KEY`) that no session can set, e.g. `[drivers.lsl] library = "/opt/lsl/liblsl.so"`.
    pub driver_settings: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The D-Bus bus the daemon offers its API on (see [`Bus`]).
    pub bus: Bus,
}

/// Where a session's device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In a driver host process (the default).
    Process,
    /// In the daemon's own address space (for measurement; a crashing plugin ends the daemon).
    InProcess,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(Isolation::Process),
            "in-process" => Ok(Isolation::InProcess),
            other => Err(format!("\"{other}\" is not a driver isolation: use \"process\" or \"in-process\"")),
        }
    }
}

/// Which D-Bus bus to be on: the mode's own (`system` bus for the system daemon, `session` bus
/// with `--user`; both follow `DBUS_SYSTEM_BUS_ADDRESS`/`DBUS_SESSION_BUS_ADDRESS`), another
/// bus's address, or none (socket only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    Address(String),
    None,
}

impl std::str::FromStr for Bus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Bus::System),
            "session" => Ok(Bus::Session),
            "none" | "" => Ok(Bus::None),
            a if a.contains(':') && a.contains('=') => Ok(Bus::Address(a.to_string())),
            other => Err(format!(
                "{other:?} is not a bus: use \"system\", \"session\", \"none\" or a D-Bus address (unix:path=...)"
            )),
        }
    }
}

/// Every key the config file and the environment accept. Environment names are
/// `BCI2TOKEN_` + the key in upper case.
pub const KEYS: &[&str] = &[
    "log_level",
    "log_target",
    "data_dir",
    "runtime_dir",
    "driver_path",
    "driver_isolation",
    "driver_memory_limit",
    "driver_hang_timeout",
    "driver_restarts",
    "max_sessions",
    "session_timeout",
    "stats_interval",
    "line_frequency",
    "subscriber_queue",
    "socket_group",
    "admin_group",
    "socket_mode",
    "decoder_device",
    "decoder_threads",
    "decoder_max_batch",
    "decoder_queue",
    "model_path",
    "default_model",
    "lsl_outlets",
    "lsl_library",
    "record",
    "store_queue",
    "retention_days",
    "dp_epsilon_budget",
    "dp_delta_budget",
    "request_timeout",
    "idle_timeout",
    "bus",
    "max_connections",
    "max_connections_per_uid",
    "requests_per_second",
    "request_burst",
    "max_sessions_per_uid",
    "audit_refusals_per_minute",
    "drivers",
    "quality",
    "quality_interval",
    "breaker_failures",
    "breaker_backoff",
    "metrics_listen",
    "metrics_listen_public",
];

/// The models the packages ship; the system daemon also looks in `data_dir/models` (installed by
/// an admin, `bci2tokenctl model install`), first.
pub const SYSTEM_MODEL_DIR: &str = "/usr/share/bci2token/models";

pub const SYSTEM_CONFIG_FILE: &str = "/etc/bci2token/bci2tokend.toml";
pub const SYSTEM_DATA_DIR: &str = "/var/lib/bci2token";
pub const SYSTEM_DRIVER_DIR: &str = "/usr/lib/bci2token/drivers";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}`; valid keys: {}", path.display(), KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    #[error("{source_name}: {message}")]
    Invalid { source_name: String, message: String },
    #[error("--user mode needs $HOME (an absolute path) or the XDG base directory variables to find its directories")]
    NoHome,
}

/// One value as it was given: from the file (typed TOML) or the environment (a string).
enum Raw {
    Toml(toml::Value),
    Env(String),
}

struct Source<'a> {
    name: String,
    raw: &'a Raw,
}

impl Source<'_> {
    fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { source_name: self.name.clone(), message: message.into() }
    }

    fn string(&self) -> Result<String, ConfigError> {
        match self.raw {
            Raw::Env(s) => Ok(s.clone()),
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(self.invalid(format!("expected a string, got {v}"))),
        }
    }

    fn number(&self) -> Result<f64, ConfigError> {
        match self.raw {
            Raw::Env(s) => s.trim().parse().map_err(|_| self.invalid(format!("{s:?} is not a number"))),
            Raw::Toml(toml::Value::Integer(i)) => Ok(*i as f64),
            Raw::Toml(toml::Value::Float(f)) => Ok(*f),
            Raw::Toml(v) => Err(self.invalid(format!("expected a number, got {v}"))),
        }
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        match self.raw {
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(self.invalid(format!("{s:?} is not a boolean (true or false)"))),
            },
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(v) => Err(self.invalid(format!("expected true or false, got {v}"))),
        }
    }

    fn integer(&self, min: u64, max: u64) -> Result<u64, ConfigError> {
        let n = match self.raw {
            Raw::Env(s) => s.trim().parse::<u64>().map_err(|_| self.invalid(format!("{s:?} is not a whole number")))?,
            Raw::Toml(toml::Value::Integer(i)) => {
                u64::try_from(*i).map_err(|_| self.invalid(format!("{i} is negative")))?
            }
            Raw::Toml(v) => return Err(self.invalid(format!("expected a whole number, got {v}"))),
        };
        if n < min || n > max {
            return Err(self.invalid(format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        let s = self.string()?;
        if s.is_empty() || !Path::new(&s).is_absolute() {
            return Err(self.invalid(format!("{s:?} is not an absolute path")));
        }
        Ok(PathBuf::from(s))
    }

    /// A list of directories: a TOML array, or a colon-separated string (as in `$PATH`).
    fn path_list(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let items: Vec<String> = match self.raw {
            Raw::Toml(toml::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.invalid(format!("{v} is not a string"))))
                .collect::<Result<_, _>>()?,
            _ => self.string()?.split(':').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        };
        items
            .into_iter()
            .map(|s| {
                if Path::new(&s).is_absolute() {
                    Ok(PathBuf::from(s))
                } else {
                    Err(self.invalid(format!("{s:?} is not an absolute path")))
                }
            })
            .collect()
    }
}

fn env_name(key: &str) -> String {
    format!("BCI2TOKEN_{}", key.to_ascii_uppercase())
}

fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" | "err" => Some(log::LevelFilter::Error),
        "warn" | "warning" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// Directories a `--user` daemon uses, from the XDG base directory specification (relative
/// values are ignored, `HOME`'s too, as `bci2token_api::paths` does for the runtime directory).
fn user_dirs(env: &dyn Fn(&str) -> Option<String>) -> Result<(PathBuf, PathBuf, PathBuf), ConfigError> {
    let home = env("HOME").filter(|h| Path::new(h).is_absolute()).map(PathBuf::from);
    let xdg = |var: &str, fallback: &str| -> Result<PathBuf, ConfigError> {
        match env(var).filter(|v| Path::new(v).is_absolute()) {
            Some(v) => Ok(PathBuf::from(v)),
            None => home.as_ref().map(|h| h.join(fallback)).ok_or(ConfigError::NoHome),
        }
    };
    let config = xdg("XDG_CONFIG_HOME", ".config")?.join("bci2token/bci2tokend.toml");
    let data = xdg("XDG_DATA_HOME", ".local/share")?.join("bci2token");
    // The same rule bci2tokenctl uses to find the socket.
    let runtime = bci2token_api::paths::user_runtime_dir_with(env).ok_or(ConfigError::NoHome)?;
    Ok((config, data, runtime))
}

/// Where plugins are looked for when `driver_path` is not set: the installed location when the
/// daemon runs from /usr, otherwise (a development build) the directory of the executable, where
/// cargo puts the driver cdylibs.
fn default_driver_path() -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    match exe_dir {
        Some(dir) if !dir.starts_with("/usr") => vec![dir],
        _ => vec![PathBuf::from(SYSTEM_DRIVER_DIR)],
    }
}

/// Model directories when `model_path` is not set: the data directory's `models`, the installed
/// packages, and in a development build the workspace's `models/` (two levels above target/<profile>).
fn default_model_path(mode: Mode, data_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![data_dir.join("models")];
    if mode == Mode::System {
        dirs.push(PathBuf::from(SYSTEM_MODEL_DIR));
    }
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    if let Some(dir) = exe_dir.filter(|d| !d.starts_with("/usr")) {
        if let Ok(dev) = dir.join("../../models").canonicalize() {
            dirs.push(dev);
        }
    }
    dirs
}

/// `[drivers.NAME]` tables of scalar settings (the environment cannot set them: they may load code).
/// `[quality]`: the quality meter's thresholds, checked as a meter would check them.
fn quality_thresholds(src: &Source<'_>) -> Result<bci2token_dsp::quality::QualityConfig, ConfigError> {
    use bci2token_dsp::quality::{QualityConfig, QualityMeter};
    let Raw::Toml(value @ toml::Value::Table(table)) = src.raw else {
        return Err(src.invalid("expected a table [quality] (not settable from the environment)"));
    };
    if table.contains_key("line_hz") {
        return Err(src.invalid("`line_hz` is not set here: the mains frequency is the daemon's `line_frequency`"));
    }
    let cfg: QualityConfig =
        value.clone().try_into().map_err(|e: toml::de::Error| src.invalid(e.message().to_string()))?;
    // Thresholds that do not depend on the session's rate (checked with the widest meter).
    QualityMeter::new(1, 1000, 1000.0, cfg).map_err(|e| src.invalid(e.to_string()))?;
    Ok(cfg)
}

fn driver_settings(
    src: &Source<'_>,
) -> Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>, ConfigError> {
    let Raw::Toml(toml::Value::Table(drivers)) = src.raw else {
        return Err(src.invalid("expected tables [drivers.NAME] (not settable from the environment)"));
    };
    let mut out = BTreeMap::new();
    for (driver, settings) in drivers {
        let toml::Value::Table(settings) = settings else {
            return Err(src.invalid(format!("`drivers.{driver}` must be a table of settings")));
        };
        let mut map = serde_json::Map::new();
        for (key, value) in settings {
            let json = match value {
                toml::Value::String(s) => serde_json::Value::from(s.as_str()),
                toml::Value::Integer(i) => serde_json::Value::from(*i),
                toml::Value::Float(f) => serde_json::Value::from(*f),
                toml::Value::Boolean(b) => serde_json::Value::from(*b),
                other => {
                    return Err(
                        src.invalid(format!("`drivers.{driver}.{key}`: {other} is not a string, number or boolean"))
                    )
                }
            };
            map.insert(key.clone(), json);
        }
        out.insert(driver.clone(), map);
    }
    Ok(out)
}

impl Config {
    /// Loads the configuration for `mode`: defaults, then `file` (or the mode's default file if it
    /// exists), then `BCI2TOKEN_*` variables from `env`.
    pub fn load(mode: Mode, file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (cfg, default_file) = Config::defaults(mode, env)?;
        // An explicitly named file must exist; the default one is optional.
        let (path, required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (default_file, false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => cfg.read(Some((path, &text)), env),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => cfg.read(None, env),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// As [`Config::load`] with `text` as the content of the config file `path` (not read).
    pub fn parse(
        mode: Mode,
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (cfg, _) = Config::defaults(mode, env)?;
        cfg.read(Some((path.to_path_buf(), text)), env)
    }

    /// The defaults of `mode`, and its config file.
    fn defaults(mode: Mode, env: &dyn Fn(&str) -> Option<String>) -> Result<(Config, PathBuf), ConfigError> {
        let (default_file, data_dir, runtime_dir) = match mode {
            Mode::System => (
                PathBuf::from(SYSTEM_CONFIG_FILE),
                PathBuf::from(SYSTEM_DATA_DIR),
                PathBuf::from(bci2token_api::paths::SYSTEM_RUNTIME_DIR),
            ),
            Mode::User => user_dirs(env)?,
        };
        let cfg = Config {
            mode,
            file: None,
            log_level: log::LevelFilter::Info,
            log_target: LogTarget::Stderr,
            data_dir,
            runtime_dir,
            driver_path: default_driver_path(),
            driver_isolation: Isolation::Process,
            driver_memory_limit: DEFAULT_MEMORY_MIB,
            driver_hang_timeout: DEFAULT_HANG_SECONDS,
            driver_restarts: 3,
            max_sessions: 8,
            session_timeout: 10.0,
            stats_interval: 1.0,
            line_frequency: 50.0,
            subscriber_queue: 1024,
            socket_group: "bci2token".into(),
            admin_group: "bci2token-admin".into(),
            socket_mode: 0o660,
            decoder_device: DevicePreference::Auto,
            decoder_threads: 1,
            decoder_max_batch: 256,
            decoder_queue: 256,
            model_path: Vec::new(),
            default_model: String::new(),
            lsl_outlets: false,
            lsl_library: None,
            record: true,
            store_queue: 4096,
            retention_days: 0.0,
            dp_epsilon_budget: 1.0,
            dp_delta_budget: 1e-5,
            request_timeout: 10.0,
            idle_timeout: 300.0,
            max_connections: 256,
            max_connections_per_uid: 32,
            requests_per_second: 20.0,
            request_burst: 40.0,
            max_sessions_per_uid: 4,
            audit_refusals_per_minute: 60,
            quality: bci2token_dsp::quality::QualityConfig::default(),
            quality_interval: 5.0,
            breaker_failures: 5,
            breaker_backoff: 5.0,
            metrics_listen: None,
            metrics_listen_public: false,
            driver_settings: BTreeMap::new(),
            bus: if mode == Mode::System { Bus::System } else { Bus::Session },
        };
        Ok((cfg, default_file))
    }

    /// The defaults, then `file` (its path and text), then `BCI2TOKEN_*` variables from `env`.
    fn read(
        mut self,
        file: Option<(PathBuf, &str)>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut values: BTreeMap<String, (String, Raw)> = BTreeMap::new();
        if let Some((path, text)) = file {
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax { path: path.clone(), message: e.to_string() })?;
            for (key, value) in table {
                if !KEYS.contains(&key.as_str()) {
                    return Err(ConfigError::UnknownKey { path, key });
                }
                values.insert(key.clone(), (format!("{} key `{key}`", path.display()), Raw::Toml(value)));
            }
            self.file = Some(path);
        }
        for key in KEYS.iter().filter(|k| !matches!(**k, "drivers" | "quality")) {
            let var = env_name(key);
            if let Some(v) = env(&var) {
                values.insert((*key).to_string(), (format!("environment variable {var}"), Raw::Env(v)));
            }
        }
        for (key, (name, raw)) in &values {
            self.apply(key, &Source { name: name.clone(), raw })?;
        }
        if !values.contains_key("model_path") {
            self.model_path = default_model_path(self.mode, &self.data_dir);
        }
        if let Some(addr) = self.metrics_listen {
            // The listener has no authentication: off loopback it needs a decision of its own.
            if !addr.ip().is_loopback() && !self.metrics_listen_public {
                let name = values.get("metrics_listen").map_or("metrics_listen".to_string(), |(n, _)| n.clone());
                return Err(ConfigError::Invalid {
                    source_name: name,
                    message: format!(
                        "{addr} is not a loopback address: anyone who can reach it could read the metrics; listen on \
                         127.0.0.1 or [::1] behind a TLS and authenticating proxy (docs/monitoring.md), or set \
                         metrics_listen_public = true"
                    ),
                });
            }
        }
        Ok(self)
    }

    fn apply(&mut self, key: &str, src: &Source<'_>) -> Result<(), ConfigError> {
        match key {
            "log_level" => {
                let s = src.string()?;
                self.log_level = parse_level(&s).ok_or_else(|| {
                    src.invalid(format!("{s:?} is not a log level (off, error, warn, info, debug, trace)"))
                })?;
            }
            "log_target" => {
                self.log_target = match src.string()?.as_str() {
                    "stderr" => LogTarget::Stderr,
                    "syslog" => LogTarget::Syslog,
                    "journal" => LogTarget::Journal,
                    other => {
                        return Err(src.invalid(format!("{other:?} is not a log target (stderr, journal or syslog)")))
                    }
                }
            }
            "data_dir" => self.data_dir = src.path()?,
            "runtime_dir" => self.runtime_dir = src.path()?,
            "driver_path" => self.driver_path = src.path_list()?,
            "max_sessions" => self.max_sessions = src.integer(1, 1024)? as usize,
            "session_timeout" => {
                let v = src.number()?;
                if !(0.0..=86_400.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0..=86400 seconds (0 = never)")));
                }
                self.session_timeout = v;
            }
            "stats_interval" => {
                let v = src.number()?;
                if !(0.1..=60.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0.1..=60 seconds")));
                }
                self.stats_interval = v;
            }
            "line_frequency" => {
                let v = src.number()?;
                if v != 50.0 && v != 60.0 {
                    return Err(src.invalid(format!("{v} is not a mains frequency (50 or 60)")));
                }
                self.line_frequency = v;
            }
            "subscriber_queue" => self.subscriber_queue = src.integer(16, 1 << 20)? as usize,
            "socket_group" => self.socket_group = src.string()?,
            "admin_group" => self.admin_group = src.string()?,
            "socket_mode" => {
                let text = src.string()?;
                self.socket_mode = match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                    Ok(m @ (0o600 | 0o660 | 0o666)) => m,
                    _ => {
                        return Err(
                            src.invalid(format!("{text:?} is not a socket mode: use \"0660\", \"0666\" or \"0600\""))
                        )
                    }
                }
            }
            "decoder_device" => self.decoder_device = src.string()?.parse().map_err(|e: String| src.invalid(e))?,
            "driver_isolation" => {
                self.driver_isolation = src.string()?.parse().map_err(|e: String| src.invalid(e))?;
            }
            "driver_memory_limit" => self.driver_memory_limit = src.integer(16, 1 << 20)?,
            "driver_restarts" => self.driver_restarts = src.integer(0, 100)? as u32,
            "driver_hang_timeout" => {
                let v = src.number()?;
                if !(1.0..=3600.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 1..=3600 seconds")));
                }
                self.driver_hang_timeout = v;
            }
            "decoder_threads" => self.decoder_threads = src.integer(0, 256)? as usize,
            "decoder_max_batch" => self.decoder_max_batch = src.integer(1, 65_536)? as usize,
            "decoder_queue" => self.decoder_queue = src.integer(1, 1 << 20)? as usize,
            "model_path" => self.model_path = src.path_list()?,
            "default_model" => self.default_model = src.string()?,
            "lsl_outlets" => self.lsl_outlets = src.boolean()?,
            "lsl_library" => self.lsl_library = Some(src.path()?),
            "record" => self.record = src.boolean()?,
            "request_timeout" => {
                let v = src.number()?;
                if !(0.05..=3600.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0.05..=3600 seconds")));
                }
                self.request_timeout = v;
            }
            "idle_timeout" => {
                let v = src.number()?;
                if !(1.0..=86_400.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 1..=86400 seconds")));
                }
                self.idle_timeout = v;
            }
            "max_connections" => self.max_connections = src.integer(1, 65_536)? as usize,
            "max_connections_per_uid" => self.max_connections_per_uid = src.integer(1, 65_536)? as usize,
            "requests_per_second" | "request_burst" => {
                let v = src.number()?;
                let min = if key == "request_burst" { 1.0 } else { f64::MIN_POSITIVE };
                if !(v >= min && v <= 1e6) {
                    return Err(src.invalid(format!("{v} is out of range (at least {min}, at most 1000000)")));
                }
                if key == "requests_per_second" {
                    self.requests_per_second = v;
                } else {
                    self.request_burst = v;
                }
            }
            "max_sessions_per_uid" => self.max_sessions_per_uid = src.integer(1, 1024)? as usize,
            "audit_refusals_per_minute" => self.audit_refusals_per_minute = src.integer(1, 1_000_000)? as usize,
            "drivers" => self.driver_settings = driver_settings(src)?,
            "quality" => self.quality = quality_thresholds(src)?,
            "quality_interval" => {
                let v = src.number()?;
                if !(0.5..=600.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0.5..=600 seconds")));
                }
                self.quality_interval = v;
            }
            "breaker_failures" => self.breaker_failures = src.integer(1, 10_000)? as u32,
            "breaker_backoff" => {
                let v = src.number()?;
                if !(0.1..=3600.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0.1..=3600 seconds")));
                }
                self.breaker_backoff = v;
            }
            "metrics_listen" => {
                let text = src.string()?;
                self.metrics_listen = if text.is_empty() {
                    None
                } else {
                    Some(text.parse().map_err(|_| {
                        src.invalid(format!(
                            "{text:?} is not an address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\" (\"\" = no listener)"
                        ))
                    })?)
                };
            }
            "metrics_listen_public" => self.metrics_listen_public = src.boolean()?,
            "bus" => self.bus = src.string()?.parse().map_err(|e: String| src.invalid(e))?,
            "store_queue" => self.store_queue = src.integer(16, 1 << 20)? as usize,
            "dp_epsilon_budget" | "dp_delta_budget" => {
                let v = src.number()?;
                if !(v > 0.0 && v <= 100.0) {
                    return Err(src.invalid(format!("{v} is not a privacy budget (above 0, at most 100)")));
                }
                if key == "dp_epsilon_budget" {
                    self.dp_epsilon_budget = v;
                } else {
                    self.dp_delta_budget = v;
                }
            }
            "retention_days" => {
                let v = src.number()?;
                if !(0.0..=36_500.0).contains(&v) {
                    return Err(src.invalid(format!("{v} is out of range 0..=36500 days (0 = keep forever)")));
                }
                self.retention_days = v;
            }
            _ => unreachable!("key {key} is in KEYS but has no parser"),
        }
        Ok(())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join(bci2token_api::paths::SOCKET_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bci2token-config-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bci2tokend.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn user_mode_uses_xdg_directories() {
        let env = env_of(&[("HOME", "/home/ada"), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
        let cfg = Config::load(Mode::User, None, &env).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/home/ada/.local/share/bci2token"));
        assert_eq!(cfg.socket_path(), PathBuf::from("/run/user/1000/bci2token/control.sock"));
        assert_eq!(cfg.file, None);
    }

    #[test]
    fn a_relative_home_is_no_home() {
        // Found by fuzzing (fuzz/fuzz_targets/config.rs): the data directory was relative to the
        // daemon's working directory.
        for home in ["", "'/home/ada", "home/ada"] {
            let env = env_of(&[("HOME", home), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
            let err = Config::load(Mode::User, None, &env).unwrap_err();
            assert!(matches!(err, ConfigError::NoHome), "HOME={home:?}: {err}");
        }
        let env = env_of(&[
            ("HOME", "home/ada"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_CONFIG_HOME", "/c"),
            ("XDG_DATA_HOME", "/d"),
        ]);
        let cfg = Config::load(Mode::User, None, &env).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/d/bci2token"));
    }

    #[test]
    fn environment_overrides_file() {
        let path = temp_file("override", "max_sessions = 3\nlog_level = \"debug\"\ndriver_path = [\"/a\", \"/b\"]\n");
        let env = env_of(&[("HOME", "/h"), ("BCI2TOKEN_MAX_SESSIONS", "5"), ("BCI2TOKEN_DRIVER_PATH", "/x:/y")]);
        let cfg = Config::load(Mode::User, Some(&path), &env).unwrap();
        assert_eq!(cfg.max_sessions, 5);
        assert_eq!(cfg.log_level, log::LevelFilter::Debug);
        assert_eq!(cfg.driver_path, vec![PathBuf::from("/x"), PathBuf::from("/y")]);
    }

    #[test]
    fn unknown_key_is_named() {
        let path = temp_file("unknown", "max_session = 3\n");
        let err = Config::load(Mode::User, Some(&path), &env_of(&[("HOME", "/h")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown key `max_session`"), "{msg}");
        assert!(msg.contains("max_sessions"), "lists valid keys: {msg}");
    }

    #[test]
    fn invalid_values_name_their_source() {
        let env = env_of(&[("HOME", "/h"), ("BCI2TOKEN_MAX_SESSIONS", "many")]);
        let msg = Config::load(Mode::User, None, &env).unwrap_err().to_string();
        assert!(msg.contains("BCI2TOKEN_MAX_SESSIONS") && msg.contains("\"many\""), "{msg}");

        let path = temp_file("badlevel", "log_level = \"loud\"\n");
        let msg = Config::load(Mode::User, Some(&path), &env_of(&[("HOME", "/h")])).unwrap_err().to_string();
        assert!(msg.contains("key `log_level`") && msg.contains("loud"), "{msg}");

        let env = env_of(&[("HOME", "/h"), ("BCI2TOKEN_DATA_DIR", "relative/dir")]);
        let msg = Config::load(Mode::User, None, &env).unwrap_err().to_string();
        assert!(msg.contains("BCI2TOKEN_DATA_DIR") && msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = Config::load(Mode::User, Some(Path::new("/nonexistent/b.toml")), &env_of(&[("HOME", "/h")]));
        assert!(matches!(err, Err(ConfigError::Read { .. })));
    }
}

//! The `brainflow` driver's session keys, and BrainFlow's input parameters (its
//! `BrainFlowInputParams` JSON) built from them.
//!
//! A driver runs with the daemon's rights, so nothing a caller sets may make it open what the
//! caller could not: `serial_port` must be a serial line ([`checked_port`], checked again before
//! every reconnection), and BrainFlow's file parameters (`file`, `file_aux`, `file_anc`) are files
//! the caller passes (bci2tokenctl opens them with the caller's rights). BrainFlow takes a file
//! by name only, and reopening a passed file through `/proc/self/fd` would check the daemon's
//! rights on it (and the driver host's sandbox does not let it read the caller's directories), so
//! the driver copies a passed file into a memory file of its own ([`MemoryFile`]) and gives
//! BrainFlow that one's `/proc/self/fd/N`. The library to load is the admin's
//! (`[drivers.brainflow] library`): a session that could name one would run its code as the
//! daemon.

use std::path::PathBuf;
use std::time::Duration;

use bci2token_driver_abi::plugin::{
    config_bool, config_f64, config_file, config_string, reject_unknown_keys, Config, ConfigFile,
};
use bci2token_driver_abi::serial::checked_port;

use crate::boards::Rows;
use crate::memory_file::MemoryFile;

/// BrainFlow's text parameters, passed through (but `serial_port` and the files, checked first).
const TEXT_PARAMS: &[&str] =
    &["mac_address", "ip_address", "ip_address_aux", "ip_address_anc", "other_info", "serial_number"];
/// BrainFlow's whole-number parameters.
const NUMBER_PARAMS: &[&str] = &["ip_port", "ip_port_aux", "ip_port_anc", "timeout"];
/// BrainFlow's file parameters.
pub const FILE_PARAMS: &[&str] = &["file", "file_aux", "file_anc"];

/// Every session key.
pub const KEYS: &[&str] = &[
    "board",
    "master_board",
    "preset",
    "channels",
    "labels",
    "stall_timeout",
    "reconnect",
    "serial_port",
    "mac_address",
    "ip_address",
    "ip_address_aux",
    "ip_address_anc",
    "ip_port",
    "ip_port_aux",
    "ip_port_anc",
    "ip_protocol",
    "other_info",
    "timeout",
    "serial_number",
    "file",
    "file_aux",
    "file_anc",
];

/// Longest text parameter taken (BrainFlow's own are short: addresses, names).
const MAX_TEXT: usize = 1024;
/// BrainFlow's `timeout` runs inside `open` and each reconnection, which the daemon allows 180 s
/// and `driver_hang_timeout` (90 s by default) beyond a read's own.
const MAX_BOARD_TIMEOUT: f64 = 60.0;
/// Below this, a board's own packet spacing (or the 1 ms poll) would read as a stall.
const MIN_STALL: f64 = 0.1;

#[derive(Debug)]
pub struct BrainFlowConfig {
    /// As given; resolved against the library's boards ([`crate::boards::resolve`]).
    pub board: String,
    pub master_board: Option<String>,
    pub preset: i32,
    pub rows: Rows,
    pub labels: Option<Vec<String>>,
    /// No sample for this long marks the device lost.
    pub stall_timeout: Duration,
    pub reconnect: bool,
    /// The admin's library (host key `_library`).
    pub library: Option<PathBuf>,
    /// BrainFlow's input parameters but `master_board` (set once the board is resolved).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The files passed for BrainFlow's file parameters, until [`BrainFlowConfig::copy_files`].
    passed: Vec<(&'static str, ConfigFile)>,
    /// Their memory copies, which BrainFlow reads: kept for the device's life.
    pub files: Vec<MemoryFile>,
    /// `serial_port` as given (a name such as /dev/serial/by-id/… may lead to another device
    /// after a replug).
    pub port: Option<PathBuf>,
    pub allow_pty: bool,
}

impl BrainFlowConfig {
    pub fn from_config(config: &Config) -> Result<BrainFlowConfig, String> {
        reject_unknown_keys("brainflow", config, KEYS)?;
        let board = config_string(config, "board")?.ok_or(
            "needs `board`: BrainFlow's board name or id, for example --set board=Synthetic or --set board=Cyton \
             --set serial_port=/dev/ttyUSB0; `bci2tokenctl devices --driver brainflow` lists the boards",
        )?;
        let stall = config_f64(config, "stall_timeout")?.unwrap_or(3.0);
        if !(stall.is_finite() && (MIN_STALL..=3600.0).contains(&stall)) {
            return Err(format!(
                "config key `stall_timeout`: {stall} s is not allowed; use seconds from {MIN_STALL} to 3600"
            ));
        }
        let labels =
            config_string(config, "labels")?.map(|s| s.split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>());
        if labels.as_ref().is_some_and(|l| l.iter().any(String::is_empty)) {
            return Err("config key `labels`: an empty label; give one label per channel, separated by commas".into());
        }
        let allow_pty = config_bool(config, "_caller_paths")?.unwrap_or(false)
            || config_bool(config, "_allow_pty")?.unwrap_or(false);

        let mut params = serde_json::Map::new();
        for key in TEXT_PARAMS.iter().chain(["serial_port"].iter()).chain(FILE_PARAMS) {
            params.insert((*key).into(), "".into());
        }
        for key in NUMBER_PARAMS.iter().chain(["ip_protocol"].iter()) {
            params.insert((*key).into(), 0.into());
        }
        for key in TEXT_PARAMS {
            if let Some(v) = config_string(config, key)? {
                if v.len() > MAX_TEXT || v.contains('\0') {
                    return Err(format!("config key `{key}`: longer than {MAX_TEXT} bytes, or holds a NUL"));
                }
                params.insert((*key).into(), v.into());
            }
        }
        for key in NUMBER_PARAMS {
            if let Some(v) = config_f64(config, key)? {
                let most = if *key == "timeout" { MAX_BOARD_TIMEOUT } else { 65535.0 };
                if !(v.fract() == 0.0 && (0.0..=most).contains(&v)) {
                    return Err(format!("config key `{key}`: {v} is not a whole number from 0 to {most}"));
                }
                params.insert((*key).into(), (v as i64).into());
            }
        }
        if let Some(v) = config_string(config, "ip_protocol")? {
            let p = match v.to_ascii_lowercase().as_str() {
                "none" | "0" => 0,
                "udp" | "1" => 1,
                "tcp" | "2" => 2,
                _ => return Err(format!("config key `ip_protocol`: {v:?} is not none, udp or tcp")),
            };
            params.insert("ip_protocol".into(), p.into());
        }
        let port = config_string(config, "serial_port")?.map(PathBuf::from);
        let mut passed = Vec::new();
        for key in FILE_PARAMS {
            if let Some(f) = config_file(config, key)? {
                passed.push((*key, f));
            }
        }
        let mut cfg = BrainFlowConfig {
            board,
            master_board: config_string(config, "master_board")?,
            preset: config_string(config, "preset")?.map(|p| crate::boards::preset(&p)).transpose()?.unwrap_or(0),
            rows: config_string(config, "channels")?.map(|r| Rows::parse(&r)).transpose()?.unwrap_or(Rows::Eeg),
            labels,
            stall_timeout: Duration::from_secs_f64(stall),
            reconnect: config_bool(config, "reconnect")?.unwrap_or(true),
            library: config_string(config, "_library")?.map(PathBuf::from),
            params,
            passed,
            files: Vec::new(),
            port,
            allow_pty,
        };
        cfg.check_port()?;
        Ok(cfg)
    }

    /// Checks `serial_port` (again: before every prepare, since a name may lead elsewhere by then)
    /// and puts the device it leads to into BrainFlow's parameters.
    pub fn check_port(&mut self) -> Result<(), String> {
        if let Some(p) = &self.port {
            let checked = checked_port(p, self.allow_pty).map_err(|e| format!("config key `serial_port`: {e}"))?;
            self.params.insert("serial_port".into(), checked.to_string_lossy().into_owned().into());
        }
        Ok(())
    }

    /// Copies the passed files into memory and names the copies in BrainFlow's parameters; once
    /// the cheaper checks of the session are done.
    pub fn copy_files(&mut self) -> Result<(), String> {
        let mut used = 0;
        for (key, f) in std::mem::take(&mut self.passed) {
            let copy = MemoryFile::copy(&f, used).map_err(|e| format!("config key `{key}`: {e}"))?;
            used += copy.len();
            self.params.insert(key.into(), copy.path().into());
            self.files.push(copy);
        }
        Ok(())
    }

    /// BrainFlow's input parameters as its JSON, for `master_board` (or BrainFlow's NO_BOARD).
    pub fn params_json(&self, master_board: Option<i32>) -> String {
        let mut params = self.params.clone();
        params.insert("master_board".into(), master_board.unwrap_or(-100).into());
        serde_json::Value::Object(params).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v))).collect()
    }

    #[test]
    fn every_brainflow_parameter_is_in_the_json_with_its_default() {
        let c = BrainFlowConfig::from_config(&config(&[
            ("board", "Cyton"),
            ("ip_port", "6677"),
            ("ip_protocol", "udp"),
            ("other_info", "a\"b"),
        ]))
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&c.params_json(None)).unwrap();
        assert_eq!(json["ip_port"], 6677);
        assert_eq!(json["ip_protocol"], 1);
        assert_eq!(json["other_info"], "a\"b", "quotes stay inside the value");
        assert_eq!(json["master_board"], -100);
        assert_eq!(json["serial_port"], "");
        assert_eq!(json["timeout"], 0);
        assert_eq!(json.as_object().unwrap().len(), 16, "{json}");
        assert_eq!(c.stall_timeout, Duration::from_secs(3));
        assert_eq!(c.rows, Rows::Eeg);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = |pairs: &[(&str, &str)]| BrainFlowConfig::from_config(&config(pairs)).unwrap_err();
        assert!(e(&[]).contains("needs `board`"));
        assert!(e(&[("board", "Cyton"), ("port", "/dev/ttyUSB0")]).contains("no config key `port`"));
        assert!(e(&[("board", "Cyton"), ("ip_port", "70000")]).contains("`ip_port`"));
        assert!(e(&[("board", "Cyton"), ("ip_protocol", "sctp")]).contains("none, udp or tcp"));
        assert!(e(&[("board", "Cyton"), ("serial_port", "/etc/passwd")]).contains("is not a serial port"));
        assert!(e(&[("board", "Cyton"), ("serial_port", "/dev/ttyNOSUCH")]).contains("no such port"));
        assert!(e(&[("board", "Cyton"), ("channels", "some")]).contains("eeg, exg or all"));
        assert!(e(&[("board", "Cyton"), ("labels", "a,,b")]).contains("empty label"));
        // A system daemon opens no file by a caller's path.
        assert!(e(&[("board", "PlayBack"), ("file", "/etc/shadow")]).contains("pass the file itself"));
    }
}

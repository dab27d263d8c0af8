//! The session settings of the `openbci` driver (`bci2tokenctl session start --set KEY=VALUE`).

use std::path::PathBuf;
use std::time::Duration;

use bci2token_driver_abi::plugin::{config_bool, config_f64, Config};

use crate::commands::{ChannelSettings, GAINS, INPUTS};

/// Channels a Cyton + Daisy has.
pub const MAX_CHANNELS: usize = 16;

/// Fixed keys; per-channel keys are `ch1` … `ch16`.
pub const KEYS: &[&str] =
    &["port", "daisy", "sample_rate", "labels", "stall_timeout", "reply_timeout", "reconnect", "ch1..ch16"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daisy {
    /// Use what the banner reports; send no channel-count command.
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone)]
pub struct OpenBciConfig {
    pub port: PathBuf,
    pub daisy: Daisy,
    /// `~N` is sent only when set.
    pub sample_rate: Option<u32>,
    /// Channel labels (default `1` … `16`); checked against the channel count once it is known.
    pub labels: Option<Vec<String>>,
    /// `x…X` is sent only for the channels named here (0-based index, settings).
    pub channels: Vec<(usize, ChannelSettings)>,
    /// No byte for this long marks the device lost.
    pub stall_timeout: Duration,
    /// How long to wait for the `$$$` ending a reply.
    pub reply_timeout: Duration,
    /// Reopen the port with back-off after losing the device (else the session fails).
    pub reconnect: bool,
    /// Pseudo-terminals (emulators) may be opened as ports: on a `--user` daemon (host key
    /// `_caller_paths`), or where the admin says so (`[drivers.openbci] allow_pty = true`). A
    /// system daemon otherwise opens USB serial adapters only, never another user's terminal.
    pub allow_pty: bool,
}

fn duration_key(config: &Config, key: &str, default: f64, max: f64) -> Result<Duration, String> {
    let v = config_f64(config, key)?.unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v <= max) {
        return Err(format!("config key `{key}`: {v} s is not allowed; use a time in seconds above 0 and up to {max}"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn on_off(key: &str, field: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(format!("config key `{key}`: {field} {value:?} is not on or off")),
    }
}

/// Parses `gain:12,input:shorted,bias:off` (or the same as a JSON object) over the board defaults.
fn channel_settings(key: &str, value: &serde_json::Value) -> Result<ChannelSettings, String> {
    let pairs: Vec<(String, String)> = match value {
        serde_json::Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).ok_or_else(|| {
                    format!("config key `{key}`: {p:?} is not FIELD:VALUE (for example gain:12,input:normal)")
                })
            })
            .collect::<Result<_, _>>()?,
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect(),
        other => return Err(format!("config key `{key}`: expected FIELD:VALUE pairs, got {other}")),
    };
    let mut s = ChannelSettings::default();
    for (field, v) in pairs {
        match field.as_str() {
            "power" => s.power = on_off(key, "power", &v)?,
            "gain" => {
                s.gain = v.parse::<u8>().ok().filter(|g| GAINS.contains(g)).ok_or_else(|| {
                    format!("config key `{key}`: gain {v:?} is not one of the ADS1299's gains 1, 2, 4, 6, 8, 12, 24")
                })?
            }
            "input" => {
                let lower = v.to_ascii_lowercase();
                s.input = INPUTS
                    .iter()
                    .position(|i| *i == lower)
                    .ok_or_else(|| format!("config key `{key}`: input {v:?} is not one of {}", INPUTS.join(", ")))?
                    as u8
            }
            "bias" => s.bias = on_off(key, "bias", &v)?,
            "srb2" => s.srb2 = on_off(key, "srb2", &v)?,
            "srb1" => s.srb1 = on_off(key, "srb1", &v)?,
            _ => {
                return Err(format!(
                    "config key `{key}`: no channel setting {field:?} (use power, gain, input, bias, srb2, srb1)"
                ))
            }
        }
    }
    Ok(s)
}

fn labels(value: &serde_json::Value) -> Result<Vec<String>, String> {
    let list: Vec<String> = match value {
        serde_json::Value::String(s) => s.split(',').map(|l| l.trim().to_string()).collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("config key `labels`: {v} is not a label")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("config key `labels`: expected labels separated by commas, got {other}")),
    };
    if list.iter().any(String::is_empty) {
        return Err("config key `labels`: a label is empty".into());
    }
    Ok(list)
}

/// The channel index of a `chN` key.
fn channel_key(key: &str) -> Option<usize> {
    let n: usize = key.strip_prefix("ch")?.parse().ok()?;
    (1..=MAX_CHANNELS).contains(&n).then_some(n - 1)
}

impl OpenBciConfig {
    pub fn from_config(config: &Config) -> Result<OpenBciConfig, String> {
        for key in config.keys() {
            if !bci2token_driver_abi::plugin::is_host_key(key)
                && !KEYS.contains(&key.as_str())
                && channel_key(key).is_none()
            {
                return Err(format!("no config key `{key}` (valid keys for openbci: {})", KEYS.join(", ")));
            }
        }
        let port = match config.get("port") {
            Some(serde_json::Value::String(p)) if !p.is_empty() => PathBuf::from(p),
            _ => {
                return Err("needs `port`: --set port=/dev/ttyUSB0 (`bci2tokenctl devices --driver openbci` lists \
                            the OpenBCI dongles plugged in)"
                    .into())
            }
        };
        if port.is_relative() {
            return Err(format!("`port` must be an absolute device path, got {}", port.display()));
        }
        let daisy = match config.get("daisy").map(|v| v.as_str().map(str::to_ascii_lowercase)) {
            None => Daisy::Auto,
            Some(Some(s)) if s == "auto" => Daisy::Auto,
            Some(Some(s)) if s == "on" || s == "true" => Daisy::On,
            Some(Some(s)) if s == "off" || s == "false" => Daisy::Off,
            _ => match config_bool(config, "daisy") {
                Ok(Some(true)) => Daisy::On,
                Ok(Some(false)) => Daisy::Off,
                _ => {
                    return Err(format!(
                        "config key `daisy`: {} is not auto, on or off",
                        config.get("daisy").map(|v| v.to_string()).unwrap_or_default()
                    ))
                }
            },
        };
        let sample_rate = match config_f64(config, "sample_rate")? {
            None => None,
            Some(250.0) => Some(250),
            Some(r) => {
                return Err(format!(
                    "config key `sample_rate`: {r} Hz is not possible over the USB dongle, whose radio carries \
                     250 Hz only; use 250 (higher rates need the WiFi shield, which this driver does not support)"
                ))
            }
        };
        let mut channels: Vec<(usize, ChannelSettings)> = config
            .iter()
            .filter_map(|(k, v)| channel_key(k).map(|i| (k, i, v)))
            .map(|(k, i, v)| channel_settings(k, v).map(|s| (i, s)))
            .collect::<Result<_, _>>()?;
        channels.sort_by_key(|(i, _)| *i);
        Ok(OpenBciConfig {
            port,
            daisy,
            sample_rate,
            labels: config.get("labels").map(labels).transpose()?,
            channels,
            stall_timeout: duration_key(config, "stall_timeout", 2.0, 3600.0)?,
            reply_timeout: duration_key(config, "reply_timeout", 3.0, 60.0)?,
            reconnect: config_bool(config, "reconnect")?.unwrap_or(true),
            allow_pty: config_bool(config, "_caller_paths")?.unwrap_or(false)
                || config_bool(config, "_allow_pty")?.unwrap_or(false),
        })
    }

    /// Labels for `n` channels; an explicit list must have exactly `n` entries.
    pub fn channel_labels(&self, n: usize) -> Result<Vec<String>, String> {
        match &self.labels {
            None => Ok((1..=n).map(|i| i.to_string()).collect()),
            Some(l) if l.len() == n => Ok(l.clone()),
            Some(l) => Err(format!("config key `labels`: {} labels for a board with {n} channels", l.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, serde_json::Value)]) -> Result<OpenBciConfig, String> {
        let map: Config = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        OpenBciConfig::from_config(&map)
    }

    #[test]
    fn defaults_send_nothing_extra() {
        let c = cfg(&[("port", "/dev/ttyUSB0".into())]).unwrap();
        assert_eq!(c.daisy, Daisy::Auto);
        assert_eq!(c.sample_rate, None);
        assert!(c.channels.is_empty());
        assert_eq!(c.stall_timeout, Duration::from_secs(2));
        assert_eq!(c.channel_labels(8).unwrap()[7], "8");
    }

    #[test]
    fn channel_settings_are_parsed_over_the_defaults() {
        let c = cfg(&[
            ("port", "/dev/ttyUSB0".into()),
            ("ch3", "gain:12, input:shorted,srb2:off".into()),
            ("ch16", serde_json::json!({"power": "off"})),
        ])
        .unwrap();
        assert_eq!(c.channels.len(), 2);
        assert_eq!(c.channels[0].0, 2);
        assert_eq!(&c.channels[0].1.command(2), b"x3051100X");
        assert_eq!(&c.channels[1].1.command(15), b"xI160110X");
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let port = ("port", serde_json::Value::from("/dev/ttyUSB0"));
        assert!(cfg(&[port.clone(), ("ch17", "gain:1".into())]).unwrap_err().contains("no config key `ch17`"));
        assert!(cfg(&[port.clone(), ("ch1", "gain:3".into())]).unwrap_err().contains("gain \"3\""));
        assert!(cfg(&[port.clone(), ("ch1", "volume:3".into())]).unwrap_err().contains("no channel setting"));
        assert!(cfg(&[port.clone(), ("sample_rate", "500".into())]).unwrap_err().contains("250 Hz only"));
        assert!(cfg(&[port.clone(), ("daisy", "maybe".into())]).unwrap_err().contains("auto, on or off"));
        assert!(cfg(&[("port", "ttyUSB0".into())]).unwrap_err().contains("absolute"));
        assert!(cfg(&[]).unwrap_err().contains("needs `port`"));
        let c = cfg(&[port, ("labels", "O1,O2".into())]).unwrap();
        assert!(c.channel_labels(8).unwrap_err().contains("2 labels for a board with 8 channels"));
    }
}

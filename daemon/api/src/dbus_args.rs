//! What the daemon's D-Bus methods take from their callers, as the daemon reads it: the options
//! dictionaries (`a{sv}`) of each method as their types, and a driver's settings, whose
//! descriptors become passed files. Here, in a library, so that the fuzz target `dbus_args` runs
//! the daemon's own conversions.

use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use zbus::zvariant::{self, Value};

use crate::dbus::{dict_to_json, to_json, Dict};
use crate::{ApiError, ConfigMap, ErrorCode, FileArg};

/// `StartSession`'s options.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartOptions {
    pub model: Option<String>,
    #[serde(default)]
    pub lsl_outlets: bool,
    pub subject: Option<String>,
}

/// `ListAudit`'s options.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOptions {
    pub since: Option<f64>,
}

/// `Export`'s options.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    pub features: Option<String>,
    pub dp_epsilon: Option<f64>,
    pub dp_delta: Option<f64>,
    pub dp_clip: Option<f64>,
}

/// `TrainModel`'s options (see [`crate::TrainRequest`]; `map` as a dictionary of strings).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    pub classes: Option<Vec<String>>,
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
    pub trial_start: Option<String>,
    pub trial_length: Option<f64>,
    pub trials: Option<(usize, usize)>,
    pub window_seconds: Option<f64>,
    pub offset_seconds: Option<f64>,
    pub hop_seconds: Option<f64>,
    pub channels: Option<Vec<String>>,
    pub bandpass_hz: Option<[f64; 2]>,
    pub notch_hz: Option<f64>,
    pub frequencies: Option<Vec<f64>>,
    pub folds: Option<usize>,
    #[serde(default)]
    pub replace: bool,
}

impl TrainOptions {
    /// The socket's request for these options.
    pub fn into_request(self, name: String, method: String, sessions: Vec<String>) -> crate::TrainRequest {
        crate::TrainRequest {
            name,
            method,
            sessions,
            classes: self.classes,
            map: self.map.into_iter().collect(),
            trial_start: self.trial_start,
            trial_length: self.trial_length,
            trials: self.trials,
            window_seconds: self.window_seconds,
            offset_seconds: self.offset_seconds,
            hop_seconds: self.hop_seconds,
            channels: self.channels,
            bandpass_hz: self.bandpass_hz,
            notch_hz: self.notch_hz,
            frequencies: self.frequencies,
            folds: self.folds,
            replace: self.replace,
        }
    }
}

/// `OpenStream`'s (and `StartSessionWithStream`'s stream) options.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub samples: bool,
}

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

/// The options (`a{sv}`) of `method` as `T`, or an error naming the method and what is wrong.
pub fn options<T: DeserializeOwned>(method: &str, dict: &Dict) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::Object(dict_to_json(dict)))
        .map_err(|e| bad(format!("{method}: options: {e} (see docs/dbus.md)")))
}

/// A descriptor of the call, kept (duplicated) beyond the message.
pub fn own(fd: &zvariant::Fd<'_>) -> Result<OwnedFd, ApiError> {
    let fail = |e: String| ApiError::new(ErrorCode::Internal, format!("a passed descriptor could not be kept{e}"));
    match fd.try_to_owned() {
        Ok(zvariant::Fd::Owned(fd)) => Ok(fd),
        Ok(_) => Err(fail(String::new())),
        Err(e) => Err(fail(format!(": {e}"))),
    }
}

/// Driver settings from `a{sv}`: a value that is a descriptor (`h`, or `(sh)` with its name)
/// becomes a passed file through `add` (which gives its place among the call's files, or refuses
/// it); everything else its JSON value.
pub fn driver_config(
    config: &Dict,
    mut add: impl FnMut(&str, OwnedFd) -> Result<FileArg, ApiError>,
) -> Result<ConfigMap, ApiError> {
    let mut out = ConfigMap::new();
    for (key, value) in config {
        let v: &Value<'_> = value;
        let v = match v {
            Value::Value(inner) => inner,
            other => other,
        };
        let file = match v {
            Value::Fd(fd) => Some(add(key, own(fd)?)?),
            Value::Structure(s) => match s.fields() {
                [Value::Str(name), Value::Fd(fd)] => Some(add(name.as_str(), own(fd)?)?),
                _ => None,
            },
            _ => None,
        };
        let json = match file {
            Some(file) => serde_json::to_value(file).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
            None => to_json(v).unwrap_or(serde_json::Value::Null),
        };
        if json.is_null() {
            return Err(bad(format!(
                "config key `{key}`: {} has no JSON form (a descriptor inside a container, or a number that is \
                 not finite); give a descriptor as the key's own value, `h` or `(sh)`",
                v.value_signature()
            )));
        }
        out.insert(key.clone(), json);
    }
    Ok(out)
}

//! The D-Bus face of the daemon: names, and how the protocol's JSON records travel as D-Bus
//! values (`a{sv}` dictionaries). The API is documented in `docs/dbus.md`; its introspection XML
//! is `docs/dbus/org.bci2token.Daemon1.xml`.
//!
//! Records (a session, a driver list, an audit entry…) travel as `a{sv}` with the same keys as
//! the socket protocol's JSON: objects are `a{sv}`, arrays `av`, strings `s`, booleans `b`,
//! integers `t` (or `x` when negative), other numbers `d`. A JSON `null` is left out of a
//! dictionary (the key is absent) and is the empty string in an array. Readers take any integer
//! type for a number, and `o`, `g` as strings.

use std::collections::HashMap;

use zbus::zvariant::{self, OwnedValue, Value};

/// The daemon's well-known name.
pub const BUS_NAME: &str = "org.bci2token.Daemon1";
/// The daemon's object (with `org.freedesktop.DBus.ObjectManager`).
pub const DAEMON_PATH: &str = "/org/bci2token";
pub const DAEMON_INTERFACE: &str = "org.bci2token.Daemon1";
/// Sessions are `/org/bci2token/session/<id>`.
pub const SESSION_PATH_PREFIX: &str = "/org/bci2token/session/";
pub const SESSION_INTERFACE: &str = "org.bci2token.Session1";
/// Prefix of the daemon's error names (see [`crate::ErrorCode::dbus_name`]).
pub const ERROR_PREFIX: &str = "org.bci2token.Error";

/// The object path of session `id` (ids are hex digits, so always a valid path element).
pub fn session_path(id: &str) -> String {
    format!("{SESSION_PATH_PREFIX}{id}")
}

/// A JSON value as a D-Bus value (`None` for null).
pub fn to_value(json: &serde_json::Value) -> Option<Value<'static>> {
    use serde_json::Value as J;
    Some(match json {
        J::Null => return None,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::U64(u),
            (None, Some(i)) => Value::I64(i),
            _ => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.clone()),
        J::Array(items) => {
            let mut array = zvariant::Array::new(&zvariant::Signature::Variant);
            for item in items {
                let v = to_value(item).unwrap_or_else(|| Value::from(String::new()));
                // Appending a variant to an array of variants cannot mismatch.
                let _ = array.append(Value::Value(Box::new(v)));
            }
            Value::Array(array)
        }
        J::Object(map) => Value::Dict(to_dict_value(map)),
    })
}

fn to_dict_value(map: &serde_json::Map<String, serde_json::Value>) -> zvariant::Dict<'static, 'static> {
    let mut dict = zvariant::Dict::new(&zvariant::Signature::Str, &zvariant::Signature::Variant);
    for (k, v) in map {
        if let Some(v) = to_value(v) {
            // A string key and a variant value always fit `a{sv}`.
            let _ = dict.append(Value::from(k.clone()), Value::Value(Box::new(v)));
        }
    }
    dict
}

/// A JSON object as `a{sv}`; anything else is `{"value": ...}`.
pub fn to_dict(json: &serde_json::Value) -> HashMap<String, OwnedValue> {
    let mut out = HashMap::new();
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if let Some(owned) = to_value(v).and_then(|v| v.try_into_owned().ok()) {
                    out.insert(k.clone(), owned);
                }
            }
        }
        other => {
            if let Some(owned) = to_value(other).and_then(|v| v.try_into_owned().ok()) {
                out.insert("value".to_string(), owned);
            }
        }
    }
    out
}

/// A serialisable record as `a{sv}` (through its JSON form, so the keys are the protocol's).
pub fn record<T: serde::Serialize>(v: &T) -> HashMap<String, OwnedValue> {
    to_dict(&serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

/// A D-Bus value as JSON. Descriptors have no JSON form: `None` (callers take them apart first).
pub fn to_json(value: &Value<'_>) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match value {
        Value::Bool(b) => J::Bool(*b),
        Value::U8(n) => J::from(*n),
        Value::I16(n) => J::from(*n),
        Value::U16(n) => J::from(*n),
        Value::I32(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.to_string()),
        Value::ObjectPath(p) => J::String(p.to_string()),
        Value::Signature(s) => J::String(s.to_string()),
        Value::Value(inner) => return to_json(inner),
        Value::Array(items) => J::Array(items.iter().map(|v| to_json(v).unwrap_or(J::Null)).collect()),
        Value::Dict(dict) => {
            let mut map = serde_json::Map::new();
            for (k, v) in dict.iter() {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    other => to_json(other).map(|j| j.to_string()).unwrap_or_default(),
                };
                if let Some(v) = to_json(v) {
                    map.insert(key, v);
                }
            }
            J::Object(map)
        }
        Value::Structure(s) => J::Array(s.fields().iter().map(|v| to_json(v).unwrap_or(J::Null)).collect()),
        Value::Fd(_) => return None,
    })
}

/// An `a{sv}` as a JSON object.
pub fn dict_to_json(dict: &HashMap<String, OwnedValue>) -> serde_json::Map<String, serde_json::Value> {
    dict.iter().filter_map(|(k, v)| to_json(v).map(|j| (k.clone(), j))).collect()
}

/// The next item of a zbus stream (signals), without a futures crate.
pub async fn next<S: zbus::export::futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// A record: `a{sv}`.
pub type Dict = HashMap<String, OwnedValue>;

/// Client side of `org.bci2token.Daemon1` (see docs/dbus.md for each method).
#[zbus::proxy(
    interface = "org.bci2token.Daemon1",
    default_service = "org.bci2token.Daemon1",
    default_path = "/org/bci2token"
)]
pub trait Daemon1 {
    fn status(&self) -> zbus::Result<Dict>;
    fn health(&self) -> zbus::Result<Dict>;
    fn metrics(&self) -> zbus::Result<String>;
    fn drivers(&self) -> zbus::Result<Dict>;
    fn devices(&self, driver: &str) -> zbus::Result<Dict>;
    fn models(&self) -> zbus::Result<Dict>;
    fn show_model(&self, model: &str) -> zbus::Result<Dict>;
    fn install_model(&self, files: &[(&str, zvariant::Fd<'_>)], replace: bool) -> zbus::Result<Dict>;
    fn train_model(
        &self,
        name: &str,
        method: &str,
        sessions: &[String],
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<Dict>;
    fn delete_model(&self, model: &str, owner: i64) -> zbus::Result<Dict>;
    fn start_session(
        &self,
        driver: &str,
        config: HashMap<&str, Value<'_>>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<(zvariant::OwnedObjectPath, Dict)>;
    fn start_session_with_stream(
        &self,
        driver: &str,
        config: HashMap<&str, Value<'_>>,
        options: HashMap<&str, Value<'_>>,
        stream_options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<(zvariant::OwnedObjectPath, Dict, zvariant::OwnedFd)>;
    fn list_sessions(&self) -> zbus::Result<Vec<Dict>>;
    fn show_session(&self, id: &str) -> zbus::Result<Dict>;
    fn stop_session(&self, id: &str) -> zbus::Result<Dict>;
    fn delete_session(&self, id: &str) -> zbus::Result<Dict>;
    fn list_audit(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<Vec<Dict>>;
    fn verify_audit(&self) -> zbus::Result<Dict>;
    fn rotate_key(&self) -> zbus::Result<Dict>;
    fn backup(&self, name: &str, file: zvariant::Fd<'_>) -> zbus::Result<Dict>;
    fn restore(&self, name: &str, file: zvariant::Fd<'_>) -> zbus::Result<Dict>;
    fn export(
        &self,
        id: &str,
        format: &str,
        name: &str,
        file: zvariant::Fd<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<Dict>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mode(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_sessions(&self) -> zbus::Result<u32>;
}

/// Client side of `org.bci2token.Session1`.
#[zbus::proxy(interface = "org.bci2token.Session1", default_service = "org.bci2token.Daemon1")]
pub trait Session1 {
    fn stop(&self) -> zbus::Result<Dict>;
    fn open_stream(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<zvariant::OwnedFd>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn unsubscribe(&self) -> zbus::Result<()>;
    #[allow(clippy::too_many_arguments)]
    #[zbus(signal)]
    fn token_decoded(
        &self,
        label: &str,
        text: &str,
        token_ids: Vec<u32>,
        probability: f64,
        logit_bias: HashMap<u32, f64>,
        stream_time: f64,
        latency: f64,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn gap(&self, stream_time: f64, seconds: f64, lost_samples: u64) -> zbus::Result<()>;
    #[zbus(signal, name = "StateChanged")]
    fn state_changed_signal(&self, state: &str, message: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn warning(&self, message: &str) -> zbus::Result<()>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn owner(&self) -> zbus::Result<u32>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_dict_of_variants() {
        let json = serde_json::json!({
            "id": "0a1b2c", "sample_rate": 250.0, "frames": 12_u64, "offset": -3, "ok": true,
            "model": null, "channels": [{"label": "Cz", "unit": "uV"}], "empty": [], "nested": {"a": 1.5},
        });
        let dict = to_dict(&json);
        assert!(!dict.contains_key("model"), "null is left out");
        let back = serde_json::Value::Object(dict_to_json(&dict));
        let mut expected = json.clone();
        expected.as_object_mut().unwrap().remove("model");
        assert_eq!(back, expected);
        // Through the wire as well.
        let ctx = zvariant::serialized::Context::new_dbus(zvariant::LE, 0);
        let bytes = zvariant::to_bytes(ctx, &dict).unwrap();
        let (decoded, _): (HashMap<String, OwnedValue>, _) = bytes.deserialize().unwrap();
        assert_eq!(serde_json::Value::Object(dict_to_json(&decoded)), expected);
        assert_eq!(<HashMap<String, OwnedValue> as zvariant::Type>::SIGNATURE.to_string(), "a{sv}");
    }

    #[test]
    fn numbers_keep_their_kind() {
        for (json, sig) in [("7", "t"), ("-7", "x"), ("7.0", "d"), ("0.1", "d")] {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let value = to_value(&v).unwrap();
            assert_eq!(value.value_signature().to_string(), sig, "{json}");
            assert_eq!(serde_json::to_string(&to_json(&value).unwrap()).unwrap(), json);
        }
    }

    #[test]
    fn error_names_map_both_ways() {
        for code in crate::ErrorCode::ALL {
            let name = code.dbus_name();
            assert!(name.starts_with(ERROR_PREFIX), "{name}");
            assert_eq!(crate::ErrorCode::from_dbus_name(name), Some(code));
        }
        assert_eq!(crate::ErrorCode::PermissionDenied.dbus_name(), "org.bci2token.Error.PermissionDenied");
    }
}

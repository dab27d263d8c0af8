//! Arbitrary bytes as the body of a D-Bus method call to the daemon. The first byte picks the
//! byte order (bit 0: big-endian) and the method's arguments: `a{sv}` (ListAudit,
//! Session1.OpenStream), `sa{sv}a{sv}` (StartSession), `sa{sv}a{sv}a{sv}`
//! (StartSessionWithStream), `sssha{sv}` (Export) or `a(sh)b` (InstallModel); two descriptors
//! come with the message. The rest is the body, decoded as zbus decodes a call's arguments, then
//! converted by the daemon's own conversions (`bci2token_api::dbus_args`: each method's options,
//! driver settings with their descriptors) and into the API's request types. Checks that the JSON form of a
//! dictionary is kept on the way back to D-Bus (as replies carry records): in memory, and through
//! the wire in the same byte order.
#![no_main]

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use bci2token_api::dbus::{dict_to_json, to_dict};
use bci2token_api::dbus_args::{self, driver_config, AuditOptions, ExportOptions, StartOptions, StreamOptions};
use bci2token_api::message::{FileArg, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value as J};
use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::{OwnedFd, OwnedValue, BE, LE};

type Dict = HashMap<String, OwnedValue>;

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = data.split_first() else { return };
    static NULL: OnceLock<std::fs::File> = OnceLock::new();
    let null = NULL.get_or_init(|| std::fs::File::open("/dev/null").unwrap());
    let ctx = Context::new_dbus(if pick & 1 == 0 { LE } else { BE }, 0);
    let body = Data::new_borrowed_fds(body, ctx, [null.as_fd(), null.as_fd()]);
    match (pick >> 1) % 5 {
        0 => {
            let Ok(((dict,), _)) = body.deserialize_for_dynamic_signature::<_, (Dict,)>("a{sv}") else { return };
            // As ListAudit and OpenStream read it.
            let _ = dbus_args::options::<AuditOptions>("ListAudit", &dict);
            let _ = dbus_args::options::<StreamOptions>("OpenStream", &dict);
            request("audit_list", options_json(&dict, ctx), Map::new());
        }
        1 => {
            let sig = "sa{sv}a{sv}";
            let Ok(((driver, config, options), _)) =
                body.deserialize_for_dynamic_signature::<_, (String, Dict, Dict)>(sig)
            else {
                return;
            };
            start(driver, &config, &options, ctx);
        }
        2 => {
            let sig = "sa{sv}a{sv}a{sv}";
            let Ok(((driver, config, options, stream), _)) =
                body.deserialize_for_dynamic_signature::<_, (String, Dict, Dict, Dict)>(sig)
            else {
                return;
            };
            check_round_trip(&stream, ctx);
            let _ = dbus_args::options::<StreamOptions>("StartSessionWithStream", &stream);
            start(driver, &config, &options, ctx);
        }
        3 => {
            let sig = "sssha{sv}";
            let Ok(((id, format, name, _file, options), _)) =
                body.deserialize_for_dynamic_signature::<_, (String, String, String, OwnedFd, Dict)>(sig)
            else {
                return;
            };
            let _ = dbus_args::options::<ExportOptions>("Export", &options);
            let fixed = json!({"id": id, "format": format, "path": {"fd": 0, "name": name}});
            request("export", options_json(&options, ctx), fixed.as_object().unwrap().clone());
        }
        _ => {
            let sig = "a(sh)b";
            let Ok(((files, replace), _)) =
                body.deserialize_for_dynamic_signature::<_, (Vec<(String, OwnedFd)>, bool)>(sig)
            else {
                return;
            };
            let files: Vec<J> = files.iter().enumerate().map(|(i, (name, _))| json!({"fd": i, "name": name})).collect();
            let fixed = json!({"files": files, "replace": replace});
            request("model_install", Map::new(), fixed.as_object().unwrap().clone());
        }
    }
});

/// StartSession's arguments as the daemon takes them: the driver's settings (a descriptor, `h` or
/// `(sh)`, becomes a passed file, the `n`th of the call), the options as `StartOptions` and as a
/// JSON object, together a request.
fn start(driver: String, config: &Dict, dict: &Dict, ctx: Context) {
    check_round_trip(config, ctx);
    let _ = dbus_args::options::<StartOptions>("StartSession", dict);
    let mut n = 0;
    let settings = driver_config(config, |name, _fd| {
        n += 1;
        Ok(FileArg::Fd { fd: n - 1, name: name.to_string() })
    });
    let Ok(settings) = settings else { return };
    let fixed = json!({"driver": driver, "config": settings});
    request("session_start", options_json(dict, ctx), fixed.as_object().unwrap().clone());
}

/// Options as the daemon reads them (a JSON object), checked on the way back.
fn options_json(dict: &Dict, ctx: Context) -> Map<String, J> {
    check_round_trip(dict, ctx);
    dict_to_json(dict)
}

/// The request `method` with `options` and the method's `fixed` parameters (which the options
/// cannot replace); one that parses has a JSON form that parses back to itself. (As a value: JSON
/// text would not do, serde_json reads some floats back one unit in the last place off.)
fn request(method: &str, options: Map<String, J>, fixed: Map<String, J>) {
    let mut params = options;
    params.extend(fixed);
    let Ok(request) = serde_json::from_value::<Request>(json!({"method": method, "params": params})) else { return };
    let value = serde_json::to_value(&request).expect("a request has a JSON form");
    let back: Request = serde_json::from_value(value).expect("which parses back");
    assert_eq!(back, request);
}

/// A dictionary's JSON form, made a D-Bus dictionary again (a reply's record) and read back, is
/// the same after the first trip (which drops nulls and turns other types into the record types).
fn check_round_trip(dict: &Dict, ctx: Context) {
    let first = dict_to_json(dict);
    let normal = dict_to_json(&to_dict(&J::Object(first)));
    let again = to_dict(&J::Object(normal.clone()));
    assert_eq!(dict_to_json(&again), normal, "the JSON form is kept in memory");
    // Deeply nested values may go past D-Bus's depth limits on the way back; those that encode
    // must decode to the same.
    if let Ok(bytes) = zbus::zvariant::to_bytes(ctx, &again) {
        let (decoded, _): (Dict, _) = bytes.deserialize().expect("an encoded dictionary decodes");
        assert_eq!(dict_to_json(&decoded), normal, "the JSON form is kept through the wire");
    }
}

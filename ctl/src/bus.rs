//! Talking to the daemon over D-Bus (`--bus`): each request of the socket protocol as the
//! `org.bci2token.Daemon1`/`Session1` method that does the same, its reply turned back into the
//! socket's JSON so that everything after (tables, `--json`, exit codes) is the same code.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use bci2token_api::dbus::{self, dict_to_json, session_path, Daemon1Proxy, Dict, Session1Proxy};
use bci2token_api::{
    ApiError, AuditEntryInfo, AuditVerification, BackupDone, Deleted, DeviceList, DriverList, ErrorCode, ExportDone,
    FileArg, KeyRotation, ModelInfo, ModelList, Request, Restored, SessionInfo, StatusInfo,
};
use serde::de::DeserializeOwned;
use zbus::zvariant::{Fd, Structure, Value};

use crate::client::{OkReply, REPLY_TIMEOUT};
use crate::error::{CtlError, Kind};
use crate::files::Files;

/// Which bus `--bus` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    System,
    Session,
    Address(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        match text {
            "" | "system" => Ok(Target::System),
            "session" => Ok(Target::Session),
            a if a.contains(':') && a.contains('=') => Ok(Target::Address(a.to_string())),
            other => Err(format!("`{other}` is not a bus: use system, session or a D-Bus address (unix:path=...)")),
        }
    }

    pub fn shown(&self) -> String {
        match self {
            Target::System => "the system bus".into(),
            Target::Session => "the session bus".into(),
            Target::Address(a) => format!("the bus {a}"),
        }
    }
}

/// A request's reply and, for requests that follow a session, the socket its events come on.
pub fn call(target: &Target, request: &Request, files: &Files) -> Result<(OkReply, Option<UnixStream>), CtlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(Kind::Io, format!("cannot start the D-Bus client: {e}")))?;
    runtime.block_on(async {
        let builder = match target {
            Target::System => zbus::connection::Builder::system(),
            Target::Session => zbus::connection::Builder::session(),
            Target::Address(a) => zbus::connection::Builder::address(a.as_str()),
        };
        let conn = match builder {
            Ok(b) => b.build().await,
            Err(e) => Err(e),
        }
        .map_err(|e| CtlError::new(Kind::NotRunning, format!("cannot connect to {}: {e}", target.shown())))?;
        let daemon = Daemon1Proxy::new(&conn).await.map_err(|e| error(e, target))?;
        // As long as the socket transport waits for a reply (the bus itself would wait for ever).
        match tokio::time::timeout(REPLY_TIMEOUT, run(&conn, &daemon, request, files)).await {
            Ok(done) => done.map_err(|e| error(e, target)),
            Err(_) => Err(CtlError::new(
                Kind::Timeout,
                format!("no reply from bci2tokend on {} within {} s", target.shown(), REPLY_TIMEOUT.as_secs()),
            )),
        }
    })
}

/// The typed reply `T` of `method`, as the socket's JSON.
fn reply<T: DeserializeOwned + serde::Serialize>(
    json: serde_json::Value,
    method: &str,
) -> Result<OkReply, zbus::Error> {
    let typed: T = serde_json::from_value(json).map_err(|e| {
        zbus::Error::Failure(format!(
            "unexpected reply from bci2tokend to '{method}': {e} (is bci2tokenctl older or newer than the daemon?)"
        ))
    })?;
    let value = serde_json::to_value(&typed).map_err(|e| zbus::Error::Failure(e.to_string()))?;
    Ok(OkReply { value, raw: None })
}

fn object(dict: &Dict) -> serde_json::Value {
    serde_json::Value::Object(dict_to_json(dict))
}

fn list(dicts: &[Dict]) -> serde_json::Value {
    serde_json::Value::Array(dicts.iter().map(object).collect())
}

/// Descriptor `arg` of the request, as a D-Bus `h`, with its name.
fn fd<'a>(arg: &FileArg, fds: &'a [BorrowedFd<'a>]) -> Result<(String, Fd<'a>), zbus::Error> {
    match arg {
        FileArg::Fd { fd, name } => fds
            .get(*fd as usize)
            .map(|f| (name.clone(), Fd::from(f.as_fd())))
            .ok_or_else(|| zbus::Error::Failure(format!("descriptor {fd} of the request is missing"))),
        FileArg::Path(p) => Err(zbus::Error::Failure(format!(
            "{p}: over D-Bus, files go as descriptors (bci2tokenctl opens them); this is a bug of bci2tokenctl"
        ))),
    }
}

fn options<'a>(pairs: Vec<(&'a str, Option<Value<'a>>)>) -> HashMap<&'a str, Value<'a>> {
    pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

async fn run(
    conn: &zbus::Connection,
    daemon: &Daemon1Proxy<'_>,
    request: &Request,
    files: &Files,
) -> Result<(OkReply, Option<UnixStream>), zbus::Error> {
    let fds = files.fds();
    let plain = |r: Result<OkReply, zbus::Error>| r.map(|r| (r, None));
    match request {
        Request::Status => plain(reply::<StatusInfo>(object(&daemon.status().await?), "status")),
        Request::Health => plain(reply::<bci2token_api::HealthReport>(object(&daemon.health().await?), "health")),
        Request::Metrics => {
            let text = daemon.metrics().await?;
            plain(reply::<String>(serde_json::Value::String(text), "metrics"))
        }
        Request::Drivers => plain(reply::<DriverList>(object(&daemon.drivers().await?), "drivers")),
        Request::Devices { driver } => {
            plain(reply::<DeviceList>(object(&daemon.devices(driver.as_deref().unwrap_or("")).await?), "devices"))
        }
        Request::Models => plain(reply::<ModelList>(object(&daemon.models().await?), "models")),
        Request::ModelShow { model } => {
            plain(reply::<ModelInfo>(object(&daemon.show_model(model).await?), "model_show"))
        }
        Request::ModelInstall { files: args, replace } => {
            let passed = args.iter().map(|a| fd(a, &fds)).collect::<Result<Vec<_>, _>>()?;
            let passed: Vec<(&str, Fd<'_>)> =
                passed.iter().map(|(n, f)| (n.as_str(), f.try_clone().unwrap())).collect();
            plain(reply::<ModelInfo>(object(&daemon.install_model(&passed, *replace).await?), "model_install"))
        }
        Request::ModelTrain(t) => {
            // The options as TrainModel takes them: every field but the three arguments, `map` as
            // a dictionary.
            let mut o = serde_json::to_value(t).map_err(|e| zbus::Error::Failure(e.to_string()))?;
            let o = o.as_object_mut().expect("a request is an object");
            for k in ["name", "method", "sessions"] {
                o.remove(k);
            }
            let map: serde_json::Map<String, serde_json::Value> =
                t.map.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            o.insert("map".into(), serde_json::Value::Object(map));
            let opts: HashMap<&str, Value<'_>> =
                o.iter().filter_map(|(k, v)| Some((k.as_str(), dbus::to_value(v)?))).collect();
            let trained = daemon.train_model(&t.name, &t.method, &t.sessions, opts).await?;
            plain(reply::<bci2token_api::Trained>(object(&trained), "model_train"))
        }
        Request::ModelDelete { model, owner } => {
            let owner = owner.map_or(-1, i64::from);
            plain(reply::<ModelInfo>(object(&daemon.delete_model(model, owner).await?), "model_delete"))
        }
        Request::SessionStart { driver, config, model, follow, lsl_outlets, subject } => {
            let names: Vec<(String, serde_json::Value)> = config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut dict: HashMap<&str, Value<'_>> = HashMap::new();
            let mut held = Vec::new();
            for (k, v) in &names {
                match serde_json::from_value::<FileArg>(v.clone()) {
                    Ok(arg @ FileArg::Fd { .. }) if v.is_object() => held.push((k.as_str(), fd(&arg, &fds)?)),
                    _ => {
                        if let Some(value) = dbus::to_value(v) {
                            dict.insert(k.as_str(), value);
                        }
                    }
                }
            }
            for (k, (name, f)) in held {
                dict.insert(k, Value::Structure(Structure::from((name, f))));
            }
            let opts = options(vec![
                ("model", model.clone().map(Value::from)),
                ("lsl_outlets", Some(Value::from(*lsl_outlets))),
                ("subject", subject.clone().map(Value::from)),
            ]);
            match follow {
                None => {
                    let (_, info) = daemon.start_session(driver, dict, opts).await?;
                    plain(reply::<SessionInfo>(object(&info), "session_start"))
                }
                Some(f) => {
                    let stream_opts = options(vec![("samples", Some(Value::from(f.samples)))]);
                    let (_, info, fd) = daemon.start_session_with_stream(driver, dict, opts, stream_opts).await?;
                    let stream = UnixStream::from(std::os::fd::OwnedFd::from(fd));
                    Ok((reply::<SessionInfo>(object(&info), "session_start")?, Some(stream)))
                }
            }
        }
        Request::SessionList => plain(reply::<Vec<SessionInfo>>(list(&daemon.list_sessions().await?), "session_list")),
        Request::SessionShow { id } => {
            plain(reply::<SessionInfo>(object(&daemon.show_session(id).await?), "session_show"))
        }
        Request::SessionStop { id } => {
            plain(reply::<SessionInfo>(object(&daemon.stop_session(id).await?), "session_stop"))
        }
        Request::SessionDelete { id } => {
            plain(reply::<Deleted>(object(&daemon.delete_session(id).await?), "session_delete"))
        }
        Request::AuditList { since } => {
            let opts = options(vec![("since", since.map(Value::from))]);
            plain(reply::<Vec<AuditEntryInfo>>(list(&daemon.list_audit(opts).await?), "audit_list"))
        }
        Request::AuditVerify => {
            plain(reply::<AuditVerification>(object(&daemon.verify_audit().await?), "audit_verify"))
        }
        Request::KeyRotate => plain(reply::<KeyRotation>(object(&daemon.rotate_key().await?), "key_rotate")),
        Request::Backup { path } => {
            let (name, f) = fd(path, &fds)?;
            plain(reply::<BackupDone>(object(&daemon.backup(&name, f).await?), "backup"))
        }
        Request::Restore { path } => {
            let (name, f) = fd(path, &fds)?;
            plain(reply::<Restored>(object(&daemon.restore(&name, f).await?), "restore"))
        }
        Request::Export { id, format, path, features, dp_epsilon, dp_delta, dp_clip } => {
            let (name, f) = fd(path, &fds)?;
            let opts = options(vec![
                ("features", features.clone().map(Value::from)),
                ("dp_epsilon", dp_epsilon.map(Value::from)),
                ("dp_delta", dp_delta.map(Value::from)),
                ("dp_clip", dp_clip.map(Value::from)),
            ]);
            plain(reply::<ExportDone>(object(&daemon.export(id, format, &name, f, opts).await?), "export"))
        }
        Request::Follow { id, options: o } => {
            // The stream first: a refusal is the follow's (audited) refusal.
            let path = zbus::zvariant::ObjectPath::try_from(session_path(id))
                .map_err(|_| zbus::Error::Failure(format!("`{id}` is not a session id")))?;
            let session = Session1Proxy::builder(conn).path(path)?.build().await?;
            let fd = session.open_stream(options(vec![("samples", Some(Value::from(o.samples)))])).await?;
            let stream = UnixStream::from(std::os::fd::OwnedFd::from(fd));
            let info = reply::<SessionInfo>(object(&daemon.show_session(id).await?), "follow")?;
            Ok((info, Some(stream)))
        }
    }
}

/// A D-Bus failure as the socket transport would report it: the daemon's named errors as its
/// error codes, a missing daemon as "not running".
fn error(e: zbus::Error, target: &Target) -> CtlError {
    match e {
        zbus::Error::MethodError(name, message, _) => {
            let message = message.unwrap_or_default();
            match ErrorCode::from_dbus_name(name.as_str()) {
                Some(code) => CtlError::api(ApiError::new(code, message)),
                None if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
                {
                    CtlError::new(
                        Kind::NotRunning,
                        format!("bci2tokend is not on {} (no owner of {}): {message}", target.shown(), dbus::BUS_NAME),
                    )
                }
                None if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" => CtlError::protocol(format!(
                    "bci2tokend on {} does not know this call ({message}); is bci2tokenctl newer than the daemon?",
                    target.shown()
                )),
                None if name.as_str() == "org.freedesktop.DBus.Error.UnknownObject" => CtlError::api(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{message}; `bci2tokenctl session list` shows the sessions"),
                )),
                None if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied" => {
                    CtlError::new(Kind::SocketPermission, format!("{} refused the call: {message}", target.shown()))
                }
                None => CtlError::unknown_api(name.to_string(), message),
            }
        }
        zbus::Error::Failure(m) => CtlError::protocol(m),
        other => CtlError::new(Kind::Io, format!("D-Bus ({}): {other}", target.shown())),
    }
}

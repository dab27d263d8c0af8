//! Running one command: connect, send the request, print the reply (and the stream, if any).

use std::io::Write;

use bci2token_api::{
    AuditEntryInfo, AuditVerification, ConfigMap, DeviceList, DriverList, FollowOptions, ModelList, Request,
    SessionInfo, StatusInfo,
};

use crate::backups;
use crate::bus;
use crate::cli::{AuditCommand, Cli, Command, KeyCommand, ModelCommand, SessionCommand, StartArgs};
use crate::client::OkReply;
use crate::error::{CtlError, Kind};
use crate::evaluate;
use crate::files::Files;
use crate::generate;
use crate::monitor;
use crate::progress;
use crate::render::{self, EventContext};
use crate::socket::{self, Env};
use crate::stream::{self, StreamOptions};
use crate::transport::Transport;

fn write_out<W: Write>(out: &mut W, bytes: &[u8]) -> Result<(), CtlError> {
    out.write_all(bytes).map_err(CtlError::from_stdout)
}

/// Builds the `session_start` request from the command line; file-valued `--set`s are opened here
/// and go with it as descriptors.
pub fn start_request(a: &StartArgs, files: &mut Files) -> Result<Request, CtlError> {
    let mut config = ConfigMap::new();
    for (k, v) in &a.set {
        config.insert(k.clone(), v.clone());
    }
    files.config_inputs(&mut config)?;
    let model = match &a.model {
        None => None,
        // A bare name that is not a directory here is a model name the daemon looks up.
        Some(name) if !name.exists() && name.components().count() == 1 => Some(name.display().to_string()),
        Some(dir) => {
            let abs = std::path::absolute(dir).map_err(|e| {
                CtlError::new(Kind::Usage, format!("--model {}: cannot make the path absolute: {e}", dir.display()))
            })?;
            let s = abs.to_str().ok_or_else(|| {
                CtlError::new(Kind::Usage, format!("--model {}: the path is not valid UTF-8", abs.display()))
            })?;
            Some(s.to_string())
        }
    };
    Ok(Request::SessionStart {
        driver: a.driver.clone(),
        config,
        model,
        follow: a.follow.then_some(FollowOptions { samples: a.samples }),
        lsl_outlets: a.lsl_outlets,
        subject: a.subject.clone(),
    })
}

/// Runs the command, writing results to `out`. Errors are returned, not printed.
pub fn run<W: Write>(cli: &Cli, env: &Env, out: &mut W) -> Result<(), CtlError> {
    match &cli.command {
        Command::Completions { shell } => return generate::completions(*shell, out),
        Command::ManPages { dir } => return generate::man_pages(dir),
        Command::Monitor(_) if cli.json => return Err(monitor::json_refused()),
        _ => {}
    }
    let transport = match &cli.bus {
        Some(bus) => {
            Transport::Bus(bus::Target::parse(bus).map_err(|e| CtlError::new(Kind::Usage, format!("--bus: {e}")))?)
        }
        None => Transport::Socket(socket::resolve(cli.socket.as_deref(), env, |p| p.exists())),
    };
    if let Command::Evaluate(a) = &cli.command {
        // Many requests, one file at a time: see crate::evaluate.
        return evaluate::run(a, cli.json, &transport, out);
    }
    if let Command::Plot(a) = &cli.command {
        // A follow, or two exports, then drawing: see crate::plot.
        return crate::plot::run(a, cli.json, &transport, out);
    }
    if let Command::Monitor(a) = &cli.command {
        // A terminal UI over follow streams: see crate::monitor.
        return monitor::run(a, &transport);
    }
    // Build the request first, so usage errors do not depend on a running daemon.
    let mut files = Files::default();
    let (request, follow_count) = match &cli.command {
        Command::Status => (Request::Status, None),
        Command::Health => (Request::Health, None),
        Command::Metrics => (Request::Metrics, None),
        Command::Drivers => (Request::Drivers, None),
        Command::Devices { driver } => (Request::Devices { driver: driver.clone() }, None),
        Command::Models => (Request::Models, None),
        Command::Model(ModelCommand::Install { dir, replace }) => {
            (Request::ModelInstall { files: files.package(dir)?, replace: *replace }, None)
        }
        Command::Model(ModelCommand::Train(a)) => {
            (Request::ModelTrain(crate::train::request(a, &transport, cli.json)?), None)
        }
        Command::Model(ModelCommand::Delete { name, owner }) => {
            (Request::ModelDelete { model: name.clone(), owner: *owner }, None)
        }
        Command::Session(SessionCommand::Start(a)) => (start_request(a, &mut files)?, None),
        Command::Session(SessionCommand::List) => (Request::SessionList, None),
        Command::Session(SessionCommand::Show { id }) => (Request::SessionShow { id: id.clone() }, None),
        Command::Session(SessionCommand::Stop { id }) => (Request::SessionStop { id: id.clone() }, None),
        Command::Session(SessionCommand::Delete { id }) => (Request::SessionDelete { id: id.clone() }, None),
        Command::Audit(AuditCommand::List { since }) => (Request::AuditList { since: *since }, None),
        Command::Audit(AuditCommand::Verify) => (Request::AuditVerify, None),
        Command::Key(KeyCommand::Rotate) => (Request::KeyRotate, None),
        Command::Backup { file, into, .. } => {
            let file = match (file, into) {
                (Some(f), _) => f.clone(),
                (None, Some(dir)) => backups::new_path(dir, std::time::SystemTime::now()),
                (None, None) => unreachable!("clap requires FILE or --into"),
            };
            (Request::Backup { path: files.output(&file)? }, None)
        }
        Command::Restore { file } => (Request::Restore { path: files.input(file)? }, None),
        Command::Export { id, format, output, features, dp_epsilon, dp_delta, dp_clip } => (
            Request::Export {
                id: id.clone(),
                format: format.clone(),
                path: files.output(output)?,
                features: features.clone(),
                dp_epsilon: *dp_epsilon,
                dp_delta: *dp_delta,
                dp_clip: *dp_clip,
            },
            None,
        ),
        Command::Follow(f) => {
            (Request::Follow { id: f.id.clone(), options: FollowOptions { samples: f.samples } }, f.count)
        }
        Command::Evaluate(_)
        | Command::Monitor(_)
        | Command::Plot(_)
        | Command::Completions { .. }
        | Command::ManPages { .. } => {
            unreachable!("handled above")
        }
    };

    // Long transfers show a bar while the daemon works (on a terminal, without --json).
    let watched = match &cli.command {
        Command::Export { .. } | Command::Backup { .. } => files.first_output().map(progress::Watched::Written),
        Command::Restore { .. } => files.first_shared().map(progress::Watched::Read),
        _ => None,
    };
    let call = || transport.call(&request, &files);
    let answer = match watched {
        Some(w) => {
            let label = match &cli.command {
                Command::Export { .. } => "exporting",
                Command::Backup { .. } => "backing up",
                _ => "restoring",
            };
            progress::while_running(cli.json, label, w, call)
        }
        None => call(),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            files.discard_outputs();
            return Err(e);
        }
    };
    let (reply, mut frames, place) = (answer.reply, answer.frames, transport.place());
    let mut frames = move || frames.take().ok_or_else(|| CtlError::protocol("no event stream came with the reply"));
    drop(files);
    let method = request.method();
    let json = cli.json;

    match &cli.command {
        Command::Status => print_value(out, json, &reply, |r| Ok(render::status(&r.decode::<StatusInfo>(method)?))),
        Command::Health => {
            let report: bci2token_api::HealthReport = reply.decode(method)?;
            print_value(out, json, &reply, |_| Ok(render::health(&report)))?;
            let problems =
                report.findings.iter().filter(|f| f.severity > bci2token_api::observe::Severity::Info).count();
            match report.verdict {
                bci2token_api::Verdict::Ok => Ok(()),
                bci2token_api::Verdict::Degraded => {
                    Err(CtlError::new(Kind::Degraded, format!("degraded: {problems} warning(s)")))
                }
                bci2token_api::Verdict::Failing => {
                    Err(CtlError::new(Kind::Failing, format!("failing: {problems} problem(s)")))
                }
            }
        }
        Command::Metrics => {
            let text: String = reply.decode(method)?;
            if json {
                write_out(out, &reply.json_line())?;
            } else {
                write_out(out, text.as_bytes())?;
            }
            out.flush().map_err(CtlError::from_stdout)
        }
        Command::Drivers => print_value(out, json, &reply, |r| Ok(render::drivers(&r.decode::<DriverList>(method)?))),
        Command::Devices { .. } => {
            print_value(out, json, &reply, |r| Ok(render::devices(&r.decode::<DeviceList>(method)?)))
        }
        Command::Models => print_value(out, json, &reply, |r| Ok(render::models(&r.decode::<ModelList>(method)?))),
        Command::Model(ModelCommand::Install { .. }) => print_value(out, json, &reply, |r| {
            let m = r.decode::<bci2token_api::ModelInfo>(method)?;
            Ok(format!("Installed model `{}` {} in {}.\n", m.name, m.version, m.dir))
        }),
        Command::Model(ModelCommand::Train(_)) => {
            print_value(out, json, &reply, |r| Ok(render::trained(&r.decode::<bci2token_api::Trained>(method)?)))
        }
        Command::Model(ModelCommand::Delete { .. }) => print_value(out, json, &reply, |r| {
            let m = r.decode::<bci2token_api::ModelInfo>(method)?;
            Ok(format!("Deleted trained model `{}`.\n", m.name))
        }),
        Command::Session(SessionCommand::List) => print_value(out, json, &reply, |r| {
            Ok(render::session_list(&r.decode::<Vec<SessionInfo>>(method)?, render::now_unix()))
        }),
        Command::Session(SessionCommand::Show { .. }) => print_value(out, json, &reply, |r| {
            Ok(render::session_show(&r.decode::<SessionInfo>(method)?, render::now_unix()))
        }),
        // Stopping prints nothing in human mode (like systemctl stop); --json prints the reply.
        Command::Session(SessionCommand::Stop { .. }) => print_value(out, json, &reply, |_| Ok(String::new())),
        Command::Session(SessionCommand::Delete { id }) => print_value(out, json, &reply, |_| {
            Ok(format!("Deleted session {id}: its key is destroyed and its data erased.\n"))
        }),
        Command::Audit(AuditCommand::List { .. }) => {
            print_value(out, json, &reply, |r| Ok(render::audit_list(&r.decode::<Vec<AuditEntryInfo>>(method)?)))
        }
        Command::Backup { into, keep_days, .. } => {
            print_value(out, json, &reply, |r| {
                let path = r.value.get("path").and_then(|v| v.as_str()).unwrap_or("?");
                Ok(format!("Backed up the session store to {path} (encrypted: it needs the daemon's master key).\n"))
            })?;
            match (into, keep_days) {
                (Some(dir), Some(days)) => {
                    let written = reply
                        .value
                        .get("path")
                        .and_then(|v| v.as_str())
                        .map(std::path::PathBuf::from)
                        .unwrap_or_default();
                    for gone in backups::prune(dir, *days, &written, std::time::SystemTime::now())? {
                        if !json {
                            write_out(
                                out,
                                format!("Removed {} (older than {days} days).\n", gone.display()).as_bytes(),
                            )?;
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Command::Export { id, format, output, features: None, .. } => print_value(out, json, &reply, |_| {
            Ok(format!("Exported session {id} as {format} to {}.\n", output.display()))
        }),
        Command::Export { id, output, features: Some(f), .. } => print_value(out, json, &reply, |r| {
            let v = &r.value;
            Ok(format!(
                "Released {f} features of session {id} to {} with (ε = {}, δ = {}) differential privacy per window: \
                 {} windows × {} features, clipped to {} µV², Gaussian noise σ = {:.3}. Privacy budget of {} spent: \
                 ε {} of {}, δ {} of {}.\n",
                output.display(),
                v["epsilon"],
                v["delta"],
                v["windows"],
                v["features"],
                v["clip"],
                v["sigma"].as_f64().unwrap_or(f64::NAN),
                v["subject"].as_str().unwrap_or("?"),
                v["budget"]["epsilon_spent"],
                v["budget"]["epsilon_limit"],
                v["budget"]["delta_spent"],
                v["budget"]["delta_limit"],
            ))
        }),
        Command::Restore { file } => {
            print_value(out, json, &reply, |_| Ok(format!("Restored the session store from {}.\n", file.display())))
        }
        Command::Key(KeyCommand::Rotate) => print_value(out, json, &reply, |r| {
            let n = r.value.get("rewrapped_sessions").and_then(|v| v.as_u64()).unwrap_or(0);
            Ok(format!("Master key rotated: {n} session key(s) re-wrapped under the new key.\n"))
        }),
        Command::Audit(AuditCommand::Verify) => {
            let v: AuditVerification = reply.decode(method)?;
            print_value(out, json, &reply, |_| Ok(render::audit_verification(&v)))?;
            match v.problem {
                Some(problem) if !v.intact => {
                    Err(CtlError::new(Kind::Integrity, format!("the audit log is broken: {problem}")))
                }
                _ => Ok(()),
            }
        }
        Command::Session(SessionCommand::Start(a)) => {
            // Only the id is needed; the rest (channel labels) is used when it decodes.
            let info: Option<SessionInfo> = reply.decode(method).ok();
            let id = match reply.value.get("id").and_then(|v| v.as_str()) {
                Some(id) => id.to_string(),
                None => {
                    return Err(CtlError::protocol("the reply of bci2tokend to 'session_start' has no session \"id\""))
                }
            };
            if json {
                write_out(out, &reply.json_line())?;
            } else {
                write_out(out, format!("{id}\n").as_bytes())?;
            }
            if !a.follow {
                return out.flush().map_err(CtlError::from_stdout);
            }
            out.flush().map_err(CtlError::from_stdout)?;
            let opts = StreamOptions { json, count: None, ctx: EventContext::from_session(info.as_ref()) };
            stream::follow(&mut frames()?, out, &opts, &place, &id)
        }
        Command::Follow(f) => {
            let info: Option<SessionInfo> = reply.decode(method).ok();
            if json {
                write_out(out, &reply.json_line())?;
                out.flush().map_err(CtlError::from_stdout)?;
            }
            let opts = StreamOptions { json, count: follow_count, ctx: EventContext::from_session(info.as_ref()) };
            stream::follow(&mut frames()?, out, &opts, &place, &f.id)
        }
        Command::Evaluate(_)
        | Command::Monitor(_)
        | Command::Plot(_)
        | Command::Completions { .. }
        | Command::ManPages { .. } => {
            unreachable!("handled above")
        }
    }
}

/// With `--json` the reply's value on one line, otherwise the rendered text.
fn print_value<W: Write>(
    out: &mut W,
    json: bool,
    reply: &OkReply,
    human: impl FnOnce(&OkReply) -> Result<String, CtlError>,
) -> Result<(), CtlError> {
    if json {
        write_out(out, &reply.json_line())?;
    } else {
        write_out(out, human(reply)?.as_bytes())?;
    }
    out.flush().map_err(CtlError::from_stdout)
}

#[cfg(test)]
mod tests {
    //! In-process fake daemon: a UnixListener in a temporary directory that checks the request
    //! and replies with canned frames. Only the framing/streaming logic is tested here; the real
    //! daemon is exercised by the end-to-end tests under tests/.

    use super::*;
    use clap::Parser;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::JoinHandle;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir =
            std::env::temp_dir().join(format!("b2tctl-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Serves one connection: reads one request frame (returned by the join handle), writes
    /// `frames`, then keeps the connection open until the client hangs up.
    fn fake_daemon(dir: &TempDir, frames: Vec<Vec<u8>>) -> (PathBuf, JoinHandle<serde_json::Value>) {
        serve(dir, frames, true)
    }

    /// Like [`fake_daemon`], but closes the connection right after the canned frames.
    fn fake_daemon_closing(dir: &TempDir, frames: Vec<Vec<u8>>) -> (PathBuf, JoinHandle<serde_json::Value>) {
        serve(dir, frames, false)
    }

    fn serve(dir: &TempDir, frames: Vec<Vec<u8>>, hold_open: bool) -> (PathBuf, JoinHandle<serde_json::Value>) {
        let path = dir.0.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            conn.read_exact(&mut body).unwrap();
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for f in frames {
                if conn.write_all(&f).is_err() {
                    break; // the client stopped reading: fine
                }
            }
            if hold_open {
                // Wait for the client to hang up: it must stop by itself, not because we closed.
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink);
            }
            request
        });
        (path, handle)
    }

    fn run_args(args: &[&str]) -> (Result<(), CtlError>, Vec<u8>) {
        let cli = Cli::try_parse_from(args).unwrap();
        let mut out = Vec::new();
        let r = run(&cli, &Env::default(), &mut out);
        (r, out)
    }

    const SESSION: &str = r#"{"id":"s-1","driver":"synthetic","config":{},"model":null,"state":"running","message":null,"description":"d","channels":[{"label":"C3","unit":"µV"}],"sample_rate":250.0,"created":1.5,"started_by":{"uid":1,"gid":1,"pid":null},"blocks":0,"frames":0,"gaps":0,"annotations":0,"events_dropped":0,"subscribers":1}"#;

    fn events() -> Vec<&'static str> {
        vec![
            r#"{"type":"state","session":"s-1","state":"running","message":null}"#,
            r#"{"type":"samples","session":"s-1","seq":0,"t":0.0,"frames":2,"flags":0,"data":[[0.1,1e-7]]}"#,
            r#"{"type":"annotation","session":"s-1","onset":0.004,"duration":null,"text":"T1"}"#,
            r#"{"type":"samples","session":"s-1","seq":1,"t":0.008,"frames":2,"flags":2,"data":[[3.4028235e38,-0.0]]}"#,
            r#"{"type":"state","session":"s-1","state":"finished","message":"end of script"}"#,
            r#"{"type":"warning","session":"s-1","message":"after the end: must not be printed"}"#,
        ]
    }

    fn canned(reply: &str, events: &[&str]) -> Vec<Vec<u8>> {
        let mut frames = vec![frame(format!(r#"{{"ok":{reply}}}"#).as_bytes())];
        frames.extend(events.iter().map(|e| frame(e.as_bytes())));
        frames
    }

    #[test]
    fn json_follow_writes_frames_byte_exact_and_stops_at_final_state() {
        let dir = temp_dir();
        let (path, server) = fake_daemon(&dir, canned(SESSION, &events()));
        let (r, out) =
            run_args(&["bci2tokenctl", "--socket", path.to_str().unwrap(), "--json", "follow", "s-1", "--samples"]);
        r.unwrap();
        let request = server.join().unwrap();
        assert_eq!(request, serde_json::json!({"method":"follow","params":{"id":"s-1","options":{"samples":true}}}));
        let mut expected = format!("{SESSION}\n");
        for e in &events()[..5] {
            expected.push_str(e);
            expected.push('\n');
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn count_stops_early_with_success() {
        let dir = temp_dir();
        let (path, server) = fake_daemon(&dir, canned(SESSION, &events()));
        let (r, out) =
            run_args(&["bci2tokenctl", "--json", "--socket", path.to_str().unwrap(), "follow", "s-1", "--count", "2"]);
        r.unwrap();
        server.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, vec![SESSION, events()[0], events()[1]]);
    }

    #[test]
    fn failed_session_is_exit_7_with_message() {
        let dir = temp_dir();
        let evs = [r#"{"type":"state","session":"s-1","state":"failed","message":"device unplugged"}"#];
        let (path, server) = fake_daemon(&dir, canned(SESSION, &evs));
        let (r, out) = run_args(&["bci2tokenctl", "--socket", path.to_str().unwrap(), "follow", "s-1"]);
        server.join().unwrap();
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 7);
        assert!(e.message.contains("device unplugged"), "{}", e.message);
        assert_eq!(String::from_utf8(out).unwrap(), "state failed: device unplugged\n");
    }

    #[test]
    fn stream_closed_before_the_end_is_an_error() {
        let dir = temp_dir();
        let (path, server) = fake_daemon_closing(&dir, canned(SESSION, &events()[..2]));
        let (r, out) = run_args(&["bci2tokenctl", "--json", "--socket", path.to_str().unwrap(), "follow", "s-1"]);
        server.join().unwrap();
        let e = r.unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(e.message.contains("after 2 events"), "{}", e.message);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);
    }

    #[test]
    fn start_with_follow_prints_the_id_then_events() {
        let dir = temp_dir();
        let (path, server) = fake_daemon(&dir, canned(SESSION, &events()));
        let (r, out) = run_args(&[
            "bci2tokenctl",
            "--socket",
            path.to_str().unwrap(),
            "session",
            "start",
            "--driver",
            "synthetic",
            "--set",
            "seed=7",
            "--set",
            r#"script=[{"label":"13Hz","seconds":3}]"#,
            "--model",
            "rel/model",
            "--follow",
        ]);
        r.unwrap();
        let request = server.join().unwrap();
        assert_eq!(request["method"], "session_start");
        assert_eq!(request["params"]["driver"], "synthetic");
        assert_eq!(
            request["params"]["config"],
            serde_json::json!({"seed":"7","script":[{"label":"13Hz","seconds":3}]})
        );
        assert_eq!(request["params"]["follow"], serde_json::json!({"samples": false}));
        let model = request["params"]["model"].as_str().unwrap();
        assert!(model.starts_with('/') && model.ends_with("rel/model"), "{model}");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "s-1");
        assert_eq!(lines[1], "state running");
        assert!(lines[2].starts_with("seq 0  t=0.000s  2 frames"), "{text}");
        assert_eq!(lines[3], "  C3    0.1000   1.00e-7");
        assert!(text.ends_with("state finished: end of script\n"), "{text}");
    }

    #[test]
    fn start_without_follow_prints_only_the_id_or_the_session_json() {
        for json in [false, true] {
            let dir = temp_dir();
            let (path, server) = fake_daemon(&dir, canned(SESSION, &[]));
            let mut args = vec!["bci2tokenctl", "--socket", path.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            args.extend(["session", "start", "--driver", "synthetic"]);
            let (r, out) = run_args(&args);
            r.unwrap();
            let request = server.join().unwrap();
            assert_eq!(request["params"]["follow"], serde_json::Value::Null);
            let expected = if json { format!("{SESSION}\n") } else { "s-1\n".to_string() };
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn daemon_error_reply_maps_to_exit_code() {
        let dir = temp_dir();
        let err = frame(br#"{"error":{"code":"limit_reached","message":"at most 8 sessions"}}"#);
        let (path, server) = fake_daemon(&dir, vec![err]);
        let (r, out) =
            run_args(&["bci2tokenctl", "--socket", path.to_str().unwrap(), "session", "start", "--driver", "x"]);
        server.join().unwrap();
        let e = r.unwrap_err();
        assert_eq!((e.exit_code(), e.message.as_str()), (8, "at most 8 sessions"));
        assert!(out.is_empty());
    }

    #[test]
    fn list_renders_a_table_and_json_passes_through() {
        for json in [false, true] {
            let dir = temp_dir();
            let (path, server) = fake_daemon(&dir, canned(&format!("[{SESSION}]"), &[]));
            let mut args = vec!["bci2tokenctl", "--socket", path.to_str().unwrap(), "session", "list"];
            if json {
                args.push("--json");
            }
            let (r, out) = run_args(&args);
            r.unwrap();
            assert_eq!(server.join().unwrap(), serde_json::json!({"method": "session_list"}));
            let text = String::from_utf8(out).unwrap();
            if json {
                assert_eq!(text, format!("[{SESSION}]\n"));
            } else {
                assert!(text.starts_with("ID   DRIVER     STATE    CHANNELS    RATE  FRAMES  CREATED\n"), "{text}");
                assert!(text.contains("s-1  synthetic  running         1  250 Hz       0  "), "{text}");
            }
        }
    }

    #[test]
    fn not_running_names_the_socket() {
        let dir = temp_dir();
        let path = dir.0.join("missing.sock");
        let (r, _) = run_args(&["bci2tokenctl", "--socket", path.to_str().unwrap(), "status"]);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.message.contains(path.to_str().unwrap()));
    }

    /// A writer that fails like a closed pipe after `limit` bytes.
    struct ClosedPipe {
        limit: usize,
        written: usize,
    }
    impl Write for ClosedPipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.written >= self.limit {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.written += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn closed_stdout_is_a_quiet_success() {
        let dir = temp_dir();
        let (path, server) = fake_daemon(&dir, canned(SESSION, &events()));
        let cli = Cli::try_parse_from(["bci2tokenctl", "--json", "--socket", path.to_str().unwrap(), "follow", "s-1"])
            .unwrap();
        let mut out = ClosedPipe { limit: 10, written: 0 };
        let e = run(&cli, &Env::default(), &mut out).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, Kind::StdoutClosed);
        assert_eq!(e.exit_code(), 0);
    }

    /// Throughput of --json follow (64 channels × 20000 frames in blocks of 160, like a fast
    /// replay). Run with `cargo test -p bci2tokenctl --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn json_follow_throughput() {
        let channels = 64;
        let frames_per_block = 160;
        let blocks = 20_000 / frames_per_block;
        let mut evs = Vec::new();
        for b in 0..blocks {
            let data: Vec<Vec<f32>> = (0..channels)
                .map(|c| (0..frames_per_block).map(|i| ((b * 7 + c * 13 + i) as f32 * 0.731).sin() * 50.0).collect())
                .collect();
            let ev = serde_json::json!({"type":"samples","session":"s-1","seq":b,"t":b as f64 * 0.64,"frames":frames_per_block,"flags":0,"data":data});
            evs.push(serde_json::to_string(&ev).unwrap());
        }
        evs.push(r#"{"type":"state","session":"s-1","state":"finished","message":null}"#.into());
        let total: usize = evs.iter().map(|e| e.len() + 1).sum();
        let refs: Vec<&str> = evs.iter().map(String::as_str).collect();
        let dir = temp_dir();
        let (path, server) = fake_daemon(&dir, canned(SESSION, &refs));
        let cli = Cli::try_parse_from([
            "bci2tokenctl",
            "--json",
            "--socket",
            path.to_str().unwrap(),
            "follow",
            "s-1",
            "--samples",
        ])
        .unwrap();
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, std::io::sink());
        let t0 = std::time::Instant::now();
        run(&cli, &Env::default(), &mut out).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        server.join().unwrap();
        println!(
            "{} events, {:.1} MB in {:.3} s: {:.0} MB/s",
            evs.len(),
            total as f64 / 1e6,
            dt,
            total as f64 / 1e6 / dt
        );
    }
}

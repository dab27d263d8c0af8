//! The I/O of `evaluate`: finding out the model's labels, and replaying one file through the
//! daemon (`session_start` with the replay driver at `speed=0`, the model attached and `follow`)
//! while collecting its annotations and tokens.

use std::io::Read;
use std::path::Path;

use bci2token_api::{ConfigMap, FollowOptions, ModelInfo, Request};
use serde::Deserialize;

use super::score::{Annotation, ModelLabels, Token};
use crate::client::{frame_error, FrameReader, LooseErrorBody};
use crate::error::{CtlError, Kind};
use crate::files::Files;
use crate::transport::Transport;

/// The model as the command line named it: what to send to the daemon, and its labels if known.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// `--model` as sent in `session_start`: an absolute directory, or a name.
    pub request: String,
    pub labels: ModelLabels,
}

/// Resolves `--model NAME|DIR` with the daemon (`model_show`), which finds it the same way
/// `session start --model` will. A local directory is sent as an absolute path, anything else as
/// a name.
pub fn resolve_model(socket: &Transport, spec: &str) -> Result<ModelSpec, CtlError> {
    let local = Path::new(spec).join("model.toml").is_file();
    let request = if local {
        let abs = std::path::absolute(spec)
            .map_err(|e| CtlError::new(Kind::Usage, format!("--model {spec}: cannot make the path absolute: {e}")))?;
        abs.to_str()
            .ok_or_else(|| {
                CtlError::new(Kind::Usage, format!("--model {}: the path is not valid UTF-8", abs.display()))
            })?
            .to_string()
    } else {
        spec.to_string()
    };
    let info: ModelInfo =
        socket.call(&Request::ModelShow { model: request.clone() }, &Files::default())?.reply.decode("model_show")?;
    let labels = ModelLabels {
        name: info.name,
        labels: info.labels,
        null_label: Some(info.null_label).filter(|l| !l.is_empty()),
        window_seconds: Some(info.window_seconds),
    };
    Ok(ModelSpec { request, labels })
}

/// What a replayed file produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collected {
    pub session: String,
    pub annotations: Vec<Annotation>,
    pub tokens: Vec<Token>,
    pub warnings: Vec<String>,
}

/// The fields of an event that the evaluation looks at.
#[derive(Deserialize)]
struct Ev {
    #[serde(rename = "type")]
    kind: Option<String>,
    onset: Option<f64>,
    duration: Option<f64>,
    text: Option<String>,
    t: Option<f64>,
    label: Option<String>,
    state: Option<String>,
    message: Option<String>,
    count: Option<u64>,
    error: Option<LooseErrorBody>,
}

/// The `session_start` request for one file: the replay driver at full speed, `--set`s, the model
/// (if any), and follow (without sample blocks).
/// The file goes with the request as a descriptor (`files`), opened here with the caller's rights.
pub fn start_request(
    file: &Path,
    sets: &ConfigMap,
    model: Option<&str>,
    files: &mut Files,
) -> Result<Request, CtlError> {
    let mut config = sets.clone();
    let path = files.input(file)?;
    config.insert("path".into(), serde_json::to_value(path).expect("a file argument serialises"));
    config.insert("speed".into(), "0".into());
    Ok(Request::SessionStart {
        driver: "replay".into(),
        config,
        model: model.map(str::to_string),
        follow: Some(FollowOptions { samples: false }),
        lsl_outlets: false,
        subject: None,
    })
}

/// Replays `file` and collects its events. Errors do not carry the file name (the caller adds it).
/// `at` is told the stream time the replay has reached, as events come.
pub fn replay_file(
    socket: &Transport,
    file: &Path,
    sets: &ConfigMap,
    model: Option<&str>,
    at: &dyn Fn(f64),
) -> Result<Collected, CtlError> {
    if !file.is_file() {
        return Err(CtlError::new(Kind::Usage, "no such file"));
    }
    let mut files = Files::default();
    let request = start_request(file, sets, model, &mut files)?;
    let answer = socket.call(&request, &files)?;
    drop(files);
    let id = answer.reply.value.get("id").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut frames = answer.frames.ok_or_else(|| CtlError::protocol("no event stream came with the session"))?;
    collect(&mut frames, &socket.place(), &id, at)
}

/// Reads a follow stream to its final `state` event, collecting annotations and tokens.
/// A `failed` or `stopped` session, a decoder error, lost events, or a stream that ends early are
/// errors: the scores would not be honest.
pub fn collect<R: Read>(
    frames: &mut FrameReader<R>,
    socket: &Path,
    session: &str,
    at: &dyn Fn(f64),
) -> Result<Collected, CtlError> {
    let mut out = Collected { session: session.to_string(), ..Collected::default() };
    let mut decoder_errors: Vec<(f64, String)> = Vec::new();
    let mut seen = 0u64;
    loop {
        let frame = match frames.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(CtlError::protocol(format!(
                    "bci2tokend closed the follow stream of session {session} before it ended (after {seen} events)"
                )))
            }
            Err(e) => return Err(frame_error(e, socket)),
        };
        seen += 1;
        let ev: Ev = serde_json::from_slice(frame)
            .map_err(|e| CtlError::protocol(format!("malformed event from bci2tokend in session {session}: {e}")))?;
        let Some(kind) = ev.kind else {
            return Err(match ev.error {
                Some(err) => err.into_ctl_error(),
                None => CtlError::protocol(format!("event without a \"type\" in session {session}")),
            });
        };
        if let Some(t) = ev.t.or(ev.onset) {
            at(t);
        }
        let missing =
            |field: &str| CtlError::protocol(format!("{kind} event without \"{field}\" in session {session}"));
        match kind.as_str() {
            "annotation" => out.annotations.push(Annotation {
                onset: ev.onset.ok_or_else(|| missing("onset"))?,
                duration: ev.duration,
                text: ev.text.ok_or_else(|| missing("text"))?,
            }),
            "token" => out
                .tokens
                .push(Token { t: ev.t.ok_or_else(|| missing("t"))?, label: ev.label.ok_or_else(|| missing("label"))? }),
            "decoder_error" => decoder_errors.push((ev.t.unwrap_or(f64::NAN), ev.message.unwrap_or_default())),
            "warning" => out.warnings.extend(ev.message),
            "lost" => {
                return Err(CtlError::protocol(format!(
                    "session {session}: {} events were lost on the way; scores would be incomplete \
                     (is another client following this session first?)",
                    ev.count.unwrap_or(0)
                )))
            }
            "state" => {
                let why = ev.message.filter(|m| !m.is_empty());
                match ev.state.as_deref() {
                    Some("finished") => break,
                    Some("failed") => {
                        return Err(CtlError::new(
                            Kind::SessionFailed,
                            format!("session {session} failed: {}", why.unwrap_or_else(|| "no reason given".into())),
                        ))
                    }
                    Some("stopped") => {
                        return Err(CtlError::new(
                            Kind::SessionFailed,
                            format!("session {session} was stopped before the end of the file"),
                        ))
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if let Some((t, message)) = decoder_errors.first() {
        return Err(CtlError::new(
            Kind::SessionFailed,
            format!(
                "the decoder failed on {} window(s) of session {session}, the first ending at {t:.3} s: {message}",
                decoder_errors.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn wire(events: &[&str]) -> FrameReader<Cursor<Vec<u8>>> {
        let mut w = Vec::new();
        for e in events {
            w.extend_from_slice(&(e.len() as u32).to_be_bytes());
            w.extend_from_slice(e.as_bytes());
        }
        FrameReader::new(Cursor::new(w))
    }

    const TOKEN: &str = r#"{"type":"token","session":"s","seq":0,"t":3.5,"label":"13Hz","text":" yes","tokenizer":"gpt2","token_ids":[3763],"confidence":0.9,"probabilities":{"13Hz":0.9,"17Hz":0.1},"logit_bias":{},"latency_us":120}"#;

    #[test]
    fn collects_annotations_and_tokens_until_finished() {
        let mut r = wire(&[
            r#"{"type":"state","session":"s","state":"running","message":null}"#,
            r#"{"type":"annotation","session":"s","onset":1.0,"duration":null,"text":"13Hz"}"#,
            r#"{"type":"annotation","session":"s","onset":2.0,"duration":4.1,"text":"T1"}"#,
            r#"{"type":"stats","session":"s","t":1.0,"window":1.0,"channels":[]}"#,
            TOKEN,
            r#"{"type":"warning","session":"s","message":"channel O1 is flat"}"#,
            r#"{"type":"brand_new","session":"s"}"#,
            r#"{"type":"state","session":"s","state":"finished","message":"end of file"}"#,
            TOKEN, // after the end: not read
        ]);
        let times = std::cell::RefCell::new(Vec::new());
        let c = collect(&mut r, Path::new("/sock"), "s", &|t| times.borrow_mut().push(t)).unwrap();
        assert_eq!(c.session, "s");
        assert_eq!(times.borrow().first(), Some(&1.0), "the replay's position, from the events' times");
        assert_eq!(
            c.annotations,
            vec![
                Annotation { onset: 1.0, duration: None, text: "13Hz".into() },
                Annotation { onset: 2.0, duration: Some(4.1), text: "T1".into() },
            ]
        );
        assert_eq!(c.tokens, vec![Token { t: 3.5, label: "13Hz".into() }]);
        assert_eq!(c.warnings, vec!["channel O1 is flat".to_string()]);
    }

    #[test]
    fn failures_are_errors() {
        let fin = r#"{"type":"state","session":"s","state":"finished","message":null}"#;
        let e = collect(
            &mut wire(&[
                r#"{"type":"decoder_error","session":"s","t":2.0,"message":"shape mismatch"}"#,
                r#"{"type":"decoder_error","session":"s","t":2.5,"message":"shape mismatch"}"#,
                fin,
            ]),
            Path::new("/sock"),
            "s",
            &|_| {},
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 7);
        assert!(e.message.contains("2 window(s)") && e.message.contains("2.000 s: shape mismatch"), "{}", e.message);

        let e = collect(
            &mut wire(&[r#"{"type":"state","session":"s","state":"failed","message":"bad EDF header"}"#]),
            Path::new("/sock"),
            "s",
            &|_| {},
        )
        .unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (Kind::SessionFailed, "session s failed: bad EDF header"));

        let e = collect(
            &mut wire(&[r#"{"type":"state","session":"s","state":"stopped","message":null}"#]),
            Path::new("/sock"),
            "s",
            &|_| {},
        )
        .unwrap_err();
        assert!(e.message.contains("stopped"), "{}", e.message);

        let e =
            collect(&mut wire(&[r#"{"type":"lost","session":"s","count":3}"#, fin]), Path::new("/sock"), "s", &|_| {})
                .unwrap_err();
        assert!(e.message.contains("3 events were lost"), "{}", e.message);

        let e = collect(&mut wire(&[TOKEN]), Path::new("/sock"), "s", &|_| {}).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(e.message.contains("after 1 events"), "{}", e.message);

        let e =
            collect(&mut wire(&[r#"{"type":"token","session":"s"}"#]), Path::new("/sock"), "s", &|_| {}).unwrap_err();
        assert!(e.message.contains("without \"t\""), "{}", e.message);

        let e =
            collect(&mut wire(&[r#"{"error":{"code":"not_found","message":"gone"}}"#]), Path::new("/s"), "s", &|_| {})
                .unwrap_err();
        assert_eq!(e.exit_code(), 4);
    }

    #[test]
    fn the_request_replays_at_full_speed_with_the_model() {
        let mut sets = ConfigMap::new();
        sets.insert("channels".into(), "O1,Oz".into());
        let file = std::env::temp_dir().join(format!("bci2tokenctl-eval-{}.edf", std::process::id()));
        std::fs::write(&file, b"0       ").unwrap();
        let mut files = Files::default();
        let r = start_request(&file, &sets, Some("/m/ssvep"), &mut files).unwrap();
        assert!(start_request(Path::new("/no/such.edf"), &sets, Some("m"), &mut Files::default()).is_err());
        std::fs::remove_file(&file).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["method"], "session_start");
        assert_eq!(v["params"]["driver"], "replay");
        assert_eq!(v["params"]["model"], "/m/ssvep");
        assert_eq!(v["params"]["follow"], serde_json::json!({"samples": false}));
        assert_eq!(v["params"]["config"]["speed"], "0");
        assert_eq!(v["params"]["config"]["channels"], "O1,Oz");
        // The recording goes as a descriptor, opened with the caller's rights.
        assert_eq!(v["params"]["config"]["path"]["fd"], 0);
        assert_eq!(v["params"]["config"]["path"]["name"], file.display().to_string());
        assert_eq!(files.fds().len(), 1);
    }
}

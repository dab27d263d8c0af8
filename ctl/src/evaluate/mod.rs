//! `bci2tokenctl evaluate`: replays annotated recordings through the daemon with a model attached
//! and scores the tokens it emits against the annotations (see docs/bci2tokenctl.md).
//!
//! [`score`] is the pure part (trials, decisions, confusion, Wolpaw ITR); [`replay`] talks to the
//! daemon, one file at a time; [`report`] prints.

pub mod replay;
mod report;
pub mod score;

use std::collections::BTreeSet;
use std::io::Write;

use bci2token_api::ConfigMap;

use crate::cli::EvaluateArgs;
use crate::error::{CtlError, Kind};
use crate::transport::Transport;
use score::{Alignment, Score, TrialResult};

/// The scores of one file.
#[derive(Debug, Clone)]
pub struct FileScore {
    pub session: String,
    pub tokens: usize,
    pub results: Vec<TrialResult>,
    pub score: Score,
    pub notes: Vec<String>,
}

/// One file as given on the command line, and what became of it.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub file: String,
    pub result: Result<FileScore, CtlError>,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// `--model` as given.
    pub model: String,
    pub alignment: Alignment,
    /// Notes about the whole evaluation (e.g. a class on the null label).
    pub notes: Vec<String>,
    pub files: Vec<FileOutcome>,
    /// Pooled over all trials of all scored files.
    pub overall: Score,
    /// The mean of the per-file accuracies (files with trials).
    pub mean_file_accuracy: Option<f64>,
}

/// `--set` keys the evaluation sets itself.
const RESERVED: [&str; 2] = ["path", "speed"];

/// Scores one replayed file.
fn score_file(c: replay::Collected, a: &Alignment) -> Result<FileScore, CtlError> {
    let trials = score::form_trials(&c.annotations, &a.rules).map_err(|m| CtlError::new(Kind::Usage, m))?;
    let results = score::decide_all(&trials.trials, &c.tokens, a.decision, a.token_delay);
    let score = score::score(&results, a);
    let mut notes = trials.notes;
    if results.is_empty() {
        let texts: BTreeSet<&str> = c.annotations.iter().map(|x| x.text.as_str()).collect();
        let seen: Vec<&str> = texts.into_iter().take(20).collect();
        notes.push(format!(
            "no trials: no cue annotation of the classes ({}) in this file; its annotations are: {}",
            a.classes.join(", "),
            if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
        ));
    }
    notes.extend(c.warnings.into_iter().map(|w| format!("daemon warning: {w}")));
    Ok(FileScore { session: c.session, tokens: c.tokens.len(), results, score, notes })
}

/// Pools the files' trials and builds the report.
pub fn build_report(model: String, alignment: Alignment, notes: Vec<String>, files: Vec<FileOutcome>) -> Report {
    let pooled: Vec<TrialResult> =
        files.iter().filter_map(|f| f.result.as_ref().ok()).flat_map(|fs| fs.results.iter().cloned()).collect();
    let overall = score::score(&pooled, &alignment);
    let mean_file_accuracy =
        score::mean_accuracy(files.iter().filter_map(|f| f.result.as_ref().ok()).map(|fs| fs.score.accuracy));
    Report { model, alignment, notes, files, overall, mean_file_accuracy }
}

/// The message of a failed file without the file name in front.
fn bare_message<'a>(f: &'a FileOutcome, e: &'a CtlError) -> &'a str {
    e.message.strip_prefix(f.file.as_str()).and_then(|m| m.strip_prefix(": ")).unwrap_or(&e.message)
}

/// "every file failed: …", saying a message shared by all files once.
fn every_file_failed(files: &[FileOutcome]) -> String {
    let failed: Vec<(&FileOutcome, &CtlError)> =
        files.iter().filter_map(|f| f.result.as_ref().err().map(|e| (f, e))).collect();
    let first = bare_message(failed[0].0, failed[0].1);
    if failed.iter().all(|(f, e)| bare_message(f, e) == first) {
        let names: Vec<&str> = failed.iter().map(|(f, _)| f.file.as_str()).collect();
        format!("every file failed ({}): {first}", names.join(", "))
    } else {
        let all: Vec<&str> = failed.iter().map(|(_, e)| e.message.as_str()).collect();
        format!("every file failed: {}", all.join("; "))
    }
}

/// Runs the evaluation and prints it. Fails only when the command cannot start (usage, no daemon,
/// unknown model) or when every file failed.
pub fn run<W: Write>(args: &EvaluateArgs, json: bool, socket: &Transport, out: &mut W) -> Result<(), CtlError> {
    let mut sets = ConfigMap::new();
    for (k, v) in &args.set {
        if RESERVED.contains(&k.as_str()) {
            return Err(CtlError::new(
                Kind::Usage,
                format!("--set {k}=…: evaluate sets `{k}` itself (each FILE is replayed at speed=0)"),
            ));
        }
        sets.insert(k.clone(), v.clone());
    }
    let model = replay::resolve_model(socket, &args.model)?;
    let (mut alignment, notes) = score::build_alignment(
        args.trial.classes.as_deref(),
        &args.trial.map,
        Some(&model.labels),
        args.trial.trial_start.clone(),
        args.trial.trial_length,
        args.decision,
        !args.partial_windows,
    )
    .map_err(|m| CtlError::new(Kind::Usage, m))?;
    alignment.trials = args.trial.trials;

    let mut files = Vec::new();
    let bar = crate::progress::FilesBar::new(json, args.files.len());
    for file in &args.files {
        let name = file.display().to_string();
        bar.file(&name);
        let result = match replay::replay_file(socket, file, &sets, Some(&model.request), &|t| bar.at(&name, t)) {
            // Without a daemon no other file can do better.
            Err(e) if matches!(e.kind, Kind::NotRunning | Kind::SocketPermission) => return Err(e),
            Err(e) => Err(e),
            Ok(collected) => score_file(collected, &alignment),
        };
        let outcome = FileOutcome { result: result.map_err(|e| e.context(&name)), file: name };
        bar.done_one();
        if !json {
            bar.suspend(|| {
                out.write_all(report::file_block(&outcome).as_bytes()).map_err(CtlError::from_stdout)?;
                out.flush().map_err(CtlError::from_stdout)
            })?;
        }
        files.push(outcome);
    }
    drop(bar);

    if files.iter().all(|f| f.result.is_err()) {
        let errors: Vec<&CtlError> = files.iter().filter_map(|f| f.result.as_ref().err()).collect();
        let first = errors[0].clone();
        if errors.len() == 1 {
            return Err(first);
        }
        let mut e = first;
        e.message = every_file_failed(&files);
        return Err(e);
    }

    let report = build_report(args.model.clone(), alignment, notes, files);
    let text = if json { format!("{}\n", report::json(&report)) } else { report::summary(&report) };
    out.write_all(text.as_bytes()).map_err(CtlError::from_stdout)?;
    out.flush().map_err(CtlError::from_stdout)
}

#[cfg(test)]
mod tests {
    //! The whole command against an in-process fake daemon: one connection for `models`, then one
    //! `session_start` (replay, follow) per file, answered from canned event lists.

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::socket::Source;
    use clap::Parser;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("b2tctl-eval-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn frame(body: &str) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body.as_bytes());
        f
    }

    const MODELS: &str = r#"{"ok":{"name":"ssvep-3","version":"1","description":"","dir":"/nonexistent/ssvep-3","channels":["O1"],"sample_rate":256.0,"window_seconds":2.0,"hop_seconds":0.25,"labels":["13Hz","17Hz","21Hz"],"null_label":"","tokenizer":"gpt2","trained_on":[]}}"#;

    fn session_reply(id: &str) -> String {
        format!(
            r#"{{"ok":{{"id":"{id}","driver":"replay","config":{{}},"model":"ssvep-3","state":"running","message":null,"description":"d","channels":[],"sample_rate":256.0,"created":1.0,"started_by":{{"uid":1,"gid":1,"pid":null}},"blocks":0,"frames":0,"gaps":0,"annotations":0,"events_dropped":0,"subscribers":1}}}}"#
        )
    }

    fn ann(onset: f64, text: &str) -> String {
        format!(r#"{{"type":"annotation","session":"s","onset":{onset},"duration":null,"text":"{text}"}}"#)
    }

    fn tok(t: f64, label: &str) -> String {
        format!(
            r#"{{"type":"token","session":"s","seq":0,"t":{t},"label":"{label}","text":"x","tokenizer":"gpt2","token_ids":[1],"confidence":0.9,"probabilities":{{}},"logit_bias":{{}},"latency_us":5}}"#
        )
    }

    const FINISHED: &str = r#"{"type":"state","session":"s","state":"finished","message":"end of file"}"#;

    /// Serves `answers.len()` connections in order; each answer is the frames sent after reading
    /// the request. Returns the requests.
    fn fake_daemon(dir: &TempDir, answers: Vec<Vec<String>>) -> (PathBuf, JoinHandle<Vec<serde_json::Value>>) {
        let path = dir.0.join("control.sock");
        let _ = std::fs::remove_file(&path); // a previous fake daemon's
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut len = [0u8; 4];
                conn.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                conn.read_exact(&mut body).unwrap();
                requests.push(serde_json::from_slice(&body).unwrap());
                for f in answer {
                    let _ = conn.write_all(&frame(&f));
                }
            }
            requests
        });
        (path, handle)
    }

    fn resolved(path: &Path) -> Transport {
        Transport::Socket(crate::socket::Resolved {
            path: path.to_path_buf(),
            source: Source::Flag,
            user_candidate: None,
        })
    }

    fn args(cmd: &[&str]) -> EvaluateArgs {
        let cli = Cli::try_parse_from(std::iter::once("bci2tokenctl").chain(cmd.iter().copied())).unwrap();
        let Command::Evaluate(a) = cli.command else { panic!() };
        a
    }

    /// An SSVEP-like file: cues 0.5 s before stim_start, 5 s trials.
    fn good_file(id: &str) -> Vec<String> {
        vec![
            session_reply(id),
            ann(1.0, "rest"),
            ann(1.5, "stim_start"),
            tok(3.0, "13Hz"), // in the rest trial, which is not a class
            ann(10.0, "13Hz"),
            ann(10.5, "stim_start"),
            tok(12.5, "13Hz"),
            ann(20.0, "17Hz"),
            ann(20.5, "stim_start"),
            tok(21.5, "21Hz"),
            tok(22.0, "17Hz"),
            ann(30.0, "21Hz"), // no token: undecided
            ann(30.5, "stim_start"),
            ann(40.0, "21Hz"), // no marker before the end: skipped
            FINISHED.to_string(),
        ]
    }

    fn files(dir: &TempDir, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let p = dir.0.join(format!("f{i}.edf"));
                std::fs::write(&p, b"x").unwrap();
                p.display().to_string()
            })
            .collect()
    }

    #[test]
    fn scores_files_and_keeps_going_after_a_failed_one() {
        let dir = temp_dir("mixed");
        let f = files(&dir, 3);
        let refused = vec![
            r#"{"error":{"code":"invalid_config","message":"model `ssvep-3` wants 8 channels at 256 Hz; the device has 64 channels at 160 Hz"}}"#.to_string(),
        ];
        let decoder_error = vec![
            session_reply("s-3"),
            r#"{"type":"decoder_error","session":"s-3","t":2.0,"message":"boom"}"#.to_string(),
            FINISHED.to_string(),
        ];
        let (sock, server) = fake_daemon(&dir, vec![vec![MODELS.into()], good_file("s-1"), refused, decoder_error]);
        let a = args(&[
            "evaluate",
            "--partial-windows",
            "--model",
            "ssvep-3",
            "--trial-start",
            "stim_start",
            "--trial-length",
            "5",
            "--set",
            "channels=O1",
            &f[0],
            &f[1],
            &f[2],
        ]);
        let mut out = Vec::new();
        run(&a, true, &resolved(&sock), &mut out).unwrap();
        let requests = server.join().unwrap();
        assert_eq!(requests[0], serde_json::json!({"method": "model_show", "params": {"model": "ssvep-3"}}));
        for (r, file) in requests[1..].iter().zip(&f) {
            // Each recording goes as the request's first descriptor, under its own name.
            let path = serde_json::json!({"fd": 0, "name": file});
            assert_eq!(r["params"]["config"], serde_json::json!({"path": path, "speed": "0", "channels": "O1"}));
            assert_eq!(r["params"]["model"], "ssvep-3");
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let f0 = &v["files"][0];
        assert_eq!(f0["file"], f[0].as_str());
        assert_eq!(
            (f0["trials"].as_u64(), f0["decided"].as_u64(), f0["correct"].as_u64()),
            (Some(3), Some(2), Some(1))
        );
        assert!((f0["accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(f0["confusion"]["labels"], serde_json::json!(["13Hz", "17Hz", "21Hz"]));
        assert_eq!(f0["confusion"]["columns"], serde_json::json!(["13Hz", "17Hz", "21Hz", "none"]));
        assert_eq!(f0["confusion"]["matrix"], serde_json::json!([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]));
        assert!((f0["mean_decision_time"].as_f64().unwrap() - 1.5).abs() < 1e-12); // (2.0 + 1.0) / 2
        assert_eq!(f0["itr_bits_per_min"], 0.0); // P = 1/3 is chance with N = 3: 0 bits
        let notes = f0["notes"].as_array().unwrap();
        assert!(notes.iter().any(|n| n.as_str().unwrap().contains("\"21Hz\" at 40.000 s")), "{notes:?}");
        let f1 = &v["files"][1];
        assert_eq!(f1["error"]["code"], "invalid_config");
        let msg = f1["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{}: model `ssvep-3` wants 8 channels", f[1])), "{msg}");
        let f2 = &v["files"][2];
        assert_eq!(f2["error"]["code"], "session_failed");
        assert!(f2["error"]["message"].as_str().unwrap().contains("boom"));
        let o = &v["overall"];
        assert_eq!(
            (o["trials"].as_u64(), o["files"].as_u64(), o["failed_files"].as_u64()),
            (Some(3), Some(1), Some(2))
        );
        assert!((o["mean_file_accuracy"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(o["itr_time"], "mean_decision_time");
    }

    #[test]
    fn human_output_has_a_block_per_file_and_the_overall_lines() {
        let dir = temp_dir("human");
        let f = files(&dir, 2);
        let perfect = vec![
            session_reply("s-2"),
            ann(10.0, "13Hz"),
            ann(10.5, "stim_start"),
            tok(11.5, "13Hz"),
            ann(20.0, "17Hz"),
            ann(20.5, "stim_start"),
            tok(21.5, "17Hz"),
            FINISHED.to_string(),
        ];
        let (sock, server) = fake_daemon(&dir, vec![vec![MODELS.into()], good_file("s-1"), perfect]);
        let a = args(&[
            "evaluate",
            "--partial-windows",
            "--model",
            "ssvep-3",
            "--trial-start",
            "stim_start",
            "--trial-length",
            "5",
            &f[0],
            &f[1],
        ]);
        let mut out = Vec::new();
        run(&a, false, &resolved(&sock), &mut out).unwrap();
        server.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!("{}: session s-1, 3 trials (2 decided), accuracy 0.333 (1/3), 4 tokens\n", f[0])),
            "{text}"
        );
        assert!(
            text.contains("  TRUE\\DECODED  13Hz  17Hz  21Hz  none\n  13Hz             1     0     0     0\n"),
            "{text}"
        );
        assert!(text.contains(&format!("{}: session s-2, 2 trials (2 decided), accuracy 1.000 (2/2)", f[1])), "{text}");
        // Perfect: log2(3) bits per 1 s decision, per 5 s trial.
        let itr = 3f64.log2() * 60.0;
        assert!(
            text.contains(&format!(
                "ITR {itr:.2} bits/min (T = mean decision time), {:.2} bits/min (T = trial length 5.000 s)",
                itr / 5.0
            )),
            "{text}"
        );
        assert!(text.contains("FILE"), "{text}");
        assert!(text.contains("pooled accuracy 0.600 (3/5 trials), mean of file accuracies 0.667"), "{text}");
    }

    #[test]
    fn every_file_failing_is_an_error_naming_each_file() {
        let dir = temp_dir("allfail");
        let f = files(&dir, 2);
        let refused = |m: &str| vec![format!(r#"{{"error":{{"code":"invalid_config","message":"{m}"}}}}"#)];
        let (sock, server) =
            fake_daemon(&dir, vec![vec![MODELS.into()], refused("rate differs"), refused("channels differ")]);
        let a = args(&["evaluate", "--model", "ssvep-3", "--trial-length", "5", &f[0], &f[1]]);
        let mut out = Vec::new();
        let e = run(&a, true, &resolved(&sock), &mut out).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.exit_code(), 6);
        assert_eq!(e.message, format!("every file failed: {}: rate differs; {}: channels differ", f[0], f[1]));
        assert!(out.is_empty());
    }

    #[test]
    fn the_same_failure_everywhere_is_said_once() {
        let dir = temp_dir("same");
        let f = files(&dir, 2);
        let refused = vec![r#"{"error":{"code":"invalid_config","message":"rate differs"}}"#.to_string()];
        let (sock, server) = fake_daemon(&dir, vec![vec![MODELS.into()], refused.clone(), refused]);
        let a = args(&["evaluate", "--model", "ssvep-3", "--trial-length", "5", &f[0], &f[1]]);
        let mut out = Vec::new();
        let e = run(&a, false, &resolved(&sock), &mut out).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.message, format!("every file failed ({}, {}): rate differs", f[0], f[1]));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("{}: failed: rate differs\n", f[0])), "{text}");
    }

    #[test]
    fn a_model_the_daemon_cannot_read_stops_before_any_file() {
        let dir = temp_dir("broken");
        let f = files(&dir, 1);
        let models = r#"{"error":{"code":"invalid_config","message":"/m/ssvep-3/model.toml: unknown field `fbcca`"}}"#;
        let (sock, server) = fake_daemon(&dir, vec![vec![models.into()]]);
        let a = args(&["evaluate", "--model", "ssvep-3", &f[0]]);
        let e = run(&a, false, &resolved(&sock), &mut Vec::new()).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.exit_code(), 6);
        assert_eq!(e.message, "/m/ssvep-3/model.toml: unknown field `fbcca`");
    }

    #[test]
    fn usage_errors_before_any_file() {
        let dir = temp_dir("usage");
        let f = files(&dir, 1);
        let (sock, server) = fake_daemon(&dir, vec![vec![MODELS.into()]]);
        let a = args(&["evaluate", "--model", "ssvep-3", "--classes", "left", &f[0]]);
        let e = run(&a, false, &resolved(&sock), &mut Vec::new()).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("no label \"left\"") && e.message.contains("13Hz, 17Hz, 21Hz"), "{}", e.message);

        let a = args(&["evaluate", "--model", "ssvep-3", "--set", "speed=1", &f[0]]);
        let e = run(&a, false, &resolved(&dir.0.join("none.sock")), &mut Vec::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("speed"), "{}", e.message);

        // An unknown model: exit 4 before any file.
        let unknown = r#"{"error":{"code":"not_found","message":"no model `mi-eegnet`: not a directory with model.toml, nor a model in /m"}}"#;
        let (sock, server) = fake_daemon(&dir, vec![vec![unknown.into()]]);
        let a = args(&["evaluate", "--model", "mi-eegnet", &f[0]]);
        let e = run(&a, false, &resolved(&sock), &mut Vec::new()).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.exit_code(), 4);
        assert!(e.message.contains("no model `mi-eegnet`"), "{}", e.message);

        // No daemon: exit 3 at once.
        let a = args(&["evaluate", "--model", "ssvep-3", &f[0]]);
        let e = run(&a, false, &resolved(&dir.0.join("none.sock")), &mut Vec::new()).unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn a_missing_file_fails_alone() {
        let dir = temp_dir("missing");
        let f = files(&dir, 1);
        let missing = dir.0.join("nope.edf").display().to_string();
        let (sock, server) = fake_daemon(&dir, vec![vec![MODELS.into()], good_file("s-1")]);
        let a = args(&[
            "evaluate",
            "--model",
            "ssvep-3",
            "--trial-start",
            "stim_start",
            "--trial-length",
            "5",
            &missing,
            &f[0],
        ]);
        let mut out = Vec::new();
        run(&a, true, &resolved(&sock), &mut out).unwrap();
        server.join().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["files"][0]["error"]["message"], format!("{missing}: no such file"));
        assert_eq!(v["files"][1]["trials"], 3);
    }
}

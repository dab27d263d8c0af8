//! Per-person models through the daemon (issue 17): sessions recorded by replaying the shared
//! recordings, `bci2tokenctl model train` on them, then `bci2tokenctl evaluate` with the trained
//! model on a run it never saw.

use std::time::{Duration, Instant};

use bci2token_tests::{data_dir, ssvep_files, start_daemon, Daemon, DaemonOptions};

/// Replays `file` at full speed into a recorded session and waits until it has ended.
fn record(daemon: &Daemon, file: &str) -> String {
    let path = format!("path={}", data_dir().join(file).display());
    let started = daemon.ctl_json(&["session", "start", "--driver", "replay", "--set", &path, "--set", "speed=0"]);
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let show = daemon.ctl_json(&["session", "show", &id]);
        match show["state"].as_str().unwrap() {
            "finished" => return id,
            "failed" => panic!("recording {file} failed: {show}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "recording {file} did not end: {show}\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The motor-imagery bar: trained on S001R06 (hands vs feet imagery), evaluated on
/// S001R10 through the daemon. Every method with the same window (2 s, every 0.25 s) and the same
/// decision rule: the most frequent label among the tokens of windows lying wholly in the trial.
#[test]
fn motor_imagery_models_trained_on_one_run_classify_the_next() {
    let daemon = start_daemon(DaemonOptions::default());
    // The first training names the recording (bci2tokenctl replays it into a session), the others
    // that session.
    let mut source = data_dir().join("eegmmidb/S001R06.edf").display().to_string();
    let r10 = data_dir().join("eegmmidb/S001R10.edf").display().to_string();
    for method in ["csp-lda", "riemann-mdm", "riemann-ts"] {
        let name = format!("mine-{method}");
        let started = Instant::now();
        let trained = daemon.ctl_json(&[
            "model",
            "train",
            "--name",
            &name,
            "--method",
            method,
            "--from",
            &source,
            "--map",
            "T1=hands,T2=feet",
        ]);
        let session = trained["model"]["trained_on"][0].as_str().unwrap().to_string();
        assert_eq!(daemon.ctl_json(&["session", "show", &session])["state"], "finished", "a recorded session");
        source = session;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(trained["trials"], serde_json::json!([["hands", 7], ["feet", 8]]), "{trained}");
        let cv = trained["cv_accuracy"].as_f64().unwrap();
        let report = daemon.ctl_json(&[
            "evaluate",
            "--model",
            &name,
            "--map",
            "T1=hands,T2=feet",
            "--decision",
            "majority",
            &r10,
        ]);
        let f = &report["files"][0];
        assert_eq!(f["trials"], 15, "{f}");
        let accuracy = f["accuracy"].as_f64().unwrap();
        eprintln!(
            "{method}: trained in {seconds:.1} s, cross-validated {cv:.3}; S001R10 {accuracy:.3} {}",
            f["confusion"]
        );
        assert!(accuracy >= 0.85, "{method}: accuracy {accuracy} on S001R10");
    }
}

/// Starts replaying `file` at `speed` (recorded), returning the session's id.
fn start_replay(daemon: &Daemon, file: &str, speed: &str) -> String {
    let path = format!("path={}", data_dir().join(file).display());
    let speed = format!("speed={speed}");
    daemon.ctl_json(&["session", "start", "--driver", "replay", "--set", &path, "--set", &speed])["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// What cannot be trained is refused with what to do, and leaves nothing behind; a trained model
/// is its owner's files (0700/0600), listed with its owner, used by name, and deleted.
#[test]
fn training_refuses_what_it_cannot_fit_and_a_trained_model_can_be_listed_used_and_deleted() {
    let daemon = start_daemon(DaemonOptions::default());
    let r06 = record(&daemon, "eegmmidb/S001R06.edf");
    let train = |extra: &[&str]| {
        let mut args = vec!["model", "train", "--name", "mine", "--method", "csp-lda", "--from", &r06];
        args.extend_from_slice(extra);
        daemon.ctl(&args)
    };
    let refused = |extra: &[&str], wanted: &[&str]| {
        let o = train(extra);
        assert!(!o.status.success(), "{extra:?} was trained: {}", text(&o));
        for w in wanted {
            assert!(text(&o).contains(w), "{extra:?}: no `{w}` in: {}", text(&o));
        }
    };
    // Cues the session does not have: the texts it has are named.
    refused(&["--map", "T7=left,T8=right"], &["no trial of class \"T7\"", "T0, T1, T2"]);
    // Trials shorter than offset + window give no window.
    refused(&["--map", "T1=hands,T2=feet", "--window", "4", "--offset", "0.5"], &["4.5 s"]);
    // Channels the session lacks; a method that takes two classes given three.
    refused(&["--map", "T1=hands,T2=feet", "--channels", "C3..,Xx9"], &["no channel Xx9"]);
    refused(&["--map", "T0=rest,T1=hands,T2=feet"], &["two classes, not 3", "riemann-mdm"]);
    // A name a manifest would refuse, said before anything is read; a session named twice.
    let o = daemon.ctl(&[
        "model",
        "train",
        "--name",
        "Mine_2",
        "--method",
        "csp-lda",
        "--from",
        &r06,
        "--map",
        "T1=a,T2=b",
    ]);
    assert!(text(&o).contains("lower-case letters, digits and '-'"), "{}", text(&o));
    refused(&["--from", &r06, "--map", "T1=hands,T2=feet"], &["is named twice"]);
    // A shared model's name; an unknown method; one class.
    let o = daemon.ctl(&[
        "model",
        "train",
        "--name",
        "mi-eegnet",
        "--method",
        "csp-lda",
        "--from",
        &r06,
        "--map",
        "T1=a,T2=b",
    ]);
    assert!(text(&o).contains("shared model"), "{}", text(&o));
    let o = daemon.ctl(&["model", "train", "--name", "m", "--method", "trca-x", "--from", &r06, "--map", "T1=a,T2=b"]);
    assert!(text(&o).contains("no method `trca-x`"), "{}", text(&o));
    refused(&["--map", "T1=hands"], &["two classes or more"]);
    // Sessions of another rate (the SSVEP recordings are at 256 Hz).
    let ssvep = record(&daemon, &ssvep_files()[0]);
    refused(&["--from", &ssvep, "--map", "T1=hands,T2=feet"], &["256 Hz, the first at 160 Hz"]);
    // fbtrca needs each class's flicker frequency, below Nyquist; other methods take none.
    let fbtrca = |extra: &[&str]| {
        let mut args = vec![
            "model",
            "train",
            "--name",
            "f",
            "--method",
            "fbtrca",
            "--from",
            &ssvep,
            "--trial-start",
            "stim_start",
            "--trial-length",
            "5",
        ];
        args.extend_from_slice(extra);
        text(&daemon.ctl(&args))
    };
    let o = fbtrca(&["--map", "13Hz=a,17Hz=b,21Hz=c"]);
    assert!(o.contains("needs each class's stimulus frequency") && o.contains("--frequencies"), "{o}");
    let o = fbtrca(&["--classes", "13Hz,17Hz,21Hz", "--frequencies", "13,17"]);
    assert!(o.contains("gives 2 frequencies for the 3 classes"), "{o}");
    let o = fbtrca(&["--classes", "13Hz,17Hz,21Hz", "--frequencies", "13,17,200"]);
    assert!(o.contains("a stimulus frequency of 200 Hz at 256 Hz"), "{o}");
    refused(&["--map", "T1=hands,T2=feet", "--frequencies", "1,2"], &["--frequencies is for trca and fbtrca"]);
    // A channel with no signal (R06 with Cz zeroed, its annotations kept): named.
    let tmp = bci2token_tests::TempDir::new("flat-channel");
    let flat = tmp.path().join("flat.edf");
    let script = format!(
        "{}\nr = pyedflib.EdfReader(sys.argv[1])\nlabels = r.getSignalLabels()\n\
         rows = [r.readSignal(i) for i in range(len(labels))]\n\
         rows[labels.index('Cz..')] = np.zeros(len(rows[0]))\n\
         on, du, tx = r.readAnnotations()\n\
         write(sys.argv[2], labels, r.getSampleFrequency(0), rows, list(zip(on, du, tx)))\n",
        bci2token_tests::WRITE_EDF
    );
    let o = std::process::Command::new(bci2token_tests::reference_python(&["pyedflib", "numpy"]))
        .args(["-c", &script, data_dir().join("eegmmidb/S001R06.edf").to_str().unwrap(), flat.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let flat_id = record(&daemon, flat.to_str().unwrap());
    let o =
        daemon.ctl(&["model", "train", "--name", "f", "--method", "csp-lda", "--from", &flat_id, "--map", "T1=a,T2=b"]);
    assert!(text(&o).contains("Cz.. carry no signal") && text(&o).contains("--channels"), "{}", text(&o));
    // A session cut short after about 25 s of the run: too few trials for five folds.
    let short = start_replay(&daemon, "eegmmidb/S001R06.edf", "5");
    std::thread::sleep(Duration::from_secs(5));
    daemon.ctl_json(&["session", "stop", &short]);
    let o = daemon.ctl(&[
        "model",
        "train",
        "--name",
        "short",
        "--method",
        "riemann-mdm",
        "--from",
        &short,
        "--map",
        "T1=hands,T2=feet",
    ]);
    assert!(
        text(&o).contains("too few for 5-fold cross-validation") && text(&o).contains("record more trials"),
        "{}",
        text(&o)
    );
    // A session still running.
    let running = start_replay(&daemon, "eegmmidb/S001R06.edf", "1");
    let o =
        daemon.ctl(&["model", "train", "--name", "x", "--method", "csp-lda", "--from", &running, "--map", "T1=a,T2=b"]);
    assert!(text(&o).contains("still running; stop it first"), "{}", text(&o));
    daemon.ctl_json(&["session", "stop", &running]);

    let personal = daemon.dir.path().join("data/personal-models");
    let uid = nix::unistd::getuid().as_raw();
    let leftovers = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir).map_or(Vec::new(), |d| {
            d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
    };
    assert!(
        leftovers(&personal.join(uid.to_string())).is_empty(),
        "refusals left {:?}",
        leftovers(&personal.join(uid.to_string()))
    );

    // Trained: the files are the daemon's, private; the manifest records how.
    let t = daemon.ctl_json(&[
        "model",
        "train",
        "--name",
        "mine",
        "--method",
        "riemann-mdm",
        "--from",
        &r06,
        "--map",
        "T1=hands,T2=feet",
    ]);
    assert_eq!(t["model"]["owner"], uid, "{t}");
    let dir = personal.join(uid.to_string()).join("mine");
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(dir.clone(), 0o700), (dir.join("model.toml"), 0o600), (dir.join("model.pt"), 0o600)] {
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, mode, "{}", path.display());
    }
    assert_eq!(std::fs::metadata(personal.join(uid.to_string())).unwrap().permissions().mode() & 0o777, 0o700);
    let manifest = std::fs::read_to_string(dir.join("model.toml")).unwrap();
    for needle in [
        "[training]",
        "method = \"riemann-mdm\"",
        &format!("owner_uid = {uid}"),
        &format!("sources = [\"{r06}\"]"),
        "cv_folds = 5",
    ] {
        assert!(manifest.contains(needle), "no `{needle}` in\n{manifest}");
    }
    // Only some trials: the first ten of the run.
    let t = daemon.ctl_json(&[
        "model",
        "train",
        "--name",
        "ten",
        "--method",
        "riemann-mdm",
        "--from",
        &r06,
        "--map",
        "T1=hands,T2=feet",
        "--trials",
        "1-10",
        "--folds",
        "5",
    ]);
    let counts: Vec<u64> = t["trials"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 10, "{t}");
    daemon.ctl_json(&["model", "delete", "ten"]);
    // Again without --replace: refused; with it: replaced.
    let o = train(&["--map", "T1=hands,T2=feet"]);
    assert!(text(&o).contains("--replace"), "{}", text(&o));
    let t = daemon.ctl_json(&[
        "model",
        "train",
        "--name",
        "mine",
        "--method",
        "csp-lda",
        "--from",
        &r06,
        "--map",
        "T1=hands,T2=feet",
        "--replace",
    ]);
    assert_eq!(t["method"], "csp-lda");
    assert!(std::fs::read_to_string(dir.join("model.toml")).unwrap().contains("method = \"csp-lda\""));
    // Listed with its owner beside the shared models; a session decodes with it by name.
    let models = daemon.ctl_json(&["models"]);
    let mine: Vec<&serde_json::Value> =
        models["models"].as_array().unwrap().iter().filter(|m| m["name"] == "mine").collect();
    assert_eq!(mine.len(), 1, "{models}");
    assert_eq!(mine[0]["owner"], uid);
    assert!(models["models"].as_array().unwrap().iter().any(|m| m["name"] == "mi-eegnet" && m["owner"].is_null()));
    let human = text(&daemon.ctl(&["models"]));
    assert!(human.contains("OWNER") && human.contains(&format!("uid {uid}")) && human.contains("shared"), "{human}");
    let path = format!("path={}", data_dir().join("eegmmidb/S001R10.edf").display());
    let decoding = daemon.ctl_json(&["session", "start", "--driver", "replay", "--set", &path, "--model", "mine"]);
    assert_eq!(decoding["model"], "mine", "{decoding}");
    daemon.ctl_json(&["session", "stop", decoding["id"].as_str().unwrap()]);
    // Deleted: gone from the list and from --model.
    let d = daemon.ctl_json(&["model", "delete", "mine"]);
    assert_eq!(d["name"], "mine");
    assert!(!dir.exists() && leftovers(&personal.join(uid.to_string())).is_empty());
    let o = daemon.ctl(&["session", "start", "--driver", "synthetic", "--model", "mine"]);
    assert!(text(&o).contains("no model `mine`"), "{}", text(&o));
    let o = daemon.ctl(&["model", "delete", "mine"]);
    assert!(text(&o).contains("no trained model `mine`"), "{}", text(&o));
}

/// In a system daemon a trained model is its trainer's alone: another operator can neither train
/// on her sessions, nor see, use or delete her model; an admin sees and deletes it; every
/// training and refusal is audited.
#[test]
fn a_system_daemon_keeps_each_person_s_trained_models_to_themselves() {
    use bci2token_tests::system_users::{system_daemon, text, world};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(w) = world() else { return };
    let d = system_daemon("");
    let path = format!("path={}", w.recording().display());
    let id = w.alice.ctl_json(&d, &["session", "start", "--driver", "replay", "--set", &path, "--set", "speed=0"])
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.alice.ctl_json(&d, &["session", "show", &id])["state"] != "finished" {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // S001R04: imagined left (T1) and right (T2) fist.
    let train =
        ["model", "train", "--name", "alice-mi", "--method", "csp-lda", "--from", &id, "--map", "T1=left,T2=right"];
    let t = w.alice.ctl_json(&d, &train);
    assert_eq!(t["model"]["owner"], w.alice.uid, "{t}");
    let dir = std::path::PathBuf::from(t["model"]["dir"].as_str().unwrap());
    for (path, mode) in [(dir.parent().unwrap().to_path_buf(), 0o700), (dir.join("model.pt"), 0o600)] {
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.uid()), (mode, 0), "{}: the daemon's, private", path.display());
    }
    // Bob: not on her session, not her model by name, not in his list, not deleted.
    let o = w.bob.ctl(
        &d,
        &["model", "train", "--name", "bob-mi", "--method", "csp-lda", "--from", &id, "--map", "T1=left,T2=right"],
    );
    assert!(text(&o).contains("belongs to another user"), "{}", text(&o));
    let o = w.bob.ctl(&d, &["session", "start", "--driver", "synthetic", "--model", "alice-mi"]);
    assert!(text(&o).contains("no model `alice-mi`"), "{}", text(&o));
    let listed = |u: &bci2token_tests::system_users::User| -> Vec<serde_json::Value> {
        u.ctl_json(&d, &["models"])["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == "alice-mi")
            .cloned()
            .collect()
    };
    assert!(listed(&w.bob).is_empty());
    assert_eq!(listed(&w.alice).len(), 1);
    assert_eq!(listed(&w.admin)[0]["owner"], w.alice.uid);
    let o = w.bob.ctl(&d, &["model", "delete", "alice-mi"]);
    assert!(text(&o).contains("no trained model `alice-mi`"), "{}", text(&o));
    let alice_uid = w.alice.uid.to_string();
    let o = w.bob.ctl(&d, &["model", "delete", "alice-mi", "--owner", &alice_uid]);
    assert!(text(&o).contains("only an admin"), "{}", text(&o));
    assert!(dir.join("model.pt").exists());
    // Alice decodes with it; the admin deletes it.
    let decoding =
        w.alice.ctl_json(&d, &["session", "start", "--driver", "replay", "--set", &path, "--model", "alice-mi"]);
    assert_eq!(decoding["model"], "alice-mi");
    w.alice.ctl_json(&d, &["session", "stop", decoding["id"].as_str().unwrap()]);
    w.admin.ctl_json(&d, &["model", "delete", "alice-mi", "--owner", &alice_uid]);
    assert!(!dir.exists() && listed(&w.alice).is_empty());
    let audit = w.admin.ctl_json(&d, &["audit", "list"]);
    let entries = audit.as_array().unwrap();
    let has = |uid: u32, action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["uid"] == uid && e["action"] == action && e["outcome"].as_str().unwrap().starts_with(outcome))
    };
    assert!(has(w.alice.uid, "model_train", "ok"), "{audit:#}");
    assert!(has(w.bob.uid, "model_train", "refused"), "{audit:#}");
    assert!(has(w.bob.uid, "model_delete", "refused"), "{audit:#}");
    assert!(has(w.admin.uid, "model_delete", "ok"), "{audit:#}");
}

/// `TrainModel` and `DeleteModel` over the bus give what the socket gives: the same model, the
/// same refusals.
#[test]
fn training_over_the_bus_is_training_over_the_socket() {
    use bci2token_tests::private_bus::PrivateBus;
    if !bci2token_tests::system_users::as_root("the D-Bus tests (the bus policy lets root own the name)") {
        return;
    }
    let bus = PrivateBus::system_like("bci2token", "bci2token-admin");
    let d =
        start_daemon(DaemonOptions { env: vec![("BCI2TOKEN_BUS".into(), bus.address.clone())], ..Default::default() });
    assert!(d.wait_log("D-Bus: org.bci2token.Daemon1 on", Duration::from_secs(10)), "{}", d.log());
    let r06 = record(&d, "eegmmidb/S001R06.edf");
    let flag = format!("--bus={}", bus.address);
    let door = |bus: bool, args: &[&str]| {
        if bus {
            let ctl = bci2token_tests::bin_dir().join("bci2tokenctl");
            std::process::Command::new(ctl).arg(&flag).args(args).output().unwrap()
        } else {
            d.ctl(args)
        }
    };
    let train = |bus: bool, name: &str, extra: &[&str]| {
        let mut args = vec!["--json", "model", "train", "--name", name, "--method", "riemann-ts", "--from", &r06];
        args.extend_from_slice(extra);
        door(bus, &args)
    };
    let options = [
        "--map",
        "T1=hands,T2=feet",
        "--channels",
        "C3..,Cz..,C4..,Fc3.,Fc4.,Cp3.,Cp4.",
        "--window",
        "1.5",
        "--folds",
        "4",
        "--trials",
        "2-15",
    ];
    let by_socket = train(false, "by-socket", &options);
    let by_bus = train(true, "by-bus", &options);
    assert!(by_socket.status.success() && by_bus.status.success(), "{}\n{}", text(&by_socket), text(&by_bus));
    let parse = |o: &std::process::Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };
    let (s, b) = (parse(&by_socket), parse(&by_bus));
    assert_eq!(s["cv_accuracy"], b["cv_accuracy"]);
    assert_eq!(s["trials"], b["trials"]);
    let total: u64 = b["trials"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
    assert_eq!(total, 14, "trials 2-15 over the bus: {b}");
    assert_eq!(b["model"]["channels"].as_array().unwrap().len(), 7);
    assert_eq!(b["model"]["window_seconds"], 1.5);
    // The same model: the same logits for the same window.
    let dir = |name: &str| std::path::Path::new(b["model"]["dir"].as_str().unwrap()).with_file_name(name);
    let logits = |name: &str| {
        let m = bci2token_decoder::Model::load(&dir(name), tch::Device::Cpu).unwrap();
        let w: Vec<f32> = (0..m.input_len()).map(|i| ((i * 7919) % 200) as f32 / 10.0 - 10.0).collect();
        m.forward(&w, 1).unwrap()
    };
    assert_eq!(logits("by-socket"), logits("by-bus"));
    let refused = |bus: bool| text(&train(bus, "x", &["--map", "T7=a,T8=b"]));
    assert_eq!(refused(false), refused(true));
    assert!(door(true, &["model", "delete", "by-bus"]).status.success());
    assert!(text(&door(true, &["model", "delete", "by-bus"])).contains("no trained model `by-bus`"));
}

/// FBCCA (ssvep-fbcca-3's, computed in Rust: its logits equal the shipped package's test vectors)
/// as a package of `seconds`-long windows with the trained models' emission policy, so that both
/// are scored alike.
fn fbcca_package(dir: &std::path::Path, seconds: f64) {
    use bci2token_calibrate::ssvep::Bank;
    use bci2token_decoder::traced::{ssvep, Ssvep};
    let frames = (seconds * 256.0) as usize;
    let bank = Bank::new(256.0, frames, &[13.0, 17.0, 21.0]).unwrap();
    let eye = vec![bci2token_calibrate::DMatrix::identity(8, 8); bank.bands()];
    let mut parts = Ssvep::from_bank(&bank, &eye, &[0.5, 0.5, 0.5]);
    parts.scale = 30.0;
    ssvep(&parts, 8, frames).unwrap().save(dir.join("model.pt")).unwrap();
    let shipped =
        std::fs::read_to_string(bci2token_tests::workspace_root().join("models/ssvep-fbcca-3/model.toml")).unwrap();
    let mut manifest: toml::Table = shipped.parse().unwrap();
    manifest.insert("name".into(), format!("fbcca-{}", seconds as u32).into());
    manifest.remove("test_vectors");
    manifest["input"].as_table_mut().unwrap().insert("window_seconds".into(), seconds.into());
    let policy = manifest["policy"].as_table_mut().unwrap();
    policy.insert("confidence_threshold".into(), 0.5.into());
    policy.insert("consecutive".into(), 1.into());
    policy.insert("refractory_seconds".into(), 0.0.into());
    std::fs::write(dir.join("model.toml"), toml::to_string(&manifest).unwrap()).unwrap();
}

/// The SSVEP bar: each subject's session split in time, the first 12 trials train
/// `fbtrca`, the last 12 test it, beside FBCCA on the same test trials, at 1 s and 2 s windows.
/// Same decision rule for both: the most frequent label among the tokens of windows wholly inside
/// the trial (5 s from `stim_start`), the same emission policy.
#[test]
fn fbtrca_trained_on_the_first_half_of_each_ssvep_session_beats_fbcca_on_the_second() {
    let daemon = start_daemon(DaemonOptions::default());
    let tmp = bci2token_tests::TempDir::new("fbcca");
    let trials = ["--classes", "13Hz,17Hz,21Hz", "--trial-start", "stim_start", "--trial-length", "5"];
    let mut table = Vec::new();
    for seconds in [1.0, 2.0] {
        let fbcca = tmp.path().join(format!("fbcca-{seconds}"));
        std::fs::create_dir_all(&fbcca).unwrap();
        fbcca_package(&fbcca, seconds);
        let (mut mine, mut theirs, mut single) = (Vec::new(), Vec::new(), Vec::new());
        for (s, file) in ssvep_files().iter().enumerate() {
            let name = format!("ssvep-{}-{}", s + 1, seconds as u32);
            let window = seconds.to_string();
            let mut args = vec!["model", "train", "--name", &name, "--method", "fbtrca", "--from", file];
            args.extend_from_slice(&trials);
            args.extend_from_slice(&["--trials", "1-12", "--notch", "50", "--window", &window]);
            let t = daemon.ctl_json(&args);
            let score = |model: &str| {
                let mut args = vec!["evaluate", "--model", model, "--trials", "13-24", "--decision", "majority"];
                args.extend_from_slice(&trials);
                args.push(file);
                let r = daemon.ctl_json(&args);
                assert_eq!(r["files"][0]["trials"], 12, "{r}");
                r["files"][0]["accuracy"].as_f64().unwrap()
            };
            mine.push(score(&name));
            // trca, the single-band form (reported, not held to the bar).
            let trca = format!("{name}-trca");
            let session = t["model"]["trained_on"][0].as_str().unwrap().to_string();
            let mut args = vec!["model", "train", "--name", &trca, "--method", "trca", "--from", &session];
            args.extend_from_slice(&trials);
            args.extend_from_slice(&["--trials", "1-12", "--notch", "50", "--window", &window]);
            daemon.ctl_json(&args);
            single.push(score(&trca));
            theirs.push(score(fbcca.to_str().unwrap()));
            if seconds == 2.0 {
                // The shipped package itself, with its own emission policy (for the record).
                eprintln!("subject {} at 2 s: ssvep-fbcca-3 as shipped {:.3}", s + 1, score("ssvep-fbcca-3"));
            }
            eprintln!(
                "subject {} at {seconds} s: fbtrca {:.3} (cross-validated {:.3}), FBCCA {:.3}",
                s + 1,
                mine[s],
                t["cv_accuracy"].as_f64().unwrap(),
                theirs[s]
            );
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        eprintln!("{seconds} s windows: trca (one band) mean {:.3} {single:?}", mean(&single));
        table.push((seconds, mean(&mine), mean(&theirs)));
    }
    for (seconds, mine, theirs) in &table {
        eprintln!("{seconds} s windows: fbtrca mean {mine:.3}, FBCCA mean {theirs:.3}");
    }
    for (seconds, mine, theirs) in table {
        assert!(mine > theirs, "at {seconds} s fbtrca {mine:.3} does not beat FBCCA {theirs:.3}");
    }
}

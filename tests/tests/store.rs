//! The encrypted session store through the real daemon: crash safety under `kill -9`, deletion
//! that leaves no ciphertext behind, and the audit log's verification through bci2tokenctl.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bci2token_store::seal::Kind;
use bci2token_store::{MasterKey, Store};
use bci2token_tests::{data_dir, read_f64, start_daemon, DaemonOptions, TempDir};
use nix::sys::signal::Signal;

fn with_data_dir(dir: &Path) -> DaemonOptions {
    DaemonOptions { env: vec![("BCI2TOKEN_DATA_DIR".into(), dir.display().to_string())], ..Default::default() }
}

fn open_store(dir: &Path) -> Store {
    let key = MasterKey::load(None, dir).expect("the daemon created the master key");
    Store::open(&dir.join("sessions.db"), Arc::new(key)).unwrap()
}

fn db_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["sessions.db", "sessions.db-wal", "sessions.db-shm"]
        .iter()
        .map(|n| dir.join(n))
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// `session start ARGS --follow` until the session ends (a replay or finite script); returns the
/// session as the reply described it.
fn record_to_end(daemon: &bci2token_tests::Daemon, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json", "session", "start"];
    full.extend_from_slice(args);
    full.push("--follow");
    let out = daemon.ctl(&full);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap()
}

#[test]
fn kill_9_while_recording_at_full_speed_keeps_every_acknowledged_block() {
    let data = TempDir::new("store-crash");
    let mut first = start_daemon(with_data_dir(data.path()));
    let file = format!("path={}", data_dir().join("eegmmidb/S001R04.edf").display());
    let info = first.ctl_json(&[
        "session",
        "start",
        "--driver",
        "replay",
        "--set",
        &file,
        "--set",
        "speed=0",
        "--set",
        "loop=true",
    ]);
    let id = info["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let show = first.ctl_json(&["session", "show", &id]);
        let stored = show["stored_blocks"].as_u64().unwrap();
        if stored >= 300 {
            break stored;
        }
        assert!(Instant::now() < deadline, "only {stored} blocks stored: {show}");
        std::thread::sleep(Duration::from_millis(20));
    };
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));

    let second = start_daemon(with_data_dir(data.path()));
    assert!(second.wait_log("marked interrupted", Duration::from_secs(5)), "{}", second.log());
    let mut store = open_store(data.path());
    assert_eq!(store.state(&id).unwrap(), "interrupted");
    let blocks = store.read_all(&id, Kind::Block).unwrap();
    assert!(blocks.len() as u64 >= acked, "{} blocks stored, {acked} were acknowledged", blocks.len());
    for (seq, block) in &blocks {
        let b = block.as_ref().unwrap_or_else(|e| panic!("block {seq}: {e}"));
        // t, flags, channels, frames, then 64 × 160 f32.
        assert_eq!(b.len(), 24 + 64 * 160 * 4, "block {seq}");
    }
    let seqs: Vec<u64> = blocks.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "no hole before the last stored block");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(second);
}

#[test]
fn session_delete_leaves_none_of_its_ciphertext_and_is_audited() {
    let data = TempDir::new("store-delete");
    let daemon = start_daemon(with_data_dir(data.path()));
    let run = |seed: &str| -> String {
        let info = record_to_end(
            &daemon,
            &[
                "--driver",
                "synthetic",
                "--set",
                "speed=0",
                "--set",
                "loop=false",
                "--set",
                "script=13Hz:2,rest:1",
                "--set",
                seed,
            ],
        );
        info["id"].as_str().unwrap().to_string()
    };
    let gone = run("seed=1");
    let kept = run("seed=2");
    // The ciphertexts of the session to delete, as the database holds them now.
    let ciphertexts: Vec<Vec<u8>> = {
        let c = rusqlite::Connection::open(data.path().join("sessions.db")).unwrap();
        let mut stmt = c
            .prepare(
                "SELECT data FROM blocks WHERE session = ?1 UNION ALL SELECT data FROM events WHERE session = ?1
                 UNION ALL SELECT sealed FROM session_keys WHERE session = ?1",
            )
            .unwrap();
        stmt.query_map([&gone], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(ciphertexts.len() > 70, "75 blocks and a few events: {}", ciphertexts.len());
    let deleted = daemon.ctl_json(&["session", "delete", &gone]);
    assert_eq!(deleted["deleted"], gone.as_str());
    for (path, bytes) in db_files(data.path()) {
        for (i, ct) in ciphertexts.iter().enumerate() {
            let probe = &ct[..ct.len().min(24)];
            assert!(!bytes.windows(probe.len()).any(|w| w == probe), "ciphertext {i} still in {}", path.display());
        }
    }
    let mut store = open_store(data.path());
    assert!(store.state(&gone).is_err());
    assert!(store.read_all(&kept, Kind::Block).unwrap().iter().all(|(_, r)| r.is_ok()));
    let out = daemon.ctl(&["session", "delete", &gone]);
    assert_eq!(out.status.code(), Some(4), "deleting it again: not found");
    let audit = daemon.ctl_json(&["audit", "list"]);
    let entries = audit.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "session_delete" && e["object"] == gone.as_str() && e["outcome"] == "ok"),
        "{audit}"
    );
    assert!(entries.iter().filter(|e| e["action"] == "session_start").count() >= 2);
}

#[test]
fn audit_verify_through_ctl_names_an_edited_entry() {
    let data = TempDir::new("store-audit");
    let daemon = start_daemon(with_data_dir(data.path()));
    for _ in 0..3 {
        let id = daemon.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
        daemon.ctl_json(&["session", "stop", &id]);
    }
    let _ = daemon.ctl(&["session", "start", "--driver", "nonesuch"]); // a failed call is audited too
    let ok = daemon.ctl(&["audit", "verify"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("intact: 7 entries"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let list = daemon.ctl_json(&["audit", "list"]);
    assert!(list.to_string().contains("failed: no driver `nonesuch`"), "{list}");

    let c = rusqlite::Connection::open(data.path().join("sessions.db")).unwrap();
    c.execute("UPDATE audit SET outcome = 'ok' WHERE seq = 7", []).unwrap();
    let broken = daemon.ctl(&["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(9));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("audit entry 7 was altered"), "{err}");
}

#[test]
fn retention_deletes_sessions_older_than_retention_days_at_start() {
    let data = TempDir::new("store-retention");
    let mut first = start_daemon(with_data_dir(data.path()));
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let id = first.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
            first.ctl_json(&["session", "stop", &id]);
            id
        })
        .collect();
    first.signal(Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(10));
    // The first session ended ten days ago.
    let ten_days_ago =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 10.0 * 86_400.0;
    let c = rusqlite::Connection::open(data.path().join("sessions.db")).unwrap();
    c.execute("UPDATE sessions SET created = ?2, stopped = ?2 WHERE id = ?1", rusqlite::params![ids[0], ten_days_ago])
        .unwrap();
    drop(c);

    let mut opts = with_data_dir(data.path());
    opts.config = Some("retention_days = 7\n".into());
    let second = start_daemon(opts);
    assert!(second.wait_log("retention: deleted 1 session", Duration::from_secs(10)), "{}", second.log());
    let store = open_store(data.path());
    assert!(store.state(&ids[0]).is_err(), "the old session is gone");
    assert_eq!(store.state(&ids[1]).unwrap(), "stopped");
    let audit = second.ctl_json(&["audit", "list"]);
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["action"] == "retention" && e["object"] == ids[0].as_str()),
        "{audit}"
    );
}

#[test]
fn key_rotate_rewraps_every_session_and_an_interrupted_rotation_is_recovered() {
    let data = TempDir::new("store-rotate");
    let key_file = data.path().join("master.key");
    let mut first = start_daemon(with_data_dir(data.path()));
    let id = first.ctl_json(&["session", "start", "--driver", "synthetic"])["id"].as_str().unwrap().to_string();
    first.ctl_json(&["session", "stop", &id]);
    let old_key = std::fs::read(&key_file).unwrap();
    let rotated = first.ctl_json(&["key", "rotate"]);
    assert_eq!(rotated["rewrapped_sessions"], 1);
    let new_key = std::fs::read(&key_file).unwrap();
    assert_ne!(old_key, new_key);
    assert!(!data.path().join("master.key.next").exists());
    let mut store = open_store(data.path());
    assert!(store.read_all(&id, Kind::Block).unwrap().iter().all(|(_, r)| r.is_ok()), "the new key opens it");
    let old = MasterKey::from_bytes(old_key.try_into().unwrap());
    let mut with_old = Store::open(&data.path().join("sessions.db"), Arc::new(old)).unwrap();
    assert!(with_old.read_all(&id, Kind::Block).is_err(), "the old key no longer does");
    let audit = first.ctl_json(&["audit", "list"]);
    assert!(audit.to_string().contains("key_rotate"), "{audit}");
    assert!(first.ctl(&["audit", "verify"]).status.success());
    first.signal(Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(10));
    drop((store, with_old));

    // A rotation that crashed after the store was re-wrapped, before the key file was replaced.
    {
        let current = MasterKey::load(None, data.path()).unwrap();
        let next = Arc::new(current.begin_rotation(data.path()).unwrap());
        let mut s = Store::open(&data.path().join("sessions.db"), Arc::new(current)).unwrap();
        s.rotate_master(Arc::clone(&next)).unwrap();
    }
    let second = start_daemon(with_data_dir(data.path()));
    assert!(second.wait_log("completed a key rotation", Duration::from_secs(5)), "{}", second.log());
    assert!(!data.path().join("master.key.next").exists());
    assert!(open_store(data.path()).read_all(&id, Kind::Block).unwrap().iter().all(|(_, r)| r.is_ok()));
    drop(second);

    // A rotation that crashed before reaching the store: its new key is discarded.
    let before = std::fs::read(&key_file).unwrap();
    MasterKey::load(None, data.path()).unwrap().begin_rotation(data.path()).unwrap();
    let third = start_daemon(with_data_dir(data.path()));
    assert!(third.wait_log("new key was discarded", Duration::from_secs(5)), "{}", third.log());
    assert_eq!(std::fs::read(&key_file).unwrap(), before);
    assert!(!data.path().join("master.key.next").exists());
}

#[test]
fn a_daemon_with_the_wrong_master_key_refuses_to_start() {
    let data = TempDir::new("store-wrong-key");
    let mut first = start_daemon(with_data_dir(data.path()));
    first.ctl_json(&["session", "start", "--driver", "synthetic"]);
    first.signal(Signal::SIGTERM);
    first.wait_exit(Duration::from_secs(10));
    let key_file = data.path().join("master.key");
    std::fs::remove_file(&key_file).unwrap();
    MasterKey::generate().unwrap().write_new(&key_file).unwrap();
    let mut second = bci2token_tests::spawn_daemon(with_data_dir(data.path()));
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(second.log().contains("the master key does not open this store"), "{}", second.log());
}

#[test]
fn a_backup_taken_while_recording_restores_to_the_sessions_at_that_moment() {
    let data = TempDir::new("store-backup");
    let daemon = start_daemon(with_data_dir(data.path()));
    let id = daemon.ctl_json(&["session", "start", "--driver", "synthetic", "--set", "speed=4"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.ctl_json(&["session", "show", &id])["stored_blocks"].as_u64().unwrap() < 50 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out_dir = TempDir::new("store-backup-out");
    let backup = out_dir.path().join("sessions.backup");
    let made = daemon.ctl_json(&["backup", backup.to_str().unwrap()]);
    assert!(made["pages"].as_i64().unwrap() > 0);
    std::thread::sleep(Duration::from_millis(300)); // recording goes on after the backup
    daemon.ctl_json(&["session", "stop", &id]);

    // Nothing is overwritten, nothing written through a link.
    let again = daemon.ctl(&["backup", backup.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    std::os::unix::fs::symlink("/etc/passwd", out_dir.path().join("link")).unwrap();
    let link = daemon.ctl(&["backup", out_dir.path().join("link").to_str().unwrap()]);
    assert!(!link.status.success() && String::from_utf8_lossy(&link.stderr).contains("symbolic link"));

    // The backup holds a prefix of the live recording, block for block.
    let key = MasterKey::load(None, data.path()).unwrap();
    let mut copy = Store::open(&backup, Arc::new(key)).unwrap();
    let in_backup = copy.read_all(&id, Kind::Block).unwrap();
    let live = open_store(data.path()).read_all(&id, Kind::Block).unwrap();
    assert!(in_backup.len() >= 50 && in_backup.len() < live.len(), "{} of {}", in_backup.len(), live.len());
    for ((a, x), (b, y)) in in_backup.iter().zip(&live) {
        assert_eq!(a, b);
        assert_eq!(x.as_ref().unwrap(), y.as_ref().unwrap(), "block {a}");
    }
    drop(copy);

    // Restored by another daemon holding the same key: exactly the backup's sessions.
    let other = TempDir::new("store-restore");
    std::fs::copy(data.path().join("master.key"), other.path().join("master.key")).unwrap();
    let restorer = start_daemon(with_data_dir(other.path()));
    let restored = restorer.ctl(&["restore", backup.to_str().unwrap()]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let mut store = open_store(other.path());
    let blocks = store.read_all(&id, Kind::Block).unwrap();
    assert_eq!(blocks.len(), in_backup.len());
    assert!(blocks.iter().zip(&in_backup).all(|((a, x), (b, y))| a == b && x.as_ref().unwrap() == y.as_ref().unwrap()));
    assert_eq!(store.state(&id).unwrap(), "interrupted", "it was recording at the backup's moment");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    // The restoring daemon keeps its own audit log (the restore is in it, the chain intact).
    let log = restorer.ctl_json(&["audit", "list"]);
    assert!(log.as_array().unwrap().iter().any(|e| e["action"] == "restore" && e["outcome"] == "ok"), "{log}");
    assert!(restorer.ctl(&["audit", "verify"]).status.success());
    assert_eq!(
        std::fs::read_dir(other.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0,
        "no scratch file left"
    );

    // A daemon with another key refuses the backup.
    let stranger = start_daemon(DaemonOptions::default());
    let refused = stranger.ctl(&["restore", backup.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another master key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

fn pyedflib_dump(file: &Path, out: &Path) -> serde_json::Value {
    let py = bci2token_tests::reference_python(&["pyedflib", "numpy"]);
    let o = std::process::Command::new(py)
        .arg(bci2token_tests::workspace_root().join("tools/reference/edf_reference.py"))
        .arg(file)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "edf_reference.py {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(out.join("reference.json")).unwrap()).unwrap()
}

#[test]
fn an_edf_export_of_a_replayed_run_reads_back_in_pyedflib_as_the_source() {
    let data = TempDir::new("store-export");
    let daemon = start_daemon(with_data_dir(data.path()));
    let source = data_dir().join("eegmmidb/S001R04.edf");
    let set = format!("path={}", source.display());
    let id = record_to_end(&daemon, &["--driver", "replay", "--set", &set, "--set", "speed=0"])["id"]
        .as_str()
        .unwrap()
        .to_string();

    let out_dir = TempDir::new("store-export-out");
    let edf = out_dir.path().join("S001R04-export.edf");
    let made = daemon.ctl(&["export", &id, "--format", "edf", "--output", edf.to_str().unwrap()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let again = daemon.ctl(&["export", &id, "--format", "edf", "--output", edf.to_str().unwrap()]);
    assert!(!again.status.success(), "never overwritten");

    let theirs = pyedflib_dump(&edf, &out_dir.path().join("export"));
    let ours = pyedflib_dump(&source, &out_dir.path().join("source"));
    let (ts, os) = (theirs["signals"].as_array().unwrap(), ours["signals"].as_array().unwrap());
    assert_eq!(ts.len(), os.len());
    let mut compared = 0;
    for (t, o) in ts.iter().zip(os) {
        assert_eq!(t["label"], o["label"]);
        assert_eq!(t["sample_rate"], o["sample_rate"]);
        let step = o["digital_step"].as_f64().unwrap();
        let a = read_f64(&out_dir.path().join("export").join(t["file"].as_str().unwrap()));
        let b = read_f64(&out_dir.path().join("source").join(o["file"].as_str().unwrap()));
        assert!(a.len() >= b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= step, "{} sample {i}: {x} vs source {y} (step {step})", o["label"]);
        }
        compared += b.len();
    }
    assert_eq!(compared, 64 * 20_000);
    let (ta, oa) = (theirs["annotations"].as_array().unwrap(), ours["annotations"].as_array().unwrap());
    assert_eq!(ta.len(), oa.len(), "every annotation: {ta:?}");
    for (x, y) in ta.iter().zip(oa) {
        assert_eq!(x["text"], y["text"]);
        assert!((x["onset"].as_f64().unwrap() - y["onset"].as_f64().unwrap()).abs() < 1e-6);
        assert!((x["duration"].as_f64().unwrap() - y["duration"].as_f64().unwrap()).abs() < 1e-6);
    }
    // MNE reads it too: the same channels, samples and annotations.
    let mne_out = out_dir.path().join("mne");
    let py = bci2token_tests::reference_python(&["mne"]);
    let o = std::process::Command::new(py)
        .arg(bci2token_tests::workspace_root().join("tools/reference/mne_read.py"))
        .arg(&edf)
        .arg(&mne_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "mne_read.py: {}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(mne_out.join("mne.json")).unwrap()).unwrap();
    assert_eq!(m["ch_names"].as_array().unwrap().len(), 64);
    assert_eq!(m["sfreq"], 160.0);
    assert_eq!(m["n_times"], 20_000);
    assert_eq!(m["annotations"].as_array().unwrap().len(), oa.len());
    let mne_data = read_f64(&mne_out.join("mne.f64"));
    for (c, o) in os.iter().enumerate() {
        let step = o["digital_step"].as_f64().unwrap();
        let y = read_f64(&out_dir.path().join("source").join(o["file"].as_str().unwrap()));
        let x = &mne_data[c * 20_000..(c + 1) * 20_000];
        assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= step * 1.0001), "MNE: {}", o["label"]);
    }
    // BDF+: 24-bit, so the same check holds with room to spare.
    let bdf = out_dir.path().join("S001R04-export.bdf");
    assert!(daemon.ctl(&["export", &id, "--format", "bdf", "--output", bdf.to_str().unwrap()]).status.success());
    let b = pyedflib_dump(&bdf, &out_dir.path().join("bdf"));
    assert_eq!(b["annotations"].as_array().unwrap().len(), oa.len());
    for (t, o) in b["signals"].as_array().unwrap().iter().zip(os) {
        let x = read_f64(&out_dir.path().join("bdf").join(t["file"].as_str().unwrap()));
        let y = read_f64(&out_dir.path().join("source").join(o["file"].as_str().unwrap()));
        let step = o["digital_step"].as_f64().unwrap();
        assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= step), "{}", o["label"]);
    }
    let csv = out_dir.path().join("S001R04.csv");
    assert!(daemon.ctl(&["export", &id, "--format", "csv", "--output", csv.to_str().unwrap()]).status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 20_001);
    assert!(text.starts_with("time_s,Fc5.,Fc3.,"), "{}", &text[..60]);
    let audit = daemon.ctl_json(&["audit", "list"]);
    // Three exports reached the daemon; the one onto an existing file was refused by bci2tokenctl,
    // which creates the output itself.
    assert!(audit.as_array().unwrap().iter().filter(|e| e["action"] == "export").count() == 3, "{audit}");
}

fn release_values(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(1).map(|v| v.parse::<f64>().unwrap()).collect::<Vec<_>>())
        .collect()
}

#[test]
fn private_feature_releases_use_the_gaussian_mechanism_and_spend_the_subjects_budget() {
    let data = TempDir::new("store-dp");
    let daemon = start_daemon(with_data_dir(data.path()));
    let first = record_to_end(
        &daemon,
        &[
            "--driver",
            "synthetic",
            "--set",
            "speed=0",
            "--set",
            "loop=false",
            "--set",
            "script=rest:60",
            "--subject",
            "P-007",
        ],
    );
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["subject"], "P-007");

    let dir = TempDir::new("store-dp-out");
    let release = |name: &str| {
        let path = dir.path().join(name);
        let out = daemon.ctl(&[
            "--json",
            "export",
            &id,
            "--format",
            "csv",
            "--output",
            path.to_str().unwrap(),
            "--features",
            "bandpower",
            "--dp-epsilon",
            "0.4",
            "--dp-delta",
            "4e-6",
            "--dp-clip",
            "100",
        ]);
        (path, out)
    };
    let (a, out_a) = release("a.csv");
    assert!(out_a.status.success(), "{}", String::from_utf8_lossy(&out_a.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out_a.stdout).unwrap();
    assert_eq!((reply["windows"].as_u64(), reply["features"].as_u64()), (Some(30), Some(40)), "{reply}");
    // σ = C·√k·√(2 ln(1.25/δ))/ε.
    let sigma = 100.0 * 40f64.sqrt() * (2.0 * (1.25f64 / 4e-6).ln()).sqrt() / 0.4;
    assert!((reply["sigma"].as_f64().unwrap() - sigma).abs() < 1e-6 * sigma, "{reply}");
    assert_eq!(reply["budget"]["epsilon_spent"], 0.4);

    let (b, out_b) = release("b.csv");
    assert!(out_b.status.success());
    // Same features, independent noise: the differences have standard deviation √2·σ.
    let (x, y) = (release_values(&a), release_values(&b));
    assert_eq!(x.len(), 1200);
    let diffs: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p - q).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (diffs.len() - 1) as f64).sqrt();
    let want = 2f64.sqrt() * sigma;
    assert!((sd / want - 1.0).abs() < 0.08, "noise sd {sd}, the mechanism's {want}");
    assert!(mean.abs() < 4.0 * want / (diffs.len() as f64).sqrt(), "unbiased: mean {mean}");

    // A third release would take ε to 1.2 > the default budget 1.0: refused, nothing written.
    let (c, out_c) = release("c.csv");
    assert_eq!(out_c.status.code(), Some(8), "limit reached");
    let err = String::from_utf8_lossy(&out_c.stderr);
    assert!(err.contains("privacy budget of P-007 would be exceeded") && err.contains("spent ε 0.8"), "{err}");
    assert!(!c.exists());
    let audit = daemon.ctl_json(&["audit", "list"]);
    let exports: Vec<&serde_json::Value> =
        audit.as_array().unwrap().iter().filter(|e| e["action"] == "export").collect();
    assert_eq!(exports.len(), 3);
    assert!(exports[2]["outcome"].as_str().unwrap().starts_with("refused: the privacy budget"));
}

/// A line of /proc/PID/status in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `export` and returns how far the daemon's resident memory rose above what it was before
/// (kB): its peak (VmHWM, reset to the current RSS first through /proc/PID/clear_refs) less its
/// RSS before. Where the reset is not allowed, the rise of the peak since start (a lower bound).
fn memory_growth_kb(pid: u32, export: impl FnOnce()) -> (u64, bool) {
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let before = if reset { status_kb(pid, "VmRSS") } else { status_kb(pid, "VmHWM") };
    export();
    (status_kb(pid, "VmHWM").saturating_sub(before), reset)
}

/// pyedflib's view of an EDF+: records, labels, rates, annotations, and the samples of signals
/// 1 and 31 that are not zero (index and value), with their digital step.
fn pyedflib_sparse(file: &Path) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, sys
import numpy as np, pyedflib
r = pyedflib.EdfReader(sys.argv[1])
out = {"filetype": r.filetype, "n_records": r.datarecords_in_file, "labels": r.getSignalLabels(),
       "rates": [float(r.getSampleFrequency(i)) for i in range(r.signals_in_file)], "signals": {}}
onsets, durations, texts = r.readAnnotations()
out["annotations"] = [{"onset": float(o), "duration": float(d), "text": t} for o, d, t in zip(onsets, durations, texts)]
for i in (1, 31):
    x = r.readSignal(i)
    step = (r.getPhysicalMaximum(i) - r.getPhysicalMinimum(i)) / (r.getDigitalMaximum(i) - r.getDigitalMinimum(i))
    nz = np.flatnonzero(np.abs(x) > step)
    out["signals"][str(i)] = {"n": len(x), "step": step, "index": nz.tolist(), "value": x[nz].tolist()}
print(json.dumps(out))
"#;
    let py = bci2token_tests::reference_python(&["pyedflib", "numpy"]);
    let o = std::process::Command::new(py).arg("-c").arg(SCRIPT).arg(file).output().unwrap();
    assert!(o.status.success(), "pyedflib on {}: {}", file.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// An LSL outlet whose clock jumps a day ahead mid-stream (32 channels at 10 Hz): the session
/// recorded is exported as EDF+ and CSV with a day of zeros between its halves, which the
/// whole-session exports of earlier versions held in memory (864,000 frames × 32 channels × 4
/// bytes ≈ 110 MB, plus the same again for the CSV). Streaming, the daemon's resident memory
/// rises by a few MB; the files are right: pyedflib reads every sample before and after the jump
/// at its place, zeros between, and the gap annotated; the CSV has a row for every frame. A session
/// deleted while an export reads does not wait for it, and leaves no ciphertext once it ends; a
/// damaged chunk stops an export before anything is written.
#[test]
fn a_session_whose_clock_jumps_a_day_exports_in_bounded_memory() {
    const CHANNELS: usize = 32;
    // 12 s of samples, the clock jumping after 6 s.
    const SAMPLES: u64 = 120;
    const JUMP_AT: u64 = 60;
    const DAY_FRAMES: u64 = 86_400 * 10;
    let world = bci2token_tests::LslWorld::new("export-jump");
    let daemon = start_daemon(DaemonOptions { env: world.env(), ..Default::default() });
    let mut peer = world.peer(&[
        "outlet",
        "bci2token-jump",
        "src-jump",
        &CHANNELS.to_string(),
        "10",
        "12",
        "float32",
        "microvolts",
        "0",
        &JUMP_AT.to_string(),
        "86400",
    ]);
    let ready: serde_json::Value = serde_json::from_str(&bci2token_tests::read_line(&mut peer)).unwrap();
    assert!(ready["ready"].is_number(), "{ready}");
    let info = daemon.ctl_json(&["session", "start", "--driver", "lsl", "--set", "name=bci2token-jump"]);
    let id = info["id"].as_str().unwrap().to_string();
    let done: serde_json::Value = serde_json::from_str(&bci2token_tests::read_line(&mut peer)).unwrap();
    assert_eq!(done["done"], SAMPLES, "{done}");
    let _ = peer.wait();
    // Every block the session took is stored before it stops.
    let deadline = Instant::now() + Duration::from_secs(10);
    let show = loop {
        let show = daemon.ctl_json(&["session", "show", &id]);
        if show["stored_blocks"] == show["blocks"] && show["frames"].as_u64().unwrap() > 0 {
            break show;
        }
        assert!(Instant::now() < deadline, "{show}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(show["gaps"], 1, "the jump is one gap: {show}");
    daemon.ctl_json(&["session", "stop", &id]);
    let recorded = show["frames"].as_u64().unwrap();

    let out = TempDir::new("store-export-jump");
    let pid = daemon.child.id();
    let export = |format: &str, file: &Path| {
        let started = Instant::now();
        let made = daemon.ctl(&["export", &id, "--format", format, "--output", file.to_str().unwrap()]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        started.elapsed()
    };
    let edf = out.path().join("jump.edf");
    let mut edf_time = Duration::ZERO;
    let (edf_growth, reset) = memory_growth_kb(pid, || edf_time = export("edf", &edf));
    let csv = out.path().join("jump.csv");
    let mut csv_time = Duration::ZERO;
    let (csv_growth, _) = memory_growth_kb(pid, || csv_time = export("csv", &csv));

    // The CSV: a header, then a row per frame of the time line.
    let (mut rows, mut first_k, mut checked) = (0u64, None, 0);
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(std::fs::File::open(&csv).unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().starts_with("time_s,C1,C2,"));
        for (frame, line) in lines.enumerate() {
            let line = line.unwrap();
            rows += 1;
            let cells: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            assert_eq!(cells.len(), CHANNELS + 1);
            let frame = frame as u64;
            assert_eq!(cells[0], frame as f64 / 10.0, "row {frame}");
            let k0 = *first_k.get_or_insert(cells[1] as u64);
            let k = if frame < DAY_FRAMES { k0 + frame } else { k0 + frame - DAY_FRAMES };
            let recorded_sample = if frame < DAY_FRAMES { k < JUMP_AT } else { k >= JUMP_AT };
            for (c, &v) in cells[1..].iter().enumerate() {
                let want = if recorded_sample { (k % 100_000) as f64 + c as f64 / 8.0 } else { 0.0 };
                assert_eq!(v, want, "row {frame}, C{}", c + 1);
            }
            checked += usize::from(recorded_sample);
        }
    }
    let k0 = first_k.unwrap();
    assert_eq!(checked as u64, recorded, "every recorded sample at its place");
    assert!(k0 < JUMP_AT, "samples before the jump were recorded (the first is {k0})");
    assert_eq!(rows, DAY_FRAMES + (SAMPLES - k0), "frames from the first sample to the last, a day between");

    let seen = pyedflib_sparse(&edf);
    assert_eq!(seen["n_records"], rows.div_ceil(10), "{}", seen["n_records"]);
    assert_eq!(seen["labels"].as_array().unwrap().len(), CHANNELS);
    assert!(seen["rates"].as_array().unwrap().iter().all(|r| r == 10.0));
    for c in [1usize, 31] {
        let s = &seen["signals"][c.to_string()];
        let (index, value) = (s["index"].as_array().unwrap(), s["value"].as_array().unwrap());
        assert_eq!(index.len() as u64, recorded, "C{}: only the recorded samples are not 0", c + 1);
        let step = s["step"].as_f64().unwrap();
        for (i, v) in index.iter().zip(value) {
            let (i, v) = (i.as_u64().unwrap(), v.as_f64().unwrap());
            let k = (v - c as f64 / 8.0).round() as u64;
            let want = if k >= JUMP_AT { k - k0 + DAY_FRAMES } else { k - k0 };
            assert_eq!(i, want, "C{}: sample {k} at {i}", c + 1);
            assert!((v - (k as f64 + c as f64 / 8.0)).abs() <= step, "C{} sample {k}: {v}", c + 1);
        }
    }
    let gap = seen["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["text"].as_str().unwrap().starts_with("gap:"))
        .unwrap_or_else(|| panic!("a gap annotation: {}", seen["annotations"]))
        .clone();
    assert_eq!(gap["text"], "gap: 864000 samples lost");
    assert!((gap["onset"].as_f64().unwrap() - (JUMP_AT - k0) as f64 / 10.0).abs() < 0.01, "{gap}");
    assert!((gap["duration"].as_f64().unwrap() - 86_400.0).abs() < 0.01, "{gap}");

    let old_kb = rows * CHANNELS as u64 * 4 / 1024;
    eprintln!(
        "export of a day-long time line ({rows} frames × {CHANNELS} channels; EDF {} kB, CSV {} kB): resident memory \
         rose by {edf_growth} kB (EDF, {edf_time:?}) and {csv_growth} kB (CSV, {csv_time:?}){}; the whole-session \
         time line alone took {old_kb} kB",
        std::fs::metadata(&edf).unwrap().len() / 1024,
        std::fs::metadata(&csv).unwrap().len() / 1024,
        if reset { "" } else { " (peak since start: VmHWM could not be reset)" },
    );
    for (format, growth) in [("EDF", edf_growth), ("CSV", csv_growth)] {
        assert!(
            growth < 24 * 1024,
            "{format} export: resident memory rose by {growth} kB (the old time line: {old_kb} kB)"
        );
    }

    // A session deleted while an export reads: the deletion does not wait for the export (a
    // truncating checkpoint would, holding up every recording), and the WAL is truncated when the
    // export ends, leaving none of the deleted session's ciphertext.
    let gone = record_to_end(
        &daemon,
        &["--driver", "synthetic", "--set", "speed=0", "--set", "loop=false", "--set", "script=13Hz:2"],
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let show = daemon.ctl_json(&["session", "show", &gone]);
        if show["stored_blocks"] == show["blocks"] {
            break;
        }
        assert!(Instant::now() < deadline, "{show}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ciphertexts: Vec<Vec<u8>> = {
        let c = rusqlite::Connection::open(daemon.dir.path().join("data/sessions.db")).unwrap();
        let mut stmt = c
            .prepare("SELECT data FROM blocks WHERE session = ?1 UNION ALL SELECT sealed FROM session_keys WHERE session = ?1")
            .unwrap();
        stmt.query_map([&gone], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(ciphertexts.len() > 40, "{}", ciphertexts.len());
    std::fs::remove_file(&csv).unwrap();
    let again = out.path().join("again.edf");
    let (during, deletion) = std::thread::scope(|scope| {
        let exporting = scope.spawn(|| export("edf", &again));
        std::thread::sleep(Duration::from_millis(300));
        let began_during = !exporting.is_finished();
        let started = Instant::now();
        assert_eq!(daemon.ctl_json(&["session", "delete", &gone])["deleted"], gone.as_str());
        let deletion = started.elapsed();
        let during = began_during && !exporting.is_finished();
        exporting.join().unwrap();
        (during, deletion)
    });
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&edf).unwrap(), "the same export");
    if during {
        // The export takes about 2 s in a debug build; the deletion, begun 0.3 s in, ended before it.
        assert!(deletion < Duration::from_secs(1), "the deletion took {deletion:?}, waiting for the export");
        assert!(daemon.wait_log("WAL truncated when the exports reading now end", Duration::from_secs(5)));
        assert!(
            daemon.wait_log("WAL truncated after the exports that read during a deletion", Duration::from_secs(10)),
            "{}",
            daemon.log()
        );
    } else {
        // A machine fast enough to export before the deletion began: only the outcome is checked.
        eprintln!("the export ended before the deletion: the deferred truncation was not exercised");
    }
    for (path, bytes) in db_files(&daemon.dir.path().join("data")) {
        for (i, ct) in ciphertexts.iter().enumerate() {
            let probe = &ct[..ct.len().min(24)];
            assert!(!bytes.windows(probe.len()).any(|w| w == probe), "ciphertext {i} still in {}", path.display());
        }
    }

    // A damaged chunk: the first pass finds it, nothing is written, the error names it.
    {
        let c = rusqlite::Connection::open(daemon.dir.path().join("data/sessions.db")).unwrap();
        c.execute(
            "UPDATE blocks SET data = CAST(x'00' || substr(data, 2) AS BLOB) WHERE session = ?1 AND seq = 3",
            [&id],
        )
        .unwrap();
    }
    let damaged = out.path().join("damaged.edf");
    let refused = daemon.ctl(&["export", &id, "--format", "edf", "--output", damaged.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("1 chunk(s)") && err.contains("block 3 failed"), "{err}");
    assert!(err.contains("nothing was exported"), "{err}");
    assert!(!damaged.exists() || std::fs::metadata(&damaged).unwrap().len() == 0, "nothing written");
}

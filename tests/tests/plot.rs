//! `bci2tokenctl plot` end to end with the real daemon, ctl and plugins: a live speller session
//! drawn as PNG (its exact size, not blank), the same session drawn from the store as SVG (every
//! channel, every token it produced, the three panels), a 64-channel replay from the store, and
//! bad input.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bci2token_tests::{data_dir, reference_python, start_daemon, workspace_root, DaemonOptions, Follower, TempDir};
use serde_json::Value;

const PANELS: [&str; 3] = ["Power spectral density (Welch)", "Signal quality", "Decoded tokens"];

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR", "the first chunk is not IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

/// How many distinct colours a PNG (8-bit RGB or RGBA) has, decoded by Python's standard library.
fn png_colours(path: &Path) -> usize {
    const SCRIPT: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    pos += 12 + n
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
assert depth == 8 and ctype in (2, 6), (depth, ctype)
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours = set()
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp * 3))
    prev = line
print(len(colours))
"#;
    let o = Command::new(reference_python(&["zlib", "struct"])).args(["-c", SCRIPT]).arg(path).output().unwrap();
    assert!(o.status.success(), "decoding {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// The text of every `<text>` element of an SVG, unescaped.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
        .map(|t| {
            t.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

fn assert_names(texts: &[String], wanted: &[String], what: &str) {
    for w in wanted {
        assert!(texts.iter().any(|t| t == w), "{what} `{w}` is not in the SVG's text: {texts:?}");
    }
}

fn channel_labels(show: &Value) -> Vec<String> {
    show["channels"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_live_speller_session_as_png_then_from_the_store_as_svg() {
    let daemon = start_daemon(DaemonOptions::default());
    let dir = TempDir::new("plot-live");
    let model = workspace_root().join("models/speller-40").display().to_string();
    let (live, id) = Follower::live_speller(&daemon, &model, &[]);

    // Live: 6 s of its stream, followed with samples.
    let png = dir.path().join("live.png");
    let out =
        daemon.ctl(&["--json", "plot", &id, "--output", png.to_str().unwrap(), "--size", "900x700", "--seconds", "6"]);
    let report = ok(&out, "plot (live)");
    assert_eq!(report["source"], "live", "{report}");
    assert_eq!((report["width"].as_u64(), report["height"].as_u64()), (Some(900), Some(700)));
    assert!(report["seconds"].as_f64().unwrap() >= 6.0, "{report}");
    assert_eq!(report["channels"], 8);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&bytes), (900, 700));
    let colours = png_colours(&png);
    assert!(colours > 20, "the PNG has {colours} colours: blank?");

    // Stopped, the session is read from the store: everything it produced.
    let show = daemon.ctl_json(&["session", "show", &id]);
    let stopped = daemon.ctl_json(&["session", "stop", &id]);
    assert_eq!(stopped["state"], "stopped");
    let events = live.collect_until(Duration::from_secs(30), |e| e["type"] == "state" && e["state"] == "stopped");
    let mut tokens: Vec<String> =
        events.iter().filter(|e| e["type"] == "token").map(|e| e["label"].as_str().unwrap().to_string()).collect();
    assert!(!tokens.is_empty(), "the speller decoded no token in {} events", events.len());
    let token_count = tokens.len();
    tokens.sort();
    tokens.dedup();

    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let svg = dir.path().join("stored.svg");
    let out = daemon
        .ctl_command(&["--json", "plot", &id, "--output", svg.to_str().unwrap()])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let report = ok(&out, "plot (stored)");
    assert_eq!(report["source"], "stored", "{report}");
    assert!(report["quality_events"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["tokens"].as_u64().unwrap() as usize, token_count, "{report}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the exports' temporary files are left behind");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(r#"width="1600" height="1200""#), "not the default size: {}", &text[..200]);
    let texts = svg_texts(&text);
    assert_names(&texts, &PANELS.map(String::from), "panel title");
    assert_names(&texts, &channel_labels(&show), "channel");
    assert_names(&texts, &tokens, "token");
    assert!(texts.iter().any(|t| t.contains(&id) && t.contains("speller-40") && t.contains("250 Hz")), "{texts:?}");

    // The export plot uses: the stored metadata first, then the stored events.
    let jsonl = dir.path().join("events.jsonl");
    ok(&daemon.ctl(&["--json", "export", &id, "--format", "events", "--output", jsonl.to_str().unwrap()]), "export");
    let lines: Vec<Value> =
        std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((lines[0]["type"].as_str(), lines[0]["info"]["id"].as_str()), (Some("session"), Some(id.as_str())));
    assert_eq!(lines.iter().filter(|e| e["type"] == "token").count(), token_count);
    assert_eq!(lines.last().unwrap()["state"], "stopped");
    assert!(!lines.iter().any(|e| e["type"] == "samples" || e["type"] == "stats"));
}

#[test]
fn a_finished_64_channel_replay_is_plotted_from_the_store() {
    let daemon = start_daemon(DaemonOptions::default());
    let dir = TempDir::new("plot-replay");
    let edf = data_dir().join("eegmmidb/S001R04.edf");
    let path = format!("path={}", edf.display());
    let out = daemon
        .ctl(&["--json", "session", "start", "--driver", "replay", "--set", &path, "--set", "speed=0", "--follow"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    let show = daemon.ctl_json(&["session", "show", &id]);
    assert_eq!(show["state"], "finished");
    let labels = channel_labels(&show);
    assert_eq!(labels.len(), 64);

    for (name, size) in [("replay.svg", "1200x900"), ("replay.png", "1000x800")] {
        let file = dir.path().join(name);
        let report =
            ok(&daemon.ctl(&["--json", "plot", &id, "--output", file.to_str().unwrap(), "--size", size]), name);
        assert_eq!(report["source"], "stored");
        assert_eq!(report["channels"], 64);
        assert_eq!(report["frames"], show["frames"], "every stored frame went into the spectra");
        assert_eq!(report["tokens"], 0);
        if name.ends_with(".svg") {
            let texts = svg_texts(&std::fs::read_to_string(&file).unwrap());
            assert_names(&texts, &labels, "channel");
            assert_names(&texts, &PANELS.map(String::from), "panel title");
            assert!(texts.iter().any(|t| t == "no tokens: the session has no model"), "{texts:?}");
        } else {
            assert_eq!(png_size(&std::fs::read(&file).unwrap()), (1000, 800));
        }
    }
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let daemon = start_daemon(DaemonOptions::default());
    let dir = TempDir::new("plot-bad");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let run = |args: &[&str]| daemon.ctl_command(args).env("TMPDIR", &tmp).output().unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();

    // Before the daemon is asked anything.
    let o = run(&["plot", "0123456789ab", "--output", &at("a.jpg")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown extension `.jpg`") && stderr(&o).contains(".png"), "{}", stderr(&o));
    let o = run(&["plot", "0123456789ab", "--output", &at("noext")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no extension"), "{}", stderr(&o));

    std::fs::write(at("taken.png"), b"keep me").unwrap();
    let o = run(&["plot", "0123456789ab", "--output", &at("taken.png")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("taken.png: already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(at("taken.png")).unwrap(), b"keep me");

    let o = run(&["plot", "0123456789ab", "--output", &at("a.png"), "--size", "10x10"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["plot", "0123456789ab", "--output", &at("a.png"), "--seconds", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Neither running nor stored.
    for json in [false, true] {
        let mut args = vec!["plot", "0123456789ab", "--output"];
        let out = at("none.svg");
        args.push(&out);
        if json {
            args.insert(0, "--json");
        }
        let o = run(&args);
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("0123456789ab") && stderr(&o).contains("session list"), "{}", stderr(&o));
        if json {
            let e: Value = serde_json::from_str(stderr(&o).trim()).unwrap();
            assert_eq!(e["error"]["code"], "not_found");
        }
    }

    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, vec!["taken.png", "tmp"], "only what the test wrote is there");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "temporary files are left behind");
}

//! `bci2tokenctl plot ID --output FILE.png|FILE.svg`: one figure of a session, with each
//! channel's power spectral density, the signal quality over time and the decoded tokens.
//!
//! Where the data comes from:
//! - a running session: `follow` with samples, for `--seconds` of stream time;
//! - an ended one: the daemon's store, through two exports into new files of a private temporary
//!   directory, unlinked before the daemon writes them (and the directory removed): `events` (the
//!   stored metadata, quality and token events, as JSON lines) and `csv` (the samples). The same
//!   access rules and audit apply as to `export`.
//!
//! [`data`] is the pure part (gathering, spectra), [`draw`] the drawing.

pub mod data;
pub mod draw;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bci2token_api::{ErrorCode, Event, FollowOptions, Request, SessionInfo};

use crate::cli::PlotArgs;
use crate::client::frame_error;
use crate::error::{CtlError, Kind};
use crate::files::Files;
use crate::transport::Transport;
use data::{Collector, EventsLine, Figure, Meta, Source};
use draw::Format;

pub use data::parse_size;

/// Runs the command: gathers the session's data, draws it into the new file, prints what it drew.
pub fn run<W: Write>(args: &PlotArgs, json: bool, transport: &Transport, out: &mut W) -> Result<(), CtlError> {
    let usage = |m: String| CtlError::new(Kind::Usage, m);
    let format = Format::of(&args.output).map_err(usage)?;
    // Refused before anything is asked of the daemon (and again, race-free, when it is created).
    if std::fs::symlink_metadata(&args.output).is_ok() {
        return Err(usage(format!(
            "{}: already exists; give a new file name (nothing is overwritten)",
            args.output.display()
        )));
    }
    draw::load_font().map_err(|m| CtlError::new(Kind::Io, m))?;

    let fig = gather(args, transport)?;

    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&args.output).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "already exists; give a new file name (nothing is overwritten)".to_string()
            } else {
                e.to_string()
            };
            usage(format!("{}: {why}", args.output.display()))
        })?;
    if let Err(e) = draw::render(&fig, format, args.size, &args.output, &mut file) {
        drop(file);
        let _ = std::fs::remove_file(&args.output);
        return Err(CtlError::new(Kind::Io, format!("{}: cannot draw the plot: {e}", args.output.display())));
    }
    drop(file);

    let (w, h) = args.size;
    let line = if json {
        let abs = std::path::absolute(&args.output).unwrap_or_else(|_| args.output.clone());
        let v = serde_json::json!({
            "id": fig.meta.id,
            "output": abs.display().to_string(),
            "format": format.as_str(),
            "width": w,
            "height": h,
            "source": fig.source.as_str(),
            "channels": fig.meta.channels.len(),
            "frames": fig.frames,
            "seconds": fig.seconds,
            "quality_events": fig.quality.len(),
            "tokens": fig.tokens.len(),
            "lost_events": fig.lost,
        });
        format!("{v}\n")
    } else {
        let lost = if fig.lost > 0 {
            format!("; {} events were lost on the way (the plot misses them)", fig.lost)
        } else {
            String::new()
        };
        format!(
            "Plotted session {} ({}: {} channels, {:.1} s of samples, {} quality events, {} tokens) to {} \
             ({w}×{h} {}){lost}.\n",
            fig.meta.id,
            fig.source.as_str(),
            fig.meta.channels.len(),
            fig.seconds,
            fig.quality.len(),
            fig.tokens.len(),
            args.output.display(),
            format.as_str().to_uppercase(),
        )
    };
    out.write_all(line.as_bytes()).map_err(CtlError::from_stdout)?;
    out.flush().map_err(CtlError::from_stdout)
}

/// A running session is followed; an ended one (or one the daemon no longer holds in memory) is
/// read from the store.
fn gather(args: &PlotArgs, transport: &Transport) -> Result<Figure, CtlError> {
    let id = &args.id;
    match transport.call(&Request::SessionShow { id: id.clone() }, &Files::default()) {
        Ok(answer) => {
            let info: SessionInfo = answer.reply.decode("session_show")?;
            if info.state.is_final() {
                stored(transport, id, Some(&info))
            } else {
                live(transport, id, args.seconds)
            }
        }
        Err(e) if e.kind == Kind::Api(ErrorCode::NotFound) => stored(transport, id, None).map_err(|e| {
            if e.kind == Kind::Api(ErrorCode::NotFound) {
                CtlError::new(
                    e.kind,
                    format!(
                        "no session `{id}`: the daemon neither runs it nor has it stored; \
                         `bci2tokenctl session list` shows the sessions"
                    ),
                )
            } else {
                e
            }
        }),
        Err(e) => Err(e),
    }
}

/// Follows a running session with samples until `seconds` of stream time are covered or it ends.
fn live(transport: &Transport, id: &str, seconds: f64) -> Result<Figure, CtlError> {
    let request = Request::Follow { id: id.to_string(), options: FollowOptions { samples: true } };
    let answer = transport.call(&request, &Files::default())?;
    let info: SessionInfo = answer.reply.decode("follow")?;
    let mut frames = answer.frames.ok_or_else(|| CtlError::protocol("no event stream came with the reply"))?;
    let mut c = Collector::new(Meta::of(&info)).map_err(CtlError::protocol)?;
    let place = transport.place();
    loop {
        let frame = match frames.next_frame() {
            Ok(Some(frame)) => frame,
            // The daemon went away: plot what came, if anything did.
            Ok(None) if c.frames() > 0 => break,
            Ok(None) => {
                return Err(CtlError::protocol(format!(
                    "bci2tokend closed the follow stream of session {id} before any samples came"
                )))
            }
            Err(e) => return Err(frame_error(e, &place)),
        };
        // Event types this ctl does not know are skipped.
        let Ok(event) = serde_json::from_slice::<Event>(frame) else { continue };
        c.event(&event);
        if event.is_final() && c.frames() == 0 {
            // It ended before a sample came to this follower: what it recorded is in the store.
            drop(frames);
            return stored(transport, id, Some(&info));
        }
        if event.is_final() || c.covered() >= seconds {
            break;
        }
    }
    Ok(c.finish(Source::Live))
}

/// A private directory for the exports, removed with what is in it.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, CtlError> {
        let base = std::env::temp_dir();
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for n in 0..100u32 {
            let dir = base.join(format!("bci2tokenctl-plot-{}-{stamp}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Scratch(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(CtlError::new(
                        Kind::Io,
                        format!(
                            "cannot create a temporary directory in {}: {e}; set TMPDIR to a directory you can write",
                            base.display()
                        ),
                    ))
                }
            }
        }
        Err(CtlError::new(Kind::Io, format!("cannot create a temporary directory in {}", base.display())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Has the daemon export session `id` as `format` into the new file `path`, and gives it back to
/// read. The file's name is removed before the daemon writes a byte into it: the decrypted
/// session lives only as long as the open descriptors, and is left nowhere if this command is
/// killed.
fn export(transport: &Transport, id: &str, format: &str, path: &Path) -> Result<BufReader<std::fs::File>, CtlError> {
    let mut files = Files::default();
    let request = Request::Export {
        id: id.to_string(),
        format: format.to_string(),
        path: files.output(path)?,
        features: None,
        dp_epsilon: None,
        dp_delta: None,
        dp_clip: None,
    };
    let io = |e: std::io::Error| CtlError::new(Kind::Io, format!("{}: {e}", path.display()));
    // A descriptor of its own (its own offset) to read what the daemon writes through the other.
    let file = std::fs::File::open(path).map_err(io)?;
    std::fs::remove_file(path).map_err(io)?;
    transport.call(&request, &files)?;
    drop(files);
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// Reads an ended session from the store: its events, then its samples.
fn stored(transport: &Transport, id: &str, info: Option<&SessionInfo>) -> Result<Figure, CtlError> {
    let scratch = Scratch::new()?;
    let bad = |what: &str, e: String| CtlError::protocol(format!("the {what} export of session {id}: {e}"));

    let events_path = scratch.0.join("events.jsonl");
    let mut collector: Option<Collector> =
        info.map(|i| Collector::new(Meta::of(i))).transpose().map_err(|e| bad("events", e))?;
    let mut pending: Vec<Event> = Vec::new();
    for (n, line) in export(transport, id, "events", &events_path)?.lines().enumerate() {
        let line = line.map_err(|e| bad("events", e.to_string()))?;
        match data::events_line(&line).map_err(|e| bad("events", format!("line {}: {e}", n + 1)))? {
            // The stored metadata is what the samples were recorded with.
            EventsLine::Session(info) => {
                collector = Some(Collector::new(Meta::of(&info)).map_err(|e| bad("events", e))?);
            }
            EventsLine::Event(e) => match collector.as_mut() {
                Some(c) => c.event(&e),
                None => pending.push(*e),
            },
            EventsLine::Other => {}
        }
    }
    let mut c = collector.ok_or_else(|| {
        bad("events", "no session metadata (is bci2tokend older than this bci2tokenctl?)".to_string())
    })?;
    for e in &pending {
        c.event(e);
    }

    let csv_path = scratch.0.join("samples.csv");
    enough_room(&scratch.0, info)?;
    data::read_csv(export(transport, id, "csv", &csv_path)?, &mut c).map_err(|e| bad("csv", e))?;
    drop(scratch);
    Ok(c.finish(Source::Stored))
}

/// The CSV of a stored session goes through a temporary file (removed by name at once, but its
/// space is used until the export ends): refused when it would not fit in half of what is free
/// there, estimated from the frames the daemon counted when it still lists the session.
fn enough_room(dir: &std::path::Path, info: Option<&SessionInfo>) -> Result<(), CtlError> {
    let Ok(fs) = nix::sys::statvfs::statvfs(dir) else { return Ok(()) };
    let free = fs.blocks_available() * fs.fragment_size();
    // About 12 bytes a value in the CSV (a number and its separator), plus the time column.
    let needed = info.map_or(0, |i| i.frames.saturating_mul(i.channels.len() as u64 + 1).saturating_mul(12));
    if needed > free / 2 {
        return Err(CtlError::new(
            Kind::Usage,
            format!(
                "session {}'s samples need about {} MiB of temporary space in {} and {} MiB are free; set TMPDIR \
                 to a larger file system, or plot the session while it is live (--seconds)",
                info.map_or("?", |i| i.id.as_str()),
                needed >> 20,
                dir.display(),
                free >> 20
            ),
        ));
    }
    Ok(())
}

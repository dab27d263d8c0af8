//! Printing a follow stream: the events after the initial reply, until a final `state` event.
//!
//! In `--json` mode each event frame is written exactly as received plus a newline; only the
//! `type` (and, for `state` events, the state) is looked at, without parsing sample data. Output is
//! flushed when the next frame is not already buffered (the stream pauses), at the end, and
//! never per event while data keeps coming, so the ctl is not the bottleneck of a fast replay.

use std::io::{Read, Write};
use std::path::Path;

use bci2token_api::Event;
use serde::Deserialize;

use crate::client::{frame_error, FrameReader, LooseErrorBody};
use crate::error::{CtlError, Kind};
use crate::render::{self, EventContext};

#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    pub json: bool,
    /// Stop after this many events.
    pub count: Option<u64>,
    pub ctx: EventContext,
}

/// What the ctl needs to know about an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Not the end of the stream.
    Event,
    /// A final `state` event (`stopped`, `finished` or `failed`).
    Final { state: String, message: Option<String> },
}

#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<String>,
    state: Option<String>,
    message: Option<String>,
    error: Option<LooseErrorBody>,
}

const FINAL_STATES: [&str; 3] = ["stopped", "finished", "failed"];

/// Classifies an event frame. The daemon writes `{"type":"...",` first, so for everything but
/// `state` events (the only ones that can end a stream) this looks at a few bytes only; any
/// other shape falls back to parsing the frame (ignoring the values of other fields).
pub fn classify(frame: &[u8]) -> Result<Class, CtlError> {
    const PREFIX: &[u8] = b"{\"type\":\"";
    if let Some(rest) = frame.strip_prefix(PREFIX) {
        if let Some(end) = rest.iter().take(64).position(|&b| b == b'"') {
            let tag = &rest[..end];
            if tag != b"state" && !tag.contains(&b'\\') {
                return Ok(Class::Event);
            }
        }
    }
    let peek: Peek = serde_json::from_slice(frame)
        .map_err(|e| CtlError::protocol(format!("malformed event from bci2tokend: {e}")))?;
    match (peek.kind.as_deref(), peek.error) {
        (Some("state"), _) => match peek.state {
            Some(state) if FINAL_STATES.contains(&state.as_str()) => Ok(Class::Final { state, message: peek.message }),
            _ => Ok(Class::Event),
        },
        (Some(_), _) => Ok(Class::Event),
        (None, Some(err)) => Err(err.into_ctl_error()),
        (None, None) => Err(CtlError::protocol("event from bci2tokend without a \"type\"")),
    }
}

/// Streams events from `frames` to `out` until the final state, `count` events, or an error.
/// `Ok` when the session finished or was stopped (or `count` was reached); a `failed` session is
/// `Err` of kind [`Kind::SessionFailed`] with the daemon's message.
pub fn follow<R: Read, W: Write>(
    frames: &mut FrameReader<R>,
    out: &mut W,
    opts: &StreamOptions,
    socket: &Path,
    session_id: &str,
) -> Result<(), CtlError> {
    let mut seen: u64 = 0;
    loop {
        if opts.count.is_some_and(|n| seen >= n) {
            out.flush().map_err(CtlError::from_stdout)?;
            return Ok(());
        }
        let frame = match frames.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // Whatever was printed so far is still worth having.
                out.flush().map_err(CtlError::from_stdout)?;
                return Err(CtlError::protocol(format!(
                    "bci2tokend closed the follow stream of session {session_id} before it ended \
                     (after {seen} events)"
                )));
            }
            Err(e) => {
                out.flush().map_err(CtlError::from_stdout)?;
                return Err(frame_error(e, socket));
            }
        };
        seen += 1;
        let class = classify(frame)?;
        if opts.json {
            out.write_all(frame).map_err(CtlError::from_stdout)?;
            out.write_all(b"\n").map_err(CtlError::from_stdout)?;
        } else {
            let text = match serde_json::from_slice::<Event>(frame) {
                Ok(ev) => render::event(&ev, &opts.ctx),
                Err(_) => {
                    let kind = serde_json::from_slice::<Peek>(frame).ok().and_then(|p| p.kind);
                    render::unknown_event(kind.as_deref().unwrap_or("unknown"))
                }
            };
            out.write_all(text.as_bytes()).map_err(CtlError::from_stdout)?;
        }
        if let Class::Final { state, message } = class {
            out.flush().map_err(CtlError::from_stdout)?;
            if state == "failed" {
                let why = message.filter(|m| !m.is_empty()).unwrap_or_else(|| "no reason given".into());
                return Err(CtlError::new(Kind::SessionFailed, format!("session {session_id} failed: {why}")));
            }
            return Ok(());
        }
        if !opts.json || !frames.next_frame_buffered() {
            out.flush().map_err(CtlError::from_stdout)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_fast_and_slow_paths() {
        assert_eq!(classify(br#"{"type":"samples","data":[[1,2]]}"#).unwrap(), Class::Event);
        assert_eq!(
            classify(br#"{"type":"state","session":"s","state":"running","message":null}"#).unwrap(),
            Class::Event
        );
        assert_eq!(
            classify(br#"{"type":"state","session":"s","state":"failed","message":"boom"}"#).unwrap(),
            Class::Final { state: "failed".into(), message: Some("boom".into()) }
        );
        // Other field order and whitespace still work.
        assert_eq!(
            classify(br#"{ "state": "finished", "type": "state" }"#).unwrap(),
            Class::Final { state: "finished".into(), message: None }
        );
        assert_eq!(classify(br#"{"session":"s","type":"brand_new"}"#).unwrap(), Class::Event);
        let e = classify(br#"{"error":{"code":"not_found","message":"gone"}}"#).unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(classify(b"{}").unwrap_err().kind, Kind::Protocol);
        assert_eq!(classify(b"[").unwrap_err().kind, Kind::Protocol);
    }
}

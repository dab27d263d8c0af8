//! Talking to the daemon: frames in and out, replies decoded into results or [`CtlError`]s.

use std::io::{self, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bci2token_api::framing::frame_len;
use bci2token_api::framing::write_frame_with_fds;
use bci2token_api::{ApiError, FrameError, Request, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{CtlError, Kind};
use crate::files::Files;

/// How long to wait for the reply to a request (not for the events of a follow stream).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Read buffer size: large enough that small events are read many per syscall.
const READ_BUFFER: usize = 256 * 1024;

/// Reads frames with one reused body buffer (no allocation per frame once warmed up).
pub struct FrameReader<R> {
    inner: BufReader<R>,
    body: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader { inner: BufReader::with_capacity(READ_BUFFER, inner), body: Vec::new() }
    }

    /// The next frame body; `Ok(None)` when the peer closed the connection between frames.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let len = frame_len(header)?;
        // Grow only: zero-filling a multi-megabyte buffer for every frame would cost more than
        // reading it.
        if self.body.len() < len {
            self.body.resize(len, 0);
        }
        let body = &mut self.body[..len];
        self.inner.read_exact(body)?;
        Ok(Some(body))
    }

    /// True when a whole next frame is already buffered, i.e. reading it will not block.
    pub fn next_frame_buffered(&self) -> bool {
        let buf = self.inner.buffer();
        if buf.len() < 4 {
            return false;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        buf.len() - 4 >= len
    }

    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }
}

/// A connection to the daemon.
pub struct Conn {
    pub socket: PathBuf,
    pub reader: FrameReader<UnixStream>,
}

/// The `ok` value of a reply, with its exact bytes when they could be cut out of the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct OkReply {
    pub value: serde_json::Value,
    pub raw: Option<Vec<u8>>,
}

impl OkReply {
    /// The value as one line of JSON (the daemon's own bytes when available).
    pub fn json_line(&self) -> Vec<u8> {
        let mut line = match &self.raw {
            Some(raw) => raw.clone(),
            None => serde_json::to_vec(&self.value).unwrap_or_default(),
        };
        line.push(b'\n');
        line
    }

    /// Decodes the value into a typed reply; `method` names the request in the error.
    pub fn decode<T: DeserializeOwned>(&self, method: &str) -> Result<T, CtlError> {
        T::deserialize(&self.value).map_err(|e| {
            CtlError::protocol(format!(
                "unexpected reply from bci2tokend to '{method}': {e} (is bci2tokenctl older or newer than the daemon?)"
            ))
        })
    }
}

impl Conn {
    pub fn new(stream: UnixStream, socket: PathBuf) -> Self {
        Conn { socket, reader: FrameReader::new(stream) }
    }

    fn frame_error(&self, e: FrameError) -> CtlError {
        frame_error(e, &self.socket)
    }

    /// Sends a request with the files it names (as descriptors) and waits for its reply.
    pub fn request_with(&mut self, req: &Request, files: &Files) -> Result<OkReply, CtlError> {
        let stream = self.reader.get_ref();
        // Timeouts are best effort: failing to set one only means waiting longer.
        let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
        if let Err(e) = write_frame_with_fds(stream, req, &files.fds()) {
            // The daemon may have refused the connection (too many) and closed it: its reason is
            // waiting to be read, and says more than the broken pipe.
            match self.reader.next_frame() {
                Ok(Some(body)) => return parse_reply(body),
                _ => return Err(self.frame_error(e)),
            }
        }
        let body = match self.reader.next_frame() {
            Ok(Some(body)) => body,
            Ok(None) => {
                return Err(CtlError::protocol(format!(
                    "bci2tokend closed the connection on {} without replying to '{}'",
                    self.socket.display(),
                    req.method()
                )))
            }
            Err(e) => return Err(self.frame_error(e)),
        };
        let reply = parse_reply(body);
        let _ = self.reader.get_ref().set_read_timeout(None);
        reply
    }
}

pub fn frame_error(e: FrameError, socket: &std::path::Path) -> CtlError {
    match e {
        FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => CtlError::new(
            Kind::Timeout,
            format!("no reply from bci2tokend on {} within {} s", socket.display(), REPLY_TIMEOUT.as_secs()),
        ),
        FrameError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            CtlError::new(
                Kind::Io,
                format!("bci2tokend closed the connection on {} unexpectedly ({e})", socket.display()),
            )
        }
        FrameError::Io(e) => CtlError::new(Kind::Io, format!("error on the control socket {}: {e}", socket.display())),
        other => CtlError::protocol(format!("bad message from bci2tokend on {}: {other}", socket.display())),
    }
}

/// An error object with a code this ctl may not know.
#[derive(Deserialize)]
struct LooseError {
    error: LooseErrorBody,
}

#[derive(Deserialize)]
pub(crate) struct LooseErrorBody {
    pub code: String,
    pub message: String,
}

impl LooseErrorBody {
    pub(crate) fn into_ctl_error(self) -> CtlError {
        match serde_json::from_value::<bci2token_api::ErrorCode>(serde_json::Value::String(self.code.clone())) {
            Ok(code) => CtlError::api(ApiError::new(code, self.message)),
            Err(_) => CtlError::unknown_api(self.code, self.message),
        }
    }
}

/// Decodes a reply frame: the `ok` value, or the daemon's error as a [`CtlError`].
pub fn parse_reply(body: &[u8]) -> Result<OkReply, CtlError> {
    match serde_json::from_slice::<Response>(body) {
        Ok(Response::Ok(value)) => Ok(OkReply { value, raw: ok_bytes(body).map(<[u8]>::to_vec) }),
        Ok(Response::Error(e)) => Err(CtlError::api(e)),
        Err(e) => match serde_json::from_slice::<LooseError>(body) {
            Ok(loose) => Err(loose.error.into_ctl_error()),
            Err(_) => Err(CtlError::protocol(format!("malformed reply from bci2tokend: {e}"))),
        },
    }
}

/// The bytes of `X` in a compact `{"ok":X}` (already validated as a `Response`).
fn ok_bytes(body: &[u8]) -> Option<&[u8]> {
    let inner = body.strip_prefix(b"{\"ok\":")?.strip_suffix(b"}")?;
    let inner = inner.trim_ascii();
    if inner.is_empty() || inner.contains(&b'\n') {
        return None;
    }
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bci2token_api::ErrorCode;

    #[test]
    fn ok_reply_keeps_the_daemons_bytes() {
        let r = parse_reply(br#"{"ok":{"z":1,"a":0.1}}"#).unwrap();
        assert_eq!(r.json_line(), b"{\"z\":1,\"a\":0.1}\n");
        let r = parse_reply(b"{ \"ok\" : [1, 2] }").unwrap();
        assert_eq!(r.json_line(), b"[1,2]\n");
        assert!(parse_reply(br#"{"ok":1,"ok":2}"#).is_err());
    }

    #[test]
    fn error_replies() {
        let e = parse_reply(br#"{"error":{"code":"not_found","message":"no session s-9"}}"#).unwrap_err();
        assert_eq!((e.kind, e.message.as_str(), e.exit_code()), (Kind::Api(ErrorCode::NotFound), "no session s-9", 4));
        let e = parse_reply(br#"{"error":{"code":"brand_new","message":"m"}}"#).unwrap_err();
        assert_eq!((e.kind, e.code(), e.exit_code()), (Kind::UnknownApi, "brand_new".to_string(), 1));
        let e = parse_reply(b"nonsense").unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
    }

    #[test]
    fn frame_reader_reads_frames_and_knows_what_is_buffered() {
        let mut wire = Vec::new();
        for body in [&b"{\"a\":1}"[..], b"[]", b""] {
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(body);
        }
        wire.extend_from_slice(&[0, 0, 0, 9, b'{']); // truncated
        let mut r = FrameReader::new(io::Cursor::new(wire));
        assert_eq!(r.next_frame().unwrap().unwrap(), b"{\"a\":1}");
        assert!(r.next_frame_buffered());
        assert_eq!(r.next_frame().unwrap().unwrap(), b"[]");
        assert_eq!(r.next_frame().unwrap().unwrap(), b"");
        assert!(!r.next_frame_buffered());
        assert!(r.next_frame().is_err());

        let mut r = FrameReader::new(io::Cursor::new(Vec::new()));
        assert!(r.next_frame().unwrap().is_none());
        let mut r = FrameReader::new(io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff]));
        assert!(matches!(r.next_frame(), Err(FrameError::TooLarge(_))));
    }
}

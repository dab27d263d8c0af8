//! The two ways to the daemon: its control socket (the default) and D-Bus (`--bus`). Both take
//! a request of the socket protocol and give back its reply as the socket's JSON, and for a
//! request that follows a session, the stream of its event frames.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use bci2token_api::Request;

use crate::bus;
use crate::client::{Conn, FrameReader, OkReply};
use crate::error::CtlError;
use crate::files::Files;
use crate::socket::{self, Resolved};

#[derive(Debug, Clone)]
pub enum Transport {
    Socket(Resolved),
    Bus(bus::Target),
}

/// A reply, and the frames that follow it (the connection itself on the socket; the socket
/// `OpenStream` handed out on the bus, for follow requests only).
pub struct Answer {
    pub reply: OkReply,
    pub frames: Option<FrameReader<UnixStream>>,
}

impl Transport {
    /// What to call the daemon's end in messages.
    pub fn place(&self) -> PathBuf {
        match self {
            Transport::Socket(r) => r.path.clone(),
            Transport::Bus(t) => PathBuf::from(t.shown()),
        }
    }

    pub fn call(&self, request: &Request, files: &Files) -> Result<Answer, CtlError> {
        match self {
            Transport::Socket(resolved) => {
                let stream = socket::connect(resolved)?;
                let mut conn = Conn::new(stream, resolved.path.clone());
                let reply = conn.request_with(request, files)?;
                Ok(Answer { reply, frames: Some(conn.reader) })
            }
            Transport::Bus(target) => {
                let (reply, stream) = bus::call(target, request, files)?;
                Ok(Answer { reply, frames: stream.map(FrameReader::new) })
            }
        }
    }
}

//! Framing of the control socket: every message is a 4-byte big-endian length followed by that
//! many bytes of UTF-8 JSON. Blocking helpers for `std::io`; the daemon uses [`frame_len`] and
//! [`encode`] with its async streams so the rules live in one place.

use std::io::{self, Read, Write};

/// Largest accepted frame from the daemon (replies, events). A 64-channel block of one second at
/// 16 kHz is ~10 MB of JSON.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Largest request the daemon accepts: requests are small (a session start with its settings is a
/// few hundred bytes), so a stranger cannot make the daemon hold megabytes per connection.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Validates a frame header and returns the body length.
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Serialises `msg` as one frame (header + JSON body).
pub fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, msg)?;
    let len = out.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Writes one frame.
pub fn write_frame<W: Write, T: serde::Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Writes one frame with file descriptors attached (SCM_RIGHTS on its first bytes): how files
/// cross to the daemon, which then reads and writes them with the caller's rights, not its own.
pub fn write_frame_with_fds<T: serde::Serialize>(
    stream: &std::os::unix::net::UnixStream,
    msg: &T,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(), FrameError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::{AsRawFd, RawFd};
    let frame = encode(msg)?;
    if fds.is_empty() {
        let mut w = stream;
        w.write_all(&frame)?;
        return Ok(());
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = loop {
        match sendmsg::<()>(stream.as_raw_fd(), &[io::IoSlice::new(&frame)], &cmsg, MsgFlags::empty(), None) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e).into()),
        }
    };
    let mut w = stream;
    w.write_all(&frame[sent..])?;
    Ok(())
}

/// Reads one frame body; `Ok(None)` when the peer closed the connection between frames.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn round_trip_and_clean_eof() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &serde_json::json!({"a": 1})).unwrap();
        write_frame(&mut wire, &"second").unwrap();
        assert_eq!(&wire[..4], &7u32.to_be_bytes());
        let mut r = io::Cursor::new(wire);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), br#"{"a":1}"#);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), br#""second""#);
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn descriptors_travel_with_a_frame() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        write_frame_with_fds(&a, &"x", &[file.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(b.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        let fds: Vec<OwnedFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                ControlMessageOwned::ScmRights(v) => v,
                _ => Vec::new(),
            })
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        assert_eq!(msg.bytes, 7, "the whole frame arrived in one piece");
        assert_eq!(fds.len(), 1);
        let received = std::fs::File::from(fds.into_iter().next().unwrap());
        assert_eq!(received.metadata().unwrap().ino(), file.metadata().unwrap().ino());
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let header = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(frame_len(header), Err(FrameError::TooLarge(_))));
        let mut r = io::Cursor::new(vec![0, 0, 0, 10, b'{']);
        assert!(matches!(read_frame(&mut r), Err(FrameError::Io(_))));
    }
}

//! The serial port, through `tokio-serial` on a runtime owned by the device: the daemon calls a
//! driver from its acquisition thread with a time-out, so every wait here is a `block_on` with a
//! deadline on that thread's own current-thread runtime (no thread of our own, no busy loop).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bci2token_driver_abi::serial::is_serial_line;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{
    ClearBuffer, DataBits, FlowControl, Parity, SerialPort, SerialPortBuilderExt, SerialStream, StopBits,
};

/// The Cyton dongle's fixed line speed.
pub const BAUD: u32 = 115_200;

/// Why the port cannot be used any more: the device is gone or broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLost(pub String);

pub struct Port {
    // Field order: the stream must be dropped inside the runtime's lifetime.
    stream: SerialStream,
    rt: tokio::runtime::Runtime,
    path: PathBuf,
}

impl Port {
    /// Opens `path` at 115200 baud, 8N1, raw, no flow control, exclusively.
    /// The daemon opens the port with its own rights: only a serial line is taken, checked on the
    /// device the name resolves to (under /dev) before the open and again on the opened descriptor.
    pub fn open(path: &Path, allow_pty: bool) -> Result<Port, String> {
        let not_serial = || {
            format!(
                "{} is not a serial device (`bci2tokenctl devices --driver openbci` lists the dongles{})",
                path.display(),
                if allow_pty { "" } else { "; pseudo-terminals need the admin's [drivers.openbci] allow_pty" }
            )
        };
        // The device itself, found by name once: what is checked is what is opened. (A name that
        // resolves into a world-writable place under /dev, /dev/shm, could still be swapped
        // before the open: the opened descriptor is checked again below.)
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) if p.starts_with("/dev/") => p,
            Ok(_) => return Err(not_serial()),
            Err(e) => {
                let e = tokio_serial::Error::new(tokio_serial::ErrorKind::NoDevice, e.to_string());
                return Err(open_error(path, &e));
            }
        };
        if std::fs::metadata(&resolved).is_ok_and(|m| !is_serial_line(&m, allow_pty)) {
            return Err(not_serial());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot create the serial I/O runtime: {e}"))?;
        let builder = tokio_serial::new(resolved.to_string_lossy(), BAUD)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None);
        // The stream registers with the runtime's reactor, so it is opened inside it.
        let stream = {
            let _guard = rt.enter();
            builder.open_native_async().map_err(|e| open_error(path, &e))?
        };
        let opened = {
            use std::os::fd::{AsRawFd, BorrowedFd};
            // SAFETY: the stream owns the descriptor and outlives this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            std::fs::File::from(fd.try_clone_to_owned().map_err(|e| format!("{}: {e}", path.display()))?).metadata()
        };
        if !opened.is_ok_and(|m| is_serial_line(&m, allow_pty)) {
            return Err(not_serial());
        }
        let mut port = Port { stream, rt, path: path.to_path_buf() };
        // The dongle ignores modem lines, and a pseudo-terminal refuses them: best effort only.
        let _ = port.stream.write_data_terminal_ready(true);
        let _ = port.stream.write_request_to_send(true);
        Ok(port)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_all(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), PortLost> {
        let stream = &mut self.stream;
        let result = self.rt.block_on(async {
            tokio::time::timeout(timeout, async {
                stream.write_all(bytes).await?;
                stream.flush().await
            })
            .await
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PortLost(format!("writing to {}: {e}", self.path.display()))),
            Err(_) => Err(PortLost(format!("writing to {} did not finish within {timeout:?}", self.path.display()))),
        }
    }

    /// Reads what is there, waiting at most `timeout` for the first byte. `Ok(0)` is a time-out;
    /// end of file and read errors mean the device is gone.
    pub fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, PortLost> {
        let stream = &mut self.stream;
        match self.rt.block_on(async { tokio::time::timeout(timeout, stream.read(buf)).await }) {
            Err(_) => Ok(0),
            Ok(Ok(0)) => Err(PortLost(format!("{} was closed (end of file)", self.path.display()))),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(PortLost(format!("reading {}: {e}", self.path.display()))),
        }
    }

    /// Reads until `$$$` (returning the text before it) or the deadline.
    pub fn read_reply(&mut self, timeout: Duration) -> Result<Option<String>, PortLost> {
        let deadline = Instant::now() + timeout;
        let mut text = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            if let Some(end) = text.windows(3).position(|w| w == b"$$$") {
                text.truncate(end);
                return Ok(Some(String::from_utf8_lossy(&text).into_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let n = self.read(&mut buf, left)?;
            text.extend_from_slice(&buf[..n]);
        }
    }

    /// Throws away input until the line has been quiet for `quiet` (at most `max`): the tail of a
    /// stream that was running when we arrived.
    pub fn drain(&mut self, quiet: Duration, max: Duration) -> Result<usize, PortLost> {
        let end = Instant::now() + max;
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while Instant::now() < end {
            let n = self.read(&mut buf, quiet.min(end.saturating_duration_since(Instant::now())))?;
            if n == 0 {
                break;
            }
            total += n;
        }
        let _ = self.stream.clear(ClearBuffer::Input);
        Ok(total)
    }
}

fn open_error(path: &Path, e: &tokio_serial::Error) -> String {
    let what = match e.kind {
        tokio_serial::ErrorKind::NoDevice => "no such device, or it is in use by another program",
        _ => "cannot open it",
    };
    let mut msg = format!("{}: {what}: {e}", path.display());
    if e.to_string().contains("ermission denied") {
        msg.push_str(
            " (the daemon's user needs access: install the udev rule 70-bci2token-openbci.rules, which gives the \
             dongle to the bci2token group)",
        );
    } else if !path.exists() {
        msg.push_str(" (is the dongle plugged in? `bci2tokenctl devices --driver openbci` lists the dongles found)");
    }
    msg
}

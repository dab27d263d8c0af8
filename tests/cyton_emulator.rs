//! A Cyton (and Cyton + Daisy) on a pseudo-terminal, speaking the board's protocol, for the
//! driver's end-to-end tests and benchmarks. Its own implementation of the wire format (it shares
//! no code with the driver, so a misreading of the protocol cannot hide on both sides).
//!
//! The device path is a symlink in a directory of the test's (`ttyCYTON` → `/dev/pts/N`), so
//! "unplugging" (closing the pty) and "plugging in again" (a new pty behind the same name) look
//! to the driver like a USB dongle coming and going.
//!
//! Every packet carries its own index: channel 1 (and, on the Daisy, channel 9) holds the packet
//! index `k` as raw counts, the other channels [`counts`]`(k, ch)`, spread over the whole 24-bit
//! range. A test can therefore check every delivered row on its own, and see which were lost.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};

/// µV per count at the default gain 24, as the OpenBCI GUI converts.
pub fn scale_uv(gain: u8) -> f64 {
    4.5 / f64::from(gain) / 8_388_607.0 * 1e6
}

/// Raw counts of channel `ch` (0-based, 0..16) in packet `k`. Channels 0 and 8 carry `k` itself.
pub fn counts(k: u64, ch: usize) -> i32 {
    if ch % 8 == 0 {
        return (k % (1 << 23)) as i32;
    }
    let h = k.wrapping_mul(2_654_435_761).wrapping_add(ch as u64 * 40_503) % (1 << 24);
    h as i32 - (1 << 23)
}

/// What the board answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// v3.1.2: every command of the SDK, replies ending in `$$$`.
    V3,
    /// An old board (or another emulator) that answers `v`, `b` and `s` only, with a banner of its
    /// own; every other command is ignored.
    Legacy,
}

/// What the channels carry.
#[derive(Debug, Clone)]
pub enum Signal {
    /// [`counts`]: self-describing rows.
    Indexed,
    /// Rows of 8 raw counts with their sample counters (a real recording), played once.
    Recording(Arc<Vec<(u8, [i32; 8])>>),
}

#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub daisy: bool,
    pub firmware: Firmware,
    /// Packets per second (250 on a real board; more to play a recording quickly).
    pub packet_rate: f64,
    /// Footers used in turn, one per packet.
    pub footers: Vec<u8>,
    pub signal: Signal,
    /// Answer every `x…X` with this `Failure: …` text instead of `Success`.
    pub channel_failure: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            daisy: false,
            firmware: Firmware::V3,
            packet_rate: 250.0,
            footers: vec![0xC0],
            signal: Signal::Indexed,
            channel_failure: None,
        }
    }
}

/// Faults to inject and what the emulator observed.
#[derive(Debug, Default)]
struct Control {
    drop_next: u64,
    garbage: Vec<u8>,
    stall_until: Option<Instant>,
    unplugged: bool,
    replug: bool,
    quit: bool,
    /// Every byte received from the driver.
    received: Vec<u8>,
    /// Packet indices sent and skipped (dropped, stalled or unplugged while streaming).
    sent: u64,
    skipped: Vec<u64>,
    /// Packets that did not fit the pty (the driver did not read): should stay 0.
    overflow: u64,
    /// When the last packet's last byte was written (for latency measurements).
    last_write: Option<Instant>,
    /// When each packet was written, by packet index (kept only when asked for).
    write_times: Option<Vec<Option<Instant>>>,
    /// Number of `b` commands.
    starts: u64,
}

pub struct Emulator {
    path: PathBuf,
    control: Arc<Mutex<Control>>,
    thread: Option<JoinHandle<()>>,
}

/// A pseudo-terminal pair made raw, with its slave's name linked at `link`.
struct Pty {
    master: File,
    // Held open so the master never sees a hang-up while the driver reopens the port.
    _slave: OwnedFd,
}

fn open_pty(link: &Path) -> Pty {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    // Not inherited by the daemon the test spawns: a copy there would keep the "unplugged" pty alive.
    for fd in [pty.master.as_fd(), pty.slave.as_fd()] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
    }
    let mut t = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
    cfmakeraw(&mut t);
    tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &t).expect("tcsetattr");
    let name = nix::unistd::ttyname(pty.slave.as_fd()).expect("ttyname");
    let flags = OFlag::from_bits_truncate(fcntl(pty.master.as_fd(), FcntlArg::F_GETFL).expect("F_GETFL"));
    fcntl(pty.master.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).expect("F_SETFL");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&name, link).expect("symlink to the pty");
    Pty { master: File::from(pty.master), _slave: pty.slave }
}

impl Emulator {
    /// Starts a board whose port is `dir/ttyCYTON`.
    pub fn start(dir: &Path, config: EmulatorConfig) -> Emulator {
        let path = dir.join("ttyCYTON");
        let pty = open_pty(&path);
        let control = Arc::new(Mutex::new(Control::default()));
        let board = Board::new(config, path.clone(), Arc::clone(&control));
        let thread = std::thread::Builder::new().name("cyton-emulator".into()).spawn(move || board.run(pty)).unwrap();
        Emulator { path, control, thread: Some(thread) }
    }

    /// The device path to give the driver.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next `n` packets are not sent (the counter still advances, as when the radio drops them).
    pub fn drop_packets(&self, n: u64) {
        self.control.lock().unwrap().drop_next += n;
    }

    /// Writes `bytes` before the next packet.
    pub fn inject_garbage(&self, bytes: &[u8]) {
        self.control.lock().unwrap().garbage.extend_from_slice(bytes);
    }

    /// Sends nothing for `d` and ignores commands meanwhile (the radio link is down); packets due
    /// meanwhile are lost.
    pub fn stall(&self, d: Duration) {
        self.control.lock().unwrap().stall_until = Some(Instant::now() + d);
    }

    /// Closes the pty and removes the device path, like pulling the dongle out.
    pub fn unplug(&self) {
        self.control.lock().unwrap().unplugged = true;
    }

    /// A new pty behind the same path, like plugging the dongle in again (the board keeps its state).
    pub fn replug(&self) {
        self.control.lock().unwrap().replug = true;
    }

    /// The command bytes received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.control.lock().unwrap().received).into_owned()
    }

    pub fn packets_sent(&self) -> u64 {
        self.control.lock().unwrap().sent
    }

    /// Indices of packets not sent, in order.
    pub fn skipped(&self) -> Vec<u64> {
        self.control.lock().unwrap().skipped.clone()
    }

    pub fn overflow(&self) -> u64 {
        self.control.lock().unwrap().overflow
    }

    pub fn starts(&self) -> u64 {
        self.control.lock().unwrap().starts
    }

    /// When the last packet was written.
    pub fn last_write(&self) -> Option<Instant> {
        self.control.lock().unwrap().last_write
    }

    /// Starts keeping the time each packet is written (for latency benchmarks).
    pub fn record_write_times(&self) {
        self.control.lock().unwrap().write_times.get_or_insert_with(Vec::new);
    }

    /// When packet `k` was written, if it was and times are being recorded.
    pub fn write_time(&self, k: u64) -> Option<Instant> {
        self.control.lock().unwrap().write_times.as_ref()?.get(k as usize).copied().flatten()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.control.lock().unwrap().quit = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The board's state, on the emulator's thread.
struct Board {
    config: EmulatorConfig,
    link: PathBuf,
    control: Arc<Mutex<Control>>,
    daisy_active: bool,
    streaming: bool,
    /// Global packet index: never restarts, so values stay unique across reconnections.
    k: u64,
    /// Sample counter of the next packet (restarts at 0 with every `b`).
    counter: u8,
    stream_start: Instant,
    packets_this_stream: u64,
    /// Command bytes waiting for the rest of a multi-byte command.
    pending: VecDeque<u8>,
}

impl Board {
    fn new(config: EmulatorConfig, link: PathBuf, control: Arc<Mutex<Control>>) -> Board {
        Board {
            daisy_active: config.daisy,
            config,
            link,
            control,
            streaming: false,
            k: 0,
            counter: 0,
            stream_start: Instant::now(),
            packets_this_stream: 0,
            pending: VecDeque::new(),
        }
    }

    fn banner(&self) -> String {
        match self.config.firmware {
            Firmware::Legacy => "OpenBCI V3 8bit Board\nSetting ADS1299 Channel Values\nADS1299 Device ID: 0x3E\n\
                                 LIS3DH Device ID: 0x33\n$$$"
                .to_string(),
            Firmware::V3 => {
                let mut s = String::from("OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n");
                if self.config.daisy {
                    s.push_str("On Daisy ADS1299 Device ID: 0x3E\n");
                }
                s.push_str("LIS3DH Device ID: 0x33\nFirmware: v3.1.2\n$$$");
                s
            }
        }
    }

    /// Handles the bytes in `pending`; returns the replies to write.
    fn commands(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(&c) = self.pending.front() {
            let legacy = self.config.firmware == Firmware::Legacy;
            match c {
                b's' => self.streaming = false,
                b'b' => {
                    self.streaming = true;
                    self.counter = 0;
                    self.stream_start = Instant::now();
                    self.packets_this_stream = 0;
                    self.control.lock().unwrap().starts += 1;
                }
                b'v' => {
                    self.streaming = false;
                    self.daisy_active = self.config.daisy;
                    out.extend_from_slice(self.banner().as_bytes());
                }
                _ if legacy => {}
                b'c' => {
                    self.daisy_active = false;
                    out.extend_from_slice(if self.config.daisy { b"daisy removed$$$" } else { b"8$$$" });
                }
                b'C' => {
                    if self.config.daisy {
                        self.daisy_active = true;
                        out.extend_from_slice(b"daisy attached16$$$");
                    } else {
                        out.extend_from_slice(b"no daisy to attach!8$$$");
                    }
                }
                b'?' => out.extend_from_slice(
                    b"Board ADS Registers\nADS_ID, 00, 3E, 0, 0, 1, 1, 1, 1, 1, 0\nCONFIG1, 01, 96, 1, 0, 0, 1, 0, 1, 1, 0\n\
                      CH1SET, 05, 60, 0, 1, 1, 0, 0, 0, 0, 0\n$$$",
                ),
                b'~' => {
                    if self.pending.len() < 2 {
                        return out;
                    }
                    self.pending.pop_front();
                    let code = self.pending[0];
                    let rates = [16000, 8000, 4000, 2000, 1000, 500, 250];
                    match code {
                        b'0'..=b'6' => out.extend_from_slice(
                            format!("Success: Sample rate is {}Hz$$$", rates[usize::from(code - b'0')]).as_bytes(),
                        ),
                        b'~' => out.extend_from_slice(b"Success: Sample rate is 250Hz$$$"),
                        _ => out.extend_from_slice(b"Failure: sample value out of bounds$$$"),
                    }
                }
                b'x' => {
                    let Some(end) = self.pending.iter().position(|&b| b == b'X') else { return out };
                    let cmd: Vec<u8> = self.pending.drain(..=end).collect();
                    out.extend_from_slice(self.channel_reply(&cmd).as_bytes());
                    continue;
                }
                _ => {}
            }
            self.pending.pop_front();
        }
        out
    }

    fn channel_reply(&self, cmd: &[u8]) -> String {
        if let Some(f) = &self.config.channel_failure {
            return format!("Failure: {f}$$$");
        }
        if cmd.len() != 9 {
            return "Failure: too few chars$$$".into();
        }
        let channel = match cmd[1] {
            c @ b'1'..=b'8' => usize::from(c - b'0'),
            c => match b"QWERTYUI".iter().position(|&d| d == c) {
                Some(i) if self.daisy_active => 9 + i,
                _ => return "Failure: Channel number out of range$$$".into(),
            },
        };
        let digits_ok = cmd[2] <= b'1'
            && (b'0'..=b'6').contains(&cmd[3])
            && (b'0'..=b'7').contains(&cmd[4])
            && cmd[5..8].iter().all(|b| *b == b'0' || *b == b'1')
            && cmd[2] >= b'0';
        if !digits_ok {
            return "Failure: invalid channel setting$$$".into();
        }
        format!("Success: Channel set for {channel}$$$")
    }

    fn packet(&self, k: u64, daisy_half: bool) -> [u8; 33] {
        let mut p = [0u8; 33];
        p[0] = 0xA0;
        p[1] = self.counter;
        let values: [i32; 8] = match &self.config.signal {
            Signal::Indexed => {
                let base = if daisy_half { 8 } else { 0 };
                std::array::from_fn(|ch| counts(k, base + ch))
            }
            Signal::Recording(rows) => rows.get(k as usize).map(|r| r.1).unwrap_or([0; 8]),
        };
        for (ch, v) in values.iter().enumerate() {
            p[2 + 3 * ch..5 + 3 * ch].copy_from_slice(&v.to_be_bytes()[1..]);
        }
        let footer = self.config.footers[(k as usize) % self.config.footers.len()];
        match footer {
            0xC0 => {
                // The LIS3DH updates at 25 Hz: one packet in ten has a reading, the others zeros.
                if k % 10 == 0 {
                    for (i, v) in [(k % 1000) as i16, -1000, 16000].iter().enumerate() {
                        p[26 + 2 * i..28 + 2 * i].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            0xC3..=0xC6 => {
                let ms = (self.stream_start.elapsed().as_millis() as u32).wrapping_add(1_000_000);
                p[26] = 0x12;
                p[27] = 0x34;
                p[28..32].copy_from_slice(&ms.to_be_bytes());
            }
            _ => p[26..32].copy_from_slice(b"rawaux"),
        }
        p[32] = footer;
        p
    }

    /// Writes the packets that are due; returns when the next one is.
    fn stream(&mut self, master: &mut File) -> Instant {
        let period = Duration::from_secs_f64(1.0 / self.config.packet_rate);
        loop {
            let due = self.stream_start + period * self.packets_this_stream as u32;
            if due > Instant::now() {
                return due;
            }
            if let Signal::Recording(rows) = &self.config.signal {
                if self.k as usize >= rows.len() {
                    self.streaming = false;
                    return Instant::now() + Duration::from_millis(10);
                }
                self.counter = rows[self.k as usize].0;
            }
            let k = self.k;
            let daisy_half = self.daisy_active && self.counter % 2 == 0;
            let packet = self.packet(k, daisy_half);
            let mut c = self.control.lock().unwrap();
            let skip = c.stall_until.is_some_and(|s| Instant::now() < s) || c.drop_next > 0;
            if skip {
                c.drop_next = c.drop_next.saturating_sub(1);
                c.skipped.push(k);
            } else {
                let garbage = std::mem::take(&mut c.garbage);
                let mut bytes = garbage;
                bytes.extend_from_slice(&packet);
                match master.write(&bytes) {
                    Ok(n) if n == bytes.len() => {
                        let now = Instant::now();
                        c.sent += 1;
                        c.last_write = Some(now);
                        if let Some(times) = c.write_times.as_mut() {
                            times.resize(k as usize + 1, None);
                            times[k as usize] = Some(now);
                        }
                    }
                    _ => c.overflow += 1,
                }
            }
            drop(c);
            self.k += 1;
            self.counter = self.counter.wrapping_add(1);
            self.packets_this_stream += 1;
        }
    }

    fn run(mut self, pty: Pty) {
        let mut pty = Some(pty);
        let mut buf = [0u8; 256];
        loop {
            {
                let mut c = self.control.lock().unwrap();
                if c.quit {
                    return;
                }
                if c.unplugged && pty.is_some() {
                    pty = None;
                    let _ = std::fs::remove_file(&self.link);
                }
                if c.replug {
                    c.replug = false;
                    c.unplugged = false;
                    pty = Some(open_pty(&self.link));
                }
            }
            let Some(p) = pty.as_mut() else {
                // Unplugged: the board keeps sampling, nobody hears it.
                if self.streaming {
                    let period = Duration::from_secs_f64(1.0 / self.config.packet_rate);
                    while self.stream_start + period * self.packets_this_stream as u32 <= Instant::now() {
                        self.control.lock().unwrap().skipped.push(self.k);
                        self.k += 1;
                        self.counter = self.counter.wrapping_add(1);
                        self.packets_this_stream += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let next =
                if self.streaming { self.stream(&mut p.master) } else { Instant::now() + Duration::from_millis(20) };
            let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
            let timeout = PollTimeout::from(wait.as_millis() as u16); // at most 20 ms
            let mut fds = [PollFd::new(p.master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, timeout).unwrap_or(0) > 0 {
                match p.master.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let mut c = self.control.lock().unwrap();
                        c.received.extend_from_slice(&buf[..n]);
                        // During a stall the radio link is down both ways: commands are lost too.
                        if c.stall_until.is_some_and(|s| Instant::now() < s) {
                            continue;
                        }
                        drop(c);
                        self.pending.extend(&buf[..n]);
                        let reply = self.commands();
                        if !reply.is_empty() {
                            let _ = p.master.write_all(&reply);
                        }
                    }
                    // EIO while no one has the slave open (we hold it, so rare) or EAGAIN.
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    }
}

/// Latency (µs) of each block of session `id` (a default Cyton on `emulator`, recording write
/// times) at a `follow` subscriber of `daemon`, for `seconds`: from the last byte of the block's
/// last packet written to the pty to the block's arrival. For the benchmarks.
pub fn follow_latency(daemon: &crate::Daemon, id: &str, emulator: &Emulator, seconds: f64) -> Vec<f64> {
    use bci2token_api::{read_frame, write_frame, FollowOptions, Request};
    let mut sock = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    write_frame(&mut sock, &Request::Follow { id: id.to_string(), options: FollowOptions { samples: true } }).unwrap();
    read_frame(&mut sock).unwrap();
    let scale = scale_uv(24);
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let Some(body) = read_frame(&mut sock).unwrap() else { break };
        let now = Instant::now();
        let ev: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if ev["type"] != "samples" {
            continue;
        }
        let last = ev["data"][0].as_array().unwrap().last().unwrap().as_f64().unwrap();
        let k = (last / scale).round() as u64;
        if let Some(t) = emulator.write_time(k) {
            lat.push(now.duration_since(t).as_secs_f64() * 1e6);
        }
    }
    lat
}

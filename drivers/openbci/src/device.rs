//! The `openbci` driver as a plugin: open = reset and configure the board; read = packets to
//! blocks of µV with exact loss accounting; a lost device is reopened with back-off.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::outage::Outage;
use bci2token_driver_abi::plugin::{Config, Device, Driver, ReadOutcome};
use bci2token_driver_abi::types::{ChannelInfo, DeviceInfo, DriverEvent, StreamInfo};

use crate::board::{self, BoardSetup, WRITE_TIMEOUT};
use crate::commands;
use crate::config::OpenBciConfig;
use crate::packet::{scale_uv, Packet, PacketParser};
use crate::probe;
use crate::rows::{RowAssembler, Step};
use crate::serial::{Port, PortLost};

/// Rows per block at most. One serial read of [`READ_CHUNK`] bytes holds fewer packets.
pub const MAX_BLOCK_FRAMES: usize = 64;
const READ_CHUNK: usize = 1024;
/// Packets per second the dongle delivers: 250 rows of 8 channels, or 125 rows of 16.
const PACKET_RATE: f64 = 250.0;
/// ADS1299 output codes at the rails.
const RAIL_HIGH: i32 = 8_388_607;
const RAIL_LOW: i32 = -8_388_608;

pub struct OpenBciDriver;

impl Driver for OpenBciDriver {
    const NAME: &'static str = "openbci";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Device = OpenBciDevice;

    fn probe() -> Result<Vec<DeviceInfo>, String> {
        Ok(probe::probe(Path::new("/sys"), std::env::var(probe::PORTS_ENV).ok().as_deref()))
    }

    fn open(config: &Config) -> Result<OpenBciDevice, String> {
        let cfg = OpenBciConfig::from_config(config)?;
        let mut port = Port::open(&cfg.port, cfg.allow_pty)?;
        let setup = board::set_up(&mut port, &cfg).map_err(|e| format!("{}: {}", cfg.port.display(), e.message()))?;
        let labels = cfg.channel_labels(setup.channels())?;
        let mut warnings = VecDeque::new();
        if let Some(ms) = probe::latency_timer(Path::new("/sys"), &cfg.port).filter(|&ms| ms > 1) {
            warnings.push_back(DriverEvent::Warning {
                message: format!(
                    "{}: the FTDI latency timer is {ms} ms, so samples arrive in bursts; install the udev rule \
                     70-bci2token-openbci.rules (it sets 1 ms) and replug the dongle",
                    cfg.port.display()
                ),
            });
        }
        Ok(OpenBciDevice::new(cfg, setup, labels, port, warnings))
    }
}

pub struct OpenBciDevice {
    cfg: OpenBciConfig,
    setup: BoardSetup,
    labels: Vec<String>,
    rate: f64,
    port: Option<Port>,
    parser: PacketParser,
    rows: RowAssembler,
    /// Parsed packets not yet turned into rows.
    packets: VecDeque<Packet>,
    /// µV per count of each channel.
    scales: Vec<f64>,
    events: VecDeque<DriverEvent>,
    /// The assembler holds a complete row not yet delivered, preceded by this many lost rows.
    carry: Option<u64>,
    /// Flags for the next block (a gap or reconnection reported before it).
    next_flags: u32,
    /// Stream frame index of the next row: rows delivered plus rows lost.
    next_frame: u64,
    last_byte: Instant,
    streaming: bool,
    outage: Option<Outage>,
    read_buf: Vec<u8>,
    /// Row-major rows of the block being built.
    block: Vec<f32>,
}

impl OpenBciDevice {
    fn new(
        cfg: OpenBciConfig,
        setup: BoardSetup,
        labels: Vec<String>,
        port: Port,
        events: VecDeque<DriverEvent>,
    ) -> Self {
        let channels = setup.channels();
        let rate = if setup.daisy { PACKET_RATE / 2.0 } else { PACKET_RATE };
        OpenBciDevice {
            scales: setup.gains.iter().map(|&g| scale_uv(g)).collect(),
            rows: RowAssembler::new(setup.daisy),
            cfg,
            setup,
            labels,
            rate,
            port: Some(port),
            parser: PacketParser::new(),
            packets: VecDeque::with_capacity(2 * READ_CHUNK / crate::packet::PACKET_LEN + 4),
            events,
            carry: None,
            next_flags: 0,
            next_frame: 0,
            last_byte: Instant::now(),
            streaming: false,
            outage: None,
            read_buf: vec![0; READ_CHUNK],
            block: vec![0.0; MAX_BLOCK_FRAMES * channels],
        }
    }

    fn now_t(&self) -> f64 {
        self.next_frame as f64 / self.rate
    }

    /// Builds a block from the queued packets. `None` when no row is complete yet.
    fn assemble(&mut self, buf: &mut [f32]) -> Result<Option<ReadOutcome>, String> {
        let channels = self.rows.channels();
        let mut frames = 0usize;
        let mut flags = 0u32;
        let mut t = 0.0;
        while frames < MAX_BLOCK_FRAMES {
            let lost = match self.carry.take() {
                Some(lost) => lost,
                None => {
                    let Some(packet) = self.packets.pop_front() else { break };
                    match self.rows.push(&packet) {
                        Step::Row { lost } => lost,
                        Step::Pending | Step::Dropped => continue,
                    }
                }
            };
            if lost > 0 {
                if frames > 0 {
                    // The gap belongs before the next block.
                    self.carry = Some(lost);
                    break;
                }
                let gap =
                    DriverEvent::Gap { t: self.now_t(), seconds: lost as f64 / self.rate, lost_samples: Some(lost) };
                self.next_frame += lost;
                self.next_flags |= block_flags::GAP;
                self.carry = Some(0);
                return Ok(Some(ReadOutcome::Event(gap)));
            }
            if frames == 0 {
                flags = std::mem::take(&mut self.next_flags);
                t = self.now_t();
            }
            let row = &mut self.block[frames * channels..(frames + 1) * channels];
            for ((out, &counts), &scale) in row.iter_mut().zip(self.rows.row()).zip(&self.scales) {
                if counts == RAIL_HIGH || counts == RAIL_LOW {
                    flags |= block_flags::SATURATED;
                }
                *out = (f64::from(counts) * scale) as f32;
            }
            frames += 1;
            self.next_frame += 1;
        }
        if frames == 0 {
            return Ok(None);
        }
        if buf.len() < frames * channels {
            return Err(format!(
                "the read buffer of {} values is smaller than a block of {}",
                buf.len(),
                frames * channels
            ));
        }
        for i in 0..frames {
            for c in 0..channels {
                buf[c * frames + i] = self.block[i * channels + c];
            }
        }
        Ok(Some(ReadOutcome::Block { frames, t, flags }))
    }

    /// The port failed or went silent: report it and start reconnecting (or fail the session).
    fn lose(&mut self, reason: String) -> Result<ReadOutcome, String> {
        self.port = None;
        self.parser.reset();
        self.packets.clear();
        self.rows.restart();
        if !self.cfg.reconnect {
            return Err(format!("device lost: {reason} (reconnect is off)"));
        }
        let t = self.now_t();
        // The data stopped with the last byte, not when that was noticed (a stall is noticed
        // stall_timeout later): the gap and stream time must cover that too.
        self.outage = Some(Outage::new(self.last_byte, t));
        Ok(ReadOutcome::Event(DriverEvent::Disconnected { t, reason: format!("{reason}; reconnecting") }))
    }

    /// One reconnection attempt when it is due.
    fn reconnect(&mut self, timeout: Duration) -> Result<ReadOutcome, String> {
        if !self.outage.as_ref().expect("called during an outage").wait(timeout) {
            return Ok(ReadOutcome::Timeout);
        }
        let attempt = Port::open(&self.cfg.port, self.cfg.allow_pty).and_then(|mut port| {
            let setup = board::set_up(&mut port, &self.cfg).map_err(|e| e.message().to_string())?;
            port.write_all(commands::START, WRITE_TIMEOUT).map_err(|PortLost(m)| m)?;
            Ok((port, setup))
        });
        let (port, setup) = match attempt {
            Ok(ok) => ok,
            Err(message) => return Ok(self.outage.as_mut().expect("still in the outage").failed(message)),
        };
        if setup.channels() != self.setup.channels() {
            return Err(format!(
                "after reconnecting, the board on {} streams {} channels instead of {}: a Daisy was attached or \
                 removed; start a new session",
                self.cfg.port.display(),
                setup.channels(),
                self.setup.channels()
            ));
        }
        let outage = self.outage.take().expect("still in the outage");
        let seconds = outage.seconds();
        self.scales = setup.gains.iter().map(|&g| scale_uv(g)).collect();
        self.setup = setup;
        self.port = Some(port);
        self.last_byte = Instant::now();
        // The outage's length in frames keeps stream time close to wall-clock time; the counter
        // cannot say how many samples it was, so the gap has no exact count.
        self.next_frame += (seconds * self.rate).round() as u64;
        self.next_flags |= block_flags::GAP | block_flags::RECONNECTED;
        self.events.push_back(DriverEvent::Gap { t: outage.t, seconds, lost_samples: None });
        Ok(ReadOutcome::Event(DriverEvent::Reconnected { t: self.now_t(), outage: seconds }))
    }
}

impl Device for OpenBciDevice {
    fn info(&self) -> StreamInfo {
        let mut description = format!("OpenBCI Cyton on {}: {}", self.cfg.port.display(), self.setup.banner.summary());
        if self.setup.daisy {
            description.push_str(" (16 channels at 125 Hz)");
        }
        StreamInfo {
            channels: self.labels.iter().map(|l| ChannelInfo { label: l.clone(), unit: "uV".into() }).collect(),
            sample_rate: self.rate,
            max_block_frames: MAX_BLOCK_FRAMES as u32,
            realtime: true,
            description,
            duration: None,
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let port = self.port.as_mut().ok_or("the device is not connected")?;
        port.write_all(commands::START, WRITE_TIMEOUT).map_err(|PortLost(m)| m)?;
        self.streaming = true;
        self.last_byte = Instant::now();
        Ok(())
    }

    fn read(&mut self, timeout: Duration, buf: &mut [f32]) -> Result<ReadOutcome, String> {
        if let Some(event) = self.events.pop_front() {
            return Ok(ReadOutcome::Event(event));
        }
        if self.outage.is_some() {
            return self.reconnect(timeout);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.assemble(buf)? {
                return Ok(outcome);
            }
            let stall_at = self.last_byte + self.cfg.stall_timeout;
            let now = Instant::now();
            if now >= stall_at {
                let silent = now.duration_since(self.last_byte).as_secs_f64();
                return self.lose(format!(
                    "no data from {} for {silent:.1} s (stall_timeout {} s)",
                    self.cfg.port.display(),
                    self.cfg.stall_timeout.as_secs_f64()
                ));
            }
            if now >= deadline {
                return Ok(ReadOutcome::Timeout);
            }
            let port = self.port.as_mut().expect("connected outside an outage");
            match port.read(&mut self.read_buf, stall_at.min(deadline) - now) {
                Ok(0) => {}
                Ok(n) => {
                    self.last_byte = Instant::now();
                    let packets = &mut self.packets;
                    self.parser.push(&self.read_buf[..n], |p| packets.push_back(p));
                }
                Err(PortLost(reason)) => return self.lose(reason),
            }
        }
    }

    fn stop(&mut self) -> Result<(), String> {
        self.streaming = false;
        if let Some(port) = self.port.as_mut() {
            // The board may already be gone; stopping must still succeed.
            let _ = port.write_all(commands::STOP, WRITE_TIMEOUT);
        }
        Ok(())
    }
}

impl Drop for OpenBciDevice {
    /// Never leave a board streaming behind us.
    fn drop(&mut self) {
        if self.streaming {
            let _ = self.stop();
        }
    }
}

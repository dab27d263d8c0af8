//! The `brainflow` driver as a plugin: open = `prepare_session`, start = `start_stream`, read =
//! the samples in BrainFlow's ring (`get_board_data_count` + `get_board_data`) as blocks of the
//! chosen rows, with gaps from the board's package counter and markers as annotations; a board
//! that stops sending is released and prepared again with back-off, as the openbci driver does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::outage::Outage;
use bci2token_driver_abi::plugin::{Config, Device, Driver, ReadOutcome};
use bci2token_driver_abi::serial::usb_ports;
use bci2token_driver_abi::types::{ChannelInfo, DeviceInfo, DriverEvent, StreamInfo};

use crate::blocks::Blocks;
use crate::boards::{self, Channel, Descr};
use crate::config::BrainFlowConfig;
use crate::library::{BoardController, Session};

/// How often BrainFlow's ring is looked at while it is empty: it has no call that waits, and 1 ms
/// keeps a block's latency near the board's own.
const POLL: Duration = Duration::from_millis(1);
/// BrainFlow's ring, in seconds of samples: reads empty it every few milliseconds, so this only
/// bridges a stalled consumer (the daemon's own buffers are behind it).
const RING_SECONDS: f64 = 30.0;

pub struct BrainFlowDriver;

impl Driver for BrainFlowDriver {
    const NAME: &'static str = "brainflow";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Device = BrainFlowDevice;

    /// The boards the library knows, then the USB serial ports present (for serial boards).
    fn probe() -> Result<Vec<DeviceInfo>, String> {
        let lib = BoardController::load(None)?;
        let version = lib.version();
        let mut list: Vec<DeviceInfo> = boards::catalogue(lib)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|b| {
                let mut config = serde_json::Map::new();
                config.insert("board".into(), b.id.to_string().into());
                let rate = b.rate.map_or("the master board's rate".to_string(), |r| format!("{r} Hz"));
                let presets: Vec<&str> = b.presets.iter().map(|&p| boards::preset_name(p)).collect();
                DeviceInfo {
                    id: format!("board {}", b.id),
                    description: format!(
                        "BrainFlow {version}: {} (board id {}), {} EEG channels at {rate}, presets {}",
                        b.name,
                        b.id,
                        b.eeg,
                        presets.join(", ")
                    ),
                    config,
                }
            })
            .collect();
        for port in usb_ports(std::path::Path::new("/sys")) {
            let mut config = serde_json::Map::new();
            config.insert("serial_port".into(), port.port.clone().into());
            list.push(DeviceInfo {
                id: port.port.clone(),
                description: format!(
                    "USB serial port ({}:{}{}) for a serial board: add --set board=NAME",
                    port.vendor,
                    port.product,
                    port.name.map(|n| format!(", {n}")).unwrap_or_default()
                ),
                config,
            });
        }
        Ok(list)
    }

    fn open(config: &Config) -> Result<BrainFlowDevice, String> {
        let mut cfg = BrainFlowConfig::from_config(config)?;
        let lib = BoardController::load(cfg.library.as_deref())?;
        let catalogue = boards::catalogue(lib).map_err(|e| e.to_string())?;
        let board = boards::resolve(&catalogue, "board", &cfg.board)?;
        // BrainFlow writes the master board's rows for these two boards only, and the board's own
        // rows for every other: a master for another board would size the buffer wrongly.
        let master = match (&cfg.master_board, board) {
            (Some(m), boards::PLAYBACK | boards::STREAMING) => Some(boards::resolve(&catalogue, "master_board", m)?),
            (Some(_), _) => {
                return Err("config key `master_board` is for BrainFlow's PlayBack (-3) and Streaming (-2) boards \
                            only; leave it out"
                    .into())
            }
            (None, boards::PLAYBACK | boards::STREAMING) => {
                return Err("BrainFlow's playback and streaming boards need `master_board`: the board whose rows the \
                            data has (for example --set master_board=Cyton)"
                    .into())
            }
            (None, _) => None,
        };
        // The rows are those of the master board where there is one.
        let layout = master.unwrap_or(board);
        let descr = lib
            .board_descr(layout, cfg.preset)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("config key `preset`: board {layout} has no {} preset", boards::preset_name(cfg.preset))
            })
            .and_then(|json| Descr::parse(&json))?;
        let rate = descr.sampling_rate.filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| {
            format!("BrainFlow gives no sampling rate for board {layout} preset {}", boards::preset_name(cfg.preset))
        })?;
        let rows = descr.num_rows.ok_or_else(|| format!("BrainFlow gives no row count for board {layout}"))?;
        let mut channels = boards::channels(&descr, cfg.rows);
        if let Some(bad) = channels.iter().find(|c| c.row >= rows) {
            return Err(format!("BrainFlow's description of board {layout} names row {} of {rows}", bad.row));
        }
        if channels.is_empty() {
            return Err(format!(
                "board {} ({}) has no {} rows in its {} preset; try --set channels=all or another preset",
                layout,
                descr.name,
                match cfg.rows {
                    boards::Rows::Eeg => "EEG",
                    boards::Rows::Exg => "EEG, EMG, ECG or EOG",
                    boards::Rows::All => "data",
                },
                boards::preset_name(cfg.preset)
            ));
        }
        if let Some(labels) = &cfg.labels {
            if labels.len() != channels.len() {
                return Err(format!(
                    "config key `labels`: {} labels for {} channels ({})",
                    labels.len(),
                    channels.len(),
                    channels.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join(",")
                ));
            }
            for (c, l) in channels.iter_mut().zip(labels) {
                c.label = l.clone();
            }
        }
        let bookkeeping = [descr.package_num_channel, descr.marker_channel, descr.timestamp_channel];
        if bookkeeping.iter().flatten().any(|&r| r >= rows) {
            return Err(format!("BrainFlow's description of board {layout} names a row beyond its {rows}"));
        }
        cfg.copy_files()?;
        let session = lib.prepare(board, &cfg.params_json(master)).map_err(|e| prepare_error(&cfg, e))?;
        let max_block = ((rate / 50.0).ceil() as usize).max(64);
        let name = catalogue.iter().find(|b| b.id == board).map_or("?", |b| b.name.as_str());
        let rows_of = match master {
            Some(m) => format!(" with the rows of {} (board id {m})", descr.name),
            None => String::new(),
        };
        let on = cfg.port.as_ref().map(|p| format!(", on {}", p.display())).unwrap_or_default();
        let description = format!(
            "BrainFlow {}: {name} (board id {board}){rows_of}, {} preset{on}",
            lib.version(),
            boards::preset_name(cfg.preset),
        );
        let channel_rows = channels.iter().map(|c| c.row).collect();
        Ok(BrainFlowDevice {
            lib,
            board,
            playback: board == boards::PLAYBACK,
            master,
            session: Some(session),
            lost: None,
            preset: cfg.preset,
            rows,
            rate,
            channels,
            max_block,
            ring: ((rate * RING_SECONDS) as usize).max(4 * max_block),
            description,
            stall_timeout: cfg.stall_timeout,
            reconnect: cfg.reconnect,
            cfg,
            blocks: Blocks::new(channel_rows, descr.package_num_channel, descr.marker_channel, rate, max_block),
            events: VecDeque::new(),
            last_data: Instant::now(),
            outage: None,
        })
    }
}

/// A failed `prepare_session`, with what to check for the board's kind of connection.
fn prepare_error(cfg: &BrainFlowConfig, e: crate::library::BfError) -> String {
    let on = cfg.port.as_ref().map(|p| format!(" on {}", p.display())).unwrap_or_default();
    format!("cannot open board {:?}{on}: {e}", cfg.board)
}

pub struct BrainFlowDevice {
    lib: &'static BoardController,
    board: i32,
    /// BrainFlow's playback board: when its file is played, the stream ends (preparing it again
    /// would play the file from the start).
    playback: bool,
    /// The master board of PlayBack or Streaming.
    master: Option<i32>,
    session: Option<Session>,
    /// The session of a board just lost, released at the first attempt to reconnect.
    lost: Option<Session>,
    preset: i32,
    /// Rows BrainFlow delivers per sample.
    rows: usize,
    rate: f64,
    channels: Vec<Channel>,
    max_block: usize,
    ring: usize,
    description: String,
    stall_timeout: Duration,
    reconnect: bool,
    /// The session's settings, and the memory files BrainFlow reads through /proc/self/fd (after
    /// the sessions above: released before those close).
    cfg: BrainFlowConfig,
    /// Samples taken from BrainFlow's ring, on their way to blocks.
    blocks: Blocks,
    events: VecDeque<DriverEvent>,
    last_data: Instant,
    outage: Option<Outage>,
}

impl BrainFlowDevice {
    /// The board went silent: report it and start reconnecting (or end the session).
    fn lose(&mut self, reason: String) -> Result<ReadOutcome, String> {
        // Released at the first reconnection attempt, after the loss is reported: BrainFlow's
        // release stops its reader thread and closes the port, which takes a while.
        self.lost = self.session.take();
        self.blocks.restart();
        if !self.reconnect {
            return Err(format!("device lost: {reason} (reconnect is off)"));
        }
        let t = self.blocks.now_t();
        self.outage = Some(Outage::new(self.last_data, t));
        Ok(ReadOutcome::Event(DriverEvent::Disconnected { t, reason: format!("{reason}; reconnecting") }))
    }

    /// One attempt to prepare and start the board again, when it is due.
    fn reconnect(&mut self, timeout: Duration) -> Result<ReadOutcome, String> {
        // Releasing frees the port and BrainFlow's slot for this board.
        self.lost = None;
        if !self.outage.as_ref().expect("called during an outage").wait(timeout) {
            return Ok(ReadOutcome::Timeout);
        }
        let attempt = self.cfg.check_port().and_then(|()| {
            let params = self.cfg.params_json(self.master);
            let mut session = self.lib.prepare(self.board, &params).map_err(|e| e.to_string())?;
            session.start(self.ring).map_err(|e| e.to_string())?;
            Ok(session)
        });
        let session = match attempt {
            Ok(s) => s,
            Err(message) => return Ok(self.outage.as_mut().expect("still in the outage").failed(message)),
        };
        let outage = self.outage.take().expect("still in the outage");
        let seconds = outage.seconds();
        self.session = Some(session);
        self.last_data = Instant::now();
        // Stream time stays near wall-clock time; how many samples the outage held is not known.
        self.blocks.skip(seconds, block_flags::GAP | block_flags::RECONNECTED);
        self.events.push_back(DriverEvent::Gap { t: outage.t, seconds, lost_samples: None });
        Ok(ReadOutcome::Event(DriverEvent::Reconnected { t: self.blocks.now_t(), outage: seconds }))
    }
}

impl Device for BrainFlowDevice {
    fn info(&self) -> StreamInfo {
        StreamInfo {
            channels: self
                .channels
                .iter()
                .map(|c| ChannelInfo { label: c.label.clone(), unit: c.unit.clone() })
                .collect(),
            sample_rate: self.rate,
            max_block_frames: self.max_block as u32,
            realtime: true,
            description: self.description.clone(),
            duration: None,
        }
    }

    fn start(&mut self) -> Result<(), String> {
        let session = self.session.as_mut().ok_or("the board is not connected")?;
        session.start(self.ring).map_err(|e| e.to_string())?;
        self.last_data = Instant::now();
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
            if !self.blocks.is_empty() {
                return self.blocks.next(buf, &mut self.events);
            }
            let session = self.session.as_ref().ok_or("the board is not connected")?;
            let waiting = match session.count(self.preset) {
                Ok(n) => n,
                Err(e) => return self.lose(e.to_string()),
            };
            if waiting > 0 {
                let n = waiting.min(self.max_block);
                if let Err(e) = session.take(n, self.preset, self.rows, self.blocks.buffer()) {
                    return self.lose(e.to_string());
                }
                self.blocks.staged(n);
                self.last_data = Instant::now();
                continue;
            }
            let now = Instant::now();
            let stall_at = self.last_data + self.stall_timeout;
            if now >= stall_at {
                if self.playback {
                    // The file has been played (BrainFlow's playback does not say so otherwise).
                    return Ok(ReadOutcome::End);
                }
                let silent = now.duration_since(self.last_data).as_secs_f64();
                return self.lose(format!(
                    "no data from the board for {silent:.1} s (stall_timeout {} s)",
                    self.stall_timeout.as_secs_f64()
                ));
            }
            if now >= deadline {
                return Ok(ReadOutcome::Timeout);
            }
            std::thread::sleep(POLL.min(deadline - now).min(stall_at - now));
        }
    }

    fn stop(&mut self) -> Result<(), String> {
        if let Some(s) = self.session.as_mut() {
            // The board may be gone already; stopping still succeeds, and the release follows.
            let _ = s.stop();
        }
        Ok(())
    }
}

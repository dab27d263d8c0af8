//! Bringing a board from an unknown state to configured and ready to stream.
//!
//! `s` (a board may still be streaming for a session that crashed), drain, `v` (soft reset, which
//! also restores the channel defaults), the banner up to `$$$`, then only the commands the config
//! asks for: `c`/`C`, `~N`, `x…X` per configured channel, each reply checked.

use std::time::Duration;

use crate::banner::Banner;
use crate::commands::{self, check_reply, show};
use crate::config::{Daisy, OpenBciConfig};
use crate::packet::CHANNELS;
use crate::serial::{Port, PortLost};

/// How long writes may take before the port counts as dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What start-up found and set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSetup {
    pub banner: Banner,
    pub daisy: bool,
    /// Gain of every streamed channel, for scaling.
    pub gains: Vec<u8>,
}

impl BoardSetup {
    pub fn channels(&self) -> usize {
        if self.daisy {
            2 * CHANNELS
        } else {
            CHANNELS
        }
    }
}

/// Why start-up failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// The port failed: the device may come back.
    Lost(PortLost),
    /// The board answered wrongly or not at all: retrying the same thing will not help.
    Board(String),
}

impl From<PortLost> for SetupError {
    fn from(e: PortLost) -> Self {
        SetupError::Lost(e)
    }
}

impl SetupError {
    pub fn message(&self) -> &str {
        match self {
            SetupError::Lost(PortLost(m)) | SetupError::Board(m) => m,
        }
    }
}

/// Sends one command and returns its reply (the text before `$$$`).
fn ask(port: &mut Port, command: &[u8], timeout: Duration) -> Result<String, SetupError> {
    port.write_all(command, WRITE_TIMEOUT)?;
    port.read_reply(timeout)?.ok_or_else(|| {
        SetupError::Board(format!(
            "no reply to {} from the board on {} within {:.1} s (a reply ends in \"$$$\")",
            show(command),
            port.path().display(),
            timeout.as_secs_f64()
        ))
    })
}

/// Stops any stream, resets and configures the board. Leaves it stopped.
pub fn set_up(port: &mut Port, cfg: &OpenBciConfig) -> Result<BoardSetup, SetupError> {
    port.write_all(commands::STOP, WRITE_TIMEOUT)?;
    port.drain(Duration::from_millis(60), Duration::from_secs(2))?;

    let reply = ask(port, commands::RESET, cfg.reply_timeout).map_err(|e| match e {
        SetupError::Board(m) => SetupError::Board(format!(
            "{m}; is the board switched on (PC position) and the dongle's switch on GPIO6, and are board and dongle \
             on the same radio channel?"
        )),
        lost => lost,
    })?;
    // Bytes of a stream that was still in flight may precede the banner.
    let text = reply.find("OpenBCI").map_or(reply.as_str(), |i| &reply[i..]);
    let banner = Banner::parse(text).map_err(SetupError::Board)?;

    let daisy = match cfg.daisy {
        Daisy::Auto => banner.has_daisy(),
        Daisy::On => {
            let reply = ask(port, commands::SIXTEEN_CHANNELS, cfg.reply_timeout)?;
            if reply.to_ascii_lowercase().contains("no daisy") || !reply.contains("16") {
                return Err(SetupError::Board(format!(
                    "daisy=on, but the board answered `C` with {:?}: no Daisy module is attached",
                    reply.trim()
                )));
            }
            true
        }
        Daisy::Off => {
            ask(port, commands::EIGHT_CHANNELS, cfg.reply_timeout)?;
            false
        }
    };
    let channels = if daisy { 2 * CHANNELS } else { CHANNELS };

    if let Some(rate) = cfg.sample_rate {
        let command = commands::sample_rate_command(rate).expect("rate validated by the config");
        let reply = ask(port, &command, cfg.reply_timeout)?;
        check_reply(&show(&command), &reply).map_err(SetupError::Board)?;
    }

    let mut gains = vec![commands::ChannelSettings::default().gain; channels];
    for (index, settings) in &cfg.channels {
        if *index >= channels {
            return Err(SetupError::Board(format!(
                "config key `ch{}`: the board streams {channels} channels{}",
                index + 1,
                if daisy { "" } else { " (no Daisy)" }
            )));
        }
        let command = settings.command(*index);
        let reply = ask(port, &command, cfg.reply_timeout)?;
        check_reply(&show(&command), &reply).map_err(SetupError::Board)?;
        gains[*index] = settings.gain;
    }
    Ok(BoardSetup { banner, daisy, gains })
}

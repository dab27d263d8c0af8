//! The board's command bytes and the replies they get (OpenBCI Cyton SDK, firmware v2/v3).

/// Stop streaming.
pub const STOP: &[u8] = b"s";
/// Start streaming.
pub const START: &[u8] = b"b";
/// Soft reset: the board prints its banner, ending in `$$$`.
pub const RESET: &[u8] = b"v";
/// Use the on-board 8 channels only.
pub const EIGHT_CHANNELS: &[u8] = b"c";
/// Use all 16 channels (needs the Daisy).
pub const SIXTEEN_CHANNELS: &[u8] = b"C";

/// Gains the ADS1299 offers, in the order of their command digit `0`..=`6`.
pub const GAINS: [u8; 7] = [1, 2, 4, 6, 8, 12, 24];

/// Input multiplexer settings, in the order of their command digit `0`..=`7`.
pub const INPUTS: [&str; 8] = ["normal", "shorted", "bias_meas", "mvdd", "temp", "testsig", "bias_drp", "bias_drn"];

/// Sample rates of the `~N` command, N = `0`..=`6`.
pub const SAMPLE_RATES: [u32; 7] = [16000, 8000, 4000, 2000, 1000, 500, 250];

/// The settings of one channel, as the `x…X` command sets them all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSettings {
    pub power: bool,
    pub gain: u8,
    /// Index into [`INPUTS`].
    pub input: u8,
    pub bias: bool,
    pub srb2: bool,
    pub srb1: bool,
}

impl Default for ChannelSettings {
    /// The board's defaults after a reset: on, gain 24, normal input, in the bias, SRB2 connected.
    fn default() -> Self {
        ChannelSettings { power: true, gain: 24, input: 0, bias: true, srb2: true, srb1: false }
    }
}

/// The character naming channel `index` (0-based) in commands: `1`..`8`, then `Q W E R T Y U I`.
pub fn channel_char(index: usize) -> u8 {
    const DAISY: &[u8; 8] = b"QWERTYUI";
    if index < 8 {
        b'1' + index as u8
    } else {
        DAISY[index - 8]
    }
}

impl ChannelSettings {
    /// `x` CHANNEL POWER_DOWN GAIN INPUT BIAS SRB2 SRB1 `X`, e.g. `x1060110X`.
    pub fn command(&self, index: usize) -> [u8; 9] {
        let gain = GAINS.iter().position(|&g| g == self.gain).expect("gain validated by the config") as u8;
        let bit = |b: bool| if b { b'1' } else { b'0' };
        [
            b'x',
            channel_char(index),
            bit(!self.power), // the firmware's field is POWER_DOWN
            b'0' + gain,
            b'0' + self.input,
            bit(self.bias),
            bit(self.srb2),
            bit(self.srb1),
            b'X',
        ]
    }
}

/// `~N` for a sample rate in [`SAMPLE_RATES`].
pub fn sample_rate_command(rate: u32) -> Option<[u8; 2]> {
    SAMPLE_RATES.iter().position(|&r| r == rate).map(|i| [b'~', b'0' + i as u8])
}

/// The replies' convention: `Success: …` or `Failure: …`, then `$$$`.
pub fn check_reply(command: &str, reply: &str) -> Result<(), String> {
    let text = reply.trim();
    if let Some(pos) = text.find("Failure") {
        let failure = text[pos..].lines().next().unwrap_or("Failure").trim();
        return Err(format!("the board refused {command}: {failure}"));
    }
    if text.contains("Success") {
        return Ok(());
    }
    Err(format!("the board answered {command} with {text:?}, not \"Success: …\""))
}

/// Printable form of a command for messages (`x1060110X`, `~6`).
pub fn show(command: &[u8]) -> String {
    format!("`{}`", String::from_utf8_lossy(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_commands_follow_the_sdk() {
        assert_eq!(&ChannelSettings::default().command(0), b"x1060110X");
        let s = ChannelSettings { power: false, gain: 1, input: 5, bias: false, srb2: false, srb1: true };
        assert_eq!(&s.command(15), b"xI105001X");
        assert_eq!(channel_char(8), b'Q');
        assert_eq!(sample_rate_command(250), Some(*b"~6"));
        assert_eq!(sample_rate_command(300), None);
    }

    #[test]
    fn replies_are_checked() {
        assert!(check_reply("`x1060110X`", "Success: Channel set for 1").is_ok());
        let err = check_reply("`x9060110X`", "Failure: too few chars").unwrap_err();
        assert_eq!(err, "the board refused `x9060110X`: Failure: too few chars");
        assert!(check_reply("`~6`", "hmm").unwrap_err().contains("\"hmm\""));
    }
}

//! JSON documents exchanged through the ABI. They are strings on the wire so that fields can be
//! added without changing the C layout.

use serde::{Deserialize, Serialize};

/// Something a driver could open now (a serial port, an LSL stream, a file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Stable identifier (port path, stream source id, file path).
    pub id: String,
    /// What a person needs to recognise it.
    pub description: String,
    /// Config keys that open exactly this device with `session start --set KEY=VALUE`.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// One channel of an open stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub label: String,
    /// `uV` for every voltage channel (drivers convert); other units as the device names them.
    pub unit: String,
}

/// What an open device delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub channels: Vec<ChannelInfo>,
    pub sample_rate: f64,
    /// Largest number of frames one block can carry; the host sizes its buffer from it.
    pub max_block_frames: u32,
    /// True for live devices (the source does not wait for anyone). False for sources that can go
    /// as fast as their consumer, like file replay at `speed=0`.
    pub realtime: bool,
    /// Human description: file name, board and firmware, stream name.
    #[serde(default)]
    pub description: String,
    /// Length of the stream in seconds when known (files).
    #[serde(default)]
    pub duration: Option<f64>,
}

impl StreamInfo {
    /// Floats a read buffer must hold: channels × max_block_frames.
    pub fn buffer_len(&self) -> usize {
        self.channels.len() * self.max_block_frames as usize
    }
}

/// A non-sample event a driver reports in stream order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverEvent {
    /// A marker from the recording or the simulated user (EDF+ annotation, trigger, intent).
    Annotation { onset: f64, duration: Option<f64>, text: String },
    /// Samples are missing: `seconds` of signal starting at `t`, `lost_samples` frames when known.
    Gap { t: f64, seconds: f64, lost_samples: Option<u64> },
    /// Something a person should know that does not stop the stream.
    Warning { message: String },
    /// The device stopped delivering (unplugged, switched off, out of radio range) at stream time
    /// `t`, and the driver is trying to get it back; nothing arrives until [`Reconnected`]. The host
    /// does not apply its own stall time-out meanwhile. (ABI 1.1)
    ///
    /// [`Reconnected`]: DriverEvent::Reconnected
    Disconnected { t: f64, reason: String },
    /// The device is back after `outage` seconds; `t` is the stream time streaming resumes at. A
    /// `Gap` event for the outage follows, and the next block is flagged GAP and RECONNECTED. (ABI 1.1)
    Reconnected { t: f64, outage: f64 },
}

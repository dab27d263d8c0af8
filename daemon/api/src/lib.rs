//! Everything `bci2tokend` and `bci2tokenctl` share: the control-socket messages, their framing,
//! the event stream of `follow`, error codes, well-known paths and how the protocol's Unix times
//! read as dates. Nothing else lives here.
//! The wire protocol is documented in `docs/control-protocol.md`.

pub mod dbus;
pub mod dbus_args;
pub mod event;
pub mod framing;
pub mod message;
pub mod observe;
pub mod paths;
pub mod time;

pub use event::{ChannelMajor, ChannelStats, Event, SessionState};
pub use framing::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};
pub use message::*;
pub use observe::{BreakerState, HealthReport, Quality, QualityFlag, Verdict};

/// Version of the control-socket protocol; reported by `status`. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

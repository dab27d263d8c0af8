//! The `lsl` driver: reads any numeric Lab Streaming Layer stream (an amplifier's LSL app, a
//! pylsl script, another bci2tokend) as a session's device. liblsl is loaded at run time
//! (bci2token-liblsl); without it the plugin still loads and says how to provide it.
//!
//! - [`device`]: resolving, the inlet, time correction, gaps and outages.

pub mod device;

bci2token_driver_abi::export_driver!(device::LslDriver);

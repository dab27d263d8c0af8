//! The `openbci` driver: the OpenBCI Cyton (8 channels at 250 Hz) and Cyton + Daisy (16 channels
//! at 125 Hz) over the USB dongle's serial port.
//!
//! - [`packet`]: the 33-byte packet and a parser that resynchronises after garbage (pure).
//! - [`rows`]: packets to rows, Daisy pairing and exact loss counts from the sample counter (pure).
//! - [`banner`], [`commands`]: the board's text protocol (pure).
//! - [`config`]: session settings.
//! - [`serial`]: the port through `tokio-serial`; [`board`]: start-up; [`probe`]: the dongles in sysfs.
//! - [`device`]: the plugin glue, stall detection and reconnection.

pub mod banner;
pub mod board;
pub mod commands;
pub mod config;
pub mod device;
pub mod packet;
pub mod probe;
pub mod rows;
pub mod serial;

bci2token_driver_abi::export_driver!(device::OpenBciDriver);

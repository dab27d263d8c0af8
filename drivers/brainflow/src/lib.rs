//! The `brainflow` driver: every board BrainFlow (MIT) supports, through its C API in
//! `libBoardController.so`, loaded at run time. Nothing of BrainFlow is needed to build; without
//! it the plugin still loads, and `devices` and `session start` say how to provide it.
//!
//! - [`library`]: finding and loading the library, its calls and their exit codes.
//! - [`blocks`]: samples taken from BrainFlow's ring to blocks, gaps and markers.
//! - [`boards`]: the boards the library knows (`get_board_descr`) and which of a board's rows
//!   become a session's channels.
//! - [`config`]: the session keys, and BrainFlow's input parameters built from them.
//! - [`memory_file`]: a passed file copied into memory, for BrainFlow to open by name.
//! - [`device`]: the plugin's device: streaming, gaps from the package counter, markers, stalls
//!   and reconnection.

pub mod blocks;
pub mod boards;
pub mod config;
pub mod device;
pub mod library;
pub mod memory_file;

bci2token_driver_abi::export_driver!(device::BrainFlowDriver);

//! The `replay` driver: plays EDF/EDF+/BDF/BDF+, OpenBCI GUI and XDF recordings as if they were live.
//! The readers are plain Rust modules (usable and tested without the plugin); [`device`] is the
//! plugin glue.

pub mod edf;
pub mod format_error;
pub mod openbci_txt;
pub mod recording;
pub mod xdf;

pub mod device;

bci2token_driver_abi::export_driver!(device::ReplayDriver);

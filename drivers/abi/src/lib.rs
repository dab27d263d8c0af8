//! The C ABI between `bci2tokend` and its driver plugins.
//!
//! A plugin is a shared library that exports one symbol, [`ENTRY_SYMBOL`], returning a pointer to a
//! static [`ffi::DriverVTable`]. The table starts with an [`ffi::AbiHeader`] whose layout never
//! changes, so the host can check the ABI version before it touches anything else.
//!
//! - [`ffi`]: the `#[repr(C)]` types that cross the boundary.
//! - [`types`]: the JSON documents that cross it as strings (device lists, stream descriptions, events).
//! - [`plugin`]: what a plugin author implements ([`plugin::Driver`], [`plugin::Device`]) and the
//!   [`export_driver!`] macro that generates the `extern "C"` shims, each wrapped in `catch_unwind`.
//! - [`host`]: the safe wrapper the daemon uses to load plugins with `libloading` and drive devices.
//! - [`serial`]: which device files are serial lines, and the USB serial ports sysfs shows.
//! - [`outage`]: a lost device's reconnection attempts and their back-off.
//! - [`units`]: channel units of LSL/XDF stream descriptions to µV, for the drivers that read them.

pub mod ffi;
pub mod host;
pub mod outage;
pub mod plugin;
pub mod serial;
pub mod types;
pub mod units;

/// Major version: bumped for any incompatible change of the table or of a function's meaning.
pub const ABI_MAJOR: u32 = 1;
/// Minor version: bumped when fields are appended to the table (older hosts ignore them) or when
/// `open` may receive more. 1.2: `open` receives host keys (`_…`, see `plugin::is_host_key`),
/// which a 1.1 plugin would refuse as unknown, so the host passes them only from 1.2 on.
pub const ABI_MINOR: u32 = 2;
/// The one symbol every plugin exports (`extern "C" fn() -> *const DriverVTable`).
pub const ENTRY_SYMBOL: &str = "bci2token_driver_entry";

//! Pure signal processing for bci2token: no I/O, no allocation in the steady state.
//! Sample blocks are channel-major (`data[ch * frames + i]`), in µV, `f32` or `f64` (see
//! [`Sample`]); arithmetic is done in `f64`.
//!
//! - [`design`]: Butterworth and notch filter design as second-order sections (as scipy does it).
//! - [`filter`]: streaming multichannel second-order-section filtering (as `sosfilt`).
//! - [`reference`]: common average reference.
//! - [`window`]: sliding windows with hop, as `ndarray` arrays.
//! - [`spectrum`]: Welch PSD (as `scipy.signal.welch`) and band power.
//! - [`quality`]: per-channel quality flags (flat, railed, line noise, out of range).
//! - [`pipeline`]: a model's `[preprocessing]` table and the processors that apply it.
//! - [`stats`]: per-window channel statistics for session status.

pub mod design;
pub mod filter;
pub mod pipeline;
pub mod quality;
pub mod reference;
mod sample;
pub mod spectrum;
pub mod stats;
pub mod window;

pub use ndarray;
pub use sample::Sample;

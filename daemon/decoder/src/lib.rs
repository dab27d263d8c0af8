//! Model packages and the TorchScript decoder of bci2tokend.
//!
//! - [`manifest`]: `model.toml`, validated, with errors that name the file and the key.
//! - [`model`]: a loaded TorchScript model (libtorch through `tch`) on CPU or CUDA, warmed up.
//! - [`fit`]: whether a model fits a device's stream (channels, rate) and how to map channels.
//! - [`engine`]: the decode thread that batches windows from many sessions into one forward pass.
//! - [`traced`]: TorchScript modules traced in Rust for the models the daemon fits.
//! - [`vectors`]: the test vectors shipped beside each model.

/// `model.toml` (the crate `bci2token-manifest`, which has no libtorch).
pub use bci2token_manifest as manifest;

pub mod bridge;
pub mod ctc;
pub mod engine;
pub mod fit;
pub mod model;
pub mod traced;
pub mod vectors;

pub use manifest::{DevicePreference, Manifest, ManifestError};
pub use model::{Model, ModelError};

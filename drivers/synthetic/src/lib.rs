//! The `synthetic` driver: a simulated EEG amplifier (pink noise, alpha, mains, SSVEP responses
//! following a script of intents), deterministic per seed. [`generator`] is the signal model,
//! [`device`] the plugin glue.

pub mod device;
pub mod generator;
pub mod rng;
pub mod script;

bci2token_driver_abi::export_driver!(device::SyntheticDriver);

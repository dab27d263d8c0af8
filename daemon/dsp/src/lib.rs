//! Pure signal processing for bci2token: no I/O, no allocation in the steady state.
//! Sample blocks are channel-major (`data[ch * frames + i]`), in µV.

pub mod stats;

//! Arbitrary bytes as a driver host's reply frame, which the daemon cannot trust more than the
//! plugin: parsed as the daemon parses it, and a stream description checked as it checks one.
#![no_main]

use bci2token_driver_abi::host::check_stream;
use bci2token_driver_host::{parse_frame, HostReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(HostReply::Opened { info, .. }) = parse_frame::<HostReply>(data) {
        if check_stream(&info).is_ok() {
            assert!(!info.channels.is_empty() && info.sample_rate > 0.0 && info.max_block_frames > 0);
            assert!(info.buffer_len() <= bci2token_driver_abi::host::MAX_BLOCK_FLOATS);
        }
    }
});

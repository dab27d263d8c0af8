//! Arbitrary bytes as what a client sends on the control socket: frames (length-prefixed), each
//! parsed as a request. A frame is never longer than the limit; a request that parses encodes and
//! parses back to itself.
#![no_main]

use bci2token_api::framing::{encode, read_frame};
use bci2token_api::message::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    for _ in 0..64 {
        let frame = match read_frame(&mut input) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return,
        };
        assert!(frame.len() <= data.len());
        if let Ok(request) = serde_json::from_slice::<Request>(&frame) {
            let again = encode(&request).expect("a parsed request encodes");
            let back: Request = serde_json::from_slice(&again[4..]).expect("and parses back");
            assert_eq!(back, request);
        }
    }
});

//! Arbitrary text as the board's reply to `v` and to configuration commands.
#![no_main]

use bci2token_driver_openbci::banner::Banner;
use bci2token_driver_openbci::commands::check_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(b) = Banner::parse(&text) {
        assert!(!b.board.is_empty() && b.board.chars().count() <= 120);
        assert!(b.firmware.as_ref().is_none_or(|f| f.chars().count() <= 40));
        let _ = b.summary();
    }
    match check_reply("`x1060110X`", &text) {
        Ok(()) => assert!(text.contains("Success") && !text.contains("Failure")),
        Err(m) => assert!(m.starts_with("the board")),
    }
});

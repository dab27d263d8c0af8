//! Arbitrary bytes as a recording the replay driver opens by content (EDF, BDF, XDF, OpenBCI GUI
//! text; the first byte picks the file name's extension, the fallback when the content does not
//! tell), read to the end. Checks what must hold for any file, not only that nothing panics.
#![no_main]

use std::io::{Seek, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use bci2token_driver_replay::recording::{open_input, Input};
use bci2token_driver_replay::xdf::StreamChoice;
use libfuzzer_sys::fuzz_target;

/// Blocks larger than this are skipped here (the daemon refuses above 64 Mi floats; allocating
/// that per input would only slow the fuzzer down).
const MAX_FLOATS: usize = 1 << 22;

fuzz_target!(|data: &[u8]| {
    let Some((pick, content)) = data.split_first() else { return };
    let ext = ["edf", "bdf", "xdf", "txt", "csv", "bin"][usize::from(*pick) % 6];
    // In memory: a memfd, opened again through /proc like a passed descriptor.
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"recording".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a new descriptor nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(content).unwrap();
    file.rewind().unwrap();
    let input = Input::from_file(PathBuf::from(format!("fuzz.{ext}")), file);
    let Ok(mut recording) = open_input(input, None, &StreamChoice::default()) else { return };
    let channels = recording.channels().len();
    let max = recording.max_chunk_frames();
    assert!(channels > 0, "a recording opens with channels");
    assert!(recording.sample_rate().is_finite() && recording.sample_rate() > 0.0);
    let Some(floats) = channels.checked_mul(max).filter(|f| *f <= MAX_FLOATS) else { return };
    let mut out = vec![0f32; floats];
    for _ in 0..10_000 {
        match recording.next_chunk(&mut out) {
            Ok(Some(chunk)) => assert!(chunk.frames <= max, "{} frames > max_chunk_frames {max}", chunk.frames),
            Ok(None) | Err(_) => break,
        }
    }
});

//! Arbitrary bytes as a model package's `model.toml` (UTF-8 text; an admin installs third-party
//! models), parsed and validated by the daemon's own parser. A manifest that validates is usable
//! as the daemon uses it before libtorch sees it: its preprocessing and windows are built for a
//! stream at the model's rate (as a session does), and a block runs through them.
#![no_main]

use std::path::{Path, PathBuf};

use bci2token_dsp::pipeline::Windower;
use bci2token_manifest::{Manifest, OutputKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let m = match Manifest::parse(text, PathBuf::from("/models/fuzz/model.toml")) {
        Ok(m) => m,
        Err(e) => {
            assert!(e.to_string().contains("/models/fuzz/model.toml"), "an error names the file: {e}");
            return;
        }
    };
    assert_eq!(m.dir(), Path::new("/models/fuzz"));
    let (channels, window, hop) = (m.input.channels.len(), m.window_frames(), m.hop_frames());
    assert!(channels > 0 && window >= 2 && hop >= 1);
    assert!(!m.output.labels.is_empty() && m.output.beam_width >= 1);
    assert!(m.output.kind != OutputKind::Ctc || m.output.labels.contains(&m.output.blank_label));
    assert!(m.policy.confidence_threshold > 0.0 && m.policy.confidence_threshold <= 1.0);
    let mut windower = Windower::new(&m.preprocessing, m.input.sample_rate, channels, window, hop)
        .expect("a validated manifest's preprocessing and windows build at its own rate");
    let frames = 16;
    let mut block: Vec<f32> = (0..channels * frames).map(|i| (i % 7) as f32).collect();
    windower.push(&mut block, frames, |_, w| assert_eq!(w.dim(), (channels, window)));
});

//! A decoding session's Lab Streaming Layer outlets, so LabRecorder (or any LSL program) records
//! the decoded tokens beside the EEG:
//!
//! - `bci2token tokens <session>`: type `Markers`, one string channel, irregular rate; every token
//!   event as its JSON text (the same object `follow` delivers);
//! - `bci2token probabilities <session>`: type `Probabilities`, float32, one channel per model label,
//!   nominal rate 1 / hop; the softmax of every decoded window (classes models only).
//!
//! Samples are stamped on liblsl's clock at the moment the window's last sample entered the daemon,
//! so they line up with the EEG on a recorder. The descriptions carry the session id, the model,
//! its tokenizer and the device. Pushing copies into liblsl's buffers; it never waits for readers.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bci2token_api::Event;
use bci2token_decoder::bridge::softmax;
use bci2token_decoder::manifest::OutputKind;
use bci2token_decoder::Model;
use bci2token_liblsl::{ChannelDesc, ChannelFormat, Lsl, Outlet, StreamInfo};

/// Seconds of samples liblsl keeps for a slow reader.
const MAX_BUFFERED_SECONDS: i32 = 60;

pub struct SessionOutlets {
    lsl: Arc<Lsl>,
    tokens: Mutex<Outlet>,
    /// With a scratch row for the probabilities.
    probabilities: Option<Mutex<(Outlet, Vec<f32>)>>,
}

fn describe(info: &mut StreamInfo, session: &str, model: &Model, device: &str) {
    info.add_desc_value("session", session);
    info.add_desc_value("model", model.name());
    info.add_desc_value("model_version", &model.manifest.version);
    info.add_desc_value("tokenizer", &model.manifest.tokens.tokenizer);
    info.add_desc_value("device", device);
    info.add_desc_value("software", concat!("bci2tokend ", env!("CARGO_PKG_VERSION")));
}

impl SessionOutlets {
    pub fn open(lsl: &Arc<Lsl>, session: &str, model: &Model, device: &str) -> Result<SessionOutlets, String> {
        let mut info = lsl.new_stream_info(
            &format!("bci2token tokens {session}"),
            "Markers",
            1,
            0.0,
            ChannelFormat::String,
            &format!("bci2token-{session}-tokens"),
        )?;
        describe(&mut info, session, model, device);
        let tokens = Outlet::new(&info, MAX_BUFFERED_SECONDS)?;
        let output = &model.manifest.output;
        let probabilities = if output.kind == OutputKind::Classes {
            let labels = &output.labels;
            let mut info = lsl.new_stream_info(
                &format!("bci2token probabilities {session}"),
                "Probabilities",
                labels.len(),
                1.0 / model.manifest.input.hop_seconds,
                ChannelFormat::Float32,
                &format!("bci2token-{session}-probabilities"),
            )?;
            describe(&mut info, session, model, device);
            let channels: Vec<ChannelDesc> = labels
                .iter()
                .map(|l| ChannelDesc { label: l.clone(), unit: "probability".into(), type_: "Probability".into() })
                .collect();
            info.add_channels(&channels);
            Some(Mutex::new((Outlet::new(&info, MAX_BUFFERED_SECONDS)?, vec![0.0; labels.len()])))
        } else {
            None
        };
        log::info!(
            "session {session}: publishing tokens{} as LSL outlets",
            if probabilities.is_some() { " and probabilities" } else { "" }
        );
        Ok(SessionOutlets { lsl: Arc::clone(lsl), tokens: Mutex::new(tokens), probabilities })
    }

    /// liblsl's clock when `at` happened.
    fn stamp(&self, at: Instant) -> f64 {
        self.lsl.local_clock() - at.elapsed().as_secs_f64()
    }

    /// One decoded window's logits: their softmax goes out (nothing for non-finite logits).
    pub fn window(&self, logits: &[f32], entered: Instant) {
        let Some(p) = &self.probabilities else { return };
        let mut guard = p.lock().unwrap();
        let (outlet, row) = &mut *guard;
        if logits.len() == row.len() && softmax(logits, row) {
            let _ = outlet.push_f32(row, self.stamp(entered));
        }
    }

    /// A token event, as its JSON text.
    pub fn token(&self, event: &Event, entered: Instant) {
        if let Ok(text) = serde_json::to_string(event) {
            let _ = self.tokens.lock().unwrap().push_str(&[&text], self.stamp(entered));
        }
    }
}

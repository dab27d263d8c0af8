//! The token bridge: class probabilities become token events. A label is emitted only when the
//! decoder is sure enough (confidence threshold), has agreed with itself for enough consecutive
//! windows, and the refractory time since the last token has passed; the null label (rest) never
//! emits. Texts are tokenized once, when the bridge is built, with the model's tokenizer.

use tiktoken_rs::CoreBPE;

use crate::ctc;
use crate::manifest::{Manifest, OutputKind};

/// Bias values are clipped to this magnitude so one window cannot dominate an LLM's logits.
const MAX_BIAS: f32 = 10.0;

/// The tokenizer named in a manifest (validated there).
fn tokenizer(name: &str) -> Result<&'static CoreBPE, String> {
    match name {
        // tiktoken's "gpt2" encoding has exactly the ranks of r50k_base.
        "gpt2" => Ok(tiktoken_rs::r50k_base_singleton()),
        "cl100k_base" => Ok(tiktoken_rs::cl100k_base_singleton()),
        "o200k_base" => Ok(tiktoken_rs::o200k_base_singleton()),
        other => Err(format!("unknown tokenizer {other:?}")),
    }
}

/// Token ids of `text` in the tokenizer `name`.
pub fn encode(name: &str, text: &str) -> Result<Vec<u32>, String> {
    Ok(tokenizer(name)?.encode_ordinary(text))
}

/// What the bridge emits for one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub label: String,
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Probability of the emitted label.
    pub confidence: f32,
    /// Every label's probability.
    pub probabilities: Vec<(String, f32)>,
    /// Sparse bias over the tokenizer's vocabulary: for each label with a text, its first token
    /// gets ln(p · K) (log-probability against chance, K labels), clipped to ±10.
    pub logit_bias: Vec<(u32, f32)>,
}

pub struct TokenBridge {
    tokenizer: String,
    /// CTC: the blank label and the beam width (1 = greedy); `None` for a classes model.
    ctc: Option<(usize, usize)>,
    /// CTC: per-frame probabilities of the current window.
    frame_probs: Vec<f32>,
    labels: Vec<String>,
    texts: Vec<String>,
    token_ids: Vec<Vec<u32>>,
    null: Option<usize>,
    threshold: f32,
    consecutive: u32,
    refractory: f64,
    /// The label agreed on by the latest windows, and for how many in a row.
    run: Option<(usize, u32)>,
    last_emission: Option<f64>,
    probabilities: Vec<f32>,
}

impl TokenBridge {
    pub fn new(manifest: &Manifest) -> Result<TokenBridge, String> {
        let labels = manifest.output.labels.clone();
        let texts: Vec<String> =
            labels.iter().map(|l| manifest.tokens.text.get(l).cloned().unwrap_or_default()).collect();
        let token_ids = texts
            .iter()
            .map(|t| if t.is_empty() { Ok(Vec::new()) } else { encode(&manifest.tokens.tokenizer, t) })
            .collect::<Result<_, _>>()?;
        let null = labels.iter().position(|l| *l == manifest.output.null_label);
        let ctc = match manifest.output.kind {
            OutputKind::Classes => None,
            OutputKind::Ctc => {
                let blank = labels.iter().position(|l| *l == manifest.output.blank_label).ok_or("no blank label")?;
                Some((blank, manifest.output.beam_width))
            }
        };
        Ok(TokenBridge {
            tokenizer: manifest.tokens.tokenizer.clone(),
            ctc,
            frame_probs: Vec::new(),
            probabilities: vec![0.0; labels.len()],
            labels,
            texts,
            token_ids,
            null,
            threshold: manifest.policy.confidence_threshold as f32,
            consecutive: manifest.policy.consecutive,
            refractory: manifest.policy.refractory_seconds,
            run: None,
            last_emission: None,
        })
    }

    /// Forgets the run of agreeing windows and the last emission (after an outage: windows on
    /// either side of it do not add up to a token, and stream time may have stepped back).
    pub fn restart(&mut self) {
        self.run = None;
        self.last_emission = None;
    }

    /// Takes the logits of the window ending at stream time `t`; returns a token when the policy
    /// says so. Non-finite logits (a failing model) emit nothing and break the run.
    pub fn push(&mut self, t: f64, logits: &[f32]) -> Option<Emission> {
        if let Some((blank, width)) = self.ctc {
            return self.push_ctc(t, logits, blank, width);
        }
        assert_eq!(logits.len(), self.labels.len(), "one logit per label");
        if !softmax(logits, &mut self.probabilities) {
            self.run = None;
            return None;
        }
        let (best, confidence) = self
            .probabilities
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one label");
        if confidence < self.threshold {
            self.run = None;
            return None;
        }
        let count = match self.run {
            Some((label, n)) if label == best => n + 1,
            _ => 1,
        };
        self.run = Some((best, count));
        if count < self.consecutive || Some(best) == self.null || self.texts[best].is_empty() {
            return None;
        }
        if self.last_emission.is_some_and(|last| t - last < self.refractory) {
            return None;
        }
        self.last_emission = Some(t);
        // A new token needs a fresh run of agreement.
        self.run = None;
        Some(self.emission(best, confidence))
    }

    /// A CTC window (frames × labels logits) is a segment of its own: its decoded label sequence
    /// becomes one emission whose text is the labels' texts joined. Confidence is the decoded
    /// sequence's probability per frame (its geometric mean), so it does not shrink with length.
    /// `consecutive` does not apply (windows do not overlap); the threshold and refractory do.
    fn push_ctc(&mut self, t: f64, logits: &[f32], blank: usize, width: usize) -> Option<Emission> {
        let k = self.labels.len();
        assert_eq!(logits.len() % k, 0, "frames × labels logits");
        let frames = logits.len() / k;
        self.frame_probs.resize(logits.len(), 0.0);
        for (l, p) in logits.chunks_exact(k).zip(self.frame_probs.chunks_exact_mut(k)) {
            if !softmax(l, p) {
                return None;
            }
        }
        let decoded = if width <= 1 {
            ctc::greedy(&self.frame_probs, k, blank)
        } else {
            ctc::beam(&self.frame_probs, k, blank, width)
        };
        let confidence = decoded.probability.powf(1.0 / frames as f64) as f32;
        let labels: Vec<usize> = decoded.labels.into_iter().filter(|&l| Some(l) != self.null).collect();
        let text: String = labels.iter().map(|&l| self.texts[l].as_str()).collect();
        if text.is_empty() || confidence < self.threshold {
            return None;
        }
        if self.last_emission.is_some_and(|last| t - last < self.refractory) {
            return None;
        }
        self.last_emission = Some(t);
        // Mean posterior of each label over the window's frames.
        for (i, p) in self.probabilities.iter_mut().enumerate() {
            *p = self.frame_probs.iter().skip(i).step_by(k).sum::<f32>() / frames as f32;
        }
        let label = labels.iter().map(|&l| self.labels[l].as_str()).collect::<Vec<_>>().join(" ");
        let token_ids = encode(&self.tokenizer, &text).unwrap_or_default();
        let mut e = self.emission(labels[0], confidence);
        (e.label, e.text, e.token_ids) = (label, text, token_ids);
        Some(e)
    }

    fn emission(&self, best: usize, confidence: f32) -> Emission {
        // Labels whose texts start with the same token pool their probability.
        let mut pooled: Vec<(u32, f32)> = Vec::new();
        for (ids, &p) in self.token_ids.iter().zip(&self.probabilities) {
            let Some(&first) = ids.first() else { continue };
            match pooled.iter_mut().find(|(id, _)| *id == first) {
                Some((_, sum)) => *sum += p,
                None => pooled.push((first, p)),
            }
        }
        let k = self.labels.len() as f32;
        let bias = pooled
            .into_iter()
            .map(|(id, p)| (id, (p * k).max(f32::MIN_POSITIVE).ln().clamp(-MAX_BIAS, MAX_BIAS)))
            .collect();
        Emission {
            label: self.labels[best].clone(),
            text: self.texts[best].clone(),
            token_ids: self.token_ids[best].clone(),
            confidence,
            probabilities: self.labels.iter().cloned().zip(self.probabilities.iter().copied()).collect(),
            logit_bias: bias,
        }
    }
}

/// Numerically stable softmax into `out`; false when a logit is not finite.
pub fn softmax(logits: &[f32], out: &mut [f32]) -> bool {
    if logits.iter().any(|x| !x.is_finite()) {
        return false;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = (x - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Input, Manifest, Output, OutputKind, Policy, Tokens};

    fn bridge(consecutive: u32, refractory: f64) -> TokenBridge {
        let m = Manifest {
            name: "m".into(),
            version: "1".into(),
            description: String::new(),
            input: Input { channels: vec!["O1".into()], sample_rate: 250.0, window_seconds: 1.0, hop_seconds: 0.1 },
            preprocessing: Default::default(),
            output: Output {
                kind: OutputKind::Classes,
                labels: vec!["rest".into(), "yes".into(), "no".into()],
                null_label: "rest".into(),
                blank_label: String::new(),
                beam_width: 1,
            },
            tokens: Tokens {
                tokenizer: "gpt2".into(),
                text: [("yes".to_string(), " yes".to_string()), ("no".to_string(), " no".to_string())].into(),
            },
            policy: Policy { confidence_threshold: 0.8, consecutive, refractory_seconds: refractory },
            provenance: Default::default(),
            test_vectors: None,
            speller: None,
            training: None,
            path: "model.toml".into(),
        };
        TokenBridge::new(&m).unwrap()
    }

    /// Logits that give `label` probability about 0.9 against the two others.
    fn sure(label: usize) -> Vec<f32> {
        let mut l = vec![0.0; 3];
        l[label] = 3.0;
        l
    }

    #[test]
    fn gpt2_ids_are_the_real_ones() {
        // " yes" and " no" are single GPT-2 tokens 3763 and 645; "hello world" is [31373, 995].
        assert_eq!(encode("gpt2", " yes").unwrap(), vec![3763]);
        assert_eq!(encode("gpt2", " no").unwrap(), vec![645]);
        assert_eq!(encode("gpt2", "hello world").unwrap(), vec![31373, 995]);
        assert_eq!(encode("cl100k_base", "hello world").unwrap(), vec![15339, 1917]);
    }

    #[test]
    fn consecutive_agreement_threshold_and_refractory() {
        let mut b = bridge(2, 1.0);
        assert!(b.push(0.0, &sure(1)).is_none(), "one window is not enough");
        let e = b.push(0.1, &sure(1)).expect("two agreeing windows emit");
        assert_eq!((e.label.as_str(), e.text.as_str(), e.token_ids.as_slice()), ("yes", " yes", &[3763u32][..]));
        assert!((e.confidence - 0.9094).abs() < 1e-3, "{}", e.confidence);
        assert!(b.push(0.2, &sure(1)).is_none() && b.push(0.3, &sure(1)).is_none(), "refractory");
        assert!(b.push(0.4, &[0.0, 0.5, 0.4]).is_none(), "unsure: below the threshold");
        assert!(b.push(1.2, &sure(2)).is_none());
        assert_eq!(b.push(1.3, &sure(2)).unwrap().label, "no");
    }

    #[test]
    fn rest_and_failures_emit_nothing() {
        let mut b = bridge(1, 0.0);
        assert!(b.push(0.0, &sure(0)).is_none(), "the null label never emits");
        assert!(b.push(0.1, &[f32::NAN, 1.0, 0.0]).is_none(), "a failing model emits nothing");
        assert!(b.push(0.2, &[f32::INFINITY, 1.0, 0.0]).is_none());
    }

    #[test]
    fn logit_bias_is_log_probability_against_chance() {
        let mut b = bridge(1, 0.0);
        let e = b.push(0.0, &sure(1)).unwrap();
        let p: Vec<f32> = e.probabilities.iter().map(|(_, p)| *p).collect();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(e.logit_bias.len(), 2, "rest has no text, so no token");
        let yes = e.logit_bias.iter().find(|(id, _)| *id == 3763).unwrap().1;
        let no = e.logit_bias.iter().find(|(id, _)| *id == 645).unwrap().1;
        assert!((yes - (p[1] * 3.0).ln()).abs() < 1e-5 && yes > 0.0);
        assert!((no - (p[2] * 3.0).ln()).abs() < 1e-5 && no < 0.0);
    }

    #[test]
    fn ctc_windows_become_words() {
        let mut b = bridge(1, 0.0);
        // Labels: rest (used as blank), yes, no. Frames: yes yes blank no no → " yes no".
        b.ctc = Some((0, 1));
        let frame = |l: usize| {
            let mut f = vec![0.0f32; 3];
            f[l] = 6.0;
            f
        };
        let logits: Vec<f32> = [frame(1), frame(1), frame(0), frame(2), frame(2)].concat();
        let e = b.push(0.0, &logits).unwrap();
        assert_eq!(e.text, " yes no");
        assert_eq!(e.label, "yes no");
        assert_eq!(e.token_ids, encode("gpt2", " yes no").unwrap());
        assert!(e.confidence > 0.99, "{}", e.confidence);
        let blank_only: Vec<f32> = [frame(0), frame(0)].concat();
        assert!(b.push(1.0, &blank_only).is_none(), "nothing decoded, nothing emitted");
    }
}

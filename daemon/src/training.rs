//! `model train`: a person's stored sessions → their own model package.
//!
//! The training windows are made the way the decoder will make them: each session's stored
//! blocks go through a [`Windower`] with the model's preprocessing (filters primed on the first
//! block, restarted after a gap), and a window is kept when it lies wholly inside a trial (cut by
//! the same rules as `evaluate`) at least the offset after the trial's start. The fit and its
//! cross-validation are bci2token-calibrate's; the fitted parameters become a traced TorchScript
//! module (bci2token-decoder's `traced`), so a trained model decodes through the one path every
//! model takes. Nothing here reads a caller's file: the sessions are the store's.

use bci2token_api::TrainRequest;
use bci2token_calibrate::epochs::trial_containing;
use bci2token_calibrate::method::{self, Fitted, Method, Setting};
use bci2token_calibrate::trials::{form_trials, Annotation, Trial, TrialRules};
use bci2token_calibrate::{metrics, DMatrix};
use bci2token_decoder::manifest::{Input, Manifest, Output, OutputKind, Policy, Provenance, Tokens, Training};
use bci2token_decoder::traced;
use bci2token_dsp::pipeline::{PreprocessConfig, Windower};

use crate::export::Block;

/// The most window values (f64) one training holds: 64 MiB (the cross-validation copies most of
/// them once more).
pub const MAX_WINDOW_VALUES: usize = 8 << 20;
/// The most channels a model reads; the tangent space's LDA, whose covariance has (n(n+1)/2)²
/// entries, fewer (64: 2080 features, 35 MB a matrix).
const MAX_CHANNELS: usize = 256;
/// The most training windows, and trials (the cross-validation's folds are built over both).
const MAX_WINDOWS: usize = 50_000;
const MAX_TRIALS: usize = 10_000;
/// Notes in a reply (cues without trials, trials without windows); the rest are counted.
const MAX_NOTES: usize = 50;
/// Annotations read from one session.
pub const MAX_ANNOTATIONS: usize = 100_000;
/// The highest sample rate trained at, and the most values one window may hold (a window is
/// allocated before the first is cut: a recording that claims a huge rate is refused first).
const MAX_RATE: f64 = 100_000.0;
const MAX_VALUES_PER_WINDOW: usize = 1 << 22;
const MAX_TANGENT_CHANNELS: usize = 64;

/// What `model train` fits, checked and with the method's defaults filled in.
#[derive(Debug, Clone)]
pub struct Plan {
    pub method: Method,
    pub rules: TrialRules,
    pub window_seconds: f64,
    pub offset_seconds: f64,
    pub hop_seconds: f64,
    pub preprocessing: PreprocessConfig,
    pub folds: usize,
    /// Each class's stimulus frequency (SSVEP methods; empty for the others).
    pub frequencies: Vec<f64>,
}

/// The motor-imagery methods' defaults: 2 s windows from 0.5 s after the cue (the
/// desynchronisation builds up), every 0.25 s, 8–30 Hz (mu and beta), order 4, no CAR (the
/// spatial filters and covariances take its place, and it would leave the covariances singular).
const MI_WINDOW: f64 = 2.0;
const MI_OFFSET: f64 = 0.5;
const MI_BAND: [f64; 2] = [8.0, 30.0];
/// The SSVEP method's: windows from the trial's start (the response settles within about 0.2 s,
/// and FBCCA's windows count from there too), 6–90 Hz (the sub-bands run 8–88 Hz), as the shipped
/// `ssvep-fbcca-3`.
const SSVEP_WINDOW: f64 = 2.0;
const SSVEP_OFFSET: f64 = 0.0;
const SSVEP_BAND: [f64; 2] = [6.0, 90.0];
const DEFAULT_HOP: f64 = 0.25;
const DEFAULT_FOLDS: usize = 5;
/// Trials of each class that every fold must leave to train on.
const MIN_TRAIN_TRIALS: usize = 3;

impl Plan {
    /// The plan of request `r` for `method`, its trials cut by `rules`.
    pub fn new(method: Method, rules: TrialRules, r: &TrainRequest) -> Result<Plan, String> {
        let ssvep = method.is_ssvep();
        let window_seconds = r.window_seconds.unwrap_or(if ssvep { SSVEP_WINDOW } else { MI_WINDOW });
        let offset_seconds = r.offset_seconds.unwrap_or(if ssvep { SSVEP_OFFSET } else { MI_OFFSET });
        let hop_seconds = r.hop_seconds.unwrap_or(DEFAULT_HOP);
        if !(window_seconds.is_finite() && (0.1..=30.0).contains(&window_seconds)) {
            return Err(format!("--window {window_seconds}: give 0.1 to 30 seconds"));
        }
        if !(offset_seconds.is_finite() && (0.0..=30.0).contains(&offset_seconds)) {
            return Err(format!("--offset {offset_seconds}: give 0 to 30 seconds"));
        }
        if !(hop_seconds.is_finite() && (0.01..=30.0).contains(&hop_seconds)) {
            return Err(format!("--hop {hop_seconds}: give 0.01 to 30 seconds"));
        }
        let folds = r.folds.unwrap_or(DEFAULT_FOLDS);
        if !(2..=20).contains(&folds) {
            return Err(format!("--folds {folds}: give 2 to 20"));
        }
        let band = r.bandpass_hz.unwrap_or(if ssvep { SSVEP_BAND } else { MI_BAND });
        let notch_hz = r.notch_hz.unwrap_or(0.0);
        let preprocessing =
            PreprocessConfig { bandpass_hz: Some(band), notch_hz, filter_order: 4, car: false, ..Default::default() };
        let frequencies = match (ssvep, &r.frequencies) {
            (true, given) => frequencies(&rules, given.as_deref())?,
            (false, None) => Vec::new(),
            (false, Some(_)) => return Err(format!("--frequencies is for trca and fbtrca, not {}", method.name())),
        };
        Ok(Plan { method, rules, window_seconds, offset_seconds, hop_seconds, preprocessing, folds, frequencies })
    }
}

/// Each class's stimulus frequency: `given` (in class order), else read from the classes' labels
/// ("13Hz").
fn frequencies(rules: &TrialRules, given: Option<&[f64]>) -> Result<Vec<f64>, String> {
    let labels: Vec<&str> = rules.classes.iter().map(|c| rules.label_of(c)).collect();
    let found: Vec<f64> = match given {
        Some(f) if f.len() == labels.len() => f.to_vec(),
        Some(f) => {
            return Err(format!("--frequencies gives {} frequencies for the {} classes", f.len(), labels.len()));
        }
        None => labels.iter().filter_map(|l| bci2token_calibrate::ssvep::frequency_of(l)).collect(),
    };
    if found.len() != labels.len() || found.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(format!(
            "an SSVEP model needs each class's stimulus frequency: pass --frequencies (in the order of the classes: {}), \
             or map the cues to labels such as 13Hz",
            labels.join(", ")
        ));
    }
    Ok(found)
}

/// The training windows of every session, with their classes and trials.
pub struct Gathered {
    pub windows: Vec<DMatrix<f64>>,
    pub labels: Vec<usize>,
    pub window_trial: Vec<usize>,
    /// The class of every trial (of every session), in order.
    pub trial_labels: Vec<usize>,
    pub notes: Vec<String>,
    /// The annotation texts the sessions hold (for an error that finds no trial).
    pub texts: std::collections::BTreeSet<String>,
}

/// Feeds one session after another through the model's windower.
pub struct Gatherer<'p> {
    plan: &'p Plan,
    rate: f64,
    /// Channels the model reads.
    channels: usize,
    window_frames: usize,
    out: Gathered,
    notes_left_out: usize,
    session: Option<SessionState>,
}

struct SessionState {
    id: String,
    windower: Windower,
    trials: Vec<Trial>,
    /// Index of this session's first trial among all.
    first_trial: usize,
    /// The live session's outage rule, fed the stored blocks' flags: the windower restarts
    /// where the decoder's did.
    outages: crate::session::Outages,
    /// Trials that gave a window.
    used: Vec<bool>,
    /// The store's sequence number of the last block.
    last_seq: Option<u64>,
    /// Windows left out for a NaN or infinite value.
    non_finite: usize,
    /// Which of the session's channels the model reads, in the model's order.
    picks: Vec<usize>,
    picked: Vec<f32>,
}

impl<'p> Gatherer<'p> {
    pub fn new(plan: &'p Plan, rate: f64, channels: usize) -> Result<Gatherer<'p>, String> {
        let most = if plan.method == Method::RiemannTs { MAX_TANGENT_CHANNELS } else { MAX_CHANNELS };
        if channels > most {
            return Err(format!(
                "{} reads at most {most} channels, the model would read {channels}: choose some with --channels",
                plan.method.name()
            ));
        }
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            return Err(format!("a session at {rate} Hz: model train takes up to {MAX_RATE} Hz"));
        }
        let window_frames = (plan.window_seconds * rate).round() as usize;
        if channels.saturating_mul(window_frames) > MAX_VALUES_PER_WINDOW {
            return Err(format!(
                "a {} s window of {channels} channels at {rate} Hz is too large: give a shorter --window or fewer --channels",
                plan.window_seconds
            ));
        }
        if window_frames < channels.max(8) {
            return Err(format!(
                "a {} s window at {rate} Hz has {window_frames} frames, fewer than the {} channels: give a longer --window",
                plan.window_seconds,
                channels.max(8)
            ));
        }
        plan.preprocessing.validate(rate).map_err(|e| {
            let band = plan.preprocessing.bandpass_hz.unwrap_or_default();
            format!(
                "the band-pass {}–{} Hz (--bandpass; the method's default unless given) at {rate} Hz: {e}",
                band[0], band[1]
            )
        })?;
        if plan.method.is_ssvep() {
            // The filter bank and references for these windows: the frequencies below Nyquist,
            // the window long enough for the references.
            bci2token_calibrate::ssvep::Bank::new(rate, window_frames, &plan.frequencies).map_err(|e| e.to_string())?;
        }
        let out = Gathered {
            windows: Vec::new(),
            labels: Vec::new(),
            window_trial: Vec::new(),
            trial_labels: Vec::new(),
            notes: Vec::new(),
            texts: Default::default(),
        };
        Ok(Gatherer { plan, rate, channels, window_frames, out, notes_left_out: 0, session: None })
    }

    pub fn window_frames(&self) -> usize {
        self.window_frames
    }

    pub fn hop_frames(&self) -> usize {
        ((self.plan.hop_seconds * self.rate).round() as usize).max(1)
    }

    /// Starts a session: its trials from its annotations; `picks` are the session's channels the
    /// model reads, in the model's order.
    pub fn begin(&mut self, id: &str, annotations: &[Annotation], picks: Vec<usize>) -> Result<(), String> {
        assert_eq!(picks.len(), self.channels, "one pick a model channel");
        self.out.texts.extend(annotations.iter().take(10_000).map(|a| a.text.clone()));
        let trials = form_trials(annotations, &self.plan.rules).map_err(|e| format!("session `{id}`: {e}"))?;
        for n in trials.notes {
            self.note(format!("session `{id}`: {n}"));
        }
        let windower =
            Windower::new(&self.plan.preprocessing, self.rate, self.channels, self.window_frames, self.hop_frames())
                .map_err(|e| e.to_string())?;
        let first_trial = self.out.trial_labels.len();
        if first_trial + trials.trials.len() > MAX_TRIALS {
            return Err(format!("more than {MAX_TRIALS} trials: train on fewer sessions, or fewer --trials"));
        }
        self.out.trial_labels.extend(trials.trials.iter().map(|t| t.class));
        let used = vec![false; trials.trials.len()];
        self.session = Some(SessionState {
            id: id.to_string(),
            windower,
            trials: trials.trials,
            first_trial,
            outages: Default::default(),
            last_seq: None,
            non_finite: 0,
            used,
            picks,
            picked: Vec::new(),
        });
        Ok(())
    }

    /// One stored block (its sequence number in the store, and the block) of the session begun
    /// last, in stream order.
    pub fn block(&mut self, seq: u64, block: &Block) -> Result<(), String> {
        let s = self.session.as_mut().expect("a session begun");
        // After an outage the decoder restarts its windower (nothing on either side of a gap in
        // one window); so does training, by the same rule on the same flags, and also where the
        // store lacks blocks (a write the recorder had to drop).
        let missing = s.last_seq.is_some_and(|last| seq != last + 1);
        s.last_seq = Some(seq);
        if s.outages.block(block.flags).restart.is_some() || missing {
            s.windower.restart();
        }
        if block.frames == 0 {
            return Ok(());
        }
        let frame = 1.0 / self.rate;
        s.picked.clear();
        for &c in &s.picks {
            if (c + 1) * block.frames > block.data.len() {
                return Err(format!("a stored block has {} channels, the session's metadata more", block.channels));
            }
            s.picked.extend_from_slice(&block.data[c * block.frames..(c + 1) * block.frames]);
        }
        let (trials, offset, first_trial) = (&s.trials, self.plan.offset_seconds, s.first_trial);
        let window_seconds = self.window_frames as f64 * frame;
        let out = &mut self.out;
        let used = &mut s.used;
        let non_finite = &mut s.non_finite;
        let mut too_many = false;
        let mut picked = std::mem::take(&mut s.picked);
        let t0 = block.t;
        s.windower.push(&mut picked, block.frames, |info, window| {
            // Stamped as the decoder stamps its windows (the last frame's time in the block's
            // clock), and counted for a trial as `evaluate` counts a token: t − W at or after the
            // trial's start (plus the offset), t at or before its end.
            let last = t0 + (info.frames_into_block as f64 - 1.0) * frame;
            if let Some(k) = trial_containing(trials, offset, (last - window_seconds, last), frame) {
                // The decoder emits nothing for a window with a NaN or infinite sample.
                if window.iter().any(|v| !v.is_finite()) {
                    *non_finite += 1;
                    return;
                }
                if (out.windows.len() + 1) * window.len() > MAX_WINDOW_VALUES || out.windows.len() >= MAX_WINDOWS {
                    too_many = true;
                    return;
                }
                out.windows.push(DMatrix::from_fn(window.nrows(), window.ncols(), |i, j| f64::from(window[(i, j)])));
                out.labels.push(trials[k].class);
                out.window_trial.push(first_trial + k);
                used[k] = true;
            }
        });
        s.picked = picked;
        if too_many {
            return Err(format!(
                "more than {MAX_WINDOWS} training windows or {} MiB of them: give a longer --hop, fewer --channels or \
                 fewer sessions",
                (MAX_WINDOW_VALUES * 8) >> 20
            ));
        }
        Ok(())
    }

    /// Ends the session begun last; a trial that gave no window is noted.
    pub fn end(&mut self) {
        let s = self.session.take().expect("a session begun");
        if s.non_finite > 0 {
            self.note(format!("session `{}`: {} window(s) with a NaN or infinite value left out", s.id, s.non_finite));
        }
        for (t, _) in s.trials.iter().zip(&s.used).filter(|(_, used)| !**used) {
            self.note(format!(
                "session `{}`: the trial at {:.2} s gave no whole window (shorter than offset + window, or a gap)",
                s.id, t.cue_onset
            ));
        }
    }

    /// A note for the reply, up to [`MAX_NOTES`]; the rest are counted.
    fn note(&mut self, text: String) {
        if self.out.notes.len() < MAX_NOTES {
            self.out.notes.push(crate::caller_files::bounded(&text));
        } else {
            self.notes_left_out += 1;
        }
    }

    pub fn finish(mut self) -> Gathered {
        if self.notes_left_out > 0 {
            self.out.notes.push(format!("and {} more notes like these", self.notes_left_out));
        }
        self.out
    }
}

/// The result of a fit: the model and how well it cross-validated.
pub struct Fit {
    pub fitted: Fitted,
    /// The folds the cross-validation had (fewer than asked when a class has fewer trials).
    pub folds: usize,
    pub cv_accuracy: f64,
    pub itr_bits_per_minute: f64,
    /// Trials per class that gave windows.
    pub trials: Vec<usize>,
}

/// A channel whose power over every training window is below this share of the median channel's
/// is flat (disconnected, or a reference): its covariances would be singular.
const FLAT: f64 = 1e-10;

/// Refuses a flat channel (by `labels`) and too few trials, cross-validates, then fits on
/// everything; `rate` is the sessions'.
pub fn fit(plan: &Plan, g: &Gathered, labels: &[String], rate: f64) -> Result<Fit, String> {
    let classes = plan.rules.classes.len();
    let setting = Setting { classes, rate, frequencies: plan.frequencies.clone() };
    if let Some(first) = g.windows.first() {
        let power: Vec<f64> = (0..first.nrows())
            .map(|c| g.windows.iter().map(|w| w.row(c).iter().map(|v| v * v).sum::<f64>()).sum::<f64>())
            .collect();
        let mut sorted = power.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let flat: Vec<&str> =
            power.iter().zip(labels).filter(|(p, _)| **p <= FLAT * median).map(|(_, l)| l.as_str()).collect();
        if !flat.is_empty() {
            return Err(format!(
                "channel(s) {} carry no signal in the training windows (disconnected, or a reference): leave them out \
                 with --channels",
                flat.join(", ")
            ));
        }
    }
    // Only trials with windows count (windows come in trial order), renumbered.
    let mut used: Vec<usize> = g.window_trial.clone();
    used.sort_unstable();
    used.dedup();
    let trial_labels: Vec<usize> = used.iter().map(|&t| g.trial_labels[t]).collect();
    let mut renumbered = vec![0usize; g.trial_labels.len()];
    for (i, &t) in used.iter().enumerate() {
        renumbered[t] = i;
    }
    let trials: Vec<usize> = (0..classes).map(|k| trial_labels.iter().filter(|&&l| l == k).count()).collect();
    for (k, &n) in trials.iter().enumerate() {
        if n == 0 {
            let texts: Vec<String> = g.texts.iter().take(20).map(|t| crate::caller_files::bounded(t)).collect();
            return Err(format!(
                "no trial of class \"{}\" gave a training window: check --classes/--map against the sessions' \
                 annotations ({}), and that trials last at least offset + window ({} s)",
                plan.rules.classes[k],
                if texts.is_empty() { "none".to_string() } else { texts.join(", ") },
                plan.offset_seconds + plan.window_seconds
            ));
        }
    }
    metrics::check_folds(&trial_labels, plan.folds, MIN_TRAIN_TRIALS, &plan.rules.classes)?;
    let window_trial: Vec<usize> = g.window_trial.iter().map(|&t| renumbered[t]).collect();
    let cv_accuracy =
        method::cross_validate(plan.method, &g.windows, &g.labels, &window_trial, &trial_labels, plan.folds, &setting)
            .map_err(|e| format!("cross-validating {}: {e}", plan.method.name()))?;
    let fitted = Fitted::fit(plan.method, &g.windows, &g.labels, &setting)
        .map_err(|e| format!("fitting {}: {e}", plan.method.name()))?;
    let itr_bits_per_minute = metrics::itr_bits_per_minute(classes, cv_accuracy, plan.window_seconds);
    let folds = metrics::stratified_folds(&trial_labels, plan.folds).len();
    Ok(Fit { fitted, folds, cv_accuracy, itr_bits_per_minute, trials })
}

/// The fitted decoder as a TorchScript module taking `[batch, channels, frames]` windows.
pub fn module(fitted: &Fitted, channels: usize, frames: usize) -> Result<tch::CModule, String> {
    let f32s = |m: &DMatrix<f64>| -> Vec<f32> { m.transpose().iter().map(|&v| v as f32).collect() };
    let f64s = |m: &DMatrix<f64>| -> Vec<f64> { m.transpose().iter().copied().collect() };
    let linear = |lda: &bci2token_calibrate::lda::Lda| traced::Linear {
        weight: f32s(&lda.coef),
        bias: lda.intercept.iter().map(|&v| v as f32).collect(),
    };
    match fitted {
        Fitted::CspLda { filters, lda } => traced::csp_linear(&f32s(filters), channels, &linear(lda), frames),
        Fitted::Mdm(mdm) => traced::mdm(&mdm.means_isqrt().iter().map(f64s).collect::<Vec<_>>(), channels, frames, 1.0),
        Fitted::TangentLda { reference_isqrt, lda } => {
            traced::tangent_linear(&f64s(reference_isqrt), channels, &linear(lda), frames)
        }
        Fitted::FbTrca(m) => {
            traced::ssvep(&traced::Ssvep::from_bank(&m.bank, &m.filters, m.bias.as_slice()), channels, frames)
        }
    }
    .map_err(|e| format!("tracing the model: {e}"))
}

/// What the manifest of a trained model says besides its numbers.
pub struct Described<'a> {
    pub name: &'a str,
    pub channels: Vec<String>,
    pub rate: f64,
    pub sources: Vec<String>,
    pub owner_uid: u32,
    pub trained_at: f64,
}

/// The manifest of a trained model: labels are the classes' labels (after `--map`), each emitting
/// itself as a token (" label"), one decision a window.
pub fn manifest(plan: &Plan, fit: &Fit, d: Described<'_>) -> Manifest {
    let labels: Vec<String> = plan.rules.classes.iter().map(|c| plan.rules.label_of(c).to_string()).collect();
    let mut parameters = toml::Table::new();
    parameters.insert("window_seconds".into(), plan.window_seconds.into());
    parameters.insert("offset_seconds".into(), plan.offset_seconds.into());
    parameters.insert("hop_seconds".into(), plan.hop_seconds.into());
    parameters
        .insert("classes".into(), toml::Value::Array(plan.rules.classes.iter().map(|c| c.clone().into()).collect()));
    if let Some(marker) = &plan.rules.trial_start {
        parameters.insert("trial_start".into(), marker.clone().into());
    }
    if let Some(length) = plan.rules.trial_length {
        parameters.insert("trial_length".into(), length.into());
    }
    if plan.method == Method::CspLda {
        parameters.insert("csp_components".into(), (method::CSP_COMPONENTS as i64).into());
    }
    if !plan.frequencies.is_empty() {
        parameters
            .insert("frequencies".into(), toml::Value::Array(plan.frequencies.iter().map(|&f| f.into()).collect()));
    }
    let trials: usize = fit.trials.iter().sum();
    let description = format!(
        "{} trained by bci2tokend on {} trial(s) of {} session(s) for uid {}: {} (cross-validated window accuracy {:.3})",
        plan.method.name(),
        trials,
        d.sources.len(),
        d.owner_uid,
        labels.join(" vs "),
        fit.cv_accuracy
    );
    Manifest {
        name: d.name.to_string(),
        version: "1.0.0".into(),
        description,
        input: Input {
            channels: d.channels,
            sample_rate: d.rate,
            window_seconds: plan.window_seconds,
            hop_seconds: plan.hop_seconds,
        },
        preprocessing: plan.preprocessing.clone(),
        output: Output {
            kind: OutputKind::Classes,
            labels: labels.clone(),
            null_label: String::new(),
            blank_label: String::new(),
            beam_width: 1,
        },
        tokens: Tokens {
            tokenizer: "gpt2".into(),
            text: labels.iter().map(|l| (l.clone(), format!(" {l}"))).collect(),
        },
        policy: Policy { confidence_threshold: 0.5, consecutive: 1, refractory_seconds: 0.0 },
        provenance: Provenance { script: String::new(), trained_on: d.sources.clone(), notes: String::new() },
        test_vectors: None,
        speller: None,
        training: Some(Training {
            method: plan.method.name().into(),
            sources: d.sources,
            trials,
            parameters,
            cv_accuracy: fit.cv_accuracy,
            cv_folds: fit.folds,
            itr_bits_per_minute: fit.itr_bits_per_minute,
            trained_at: d.trained_at,
            owner_uid: d.owner_uid,
        }),
        path: Default::default(),
    }
}

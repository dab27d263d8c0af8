//! Pure scoring for `bci2tokenctl evaluate`: trials from annotations, one decision per trial from
//! the tokens, confusion matrix, accuracy, decision time and Wolpaw's information transfer rate.
//! No I/O here; everything is tested on constructed event lists.

use std::collections::{BTreeMap, BTreeSet};

pub use bci2token_calibrate::trials::{build_rules, form_trials, Annotation, ModelLabels, Trial, TrialRules};

/// A decoded token: `t` is the stream time of the last sample of the window it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub t: f64,
    pub label: String,
}

/// How a trial's tokens become one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Decision {
    /// The first token in the trial decides; decision time = that token's `t` − trial start.
    #[default]
    First,
    /// The most frequent label among the trial's tokens (a tie goes to the label seen first);
    /// decision time = the last token of the trial's `t` − trial start (the vote is complete then).
    Majority,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::First => "first",
            Decision::Majority => "majority",
        }
    }
}

/// How trials are cut out of the annotations ([`TrialRules`], shared with `model train`), and how
/// a trial's tokens become a decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alignment {
    pub rules: TrialRules,
    pub decision: Decision,
    /// A token counts for a trial only when `start + token_delay ≤ t ≤ end`: 0 by default; the
    /// model's window length with only windows wholly in the trial (the default), so that only
    /// windows lying wholly in the trial count (not the tail of the previous trial's stimulus).
    /// Decision times stay `t − start`.
    pub token_delay: f64,
}

/// The rules' fields read as the alignment's (`a.classes`, `a.label_of(…)`).
impl std::ops::Deref for Alignment {
    type Target = TrialRules;
    fn deref(&self) -> &TrialRules {
        &self.rules
    }
}

impl std::ops::DerefMut for Alignment {
    fn deref_mut(&mut self) -> &mut TrialRules {
        &mut self.rules
    }
}

/// Builds the [`Alignment`] from the command line and the model, checking that every class maps
/// to a label the model can emit. `classes: None` means the model's labels except its null label,
/// each written as the annotation text that `map` maps to it (or as itself). Returns notes
/// (warnings) beside it.
pub fn build_alignment(
    classes: Option<&[String]>,
    map: &[(String, String)],
    model: Option<&ModelLabels>,
    trial_start: Option<String>,
    trial_length: Option<f64>,
    decision: Decision,
    whole_window: bool,
) -> Result<(Alignment, Vec<String>), String> {
    let token_delay = if whole_window {
        let Some(w) = model.and_then(|m| m.window_seconds).filter(|w| *w >= 0.0 && w.is_finite()) else {
            return Err("counting only whole windows needs the model's window length, which is not known (use --partial-windows)".into());
        };
        if let Some(len) = trial_length.filter(|len| *len < w) {
            return Err(format!("the model's {w} s windows do not fit in a {len} s trial (--trial-length)"));
        }
        w
    } else {
        0.0
    };
    let (rules, notes) = build_rules(classes, map, model, trial_start, trial_length)?;
    Ok((Alignment { rules, decision, token_delay }, notes))
}

/// The decision for one trial: the label and the time it was made (stream time).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub label: String,
    pub t: f64,
}

/// Decides a trial from `tokens` (sorted by `t`, ties in arrival order), counting the tokens with
/// `start + delay ≤ t ≤ end`. `None` when no token falls in the trial.
pub fn decide(trial: &Trial, tokens: &[Token], decision: Decision, delay: f64) -> Option<Decided> {
    let lo = tokens.partition_point(|k| k.t < trial.start + delay);
    let inside: Vec<&Token> = tokens[lo..].iter().take_while(|k| k.t <= trial.end).collect();
    let first = inside.first()?;
    match decision {
        Decision::First => Some(Decided { label: first.label.clone(), t: first.t }),
        Decision::Majority => {
            // label → (count, index of its first token)
            let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for (i, k) in inside.iter().enumerate() {
                counts.entry(k.label.as_str()).or_insert((0, i)).0 += 1;
            }
            let (label, _) = counts
                .iter()
                .max_by(|(_, (ca, fa)), (_, (cb, fb))| ca.cmp(cb).then(fb.cmp(fa)))
                .expect("at least one token");
            let last = inside.last().expect("at least one token");
            Some(Decided { label: (*label).to_string(), t: last.t })
        }
    }
}

/// One scored trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialResult {
    pub trial: Trial,
    pub decided: Option<Decided>,
}

/// Sorts tokens by time (stable) and decides every trial.
pub fn decide_all(trials: &[Trial], tokens: &[Token], decision: Decision, delay: f64) -> Vec<TrialResult> {
    let mut sorted = tokens.to_vec();
    sorted.sort_by(|x, y| x.t.total_cmp(&y.t));
    trials.iter().map(|t| TrialResult { trial: t.clone(), decided: decide(t, &sorted, decision, delay) }).collect()
}

/// Column name of undecided trials in the confusion matrix.
pub const NONE_COLUMN: &str = "none";

/// Scores of a set of trials (one file, or all files pooled).
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Confusion rows: the classes (cue texts).
    pub classes: Vec<String>,
    /// Confusion columns: the classes, then any other label that decided a trial (sorted), then `none`.
    pub columns: Vec<String>,
    pub matrix: Vec<Vec<u64>>,
    pub trials: usize,
    pub decided: usize,
    pub correct: usize,
    /// correct / trials (an undecided trial is wrong); `None` without trials.
    pub accuracy: Option<f64>,
    /// Mean of (decision time − trial start) over decided trials, seconds.
    pub mean_decision_time: Option<f64>,
    /// Mean trial length, seconds.
    pub mean_trial_length: Option<f64>,
    /// Wolpaw bits per trial from `accuracy` and the number of classes.
    pub bits_per_trial: Option<f64>,
    /// bits/trial × 60 / mean decision time.
    pub itr_bits_per_min: Option<f64>,
    /// bits/trial × 60 / mean trial length (what papers that count the whole trial report).
    pub itr_trial_bits_per_min: Option<f64>,
}

/// Scores trial results against the classes of `a` (which label is correct for which class).
pub fn score(results: &[TrialResult], a: &Alignment) -> Score {
    let n = a.classes.len();
    let labels: Vec<&str> = a.classes.iter().map(|c| a.label_of(c)).collect();
    let extra: BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r.decided.as_ref())
        .map(|d| d.label.as_str())
        .filter(|l| !labels.contains(l))
        .collect();
    let mut columns: Vec<String> = a.classes.clone();
    columns.extend(extra.iter().map(|s| (*s).to_string()));
    columns.push(NONE_COLUMN.to_string());
    let none_col = columns.len() - 1;
    let mut matrix = vec![vec![0u64; columns.len()]; n];
    let (mut decided, mut correct) = (0usize, 0usize);
    let mut decision_time = 0.0;
    let mut trial_length = 0.0;
    for r in results {
        trial_length += r.trial.end - r.trial.start;
        let col = match &r.decided {
            None => none_col,
            Some(d) => {
                decided += 1;
                decision_time += d.t - r.trial.start;
                match labels.iter().position(|l| *l == d.label) {
                    Some(c) => c,
                    None => n + extra.iter().position(|l| *l == d.label).expect("collected above"),
                }
            }
        };
        if col == r.trial.class {
            correct += 1;
        }
        matrix[r.trial.class][col] += 1;
    }
    let trials = results.len();
    let accuracy = (trials > 0).then(|| correct as f64 / trials as f64);
    let mean_decision_time = (decided > 0).then(|| decision_time / decided as f64);
    let mean_trial_length = (trials > 0).then(|| trial_length / trials as f64);
    let bits_per_trial = accuracy.map(|p| wolpaw_bits(n, p));
    let per_min = |t: Option<f64>| bits_per_trial.zip(t).and_then(|(b, t)| bits_per_minute(b, t));
    Score {
        classes: a.classes.clone(),
        columns,
        matrix,
        trials,
        decided,
        correct,
        accuracy,
        mean_decision_time,
        mean_trial_length,
        bits_per_trial,
        itr_bits_per_min: per_min(mean_decision_time),
        itr_trial_bits_per_min: per_min(mean_trial_length),
    }
}

/// Wolpaw's bits per trial for `n` equally likely classes at accuracy `p`:
/// B = log2 N + P log2 P + (1−P) log2((1−P)/(N−1)); 0 when P ≤ 1/N (or N < 2), log2 N when P = 1.
pub fn wolpaw_bits(n: usize, p: f64) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let nf = n as f64;
    if p.is_nan() || p <= 1.0 / nf {
        0.0
    } else if p >= 1.0 {
        nf.log2()
    } else {
        nf.log2() + p * p.log2() + (1.0 - p) * ((1.0 - p) / (nf - 1.0)).log2()
    }
}

/// Bits per minute at `seconds` per selection; `None` unless `seconds` is positive and finite.
pub fn bits_per_minute(bits: f64, seconds: f64) -> Option<f64> {
    (seconds > 0.0 && seconds.is_finite()).then(|| bits * 60.0 / seconds)
}

/// The mean of the accuracies that exist.
pub fn mean_accuracy(accuracies: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = accuracies.into_iter().flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(t: f64, label: &str) -> Token {
        Token { t, label: label.into() }
    }

    fn ssvep() -> Alignment {
        let rules = TrialRules {
            classes: vec!["13Hz".into(), "17Hz".into(), "21Hz".into()],
            trial_start: Some("stim_start".into()),
            trial_length: Some(5.0),
            ..TrialRules::default()
        };
        Alignment { rules, ..Alignment::default() }
    }

    fn mi() -> Alignment {
        let rules = TrialRules {
            classes: vec!["T1".into(), "T2".into()],
            map: [("T1".to_string(), "hands".to_string()), ("T2".to_string(), "feet".to_string())].into(),
            ..TrialRules::default()
        };
        Alignment { rules, ..Alignment::default() }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn trial(start: f64, end: f64) -> Trial {
        Trial { class: 0, cue_onset: start, start, end }
    }

    #[test]
    fn no_token_in_the_trial_is_undecided() {
        let tokens = vec![tok(0.9, "a"), tok(2.1, "b")];
        assert_eq!(decide(&trial(1.0, 2.0), &tokens, Decision::First, 0.0), None);
        assert_eq!(decide(&trial(1.0, 2.0), &tokens, Decision::Majority, 0.0), None);
        assert_eq!(decide(&trial(1.0, 2.0), &[], Decision::First, 0.0), None);
    }

    #[test]
    fn tokens_exactly_at_the_boundaries_count() {
        let at_start = vec![tok(0.5, "x"), tok(1.0, "a"), tok(1.5, "b")];
        assert_eq!(
            decide(&trial(1.0, 2.0), &at_start, Decision::First, 0.0),
            Some(Decided { label: "a".into(), t: 1.0 })
        );
        let at_end = vec![tok(2.0, "b"), tok(2.0000001, "c")];
        assert_eq!(
            decide(&trial(1.0, 2.0), &at_end, Decision::First, 0.0),
            Some(Decided { label: "b".into(), t: 2.0 })
        );
        assert_eq!(
            decide(&trial(1.0, 2.0), &at_end, Decision::Majority, 0.0),
            Some(Decided { label: "b".into(), t: 2.0 })
        );
    }

    #[test]
    fn majority_takes_the_most_frequent_and_breaks_ties_by_the_earliest_token() {
        let tokens = vec![tok(1.1, "b"), tok(1.2, "a"), tok(1.3, "a"), tok(1.4, "b"), tok(1.5, "c")];
        // a and b both twice: b came first.
        assert_eq!(
            decide(&trial(1.0, 2.0), &tokens, Decision::Majority, 0.0),
            Some(Decided { label: "b".into(), t: 1.5 })
        );
        let tokens = vec![tok(1.1, "b"), tok(1.2, "a"), tok(1.3, "a")];
        assert_eq!(
            decide(&trial(1.0, 2.0), &tokens, Decision::Majority, 0.0),
            Some(Decided { label: "a".into(), t: 1.3 })
        );
        // Ties broken by the earliest token even when its label sorts last.
        let tokens = vec![tok(1.1, "z"), tok(1.2, "a")];
        assert_eq!(decide(&trial(1.0, 2.0), &tokens, Decision::Majority, 0.0).unwrap().label, "z");
        assert_eq!(decide(&trial(1.0, 2.0), &tokens, Decision::First, 0.0).unwrap().label, "z");
    }

    #[test]
    fn a_delay_ignores_windows_that_began_before_the_trial() {
        // The previous trial's last token at 1.2 (its 2 s window began at -0.8) does not count.
        let tokens = vec![tok(1.2, "old"), tok(2.9, "x"), tok(3.0, "new"), tok(3.5, "new")];
        assert_eq!(decide(&trial(1.0, 6.0), &tokens, Decision::First, 0.0).unwrap().label, "old");
        // Exactly at start + delay counts; decision time stays t − start.
        let d = decide(&trial(1.0, 6.0), &tokens, Decision::First, 2.0).unwrap();
        assert_eq!(d, Decided { label: "new".into(), t: 3.0 });
        assert_eq!(decide(&trial(1.0, 6.0), &tokens, Decision::Majority, 2.0).unwrap().label, "new");
        assert_eq!(decide(&trial(1.0, 3.4), &tokens, Decision::First, 2.5), None);
        let r = decide_all(&[trial(1.0, 6.0)], &tokens, Decision::First, 2.0);
        assert_eq!(r[0].decided.as_ref().unwrap().t - r[0].trial.start, 2.0);
    }

    #[test]
    fn whole_window_takes_the_models_window_length() {
        let m = model(&["13Hz", "17Hz"], None);
        let (a, _) = build_alignment(None, &[], Some(&m), None, Some(5.0), Decision::First, true).unwrap();
        assert_eq!(a.token_delay, 2.0);
        let (a, _) = build_alignment(None, &[], Some(&m), None, Some(5.0), Decision::First, false).unwrap();
        assert_eq!(a.token_delay, 0.0);
        let e = build_alignment(None, &[], Some(&m), None, Some(1.5), Decision::First, true).unwrap_err();
        assert!(e.contains("2 s windows do not fit in a 1.5 s trial"), "{e}");
        let unknown = ModelLabels { window_seconds: None, ..m };
        let e = build_alignment(None, &[], Some(&unknown), None, None, Decision::First, true).unwrap_err();
        assert!(e.contains("window length"), "{e}");
    }

    #[test]
    fn decide_all_sorts_tokens_by_time() {
        let tokens = vec![tok(1.5, "b"), tok(1.2, "a")];
        let r = decide_all(&[trial(1.0, 2.0)], &tokens, Decision::First, 0.0);
        assert_eq!(r[0].decided, Some(Decided { label: "a".into(), t: 1.2 }));
    }

    fn result(class: usize, start: f64, decided: Option<(&str, f64)>) -> TrialResult {
        TrialResult {
            trial: Trial { class, cue_onset: start - 3.0, start, end: start + 5.0 },
            decided: decided.map(|(l, t)| Decided { label: l.into(), t }),
        }
    }

    #[test]
    fn confusion_accuracy_and_decision_time() {
        let a = ssvep();
        let results = vec![
            result(0, 10.0, Some(("13Hz", 11.0))),
            result(0, 20.0, Some(("17Hz", 22.0))),
            result(1, 30.0, Some(("17Hz", 30.5))),
            result(2, 40.0, None),
        ];
        let s = score(&results, &a);
        assert_eq!(s.columns, vec!["13Hz", "17Hz", "21Hz", "none"]);
        assert_eq!(s.matrix, vec![vec![1, 1, 0, 0], vec![0, 1, 0, 0], vec![0, 0, 0, 1]]);
        assert_eq!((s.trials, s.decided, s.correct), (4, 3, 2));
        assert_eq!(s.accuracy, Some(0.5));
        assert!(close(s.mean_decision_time.unwrap(), (1.0 + 2.0 + 0.5) / 3.0));
        assert_eq!(s.mean_trial_length, Some(5.0));
        let b = wolpaw_bits(3, 0.5);
        assert!(close(s.bits_per_trial.unwrap(), b));
        assert!(close(s.itr_bits_per_min.unwrap(), b * 60.0 / (3.5 / 3.0)));
        assert!(close(s.itr_trial_bits_per_min.unwrap(), b * 12.0));
    }

    #[test]
    fn mapped_labels_and_labels_outside_the_classes() {
        let a = mi();
        let results = vec![
            result(0, 0.0, Some(("hands", 1.0))),
            result(1, 10.0, Some(("rest", 11.0))),
            result(1, 20.0, Some(("feet", 21.0))),
            result(1, 30.0, Some(("left", 31.0))),
        ];
        let s = score(&results, &a);
        assert_eq!(s.columns, vec!["T1", "T2", "left", "rest", "none"]);
        assert_eq!(s.matrix, vec![vec![1, 0, 0, 0, 0], vec![0, 1, 1, 1, 0]]);
        assert_eq!(s.correct, 2);
        assert_eq!(s.accuracy, Some(0.5));
    }

    #[test]
    fn nothing_to_score() {
        let s = score(&[], &ssvep());
        assert_eq!((s.trials, s.accuracy, s.mean_decision_time, s.itr_bits_per_min), (0, None, None, None));
        assert_eq!(s.matrix, vec![vec![0; 4]; 3]);
        // Trials but no decision: accuracy 0, no decision time, no ITR against it.
        let s = score(&[result(0, 1.0, None)], &ssvep());
        assert_eq!((s.accuracy, s.mean_decision_time, s.bits_per_trial), (Some(0.0), None, Some(0.0)));
        assert_eq!((s.itr_bits_per_min, s.itr_trial_bits_per_min), (None, Some(0.0)));
    }

    #[test]
    fn wolpaw() {
        // At or below chance: 0.
        assert_eq!(wolpaw_bits(3, 1.0 / 3.0), 0.0);
        assert_eq!(wolpaw_bits(3, 0.2), 0.0);
        assert_eq!(wolpaw_bits(2, 0.5), 0.0);
        assert_eq!(wolpaw_bits(4, 0.0), 0.0);
        // Perfect: log2 N.
        assert_eq!(wolpaw_bits(2, 1.0), 1.0);
        assert!(close(wolpaw_bits(3, 1.0), 3f64.log2()));
        assert!(close(wolpaw_bits(40, 1.0), 40f64.log2()));
        // Fewer than two classes carry no information.
        assert_eq!(wolpaw_bits(1, 1.0), 0.0);
        assert_eq!(wolpaw_bits(0, 1.0), 0.0);
        // Textbook values: N = 2, P = 0.9 → 1 − H(0.9) = 0.531; N = 4, P = 0.8 → 0.961.
        assert!((wolpaw_bits(2, 0.9) - 0.531_004_406).abs() < 1e-8);
        let b = 2.0 + 0.8 * 0.8f64.log2() + 0.2 * (0.2f64 / 3.0).log2();
        assert!(close(wolpaw_bits(4, 0.8), b) && (b - 0.961_079_405).abs() < 1e-8);
        // Monotone just above chance, continuous at 1.
        assert!(wolpaw_bits(3, 0.34) > 0.0 && wolpaw_bits(3, 0.34) < 1e-3);
        assert!((wolpaw_bits(3, 1.0 - 1e-12) - 3f64.log2()).abs() < 1e-9);
        assert_eq!(bits_per_minute(1.0, 2.0), Some(30.0));
        assert_eq!(bits_per_minute(1.0, 0.0), None);
        assert_eq!(bits_per_minute(1.0, f64::INFINITY), None);
    }

    fn model(labels: &[&str], null: Option<&str>) -> ModelLabels {
        ModelLabels {
            name: "m".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            null_label: null.map(str::to_string),
            window_seconds: Some(2.0),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_classes_are_the_labels_but_the_null_label_after_mapping() {
        let m = model(&["rest", "hands", "feet"], Some("rest"));
        let (a, notes) = build_alignment(
            None,
            &map(&[("T0", "rest"), ("T1", "hands"), ("T2", "feet")]),
            Some(&m),
            None,
            None,
            Decision::First,
            false,
        )
        .unwrap();
        assert_eq!(a.classes, strings(&["T1", "T2"]));
        assert_eq!(a.label_of("T2"), "feet");
        assert!(notes.is_empty());
        // T0 and the labels end a marker search; the classes do not count as "other".
        assert_eq!(a.other_cues, ["T0", "feet", "hands", "rest"].iter().map(|s| s.to_string()).collect());

        let m3 = model(&["13Hz", "17Hz", "21Hz"], None);
        let (a, _) =
            build_alignment(None, &[], Some(&m3), Some("stim_start".into()), Some(5.0), Decision::First, false)
                .unwrap();
        assert_eq!(a.classes, strings(&["13Hz", "17Hz", "21Hz"]));
        assert!(a.other_cues.is_empty());
    }

    #[test]
    fn alignment_errors_name_the_problem() {
        let m = model(&["rest", "hands", "feet"], Some("rest"));
        let e =
            build_alignment(Some(&strings(&["T1"])), &[], Some(&m), None, None, Decision::First, false).unwrap_err();
        assert!(e.contains("no label \"T1\"") && e.contains("rest, hands, feet"), "{e}");
        let e = build_alignment(
            Some(&strings(&["T1"])),
            &map(&[("T1", "hand")]),
            Some(&m),
            None,
            None,
            Decision::First,
            false,
        )
        .unwrap_err();
        assert!(e.contains("\"hand\" (mapped from \"T1\")"), "{e}");
        let e = build_alignment(
            Some(&strings(&["T1", "T2"])),
            &map(&[("T1", "feet"), ("T2", "feet")]),
            Some(&m),
            None,
            None,
            Decision::First,
            false,
        )
        .unwrap_err();
        assert!(e.contains("both decoded as the label \"feet\""), "{e}");
        let e = build_alignment(
            None,
            &map(&[("T1", "feet"), ("T2", "feet")]),
            Some(&m),
            None,
            None,
            Decision::First,
            false,
        )
        .unwrap_err();
        assert!(e.contains("T1, T2") && e.contains("--classes"), "{e}");
        let e =
            build_alignment(Some(&strings(&["a", "a"])), &[], None, None, None, Decision::First, false).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = build_alignment(None, &[], None, None, None, Decision::First, false).unwrap_err();
        assert!(e.contains("--classes"), "{e}");
        let e = build_alignment(None, &[], Some(&model(&["rest"], Some("rest"))), None, None, Decision::First, false)
            .unwrap_err();
        assert!(e.contains("no labels besides its null label"), "{e}");
        let e = build_alignment(Some(&strings(&["a"])), &[], None, Some("a".into()), None, Decision::First, false)
            .unwrap_err();
        assert!(e.contains("also a class"), "{e}");
        // Without a known model, any class is accepted.
        let (a, _) =
            build_alignment(Some(&strings(&["x"])), &[], None, None, Some(1.0), Decision::Majority, false).unwrap();
        assert_eq!((a.classes.clone(), a.decision), (strings(&["x"]), Decision::Majority));
    }

    #[test]
    fn a_class_on_the_null_label_is_a_note() {
        let m = model(&["rest", "hands"], Some("rest"));
        let (_, notes) = build_alignment(
            Some(&strings(&["T0", "T1"])),
            &map(&[("T0", "rest"), ("T1", "hands")]),
            Some(&m),
            None,
            None,
            Decision::First,
            false,
        )
        .unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("null label"), "{notes:?}");
    }

    #[test]
    fn mean_of_file_accuracies() {
        assert_eq!(mean_accuracy([Some(0.5), None, Some(1.0)]), Some(0.75));
        assert_eq!(mean_accuracy([None]), None);
    }
}

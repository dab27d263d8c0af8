//! Trials from a recording's cue annotations: the one set of rules by which `bci2tokenctl
//! evaluate` scores a model and `model train` cuts the epochs it fits (`--classes`, `--map`,
//! `--trial-start`, `--trial-length`), built and checked by [`build_rules`]. No I/O.

use std::collections::{BTreeMap, BTreeSet};

/// An annotation of the recording (stream time, seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub onset: f64,
    pub duration: Option<f64>,
    pub text: String,
}

/// How trials are cut out of the annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrialRules {
    /// Annotation texts that are class cues, in class order.
    pub classes: Vec<String>,
    /// Annotation text → model label (texts not in the map are their own label).
    pub map: BTreeMap<String, String>,
    /// With `Some(marker)`, a trial starts at the first `marker` annotation after its cue (and
    /// before the next cue); without, at the cue.
    pub trial_start: Option<String>,
    /// Trial length in seconds; `None`: the cue annotation's duration.
    pub trial_length: Option<f64>,
    /// Further annotation texts that, like a class cue, end the search for a cue's marker
    /// (cues of classes not used, e.g. `rest`).
    pub other_cues: BTreeSet<String>,
    /// With `Some((first, last))`, only the trials numbered `first` to `last` (from 1, in time
    /// order, of each recording): the first half of a session to train on, the second to test.
    pub trials: Option<(usize, usize)>,
}

impl TrialRules {
    /// The model label a class's trials are decoded as.
    pub fn label_of<'a>(&'a self, class: &'a str) -> &'a str {
        self.map.get(class).map_or(class, String::as_str)
    }

    fn is_cue(&self, text: &str) -> bool {
        self.classes.iter().any(|c| c == text) || self.other_cues.contains(text)
    }
}

/// What the evaluation needs to know about the model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelLabels {
    pub name: String,
    pub labels: Vec<String>,
    /// The label that emits no token (rest), if any.
    pub null_label: Option<String>,
    /// Length of the windows the model decodes, seconds.
    pub window_seconds: Option<f64>,
}

/// Builds the [`TrialRules`] from the command line (`--classes`, `--map`, `--trial-start`,
/// `--trial-length`) and, where there is one, the model's labels, checking that every class maps
/// to a label the model can emit. `classes: None` means the model's labels except its null label,
/// each written as the annotation text that `map` maps to it (or as itself). Other cues (the map's
/// texts and the model's labels that are not classes: `rest`) end a cue's marker search. Returns
/// notes (warnings) beside it.
pub fn build_rules(
    classes: Option<&[String]>,
    map: &[(String, String)],
    model: Option<&ModelLabels>,
    trial_start: Option<String>,
    trial_length: Option<f64>,
) -> Result<(TrialRules, Vec<String>), String> {
    let map: BTreeMap<String, String> = map.iter().cloned().collect(); // a later --map of a text wins
    let given = classes.is_some();
    let classes: Vec<String> = match (classes, model) {
        (Some(c), _) => c.to_vec(),
        (None, None) => return Err("the model's labels are not known: pass --classes".into()),
        (None, Some(m)) => {
            let mut out = Vec::new();
            for label in m.labels.iter().filter(|l| Some(*l) != m.null_label.as_ref()) {
                let texts: Vec<&String> = map.iter().filter(|(_, v)| *v == label).map(|(k, _)| k).collect();
                match texts.as_slice() {
                    [] => out.push(label.clone()),
                    [one] => out.push((*one).clone()),
                    many => {
                        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                        return Err(format!(
                            "--map maps {} to the label \"{label}\": pass --classes to say which are the cues",
                            many.join(", ")
                        ));
                    }
                }
            }
            out
        }
    };
    if classes.is_empty() {
        return Err(match model.filter(|_| !given) {
            Some(m) => format!("model `{}` has no labels besides its null label: pass --classes", m.name),
            None => "--classes is empty".into(),
        });
    }
    let a = TrialRules { classes, map, trial_start, trial_length, other_cues: BTreeSet::new(), trials: None };
    let mut notes = Vec::new();
    for (i, c) in a.classes.iter().enumerate() {
        if c.is_empty() {
            return Err("--classes has an empty class".into());
        }
        if a.classes[..i].contains(c) {
            return Err(format!("--classes names \"{c}\" twice"));
        }
        let label = a.label_of(c);
        if let Some(j) = a.classes[..i].iter().position(|d| a.label_of(d) == label) {
            return Err(format!(
                "the classes \"{}\" and \"{c}\" are both decoded as the label \"{label}\": a trial's \
                 class could not be told from its token; fix --map or --classes",
                a.classes[j]
            ));
        }
        if let Some(m) = model {
            if !m.labels.iter().any(|l| l == label) {
                let via = if label == c { String::new() } else { format!(" (mapped from \"{c}\")") };
                return Err(format!(
                    "model `{}` has no label \"{label}\"{via}; its labels are {}: fix --classes or --map",
                    m.name,
                    m.labels.join(", ")
                ));
            }
            if m.null_label.as_deref() == Some(label) {
                notes.push(format!(
                    "class \"{c}\" is the model's null label \"{label}\", which emits no tokens: its trials \
                     can only be undecided (wrong) or show false detections"
                ));
            }
        }
    }
    // Cues of classes not evaluated (e.g. `rest`) also end the search for a cue's marker.
    let mut other: BTreeSet<String> = a.map.keys().cloned().collect();
    if let Some(m) = model {
        other.extend(m.labels.iter().cloned());
        other.extend(m.null_label.iter().cloned());
    }
    if let Some(marker) = &a.trial_start {
        other.remove(marker);
        if a.classes.contains(marker) {
            return Err(format!("--trial-start \"{marker}\" is also a class"));
        }
    }
    for c in &a.classes {
        other.remove(c);
    }
    Ok((TrialRules { other_cues: other, ..a }, notes))
}

/// One trial: its true class (index into `TrialRules::classes`) and its time span.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub class: usize,
    pub cue_onset: f64,
    pub start: f64,
    pub end: f64,
}

/// Trials of one recording, and notes about cues that gave no trial.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trials {
    pub trials: Vec<Trial>,
    pub notes: Vec<String>,
}

/// Cuts trials out of `annotations` (any order; sorted by onset here, ties kept in arrival order).
///
/// A cue is an annotation whose text is one of `classes`. Its trial starts at the cue, or with
/// `trial_start` at the first marker annotation after the cue that comes before the next cue
/// (of any class, or one of `other_cues`); a cue without such a marker is skipped with a note.
/// The trial lasts `trial_length`, or the cue's own duration; a cue with neither is an error.
pub fn form_trials(annotations: &[Annotation], a: &TrialRules) -> Result<Trials, String> {
    let mut order: Vec<&Annotation> = annotations.iter().collect();
    order.sort_by(|x, y| x.onset.total_cmp(&y.onset));
    let mut out = Trials::default();
    for (i, cue) in order.iter().enumerate() {
        let Some(class) = a.classes.iter().position(|c| *c == cue.text) else { continue };
        let length = match (a.trial_length, cue.duration) {
            (Some(len), _) => len,
            (None, Some(d)) if d > 0.0 && d.is_finite() => d,
            (None, _) => {
                return Err(format!(
                    "the cue \"{}\" at {:.3} s has no duration and --trial-length is not given; \
                     pass --trial-length SECONDS",
                    cue.text, cue.onset
                ))
            }
        };
        let start = match &a.trial_start {
            None => cue.onset,
            Some(marker) => {
                let found = order[i + 1..].iter().take_while(|x| !a.is_cue(&x.text)).find(|x| x.text == *marker);
                match found {
                    Some(m) => m.onset,
                    None => {
                        out.notes.push(format!(
                            "cue \"{}\" at {:.3} s has no \"{marker}\" before the next cue: trial skipped",
                            cue.text, cue.onset
                        ));
                        continue;
                    }
                }
            }
        };
        out.trials.push(Trial { class, cue_onset: cue.onset, start, end: start + length });
    }
    if let Some((first, last)) = a.trials {
        let count = out.trials.len();
        if last > count {
            out.notes.push(format!("trials {first}-{last} asked for, the recording has {count}"));
        }
        let kept = last.saturating_sub(first).saturating_add(1);
        out.trials = out.trials.into_iter().skip(first.saturating_sub(1)).take(kept).collect();
    }
    Ok(out)
}

/// Parses `FIRST-LAST` (trial numbers from 1, inclusive).
pub fn parse_trial_range(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('-').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((first, last)) if first >= 1 && last >= first => Ok((first, last)),
        _ => Err(format!("'{text}' is not FIRST-LAST, trial numbers from 1 (e.g. 1-12)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(onset: f64, text: &str) -> Annotation {
        Annotation { onset, duration: None, text: text.into() }
    }

    fn ann_d(onset: f64, duration: f64, text: &str) -> Annotation {
        Annotation { onset, duration: Some(duration), text: text.into() }
    }

    fn ssvep() -> TrialRules {
        TrialRules {
            classes: vec!["13Hz".into(), "17Hz".into(), "21Hz".into()],
            trial_start: Some("stim_start".into()),
            trial_length: Some(5.0),
            ..TrialRules::default()
        }
    }

    fn mi() -> TrialRules {
        TrialRules {
            classes: vec!["T1".into(), "T2".into()],
            map: [("T1".to_string(), "hands".to_string()), ("T2".to_string(), "feet".to_string())].into(),
            ..TrialRules::default()
        }
    }

    #[test]
    fn a_trial_range_keeps_those_trials_in_time_order() {
        let anns: Vec<Annotation> =
            (0..6).map(|i| ann_d(i as f64 * 10.0, 4.0, if i % 2 == 0 { "T1" } else { "T2" })).collect();
        let rules = TrialRules { trials: Some((2, 4)), ..mi() };
        let t = form_trials(&anns, &rules).unwrap();
        let starts: Vec<f64> = t.trials.iter().map(|t| t.start).collect();
        assert_eq!(starts, [10.0, 20.0, 30.0]);
        assert!(t.notes.is_empty());
        let t = form_trials(&anns, &TrialRules { trials: Some((5, 9)), ..mi() }).unwrap();
        assert_eq!(t.trials.len(), 2);
        assert!(t.notes[0].contains("the recording has 6"), "{:?}", t.notes);
        assert_eq!(parse_trial_range("13-24"), Ok((13, 24)));
        for bad in ["0-3", "4-3", "3", "a-b", "-2"] {
            assert!(parse_trial_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_without_a_model_take_the_classes_and_stop_a_marker_search_at_the_map_s_other_cues() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let map = vec![("T0".to_string(), "rest".to_string()), ("T1".to_string(), "hands".to_string())];
        let (rules, notes) =
            build_rules(Some(&strings(&["T1", "T2"])), &map, None, Some("go".into()), Some(2.0)).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(rules.label_of("T1"), "hands");
        assert_eq!(rules.other_cues.iter().cloned().collect::<Vec<_>>(), ["T0"], "T0 is a cue, not a class");
        // A T1 cue whose marker comes only after a T0 cue gives no trial (it would take T0's).
        let anns = [ann(0.0, "T1"), ann(1.0, "T0"), ann(1.5, "go")];
        let t = form_trials(&anns, &rules).unwrap();
        assert!(t.trials.is_empty() && t.notes.len() == 1, "{t:?}");
        assert!(build_rules(Some(&strings(&["T1", "T1"])), &[], None, None, None).unwrap_err().contains("twice"));
        assert!(build_rules(Some(&strings(&["T1", "go"])), &[], None, Some("go".into()), None)
            .unwrap_err()
            .contains("also a class"));
        assert!(build_rules(None, &[], None, None, None).unwrap_err().contains("pass --classes"));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ssvep_trials_start_at_the_marker_after_the_cue() {
        let anns = vec![
            ann(1.0, "experiment_start"),
            ann(3.0, "rest"),
            ann(3.5, "stim_start"),
            ann(8.5, "stim_stop"),
            ann(10.0, "17Hz"),
            ann(13.0, "stim_start"),
            ann(18.0, "stim_stop"),
            ann(20.0, "13Hz"),
            ann(23.0, "stim_start"),
        ];
        let t = form_trials(&anns, &ssvep()).unwrap();
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        assert_eq!(
            t.trials,
            vec![
                Trial { class: 1, cue_onset: 10.0, start: 13.0, end: 18.0 },
                Trial { class: 0, cue_onset: 20.0, start: 23.0, end: 28.0 },
            ]
        );
    }

    #[test]
    fn a_missing_marker_skips_the_trial_with_a_note() {
        // 21Hz has no stim_start before the next (class) cue; 13Hz has none before an other cue
        // (`rest`), whose marker must not be taken; 17Hz has none at all (end of recording).
        let mut a = ssvep();
        a.other_cues.insert("rest".into());
        let anns = vec![
            ann(0.0, "21Hz"),
            ann(2.0, "stim_stop"),
            ann(10.0, "13Hz"),
            ann(15.0, "rest"),
            ann(15.5, "stim_start"),
            ann(30.0, "17Hz"),
        ];
        let t = form_trials(&anns, &a).unwrap();
        assert!(t.trials.is_empty(), "{:?}", t.trials);
        assert_eq!(t.notes.len(), 3);
        assert!(t.notes[0].contains("\"21Hz\" at 0.000 s") && t.notes[0].contains("\"stim_start\""), "{:?}", t.notes);
        assert!(t.notes[1].contains("\"13Hz\" at 10.000 s"), "{:?}", t.notes);
        assert!(t.notes[2].contains("skipped"), "{:?}", t.notes);
        // Without `rest` as a cue, the 13Hz cue takes rest's marker.
        let t = form_trials(&anns, &ssvep()).unwrap();
        assert_eq!(t.trials, vec![Trial { class: 0, cue_onset: 10.0, start: 15.5, end: 20.5 }]);
    }

    #[test]
    fn annotations_are_sorted_by_onset() {
        let anns = vec![ann(13.0, "stim_start"), ann(10.0, "17Hz")];
        let t = form_trials(&anns, &ssvep()).unwrap();
        assert_eq!(t.trials, vec![Trial { class: 1, cue_onset: 10.0, start: 13.0, end: 18.0 }]);
    }

    #[test]
    fn mi_trials_take_the_cue_duration_and_ignore_other_texts() {
        let anns = vec![ann_d(0.0, 4.2, "T0"), ann_d(4.2, 4.1, "T2"), ann_d(8.3, 4.2, "T0"), ann_d(12.5, 4.1, "T1")];
        let t = form_trials(&anns, &mi()).unwrap();
        assert_eq!(t.trials.len(), 2);
        assert_eq!((t.trials[0].class, t.trials[0].start), (1, 4.2));
        assert!(close(t.trials[0].end, 8.3));
        assert_eq!((t.trials[1].class, t.trials[1].start), (0, 12.5));
        // --trial-length wins over the duration.
        let mut a = mi();
        a.trial_length = Some(2.0);
        let t = form_trials(&anns, &a).unwrap();
        assert_eq!(t.trials[0].end, 6.2);
    }

    #[test]
    fn a_cue_without_duration_or_length_is_an_error() {
        let anns = vec![ann(1.5, "T1")];
        let e = form_trials(&anns, &mi()).unwrap_err();
        assert!(e.contains("\"T1\" at 1.500 s") && e.contains("--trial-length"), "{e}");
        let e = form_trials(&[ann_d(1.5, 0.0, "T1")], &mi()).unwrap_err();
        assert!(e.contains("no duration"), "{e}");
    }
}

//! How well a fitted decoder does on its own recording: stratified k-fold cross-validation and
//! the information transfer rate.

/// Stratified k-fold folds over trials in recording order: each class's trials are dealt to the
/// folds in turn, so every fold holds about 1/k of each class and folds keep time order within a
/// class. Returns, for each fold, the indices held out.
pub fn stratified_folds(labels: &[usize], k: usize) -> Vec<Vec<usize>> {
    let k = k.max(2);
    let mut folds = vec![Vec::new(); k];
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    for class in 0..classes {
        let trials: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        // Contiguous blocks per class: the i-th block of a class goes to fold i.
        for (j, &t) in trials.iter().enumerate() {
            folds[j * k / trials.len()].push(t);
        }
    }
    for f in &mut folds {
        f.sort_unstable();
    }
    folds.retain(|f| !f.is_empty());
    folds
}

/// Checks that `k` folds of `labels` leave every class at least `min_train` trials to train on
/// in each fold (a fold holds out up to ⌈count/k⌉ of a class); `names` names the classes.
pub fn check_folds(labels: &[usize], k: usize, min_train: usize, names: &[String]) -> Result<(), String> {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    for class in 0..classes {
        let count = labels.iter().filter(|&&l| l == class).count();
        let need = min_train + count.div_ceil(k.max(2));
        if count < need {
            let name = names.get(class).map_or_else(|| class.to_string(), |n| format!("\"{n}\""));
            return Err(format!(
                "class {name} has {count} trial(s), too few for {k}-fold cross-validation with {min_train} left to \
                 train on in every fold (it needs {need}): record more trials of it, or use more folds (fewer held out at once)"
            ));
        }
    }
    Ok(())
}

/// The folds of windows from folds of trials: every window of a held-out trial is held out with
/// it (windows of one trial overlap and are alike; splitting them would inflate the accuracy).
/// `window_trial` gives each window's trial.
pub fn window_folds(trial_folds: &[Vec<usize>], window_trial: &[usize]) -> Vec<Vec<usize>> {
    let trials = window_trial.iter().copied().max().map_or(0, |m| m + 1);
    let mut fold_of = vec![usize::MAX; trials];
    for (f, fold) in trial_folds.iter().enumerate() {
        for &t in fold.iter().filter(|&&t| t < trials) {
            fold_of[t] = f;
        }
    }
    let mut out = vec![Vec::new(); trial_folds.len()];
    for (w, &t) in window_trial.iter().enumerate() {
        if let Some(fold) = out.get_mut(fold_of[t]) {
            fold.push(w);
        }
    }
    out
}

/// Accuracy of `predict(train, test)` (the labels it gives the test trials) over `folds`.
pub fn cross_validate<E>(
    labels: &[usize],
    folds: &[Vec<usize>],
    mut predict: impl FnMut(&[usize], &[usize]) -> Result<Vec<usize>, E>,
) -> Result<f64, E> {
    let (mut right, mut total) = (0usize, 0usize);
    for test in folds {
        let mut held_out = vec![false; labels.len()];
        for &i in test.iter().filter(|&&i| i < labels.len()) {
            held_out[i] = true;
        }
        let train: Vec<usize> = (0..labels.len()).filter(|&i| !held_out[i]).collect();
        let predicted = predict(&train, test)?;
        right += test.iter().zip(&predicted).filter(|(&t, &p)| labels[t] == p).count();
        total += test.len();
    }
    Ok(if total == 0 { 0.0 } else { right as f64 / total as f64 })
}

/// Wolpaw's information transfer rate in bits per minute: N classes, accuracy P, one decision
/// every `seconds`. Below chance it is 0.
pub fn itr_bits_per_minute(classes: usize, accuracy: f64, seconds: f64) -> f64 {
    let n = classes as f64;
    // NaN fails every comparison, so it is tested for: it gives 0, not the most bits.
    if classes < 2 || !(seconds > 0.0 && seconds.is_finite()) || accuracy.is_nan() || accuracy <= 1.0 / n {
        return 0.0;
    }
    let p = accuracy.min(1.0);
    let mut bits = n.log2() + p * p.log2();
    if p < 1.0 {
        bits += (1.0 - p) * ((1.0 - p) / (n - 1.0)).log2();
    }
    bits * 60.0 / seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_hold_every_trial_once_and_each_class_in_each() {
        let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2];
        let folds = stratified_folds(&labels, 5);
        assert_eq!(folds.len(), 5);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        for f in &folds {
            for class in 0..3 {
                assert_eq!(f.iter().filter(|&&i| labels[i] == class).count(), 1, "{folds:?}");
            }
        }
        // A perfect predictor, and one that always says 0.
        let acc =
            cross_validate::<()>(&labels, &folds, |_, test| Ok(test.iter().map(|&i| labels[i]).collect())).unwrap();
        assert_eq!(acc, 1.0);
        let acc = cross_validate::<()>(&labels, &folds, |_, test| Ok(vec![0; test.len()])).unwrap();
        assert!((acc - 5.0 / 15.0).abs() < 1e-12);
    }

    #[test]
    fn windows_follow_their_trials_and_too_few_trials_are_refused() {
        // Trials 0..4 (classes 0 1 0 1), two windows each.
        let trial_folds = stratified_folds(&[0, 1, 0, 1], 2);
        let window_trial = [0, 0, 1, 1, 2, 2, 3, 3];
        let folds = window_folds(&trial_folds, &window_trial);
        assert_eq!(folds, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        let names = ["left".to_string(), "right".to_string()];
        assert!(check_folds(&[0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 5, 2, &names).is_ok());
        let e = check_folds(&[0, 1, 0, 1, 1, 1], 5, 2, &names).unwrap_err();
        assert!(e.contains("class \"left\" has 2 trial(s)") && e.contains("needs 3"), "{e}");
    }

    #[test]
    fn itr_matches_wolpaw_s_formula() {
        // 2 classes, always right, one decision a second: 1 bit/s.
        assert!((itr_bits_per_minute(2, 1.0, 1.0) - 60.0).abs() < 1e-12);
        // 4 classes at 0.85 every 2 s: (2 + 0.85 log2 0.85 + 0.15 log2 0.05) × 30.
        let want = (2.0 + 0.85 * 0.85f64.log2() + 0.15 * (0.05f64).log2()) * 30.0;
        assert!((itr_bits_per_minute(4, 0.85, 2.0) - want).abs() < 1e-12);
        assert_eq!(itr_bits_per_minute(3, 0.3, 1.0), 0.0);
        assert_eq!(itr_bits_per_minute(3, f64::NAN, 1.0), 0.0);
        assert_eq!(itr_bits_per_minute(3, 0.9, f64::NAN), 0.0);
    }
}

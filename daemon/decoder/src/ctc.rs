//! Connectionist temporal classification: turning per-frame label probabilities into a label
//! sequence, greedily (best label per frame, repeats merged, blanks dropped) or with prefix beam
//! search (sums over every alignment of a prefix, so it can find a sequence no single frame path
//! shows).

use std::collections::HashMap;

/// A decoded sequence and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub labels: Vec<usize>,
    /// Greedy: the probability of the best path. Beam: the total probability of the prefix.
    pub probability: f64,
}

/// `probs` holds `frames × classes` per-frame probabilities (each frame sums to 1).
pub fn greedy(probs: &[f32], classes: usize, blank: usize) -> Decoded {
    let mut labels = Vec::new();
    let mut previous = blank;
    let mut log_p = 0.0f64;
    for frame in probs.chunks_exact(classes) {
        let (best, p) = frame.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).expect("classes > 0");
        log_p += f64::from(p).ln();
        if best != blank && best != previous {
            labels.push(best);
        }
        previous = best;
    }
    Decoded { labels, probability: log_p.exp() }
}

/// Prefix beam search keeping the `width` most probable prefixes after every frame.
pub fn beam(probs: &[f32], classes: usize, blank: usize, width: usize) -> Decoded {
    // Prefix → (probability ending in blank, probability ending in its last label).
    let mut beams: Vec<(Vec<usize>, f64, f64)> = vec![(Vec::new(), 1.0, 0.0)];
    for frame in probs.chunks_exact(classes) {
        let mut next: HashMap<Vec<usize>, (f64, f64)> = HashMap::new();
        for (prefix, p_blank, p_label) in &beams {
            let total = p_blank + p_label;
            for (c, &p) in frame.iter().enumerate() {
                let p = f64::from(p);
                if c == blank {
                    next.entry(prefix.clone()).or_default().0 += total * p;
                    continue;
                }
                let last = prefix.last().copied();
                let mut extended = prefix.clone();
                extended.push(c);
                if last == Some(c) {
                    // Repeating the last label without a blank between merges into the prefix;
                    // after a blank it starts a new label.
                    next.entry(prefix.clone()).or_default().1 += p_label * p;
                    next.entry(extended).or_default().1 += p_blank * p;
                } else {
                    next.entry(extended).or_default().1 += total * p;
                }
            }
        }
        let mut ranked: Vec<(Vec<usize>, f64, f64)> = next.into_iter().map(|(k, (b, l))| (k, b, l)).collect();
        ranked.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(width.max(1));
        beams = ranked;
    }
    let (labels, p_blank, p_label) = beams.into_iter().next().expect("at least the empty prefix");
    Decoded { labels, probability: p_blank + p_label }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_merges_repeats_and_drops_blanks() {
        // classes: 0 = blank, 1 = a, 2 = b; frames: a a blank a b b
        let frames =
            [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]];
        let probs: Vec<f32> = frames.iter().flatten().copied().collect();
        let d = greedy(&probs, 3, 0);
        assert_eq!(d.labels, vec![1, 1, 2]);
        let want: f64 = [0.8f32, 0.8, 0.8, 0.8, 0.8, 0.7].iter().map(|&p| f64::from(p)).product();
        assert!((d.probability - want).abs() < 1e-9);
    }

    #[test]
    fn beam_search_finds_what_the_best_path_hides() {
        // Two frames, blank 0.6 / a 0.4 each. The best single path is blank-blank (0.36, the
        // empty sequence), but "a" has three alignments: a-blank, blank-a, a-a = 0.64.
        let probs = [0.6f32, 0.4, 0.6, 0.4];
        assert_eq!(greedy(&probs, 2, 0).labels, Vec::<usize>::new());
        let d = beam(&probs, 2, 0, 4);
        assert_eq!(d.labels, vec![1]);
        assert!((d.probability - 0.64).abs() < 1e-6, "{}", d.probability);
    }

    #[test]
    fn beam_separates_repeats_only_across_a_blank() {
        // a, blank, a: "aa" needs the blank between; a, a: "a".
        let a = [0.05f32, 0.9, 0.05];
        let blank = [0.9f32, 0.05, 0.05];
        let aba: Vec<f32> = [a, blank, a].concat();
        assert_eq!(beam(&aba, 3, 0, 8).labels, vec![1, 1]);
        let aa: Vec<f32> = [a, a].concat();
        assert_eq!(beam(&aa, 3, 0, 8).labels, vec![1]);
        // With one beam it is still a valid (if greedy-like) search.
        assert_eq!(beam(&aba, 3, 0, 1).labels, vec![1, 1]);
    }
}

//! Clock synchronisation of an XDF stream's time stamps, as pyxdf's `load_xdf` does it by default
//! (`synchronize_clocks=True, handle_clock_resets=True`, its default thresholds), so that a
//! replay agrees with what Python users see:
//!
//! 1. the last clock offset is dropped together with samples beyond the footer's `sample_count`
//!    when both look like liblsl's "outlet destroyed while recording" bug (pylsl#67);
//! 2. the offsets are cut into segments at clock resets (a time going backwards, or a jump in both
//!    collection time and offset value far outside their median absolute deviation);
//! 3. per segment, a robust (Huber) linear fit of offset against collection time, by ADMM;
//! 4. each time stamp gets `intercept + slope × stamp` of its segment.
//!
//! Dejittering (pyxdf's `dejitter_timestamps`) is not done: the replay keeps the recorded stamps.

/// pyxdf's thresholds.
const RESET_TIME_STDS: f64 = 5.0;
const RESET_TIME_SECONDS: f64 = 5.0;
const RESET_VALUE_STDS: f64 = 10.0;
const RESET_VALUE_SECONDS: f64 = 1.0;
const WINSOR: f64 = 0.0001;
const ADMM_ITERATIONS: usize = 1000;

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// True where a difference is far from the others (pyxdf `_segment_clock_diff`).
fn glitches(diff: &[f64], stds: f64, seconds: f64) -> Vec<bool> {
    let m = median(diff);
    let shifted: Vec<f64> = diff.iter().map(|d| d - m).collect();
    let abs: Vec<f64> = shifted.iter().map(|d| d.abs()).collect();
    let mad = median(&abs) + f64::EPSILON;
    shifted.iter().map(|&s| (s / mad).abs() > stds && s.abs() > seconds).collect()
}

/// Inclusive index ranges of the clock offsets between resets (pyxdf `_detect_clock_resets`).
pub fn segments(times: &[f64], values: &[f64]) -> Vec<(usize, usize)> {
    let n = times.len();
    if n <= 1 {
        return vec![(0, n.saturating_sub(1))];
    }
    let dt: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let dv: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let time_glitch = glitches(&dt, RESET_TIME_STDS, RESET_TIME_SECONDS);
    let value_glitch = glitches(&dv, RESET_VALUE_STDS, RESET_VALUE_SECONDS);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..dt.len() {
        if dt[i] < 0.0 || (time_glitch[i] && value_glitch[i]) {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, dt.len()));
    out
}

/// Huber regression `y ≈ x0 + x1 t` by ADMM (pyxdf `_robust_fit`, rho = 1, 1000 iterations).
fn robust_fit(t: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = t.len();
    let offset = t.iter().copied().fold(f64::INFINITY, f64::min);
    let a1: Vec<f64> = t.iter().map(|v| v - offset).collect();
    // AᵀA = [[n, Σa], [Σa, Σa²]] and its Cholesky factor L = [[l00, 0], [l10, l11]].
    let (s1, s2) = (a1.iter().sum::<f64>(), a1.iter().map(|v| v * v).sum::<f64>());
    let l00 = (n as f64).sqrt();
    let l10 = s1 / l00;
    let l11_sq = s2 - l10 * l10;
    // Singular (all collection times equal), or NaN.
    if l11_sq.is_nan() || l11_sq <= 0.0 {
        return None;
    }
    let l11 = l11_sq.sqrt();
    let aty = (y.iter().sum::<f64>(), a1.iter().zip(y).map(|(a, v)| a * v).sum::<f64>());
    let solve = |b: (f64, f64)| {
        // L w = b, then Lᵀ x = w.
        let w0 = b.0 / l00;
        let w1 = (b.1 - l10 * w0) / l11;
        let x1 = w1 / l11;
        let x0 = (w0 - l10 * x1) / l00;
        (x0, x1)
    };
    let rho = 1.0;
    let mut z = vec![0.0; n];
    let mut u = vec![0.0; n];
    let mut x = (0.0, 0.0);
    for _ in 0..ADMM_ITERATIONS {
        let mut b = aty;
        for i in 0..n {
            let r = z[i] - u[i];
            b.0 += r;
            b.1 += a1[i] * r;
        }
        x = solve(b);
        for i in 0..n {
            let d = x.0 + x.1 * a1[i] - y[i] + u[i];
            let d_inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            let tmp = (1.0 - (1.0 + 1.0 / rho) * d_inv.abs()).max(0.0);
            z[i] = rho / (1.0 + rho) * d + 1.0 / (1.0 + rho) * tmp * d;
            u[i] = d - z[i];
        }
    }
    Some((x.0 - x.1 * offset, x.1))
}

/// (intercept, slope) per segment of the offsets.
fn coefficients(times: &[f64], values: &[f64], segs: &[(usize, usize)]) -> Vec<(f64, f64)> {
    segs.iter()
        .map(|&(a, b)| {
            if a == b {
                return (values[a], 0.0);
            }
            let t: Vec<f64> = times[a..=b].iter().map(|v| v / WINSOR).collect();
            let y: Vec<f64> = values[a..=b].iter().map(|v| v / WINSOR).collect();
            robust_fit(&t, &y).map_or((0.0, 0.0), |(c0, c1)| (c0 * WINSOR, c1))
        })
        .collect()
}

/// Is the last clock offset an outlier (pyxdf `_detect_corrupted_clock_offset`)?
pub fn last_offset_corrupted(times: &[f64], values: &[f64]) -> bool {
    if times.len() < 3 {
        return false;
    }
    let intervals: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let median_interval = median(&intervals[..intervals.len() - 1]);
    let last = intervals[intervals.len() - 1].abs();
    let time_ratio = if median_interval > 0.0 {
        last / median_interval
    } else if last > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let head = &values[..values.len() - 1];
    let m = median(head);
    let mad = median(&head.iter().map(|v| (v - m).abs()).collect::<Vec<_>>());
    let z = if mad > f64::EPSILON { (values[values.len() - 1] - m).abs() / (1.4826 * mad) } else { 0.0 };
    time_ratio > 10.0 || z > 10.0
}

/// Maps `stamps` (in place) onto the recording host's clock using the stream's clock offsets.
pub fn synchronize(stamps: &mut [f64], times: &[f64], values: &[f64]) {
    if stamps.is_empty() || times.is_empty() {
        return;
    }
    let segs = segments(times, values);
    let coef = coefficients(times, values, &segs);
    if segs.len() == 1 {
        for s in stamps.iter_mut() {
            *s += coef[0].0 + coef[0].1 * *s;
        }
        return;
    }
    // A time stamp belongs to the segment whose last collection time it is closer to than to the
    // next segment's first (pyxdf's rule; time stamps are assumed to increase).
    let mut start = 0;
    for (&(c0, c1), &(_, end)) in coef.iter().zip(&segs) {
        let stop = if end + 1 < times.len() {
            let (cur, next) = (times[end], times[end + 1]);
            let rest = &stamps[start..];
            match rest.iter().position(|s| (s - cur).abs() >= (s - next).abs()) {
                Some(i) => start + i,
                None => stamps.len(),
            }
        } else {
            stamps.len()
        };
        for s in &mut stamps[start..stop] {
            *s += c0 + c1 * *s;
        }
        start = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_line_despite_an_outlier() {
        let t: Vec<f64> = (0..50).map(|i| 100.0 + i as f64 * 5.0).collect();
        let mut v: Vec<f64> = t.iter().map(|t| -0.01 + 2e-6 * t).collect();
        v[20] += 0.5; // a bad measurement
        let coef = coefficients(&t, &v, &[(0, 49)]);
        assert!((coef[0].0 + 0.01).abs() < 1e-5 && (coef[0].1 - 2e-6).abs() < 1e-7, "{coef:?}");
    }

    #[test]
    fn resets_split_segments() {
        let mut t: Vec<f64> = (0..20).map(|i| i as f64 * 5.0).collect();
        t.extend((0..20).map(|i| 10.0 + i as f64 * 5.0)); // the clock went back
        let v = vec![0.0; 40];
        assert_eq!(segments(&t, &v), vec![(0, 19), (20, 39)]);
    }
}

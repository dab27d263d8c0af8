//! The last N values of one channel: a fixed-size ring, so that the monitor's memory does not
//! grow with the length of a session. For a very high rate a ring can hold the mean of every `k`
//! samples instead of each sample (a trace a terminal's width across needs no more, and the mean
//! keeps the low frequencies of the band powers clear of aliasing), so that it still spans the
//! longest time shown.

/// A ring of the most recent `capacity` values, oldest first when read.
#[derive(Debug, Clone)]
pub struct Ring {
    buf: Vec<f32>,
    /// Where the next value goes.
    head: usize,
    len: usize,
    /// Input samples per held value (their mean); 1: every sample is held.
    every: usize,
    /// The input samples of the value under way: their sum and count (below `every`).
    sum: f64,
    count: usize,
}

impl Ring {
    /// A ring holding at most `capacity` values (at least 1), every sample.
    #[cfg(test)]
    pub fn new(capacity: usize) -> Ring {
        Ring::decimating(capacity, 1)
    }

    /// A ring holding at most `capacity` values (at least 1), each the mean of `every` (at least
    /// 1) consecutive samples; a sample that is not finite (a gap) makes its mean NaN.
    pub fn decimating(capacity: usize, every: usize) -> Ring {
        Ring { buf: vec![0.0; capacity.max(1)], head: 0, len: 0, every: every.max(1), sum: 0.0, count: 0 }
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds `v` as the newest value.
    fn push(&mut self, v: f32) {
        let cap = self.buf.len();
        self.buf[self.head] = v;
        self.head = (self.head + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// Adds one input sample (held at once, or when its bucket of `every` is complete).
    fn add(&mut self, v: f32) {
        if self.every == 1 {
            return self.push(v);
        }
        self.sum += f64::from(v);
        self.count += 1;
        if self.count == self.every {
            let mean = (self.sum / self.every as f64) as f32;
            self.push(mean);
            (self.sum, self.count) = (0.0, 0);
        }
    }

    /// Appends the samples `values` in order; only the last `capacity` held values stay.
    pub fn extend(&mut self, values: &[f32]) {
        if self.every > 1 {
            for &v in values {
                self.add(v);
            }
            return;
        }
        let cap = self.buf.len();
        let values = &values[values.len().saturating_sub(cap)..];
        // At most two copies: up to the end of the buffer, then from its start.
        let first = values.len().min(cap - self.head);
        self.buf[self.head..self.head + first].copy_from_slice(&values[..first]);
        let rest = &values[first..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.head = (self.head + values.len()) % cap;
        self.len = (self.len + values.len()).min(cap);
    }

    /// Appends `n` samples of `v` (e.g. NaN for samples a gap lost); bounded work however big `n`.
    pub fn fill(&mut self, v: f32, n: usize) {
        // Complete the value under way, then whole values (only the last `capacity` can stay),
        // then start the next one.
        let first = if self.count > 0 { (self.every - self.count).min(n) } else { 0 };
        for _ in 0..first {
            self.add(v);
        }
        let n = n - first;
        for _ in 0..(n / self.every).min(self.buf.len()) {
            self.push(v);
        }
        for _ in 0..n % self.every {
            self.add(v);
        }
    }

    /// The held values as two slices, oldest first.
    pub fn as_slices(&self) -> (&[f32], &[f32]) {
        let cap = self.buf.len();
        let start = (self.head + cap - self.len) % cap;
        if start + self.len <= cap {
            (&self.buf[start..start + self.len], &[])
        } else {
            (&self.buf[start..], &self.buf[..self.head])
        }
    }

    /// The last `n` held values (all of them if fewer are held) as two slices, oldest first;
    /// without going through the older ones.
    pub fn tail(&self, n: usize) -> (&[f32], &[f32]) {
        let (a, b) = self.as_slices();
        let n = n.min(self.len);
        if n <= b.len() {
            (&b[b.len() - n..], &[])
        } else {
            (&a[a.len() - (n - b.len())..], b)
        }
    }

    /// The last `n` held values (all of them if fewer are held), oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = f32> + '_ {
        let (a, b) = self.tail(n);
        a.iter().chain(b).copied()
    }

    /// Copies the last `n` held values (all if fewer are held), oldest first, into `out`.
    pub fn copy_last(&self, n: usize, out: &mut Vec<f32>) {
        let (a, b) = self.tail(n);
        out.clear();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: &Ring) -> Vec<f32> {
        r.last(usize::MAX).collect()
    }

    #[test]
    fn keeps_the_last_capacity_values_in_order() {
        let mut r = Ring::new(5);
        assert!(r.is_empty());
        assert_eq!(held(&r), Vec::<f32>::new());
        r.extend(&[1.0, 2.0, 3.0]);
        assert_eq!((r.len(), held(&r)), (3, vec![1.0, 2.0, 3.0]));
        r.extend(&[4.0, 5.0, 6.0, 7.0]);
        assert_eq!((r.len(), held(&r)), (5, vec![3.0, 4.0, 5.0, 6.0, 7.0]));
        r.push(8.0);
        assert_eq!(held(&r), vec![4.0, 5.0, 6.0, 7.0, 8.0]);
        // More than the capacity at once: only its tail stays.
        r.extend(&(10..22).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(held(&r), vec![17.0, 18.0, 19.0, 20.0, 21.0]);
        assert_eq!(r.last(2).collect::<Vec<_>>(), vec![20.0, 21.0]);
        assert_eq!(r.last(0).count(), 0);
        let mut out = vec![99.0];
        r.copy_last(9, &mut out);
        assert_eq!(out, held(&r));
    }

    #[test]
    fn matches_a_plain_vector_for_every_split_of_the_input() {
        // Against a model: the last `cap` values of everything pushed, for blocks of all sizes
        // landing at every offset of the buffer.
        for cap in 1..7 {
            let mut r = Ring::new(cap);
            let mut all: Vec<f32> = Vec::new();
            let mut next = 0.0;
            for block in [0usize, 1, 2, 3, 5, 7, 1, 4, 6, 2, 9] {
                let values: Vec<f32> = (0..block).map(|i| next + i as f32).collect();
                next += block as f32;
                r.extend(&values);
                all.extend(&values);
                let want: Vec<f32> = all[all.len().saturating_sub(cap)..].to_vec();
                assert_eq!(held(&r), want, "cap {cap}");
                assert_eq!(r.len(), want.len());
                assert_eq!(r.capacity(), cap);
            }
        }
    }

    #[test]
    fn fill_marks_lost_samples_and_is_bounded() {
        let mut r = Ring::new(4);
        r.extend(&[1.0, 2.0]);
        r.fill(f32::NAN, 1);
        r.push(3.0);
        let v = held(&r);
        assert_eq!(v.len(), 4);
        assert!(v[2].is_nan() && v[3] == 3.0);
        r.fill(0.5, 1_000_000_000);
        assert_eq!(held(&r), vec![0.5; 4]);
    }
    #[test]
    fn tails_of_every_length_across_the_wrap() {
        let mut r = Ring::new(5);
        r.extend(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        for n in 0..8 {
            let (a, b) = r.tail(n);
            let got: Vec<f32> = a.iter().chain(b).copied().collect();
            let all = held(&r);
            assert_eq!(got, all[all.len() - n.min(5)..].to_vec(), "n {n}");
        }
    }

    #[test]
    fn a_decimating_ring_holds_bucket_means() {
        // Against a model: the means of the complete buckets of everything added, the last `cap`
        // of them, for blocks of all sizes.
        for every in 1..5 {
            for cap in 1..6 {
                let mut r = Ring::decimating(cap, every);
                let mut all: Vec<f32> = Vec::new();
                let mut next = 0.0;
                for block in [0usize, 1, 2, 3, 5, 7, 1, 4, 6, 2, 9, 30] {
                    let values: Vec<f32> = (0..block).map(|i| ((next + i as f32) * 7.0) % 11.0).collect();
                    next += block as f32;
                    r.extend(&values);
                    all.extend(&values);
                    let means: Vec<f32> = all
                        .chunks_exact(every)
                        .map(|c| (c.iter().map(|&x| f64::from(x)).sum::<f64>() / every as f64) as f32)
                        .collect();
                    let want = means[means.len().saturating_sub(cap)..].to_vec();
                    assert_eq!(held(&r), want, "every {every}, cap {cap}");
                }
            }
        }
        // A gap's NaN taints only its own bucket; fill counts input samples.
        let mut r = Ring::decimating(10, 3);
        r.extend(&[1.0, 2.0]);
        r.fill(f32::NAN, 1);
        r.extend(&[3.0, 3.0, 3.0]);
        r.fill(f32::NAN, 4);
        r.extend(&[5.0, 5.0]);
        let v = held(&r);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v[0].is_nan() && v[1] == 3.0 && v[2].is_nan() && v[3].is_nan(), "{v:?}");
        r.push(0.0);
        r.fill(2.0, usize::MAX);
        assert_eq!(held(&r), vec![2.0; 10]);
    }
}

//! The last N samples of one channel: a fixed-size ring, so that the monitor's memory does not
//! grow with the length of a session.

/// A ring of the most recent `capacity` values, oldest first when read.
#[derive(Debug, Clone)]
pub struct Ring {
    buf: Vec<f32>,
    /// Where the next value goes.
    head: usize,
    len: usize,
}

impl Ring {
    /// A ring holding at most `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Ring {
        Ring { buf: vec![0.0; capacity.max(1)], head: 0, len: 0 }
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

    pub fn push(&mut self, v: f32) {
        let cap = self.buf.len();
        self.buf[self.head] = v;
        self.head = (self.head + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// Appends `values` in order; only the last `capacity` of them can stay.
    pub fn extend(&mut self, values: &[f32]) {
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

    /// Appends `n` copies of `v` (e.g. NaN for samples a gap lost).
    pub fn fill(&mut self, v: f32, n: usize) {
        for _ in 0..n.min(self.buf.len()) {
            self.push(v);
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

    /// The last `n` values (all of them if fewer are held), oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = f32> + '_ {
        let (a, b) = self.as_slices();
        let skip = self.len - n.min(self.len);
        a.iter().chain(b).skip(skip).copied()
    }

    /// Copies the last `n` values (all if fewer are held), oldest first, into `out`.
    pub fn copy_last(&self, n: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.last(n));
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
}

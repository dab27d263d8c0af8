//! The sample types the processing functions accept: `f32` (what drivers deliver) and `f64`.
//! Arithmetic is done in `f64` whatever the storage type, so an `f32` block is filtered with the
//! same coefficients and state precision as an `f64` one and only rounded once, on the way out.

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// `f32` or `f64` (sealed: no other type can implement it).
pub trait Sample: sealed::Sealed + Copy + Send + Sync + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl Sample for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Sample for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// Checks the length of a channel-major block; panics with the sizes on a mismatch (a caller bug).
#[inline]
#[track_caller]
pub(crate) fn check_block(len: usize, channels: usize, frames: usize) {
    assert!(
        len == channels * frames,
        "block of {len} samples is not {channels} channels × {frames} frames (channel-major)"
    );
}

/// `x[i] -= m[i]`, computed in `f64`, 8 at a time (which the compiler turns into vector code for
/// `f32` too).
#[inline(always)]
pub(crate) fn subtract<T: Sample>(x: &mut [T], m: &[f64]) {
    let mut xs = x.chunks_exact_mut(8);
    let mut ms = m.chunks_exact(8);
    for (x, m) in (&mut xs).zip(&mut ms) {
        for k in 0..8 {
            x[k] = T::from_f64(x[k].to_f64() - m[k]);
        }
    }
    for (x, m) in xs.into_remainder().iter_mut().zip(ms.remainder()) {
        *x = T::from_f64(x.to_f64() - m);
    }
}

//! Streaming IIR filtering of channel-major blocks with second-order sections.
//!
//! Each section is a transposed direct form II biquad, computed exactly like
//! `scipy.signal.sosfilt` computes it (same operations in the same order, in `f64`), with its state
//! kept per channel and carried from one block to the next: feeding a signal in blocks of any size
//! gives the same output as filtering it in one piece.
//!
//! Channels are filtered several at a time (groups of 8, 4, 2 and 1 channels in lock-step, two
//! sections per pass) so that independent recursions fill the processor's pipelines, with an AVX2
//! build of the same code chosen at run time where the processor has it; none of this changes the
//! result by a bit.

use crate::design::Sos;
use crate::sample::{check_block, Sample};

/// Frames processed at a time (a chunk of every channel stays in L1).
const CHUNK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Coeffs {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl Coeffs {
    /// Normalised by `a0` (a no-op for the `a0 = 1` sections that [`crate::design`] produces).
    fn from_sos(s: &Sos) -> Coeffs {
        let a0 = s[3];
        assert!(a0 != 0.0 && a0.is_finite(), "second-order section with a0 = {a0}: {s:?}");
        if a0 == 1.0 {
            Coeffs { b0: s[0], b1: s[1], b2: s[2], a1: s[4], a2: s[5] }
        } else {
            Coeffs { b0: s[0] / a0, b1: s[1] / a0, b2: s[2] / a0, a1: s[4] / a0, a2: s[5] / a0 }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_channel: usize,
    width: usize,
    /// Offset of this group's state in `SosFilter::state`: per section, `width` values of the
    /// first state variable then `width` of the second.
    state_offset: usize,
}

/// A cascade of second-order sections applied to every channel of a stream, with state.
#[derive(Debug, Clone)]
pub struct SosFilter {
    sections: Vec<Coeffs>,
    channels: usize,
    groups: Vec<Group>,
    state: Vec<f64>,
}

impl SosFilter {
    /// A filter for `channels` channels running the sections in order (section 0 first, as
    /// `sosfilt` does). Sections whose `a0` is not 1 are normalised. No sections: the identity.
    pub fn new(sos: &[Sos], channels: usize) -> SosFilter {
        let sections: Vec<Coeffs> = sos.iter().map(Coeffs::from_sos).collect();
        let mut groups = Vec::new();
        let (mut c, mut off) = (0, 0);
        while c < channels {
            let width = [8, 4, 2, 1].into_iter().find(|&w| channels - c >= w).unwrap_or(1);
            groups.push(Group { first_channel: c, width, state_offset: off });
            c += width;
            off += 2 * width * sections.len();
        }
        SosFilter { sections, channels, groups, state: vec![0.0; off] }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn sections(&self) -> usize {
        self.sections.len()
    }

    /// Forgets the past: as if the stream started again from zeros.
    pub fn reset(&mut self) {
        self.state.fill(0.0);
    }

    /// Sets the state to the steady state for a constant input equal to each channel's first
    /// sample of `data` (scipy: `zi = sosfilt_zi(sos) * x[0]`), so that a signal with a large DC
    /// offset starts without a step transient. Does not filter `data`.
    pub fn prime<T: Sample>(&mut self, data: &[T], frames: usize) {
        check_block(data.len(), self.channels, frames);
        if frames == 0 {
            return;
        }
        for g in &self.groups {
            let w = g.width;
            for lane in 0..w {
                let mut x = data[(g.first_channel + lane) * frames].to_f64();
                for (s, c) in self.sections.iter().enumerate() {
                    // Steady state of one section for a constant input x: y = x * H(1).
                    let y = x * (c.b0 + c.b1 + c.b2) / (1.0 + c.a1 + c.a2);
                    let z1 = c.b2 * x - c.a2 * y;
                    let z0 = c.b1 * x - c.a1 * y + z1;
                    let base = g.state_offset + s * 2 * w;
                    self.state[base + lane] = z0;
                    self.state[base + w + lane] = z1;
                    x = y;
                }
            }
        }
    }

    /// Filters a channel-major block (`data[ch * frames + i]`) in place, continuing from the
    /// previous block. Panics if `data.len() != channels * frames`.
    pub fn process<T: Sample>(&mut self, data: &mut [T], frames: usize) {
        check_block(data.len(), self.channels, frames);
        if frames == 0 || self.channels == 0 || self.sections.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            unsafe { process_avx2(self, data, frames) };
            return;
        }
        process_chunks(self, data, frames);
    }
}

/// The same code compiled for AVX2 (4 doubles per vector instead of SSE2's 2). No FMA: Rust never
/// fuses a multiply and an add by itself, so the results are the same to the bit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn process_avx2<T: Sample>(f: &mut SosFilter, data: &mut [T], frames: usize) {
    process_chunks(f, data, frames);
}

/// `CHUNK` frames at a time, every channel group over the chunk. (Summing the channels for the
/// common average reference while the groups write their output was tried: it made filtering
/// with CAR half as fast as filtering and then re-referencing, so CAR is a separate pass.)
#[inline(always)]
fn process_chunks<T: Sample>(f: &mut SosFilter, data: &mut [T], frames: usize) {
    let n_sec = f.sections.len();
    let mut start = 0;
    while start < frames {
        let n = CHUNK.min(frames - start);
        for g in &f.groups {
            let state = &mut f.state[g.state_offset..g.state_offset + 2 * g.width * n_sec];
            let chunk = Chunk { frames, start, n, c0: g.first_channel };
            match g.width {
                8 => run_group::<T, 8>(&f.sections, state, data, chunk),
                4 => run_group::<T, 4>(&f.sections, state, data, chunk),
                2 => run_group::<T, 2>(&f.sections, state, data, chunk),
                _ => run_group::<T, 1>(&f.sections, state, data, chunk),
            }
        }
        start += n;
    }
}

/// Frames `start..start + n` of a block of `frames` frames, channels from `c0`.
#[derive(Clone, Copy)]
struct Chunk {
    frames: usize,
    start: usize,
    n: usize,
    c0: usize,
}

/// Filters channels `c0..c0 + L` over one chunk: the chunk is gathered into `[frame][lane]` order
/// on the stack, the sections run over it `PASS` at a time (each frame goes through the pass's
/// sections before the next frame, so the recursions of different sections overlap in the
/// pipeline instead of waiting on each other) with their state in registers, and it is scattered
/// back.
#[inline(always)]
fn run_group<T: Sample, const L: usize>(sections: &[Coeffs], state: &mut [f64], data: &mut [T], chunk: Chunk) {
    let Chunk { frames, start, n, c0 } = chunk;
    let mut buf = [[0.0f64; L]; CHUNK];
    let buf = &mut buf[..n];
    let rows: [&[T]; L] = std::array::from_fn(|lane| &data[(c0 + lane) * frames + start..][..n]);
    for (i, b) in buf.iter_mut().enumerate() {
        for lane in 0..L {
            b[lane] = rows[lane][i].to_f64();
        }
    }
    let mut passes = sections.chunks_exact(PASS);
    let mut states = state.chunks_exact_mut(2 * L * PASS);
    for (secs, st) in (&mut passes).zip(&mut states) {
        run_pass::<L, PASS>(secs, st, buf);
    }
    for (c, st) in passes.remainder().iter().zip(states.into_remainder().chunks_exact_mut(2 * L)) {
        run_pass::<L, 1>(std::slice::from_ref(c), st, buf);
    }
    for lane in 0..L {
        let row = &mut data[(c0 + lane) * frames + start..][..n];
        for (x, b) in row.iter_mut().zip(buf.iter()) {
            *x = T::from_f64(b[lane]);
        }
    }
}

/// Sections run together in one pass over a chunk.
const PASS: usize = 2;

/// Runs `K` consecutive sections over `buf` (`[frame][lane]`), frame by frame.
#[inline(always)]
fn run_pass<const L: usize, const K: usize>(secs: &[Coeffs], state: &mut [f64], buf: &mut [[f64; L]]) {
    let mut c = [Coeffs { b0: 0.0, b1: 0.0, b2: 0.0, a1: 0.0, a2: 0.0 }; K];
    c.copy_from_slice(&secs[..K]);
    let mut z0 = [[0.0f64; L]; K];
    let mut z1 = [[0.0f64; L]; K];
    for k in 0..K {
        z0[k].copy_from_slice(&state[2 * L * k..2 * L * k + L]);
        z1[k].copy_from_slice(&state[2 * L * k + L..2 * L * (k + 1)]);
    }
    for frame in buf.iter_mut() {
        for k in 0..K {
            let Coeffs { b0, b1, b2, a1, a2 } = c[k];
            for lane in 0..L {
                // scipy's sosfilt, operation for operation.
                let x = frame[lane];
                let y = b0 * x + z0[k][lane];
                z0[k][lane] = b1 * x - a1 * y + z1[k][lane];
                z1[k][lane] = b2 * x - a2 * y;
                frame[lane] = y;
            }
        }
    }
    for k in 0..K {
        state[2 * L * k..2 * L * k + L].copy_from_slice(&z0[k]);
        state[2 * L * k + L..2 * L * (k + 1)].copy_from_slice(&z1[k]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::{butter, Band};

    /// Direct, one-channel, one-sample-at-a-time reference.
    fn reference(sos: &[Sos], x: &[f64]) -> Vec<f64> {
        let mut z = vec![[0.0f64; 2]; sos.len()];
        x.iter()
            .map(|&x| {
                let mut cur = x;
                for (s, z) in sos.iter().zip(z.iter_mut()) {
                    let y = s[0] * cur + z[0];
                    z[0] = s[1] * cur - s[4] * y + z[1];
                    z[1] = s[2] * cur - s[5] * y;
                    cur = y;
                }
                cur
            })
            .collect()
    }

    fn signal(channels: usize, n: usize) -> Vec<f64> {
        (0..channels * n).map(|k| ((k * 7919) % 1000) as f64 / 10.0 - 50.0 + (k as f64 * 0.37).sin() * 30.0).collect()
    }

    #[test]
    fn blocks_of_any_size_and_any_channel_count_equal_one_pass() {
        let sos = butter(4, Band::Bandpass(1.0, 40.0), 250.0).unwrap();
        for channels in [1, 2, 3, 5, 8, 13, 16, 31] {
            let n = 700;
            let x = signal(channels, n);
            let mut f = SosFilter::new(&sos, channels);
            let mut out = vec![0.0; channels * n];
            let sizes = [1usize, 0, 3, 64, 65, 17, 200, 128];
            let (mut pos, mut k) = (0, 0);
            while pos < n {
                let m = sizes[k % sizes.len()].min(n - pos);
                k += 1;
                let mut block: Vec<f64> =
                    (0..channels).flat_map(|c| x[c * n + pos..c * n + pos + m].iter().copied()).collect();
                f.process(&mut block, m);
                for c in 0..channels {
                    out[c * n + pos..c * n + pos + m].copy_from_slice(&block[c * m..(c + 1) * m]);
                }
                pos += m;
            }
            for c in 0..channels {
                let want = reference(&sos, &x[c * n..(c + 1) * n]);
                assert_eq!(&out[c * n..(c + 1) * n], &want[..], "{channels} channels, channel {c}");
            }
        }
    }

    #[test]
    fn f32_blocks_are_filtered_in_f64() {
        let sos = butter(8, Band::Highpass(0.5), 1000.0).unwrap();
        let x = signal(1, 3000);
        let want = reference(&sos, &x);
        let mut x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let mut f = SosFilter::new(&sos, 1);
        f.process(&mut x32, 3000);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = x32.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(err / scale < 1e-6, "relative error {}", err / scale);
    }

    #[test]
    fn priming_removes_the_dc_step() {
        let sos = butter(4, Band::Highpass(1.0), 250.0).unwrap();
        let mut block = vec![40_000.0f32; 2 * 250];
        let mut f = SosFilter::new(&sos, 2);
        f.prime(&block, 250);
        f.process(&mut block, 250);
        assert!(block.iter().all(|v| v.abs() < 1e-3), "{:?}", &block[..4]);
        let lp = butter(3, Band::Lowpass(10.0), 250.0).unwrap();
        let mut block = vec![-75.5f64; 100];
        let mut f = SosFilter::new(&lp, 1);
        f.prime(&block, 100);
        f.process(&mut block, 100);
        assert!(block.iter().all(|v| (v + 75.5).abs() < 1e-9), "{:?}", &block[..4]);
    }

    #[test]
    fn reset_and_empty_cascade() {
        let sos = butter(2, Band::Lowpass(10.0), 250.0).unwrap();
        let mut f = SosFilter::new(&sos, 1);
        let mut a = vec![1.0f64; 50];
        f.process(&mut a, 50);
        f.reset();
        let mut b = vec![1.0f64; 50];
        f.process(&mut b, 50);
        assert_eq!(a, b);
        let mut id = SosFilter::new(&[], 3);
        let mut c = vec![1.5f32; 30];
        id.process(&mut c, 10);
        assert!(c.iter().all(|&v| v == 1.5));
    }

    #[test]
    #[should_panic(expected = "not 3 channels × 10 frames")]
    fn wrong_block_length_panics_with_the_sizes() {
        let mut f = SosFilter::new(&[], 3);
        f.process(&mut [0.0f32; 29], 10);
    }
}

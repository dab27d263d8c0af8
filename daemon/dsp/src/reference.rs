//! Re-referencing: common average reference (CAR), in place on channel-major blocks.

use crate::sample::{check_block, subtract, Sample};

/// Frames whose channel sums are accumulated on the stack at a time.
const CHUNK: usize = 64;

/// Subtracts, at every frame, the mean over all channels (`x[c][i] -= mean_c x[c][i]`), so that
/// the channels sum to zero at each frame. The mean is accumulated in `f64`.
pub fn common_average_reference<T: Sample>(data: &mut [T], channels: usize, frames: usize) {
    check_block(data.len(), channels, frames);
    car(data, channels, frames, |_| true);
}

/// Like [`common_average_reference`], but the mean is taken over the channels where
/// `include[ch]` is true (leave out flat or railed channels so they do not contaminate the
/// others); it is subtracted from every channel. Nothing happens when no channel is included.
pub fn common_average_reference_masked<T: Sample>(data: &mut [T], frames: usize, include: &[bool]) {
    check_block(data.len(), include.len(), frames);
    if include.iter().any(|&b| b) {
        car(data, include.len(), frames, |ch| include[ch]);
    }
}

fn car<T: Sample>(data: &mut [T], channels: usize, frames: usize, include: impl Fn(usize) -> bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2 (checked just above).
        unsafe { car_avx2(data, channels, frames, include) };
        return;
    }
    car_impl(data, channels, frames, include);
}

/// The same code compiled for AVX2 (same results: no FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn car_avx2<T: Sample>(data: &mut [T], channels: usize, frames: usize, include: impl Fn(usize) -> bool) {
    car_impl(data, channels, frames, include);
}

#[inline(always)]
fn car_impl<T: Sample>(data: &mut [T], channels: usize, frames: usize, include: impl Fn(usize) -> bool) {
    let n = (0..channels).filter(|&ch| include(ch)).count();
    if n == 0 {
        return;
    }
    let inv = n as f64;
    let mut start = 0;
    while start < frames {
        let len = CHUNK.min(frames - start);
        let mut mean = [0.0f64; CHUNK];
        let mean = &mut mean[..len];
        for ch in (0..channels).filter(|&ch| include(ch)) {
            for (m, x) in mean.iter_mut().zip(&data[ch * frames + start..][..len]) {
                *m += x.to_f64();
            }
        }
        for m in mean.iter_mut() {
            *m /= inv;
        }
        for ch in 0..channels {
            subtract(&mut data[ch * frames + start..][..len], mean);
        }
        start += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_sum_to_zero_at_every_frame() {
        let (channels, frames) = (7, 150);
        let mut data: Vec<f64> =
            (0..channels * frames).map(|k| ((k * 31) % 97) as f64 - 20.0 + k as f64 * 0.01).collect();
        let orig = data.clone();
        common_average_reference(&mut data, channels, frames);
        for i in 0..frames {
            let mean_before: f64 = (0..channels).map(|c| orig[c * frames + i]).sum::<f64>() / channels as f64;
            let sum: f64 = (0..channels).map(|c| data[c * frames + i]).sum();
            assert!(sum.abs() < 1e-9, "frame {i}: sum {sum}");
            for c in 0..channels {
                assert!((data[c * frames + i] - (orig[c * frames + i] - mean_before)).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn f32_and_a_common_signal_cancels() {
        let (channels, frames) = (4, 100);
        let mut data = vec![0f32; channels * frames];
        for c in 0..channels {
            for i in 0..frames {
                data[c * frames + i] = 1000.0 * (i as f32 * 0.3).sin() + c as f32;
            }
        }
        common_average_reference(&mut data, channels, frames);
        for c in 0..channels {
            for i in 0..frames {
                assert!((data[c * frames + i] - (c as f32 - 1.5)).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn masked_mean_leaves_out_excluded_channels() {
        let frames = 3;
        let mut data = vec![1.0f64, 1.0, 1.0, 3.0, 3.0, 3.0, 1000.0, 1000.0, 1000.0];
        common_average_reference_masked(&mut data, frames, &[true, true, false]);
        assert_eq!(data, vec![-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 998.0, 998.0, 998.0]);
        let mut same = data.clone();
        common_average_reference_masked(&mut same, frames, &[false, false, false]);
        assert_eq!(same, data);
    }
}

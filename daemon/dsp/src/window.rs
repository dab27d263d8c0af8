//! Sliding windows with a hop over a stream of channel-major blocks.
//!
//! Window `k` covers stream frames `k * hop .. k * hop + length`; it is produced as soon as its
//! last frame arrives, as a `channels × length` [`Array2<f32>`] (oldest frame first) that is reused
//! from one window to the next: nothing is allocated after construction.

use ndarray::Array2;
use thiserror::Error;

use crate::sample::{check_block, Sample};

#[derive(Debug, Clone, PartialEq, Error)]
pub enum WindowError {
    #[error("window length of {frames} frames is invalid: it must be at least 1 frame")]
    Length { frames: usize },
    #[error("window hop of {frames} frames is invalid: it must be at least 1 frame")]
    Hop { frames: usize },
    #[error("sample rate {fs} Hz is invalid: it must be a positive, finite number")]
    SampleRate { fs: f64 },
}

/// Where a window lies in the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowInfo {
    /// 0 for the first window.
    pub index: u64,
    /// Stream index (from 0) of the window's first frame.
    pub first_frame: u64,
    /// Stream index of the window's last frame.
    pub last_frame: u64,
    /// Stream time of the last frame, seconds from the stream's first frame (`last_frame / fs`).
    pub last_time: f64,
    /// How many frames of the block being pushed the window includes: the window's last frame is
    /// frame `frames_into_block - 1` of that block (for time-stamping against the block's clock).
    pub frames_into_block: usize,
}

/// A ring buffer of the latest `length` frames of every channel.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    channels: usize,
    length: usize,
    hop: usize,
    fs: f64,
    /// Channel-major, `length` frames per channel; frame `t` of the stream is at `t % length`.
    ring: Vec<f32>,
    /// Frames pushed so far.
    total: u64,
    /// Frame count at which the next window is complete.
    next_end: u64,
    index: u64,
    out: Array2<f32>,
}

impl SlidingWindow {
    /// Windows of `length` frames every `hop` frames for a stream of `channels` channels at `fs` Hz
    /// (the rate only converts frame indices into times).
    pub fn new(channels: usize, length: usize, hop: usize, fs: f64) -> Result<SlidingWindow, WindowError> {
        if length == 0 {
            return Err(WindowError::Length { frames: length });
        }
        if hop == 0 {
            return Err(WindowError::Hop { frames: hop });
        }
        if !(fs.is_finite() && fs > 0.0) {
            return Err(WindowError::SampleRate { fs });
        }
        Ok(SlidingWindow {
            channels,
            length,
            hop,
            fs,
            ring: vec![0.0; channels * length],
            total: 0,
            next_end: length as u64,
            index: 0,
            out: Array2::zeros((channels, length)),
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }
    pub fn length(&self) -> usize {
        self.length
    }
    pub fn hop(&self) -> usize {
        self.hop
    }
    /// Frames pushed since construction or the last reset.
    pub fn frames_seen(&self) -> u64 {
        self.total
    }

    /// Starts over: the next window is again made of the next `length` frames.
    pub fn reset(&mut self) {
        self.total = 0;
        self.next_end = self.length as u64;
        self.index = 0;
    }

    /// Appends a channel-major block of `frames` frames, calling `on_window` for every window that
    /// completes inside it, in order. The array is only valid during the call (it is overwritten by
    /// the next window); copy it if it must outlive the call.
    pub fn push<T: Sample>(&mut self, data: &[T], frames: usize, mut on_window: impl FnMut(WindowInfo, &Array2<f32>)) {
        check_block(data.len(), self.channels, frames);
        let mut pos = 0;
        while pos < frames {
            let take = ((self.next_end - self.total) as usize).min(frames - pos);
            self.write(data, frames, pos, take);
            pos += take;
            self.total += take as u64;
            if self.total == self.next_end {
                self.fill_out();
                let last_frame = self.total - 1;
                let info = WindowInfo {
                    index: self.index,
                    first_frame: self.total - self.length as u64,
                    last_frame,
                    last_time: last_frame as f64 / self.fs,
                    frames_into_block: pos,
                };
                on_window(info, &self.out);
                self.index += 1;
                self.next_end += self.hop as u64;
            }
        }
    }

    /// Copies frames `pos..pos + take` of the block into the ring (at most `length` frames are
    /// needed: earlier ones would be overwritten anyway).
    fn write<T: Sample>(&mut self, data: &[T], frames: usize, pos: usize, take: usize) {
        let skip = take.saturating_sub(self.length);
        let (pos, take) = (pos + skip, take - skip);
        let at = ((self.total + skip as u64) % self.length as u64) as usize;
        let first = take.min(self.length - at);
        for ch in 0..self.channels {
            let src = &data[ch * frames + pos..][..take];
            let ring = &mut self.ring[ch * self.length..(ch + 1) * self.length];
            for (d, s) in ring[at..at + first].iter_mut().zip(&src[..first]) {
                *d = s.to_f64() as f32;
            }
            for (d, s) in ring[..take - first].iter_mut().zip(&src[first..]) {
                *d = s.to_f64() as f32;
            }
        }
    }

    fn fill_out(&mut self) {
        let len = self.length;
        let oldest = (self.total % len as u64) as usize;
        for (ch, mut row) in self.out.rows_mut().into_iter().enumerate() {
            let ring = &self.ring[ch * len..(ch + 1) * len];
            let row = row.as_slice_mut().expect("the output array is in standard layout");
            row[..len - oldest].copy_from_slice(&ring[oldest..]);
            row[len - oldest..].copy_from_slice(&ring[..oldest]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel `c`, stream frame `t` holds `1000 c + t`.
    fn block(channels: usize, start: usize, frames: usize) -> Vec<f32> {
        (0..channels).flat_map(|c| (start..start + frames).map(move |t| (1000 * c + t) as f32)).collect()
    }

    fn run(length: usize, hop: usize, sizes: &[usize], total: usize) -> Vec<(WindowInfo, Array2<f32>)> {
        let mut w = SlidingWindow::new(2, length, hop, 100.0).unwrap();
        let mut got = Vec::new();
        let (mut pos, mut k) = (0, 0);
        while pos < total {
            let n = sizes[k % sizes.len()].min(total - pos);
            k += 1;
            w.push(&block(2, pos, n), n, |info, a| got.push((info, a.clone())));
            pos += n;
        }
        got
    }

    #[test]
    fn windows_cover_the_expected_frames_whatever_the_block_sizes() {
        for sizes in [&[1usize][..], &[7], &[25], &[3, 0, 50, 1, 13], &[1000]] {
            for (length, hop) in [(10, 5), (10, 10), (10, 3), (4, 9), (1, 1), (25, 25)] {
                let got = run(length, hop, sizes, 200);
                let expected = (200 - length) / hop + 1;
                assert_eq!(got.len(), expected, "length {length} hop {hop} sizes {sizes:?}");
                for (k, (info, a)) in got.iter().enumerate() {
                    let first = (k * hop) as u64;
                    assert_eq!(info.index, k as u64);
                    assert_eq!(info.first_frame, first);
                    assert_eq!(info.last_frame, first + length as u64 - 1);
                    assert!((info.last_time - info.last_frame as f64 / 100.0).abs() < 1e-12);
                    assert_eq!(a.dim(), (2, length));
                    for c in 0..2 {
                        for i in 0..length {
                            assert_eq!(a[[c, i]], (1000 * c + first as usize + i) as f32);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn frames_into_block_locates_the_last_frame() {
        let mut w = SlidingWindow::new(1, 10, 4, 250.0).unwrap();
        let mut seen = Vec::new();
        // Frames 0..8, then a block of 12 frames (8..20): windows end at frames 9, 13 and 17.
        w.push(&block(1, 0, 8), 8, |i, _| seen.push(i));
        assert!(seen.is_empty());
        w.push(&block(1, 8, 12), 12, |i, _| seen.push(i));
        let ends: Vec<(u64, usize)> = seen.iter().map(|i| (i.last_frame, i.frames_into_block)).collect();
        assert_eq!(ends, vec![(9, 2), (13, 6), (17, 10)]);
        assert!((seen[2].last_time - 17.0 / 250.0).abs() < 1e-15);
        assert_eq!(w.frames_seen(), 20);
        w.reset();
        seen.clear();
        w.push(&block(1, 0, 10), 10, |i, _| seen.push(i));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].index, 0);
    }

    #[test]
    fn invalid_parameters() {
        assert_eq!(SlidingWindow::new(2, 0, 1, 250.0).unwrap_err(), WindowError::Length { frames: 0 });
        assert_eq!(SlidingWindow::new(2, 5, 0, 250.0).unwrap_err(), WindowError::Hop { frames: 0 });
        assert!(SlidingWindow::new(2, 5, 1, f64::NAN).is_err());
    }
}

//! Samples taken out of BrainFlow's ring on their way to blocks: the chosen rows as channels,
//! cut where the board's package counter says samples are missing (a `Gap` event first, the next
//! block flagged GAP, stream time moved on by the loss) and after a sample with a marker (its
//! `Annotation` follows the block). Stream time counts samples: BrainFlow's time-stamp row is the
//! host's receive time, which jitters with every USB or radio packet, so it does not set it.

use std::collections::VecDeque;

use bci2token_driver_abi::ffi::block_flags;
use bci2token_driver_abi::plugin::ReadOutcome;
use bci2token_driver_abi::types::DriverEvent;

/// The board's package counter: how many samples are missing before each one. BrainFlow's
/// counters step by 1, or by 2 where a sample is made of two packets (Cyton + Daisy), and wrap
/// between a bottom and a top that differ by board (0 and 255 on OpenBCI boards; 1 and 100 on a
/// Ganglion), so all three are learnt from the counter: the first rise is the step, and a smaller
/// rise replaces it only once it has come [`STEP_PROOF`] times in a row (one corrupted value must
/// not halve it for good); the top and bottom are the highest value seen and the lowest seen just
/// after a wrap. Until they are known, a loss across a wrap is counted short; a value that is not a
/// whole number turns the count off.
#[derive(Debug, Default)]
struct Counter {
    prev: Option<u64>,
    top: u64,
    bottom: Option<u64>,
    step: Option<u64>,
    /// A rise smaller than the step, and how many times in a row it came.
    smaller: Option<(u64, u32)>,
    off: bool,
}

/// Times in a row a smaller rise must come to become the step.
const STEP_PROOF: u32 = 16;

impl Counter {
    fn step(&mut self, value: f64) -> u64 {
        if self.off {
            return 0;
        }
        if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value < 1e12) {
            self.off = true;
            return 0;
        }
        let k = value as u64;
        let lost = match self.prev {
            None => 0,
            // Several samples of one package carry one number.
            Some(p) if k == p => 0,
            Some(p) if k > p => {
                let rise = k - p;
                let step = *self.step.get_or_insert(rise);
                if rise < step {
                    let seen = match self.smaller {
                        Some((r, n)) if r == rise => n + 1,
                        _ => 1,
                    };
                    self.smaller = Some((rise, seen));
                    if seen >= STEP_PROOF {
                        self.step = Some(rise);
                        self.smaller = None;
                    }
                } else {
                    self.smaller = None;
                }
                (rise / self.step.unwrap_or(1)).saturating_sub(1)
            }
            // A wrap: the values above `p` up to the top, and those from the bottom below `k`,
            // are missing.
            Some(p) => {
                let bottom = self.bottom.map_or(k, |b| b.min(k));
                self.bottom = Some(bottom);
                (self.top.saturating_sub(p) + (k - bottom)) / self.step.unwrap_or(1)
            }
        };
        self.top = self.top.max(k);
        self.prev = Some(k);
        lost
    }

    fn restart(&mut self) {
        self.prev = None;
    }
}

pub struct Blocks {
    /// The row of each channel, in channel order.
    channel_rows: Vec<usize>,
    package_row: Option<usize>,
    marker_row: Option<usize>,
    rate: f64,
    max_block: usize,
    /// Row-major: `staged[row * n + i]`, delivered from `cursor` on.
    staged: Vec<f64>,
    n: usize,
    cursor: usize,
    counter: Counter,
    /// The loss before the sample at `cursor`, already counted (the block before it was cut there).
    pending_lost: Option<u64>,
    /// Stream frame index of the next sample: samples delivered plus samples lost.
    next_frame: u64,
    next_flags: u32,
}

impl Blocks {
    pub fn new(
        channel_rows: Vec<usize>,
        package_row: Option<usize>,
        marker_row: Option<usize>,
        rate: f64,
        max_block: usize,
    ) -> Blocks {
        Blocks {
            channel_rows,
            package_row,
            marker_row,
            rate,
            max_block,
            staged: Vec::new(),
            n: 0,
            cursor: 0,
            counter: Counter::default(),
            pending_lost: None,
            next_frame: 0,
            next_flags: 0,
        }
    }

    /// Whether every staged sample has been delivered.
    pub fn is_empty(&self) -> bool {
        self.cursor >= self.n
    }

    /// The buffer to take samples into ([`crate::library::Session::take`]); then [`Blocks::staged`].
    pub fn buffer(&mut self) -> &mut Vec<f64> {
        &mut self.staged
    }

    /// `n` samples were taken into the buffer.
    pub fn staged(&mut self, n: usize) {
        self.n = n;
        self.cursor = 0;
    }

    /// Stream time of the next sample.
    pub fn now_t(&self) -> f64 {
        self.next_frame as f64 / self.rate
    }

    /// The board was lost: what is staged goes, and its counter starts again.
    pub fn restart(&mut self) {
        self.n = 0;
        self.cursor = 0;
        self.pending_lost = None;
        self.counter.restart();
    }

    /// An outage of `seconds`: stream time moves on by it, the next block carries `flags`.
    pub fn skip(&mut self, seconds: f64, flags: u32) {
        self.next_frame += (seconds * self.rate).round() as u64;
        self.next_flags |= flags;
    }

    fn value(&self, row: usize, i: usize) -> f64 {
        self.staged[row * self.n + i]
    }

    /// The sample's marker (BrainFlow's marker row: 0 where there is none).
    fn marker_at(&self, i: usize) -> Option<(usize, f64)> {
        let v = self.value(self.marker_row?, i);
        (v != 0.0 && v.is_finite()).then_some((i, v))
    }

    fn lost_before(&mut self, i: usize) -> u64 {
        match self.package_row {
            Some(r) => {
                let v = self.value(r, i);
                self.counter.step(v)
            }
            None => 0,
        }
    }

    /// The next block (channel-major into `buf`), or the gap event before it; a marker's
    /// annotation goes to `events`, to follow the block. Not to be called when [`Blocks::is_empty`].
    pub fn next(&mut self, buf: &mut [f32], events: &mut VecDeque<DriverEvent>) -> Result<ReadOutcome, String> {
        let first = self.cursor;
        let lost = match self.pending_lost.take() {
            Some(lost) => lost,
            None => self.lost_before(first),
        };
        if lost > 0 {
            let gap = DriverEvent::Gap { t: self.now_t(), seconds: lost as f64 / self.rate, lost_samples: Some(lost) };
            self.next_frame += lost;
            self.next_flags |= block_flags::GAP;
            self.pending_lost = Some(0);
            return Ok(ReadOutcome::Event(gap));
        }
        let mut end = first + 1;
        let mut marker = self.marker_at(first);
        while marker.is_none() && end < self.n && end - first < self.max_block {
            let lost = self.lost_before(end);
            if lost > 0 {
                self.pending_lost = Some(lost);
                break;
            }
            marker = self.marker_at(end);
            end += 1;
        }
        let frames = end - first;
        let need = frames * self.channel_rows.len();
        if buf.len() < need {
            return Err(format!("the read buffer of {} values is smaller than a block of {need}", buf.len()));
        }
        for (c, &row) in self.channel_rows.iter().enumerate() {
            let values = &self.staged[row * self.n + first..row * self.n + end];
            for (out, &v) in buf[c * frames..(c + 1) * frames].iter_mut().zip(values) {
                *out = v as f32;
            }
        }
        let t = self.now_t();
        if let Some((i, value)) = marker {
            let onset = t + (i - first) as f64 / self.rate;
            events.push_back(DriverEvent::Annotation { onset, duration: None, text: format!("marker {value}") });
        }
        self.cursor = end;
        self.next_frame += frames as u64;
        Ok(ReadOutcome::Block { frames, t, flags: std::mem::take(&mut self.next_flags) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of a board with rows [counter, a, b, marker], `n` samples, channel values k and 100 + k.
    fn board(counters: &[f64], markers: &[(usize, f64)], max_block: usize) -> Blocks {
        let n = counters.len();
        let mut b = Blocks::new(vec![1, 2], Some(0), Some(3), 250.0, max_block);
        let data = b.buffer();
        data.clear();
        data.extend_from_slice(counters);
        data.extend((0..n).map(|k| k as f64));
        data.extend((0..n).map(|k| 100.0 + k as f64));
        let mut marker_row = vec![0.0; n];
        for &(i, v) in markers {
            marker_row[i] = v;
        }
        data.extend(marker_row);
        b.staged(n);
        b
    }

    /// A block: its t, channel-major values and flags.
    type Block = (f64, Vec<f32>, u32);

    /// Everything `blocks` gives until it is empty: blocks, or events.
    fn drain(b: &mut Blocks) -> Vec<Result<Block, DriverEvent>> {
        let mut out = Vec::new();
        let mut events = VecDeque::new();
        let mut buf = vec![0f32; 2 * 64];
        while !b.is_empty() || !events.is_empty() {
            if let Some(e) = events.pop_front() {
                out.push(Err(e));
                continue;
            }
            match b.next(&mut buf, &mut events).unwrap() {
                ReadOutcome::Block { frames, t, flags } => out.push(Ok((t, buf[..2 * frames].to_vec(), flags))),
                ReadOutcome::Event(e) => out.push(Err(e)),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[test]
    fn a_jump_of_the_counter_is_a_gap_event_before_a_flagged_block_and_stream_time_counts_it() {
        // Samples 0, 1, then 5, 6: three lost.
        let mut b = board(&[0.0, 1.0, 5.0, 6.0], &[], 64);
        let got = drain(&mut b);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Ok((0.0, vec![0.0, 1.0, 100.0, 101.0], 0)));
        assert_eq!(got[1], Err(DriverEvent::Gap { t: 2.0 / 250.0, seconds: 3.0 / 250.0, lost_samples: Some(3) }));
        assert_eq!(got[2], Ok((5.0 / 250.0, vec![2.0, 3.0, 102.0, 103.0], block_flags::GAP)));
        assert!((b.now_t() - 7.0 / 250.0).abs() < 1e-12);
    }

    #[test]
    fn a_marker_ends_its_block_and_follows_it_as_an_annotation_at_its_sample() {
        let mut b = board(&[0.0, 1.0, 2.0, 3.0, 4.0], &[(2, 7.0)], 64);
        let got = drain(&mut b);
        assert_eq!(got[0], Ok((0.0, vec![0.0, 1.0, 2.0, 100.0, 101.0, 102.0], 0)));
        assert_eq!(
            got[1],
            Err(DriverEvent::Annotation { onset: 2.0 / 250.0, duration: None, text: "marker 7".into() })
        );
        assert_eq!(got[2], Ok((3.0 / 250.0, vec![3.0, 4.0, 103.0, 104.0], 0)));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn blocks_hold_at_most_max_block_samples_and_an_outage_moves_stream_time() {
        let mut b = board(&(0..10).map(f64::from).collect::<Vec<_>>(), &[], 4);
        let frames: Vec<usize> = drain(&mut b).into_iter().map(|r| r.unwrap().1.len() / 2).collect();
        assert_eq!(frames, [4, 4, 2]);
        b.skip(1.0, block_flags::RECONNECTED);
        assert!((b.now_t() - (10.0 + 250.0) / 250.0).abs() < 1e-12);
    }

    #[test]
    fn the_counter_counts_losses_and_learns_where_it_wraps() {
        let mut c = Counter::default();
        let lost: Vec<u64> = [0.0, 1.0, 2.0, 5.0, 5.0, 6.0].iter().map(|&v| c.step(v)).collect();
        assert_eq!(lost, [0, 0, 0, 2, 0, 0]);
        // Up to 255, then a wrap to 0: none lost; after it, a loss across the wrap counts both sides.
        let mut c = Counter::default();
        for k in 0..=255 {
            assert_eq!(c.step(f64::from(k)), 0);
        }
        assert_eq!(c.step(0.0), 0);
        for k in 1..=253 {
            assert_eq!(c.step(f64::from(k)), 0);
        }
        assert_eq!(c.step(1.0), 2 + 1, "254, 255 and 0 are missing");
        // A Ganglion-like counter: 0 once, then 1..=100 round and round; a wrap is not a gap.
        let mut c = Counter::default();
        let values = std::iter::once(0).chain((0..4).flat_map(|_| 1..=100));
        assert_eq!(values.map(|k| c.step(f64::from(k))).sum::<u64>(), 0);
        assert_eq!(c.step(3.0), 2, "after 100: 1 and 2 are missing");
        // A counter with another top (Ganglion-like, 0..=200) wraps without an invented gap.
        let mut c = Counter::default();
        let total: u64 = (0..3).flat_map(|_| 0..=200).map(|k| c.step(f64::from(k))).sum();
        assert_eq!(total, 0);
        // Cyton + Daisy: even numbers only (two packets a sample), wrapping after 254.
        let mut c = Counter::default();
        let total: u64 = (0..3).flat_map(|_| (0..=254).step_by(2)).map(|k| c.step(f64::from(k))).sum();
        assert_eq!(total, 0, "a step of 2 is no loss");
        assert_eq!(c.step(2.0), 1, "after 254, 0 is missing");
        assert_eq!(c.step(8.0), 2, "4 and 6 are missing");
        assert_eq!(c.step(252.0), 121);
        assert_eq!(c.step(2.0), 2, "254 and 0 are missing");
        // One corrupted value (a rise of 1) does not make a Daisy's step 1; sixteen in a row would.
        let mut c = Counter::default();
        for k in [0.0, 2.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
            assert_eq!(c.step(k), 0, "at {k}");
        }
        assert_eq!(c.step(14.0), 1, "12 is missing: the step is still 2");
        // A value that is not a counter turns it off.
        let mut c = Counter::default();
        c.step(1.0);
        assert_eq!(c.step(7.5), 0);
        assert_eq!(c.step(100.0), 0);
    }
}

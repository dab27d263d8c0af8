//! Packets to sample rows, with exact loss accounting from the 8-bit sample counter.
//!
//! Without the Daisy every packet is a row of 8 channels and consecutive packets count up by one
//! (mod 256). With the Daisy the board sends its own ADS1299 on odd counters and the Daisy's on
//! even ones, each the average of two samples (OpenBCI's documented 16-channel scheme); a row of 16
//! channels is an odd packet followed by the even packet with the next counter. A half without its
//! partner is dropped and counted as a lost row: rows are never assembled from unmatched halves.

use crate::packet::{Packet, CHANNELS};

/// What one packet produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing complete yet (the first half of a Daisy row).
    Pending,
    /// A row is complete: `lost` rows went missing right before it.
    Row { lost: u64 },
    /// A half was dropped because its partner is missing (counted in the next row's `lost`).
    Dropped,
}

/// Turns packets into rows of `8` (Cyton) or `16` (Cyton + Daisy) counts.
#[derive(Debug)]
pub struct RowAssembler {
    daisy: bool,
    /// Counter of the last packet that completed a row (the odd half with the Daisy).
    last_row_counter: Option<u8>,
    /// The odd (board) half waiting for its even partner.
    board_half: Option<(u8, [i32; CHANNELS])>,
    row: [i32; 2 * CHANNELS],
}

impl RowAssembler {
    pub fn new(daisy: bool) -> Self {
        RowAssembler { daisy, last_row_counter: None, board_half: None, row: [0; 2 * CHANNELS] }
    }

    pub fn channels(&self) -> usize {
        if self.daisy {
            2 * CHANNELS
        } else {
            CHANNELS
        }
    }

    /// The counts of the row completed by the last [`Step::Row`].
    pub fn row(&self) -> &[i32] {
        &self.row[..self.channels()]
    }

    /// Starts over: the next row is not compared with anything before it (after a reconnect,
    /// whose loss is measured by time instead).
    pub fn restart(&mut self) {
        self.last_row_counter = None;
        self.board_half = None;
    }

    /// Rows missing between the previous row (counter `prev`) and one with counter `now`.
    fn lost_between(&self, now: u8) -> u64 {
        let Some(prev) = self.last_row_counter else { return 0 };
        let step = now.wrapping_sub(prev);
        if self.daisy {
            // Rows are two counters apart: 128 rows per counter cycle.
            u64::from(step / 2).wrapping_sub(1) & 0x7F
        } else {
            u64::from(step.wrapping_sub(1))
        }
    }

    pub fn push(&mut self, p: &Packet) -> Step {
        if !self.daisy {
            let lost = self.lost_between(p.counter);
            self.last_row_counter = Some(p.counter);
            self.row[..CHANNELS].copy_from_slice(&p.counts);
            return Step::Row { lost };
        }
        if p.counter % 2 == 1 {
            // A new board half; an earlier one still waiting lost its Daisy partner.
            let dropped = self.board_half.replace((p.counter, p.counts)).is_some();
            return if dropped { Step::Dropped } else { Step::Pending };
        }
        match self.board_half.take() {
            Some((odd, counts)) if odd.wrapping_add(1) == p.counter => {
                let lost = self.lost_between(odd);
                self.last_row_counter = Some(odd);
                self.row[..CHANNELS].copy_from_slice(&counts);
                self.row[CHANNELS..].copy_from_slice(&p.counts);
                Step::Row { lost }
            }
            // A Daisy half whose board half was lost (or belongs to another row).
            _ => Step::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Aux;

    fn pk(counter: u8, value: i32) -> Packet {
        Packet { counter, counts: [value; CHANNELS], footer: 0xC0, aux: Aux::Accel([0; 3]) }
    }

    #[test]
    fn cyton_counts_every_missing_counter_across_the_wrap() {
        let mut a = RowAssembler::new(false);
        let steps: Vec<Step> = [250u8, 251, 254, 3, 4].iter().map(|&c| a.push(&pk(c, 0))).collect();
        let lost: Vec<u64> = steps.iter().map(|s| if let Step::Row { lost } = s { *lost } else { 99 }).collect();
        assert_eq!(lost, [0, 0, 2, 4, 0]);
    }

    #[test]
    fn a_repeated_counter_is_a_full_cycle_lost() {
        // 256 packets missing look like a repeat: the counter cannot tell more.
        let mut a = RowAssembler::new(false);
        a.push(&pk(9, 0));
        assert_eq!(a.push(&pk(9, 0)), Step::Row { lost: 255 });
    }

    #[test]
    fn daisy_rows_pair_odd_with_the_next_even() {
        let mut a = RowAssembler::new(true);
        assert_eq!(a.push(&pk(0, 0)), Step::Dropped, "an even half with no board half");
        assert_eq!(a.push(&pk(1, 10)), Step::Pending);
        assert_eq!(a.push(&pk(2, 20)), Step::Row { lost: 0 });
        assert_eq!(&a.row()[..2], &[10, 10]);
        assert_eq!(&a.row()[8..10], &[20, 20]);
        // Lose the Daisy half of row (3, 4): the board half 3 is dropped when 5 arrives.
        assert_eq!(a.push(&pk(3, 30)), Step::Pending);
        assert_eq!(a.push(&pk(5, 50)), Step::Dropped);
        assert_eq!(a.push(&pk(6, 60)), Step::Row { lost: 1 });
        assert_eq!((a.row()[0], a.row()[8]), (50, 60), "never 30 with 60");
        // Lose the board half of row (7, 8): 8 alone is dropped.
        assert_eq!(a.push(&pk(8, 80)), Step::Dropped);
        assert_eq!(a.push(&pk(9, 90)), Step::Pending);
        assert_eq!(a.push(&pk(10, 100)), Step::Row { lost: 1 });
        // Across the wrap: (255, 0) is a row; then (1, 2).
        let mut a = RowAssembler::new(true);
        a.push(&pk(253, 0));
        a.push(&pk(254, 0));
        a.push(&pk(255, 0));
        assert_eq!(a.push(&pk(0, 0)), Step::Row { lost: 0 });
        a.push(&pk(5, 0));
        assert_eq!(a.push(&pk(6, 0)), Step::Row { lost: 2 }, "rows (1,2) and (3,4) are missing");
    }
}

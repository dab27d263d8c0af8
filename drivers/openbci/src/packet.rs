//! The Cyton's 33-byte data packet, parsed from a byte stream that may contain garbage.
//!
//! ```text
//! byte 0      0xA0 header
//! byte 1      sample counter (0..=255, wraps)
//! bytes 2-25  8 channels × 24-bit big-endian two's complement ADS1299 counts
//! bytes 26-31 6 auxiliary bytes, meaning given by the footer
//! byte 32     footer 0xC0..=0xCF (0xC0 accelerometer, 0xC1 raw aux, 0xC3..=0xC6 with the board's
//!             32-bit millisecond clock in bytes 28-31)
//! ```
//!
//! Pure: no I/O, no allocation after construction. This is what the fuzz target drives.

/// Bytes in one packet.
pub const PACKET_LEN: usize = 33;
/// First byte of every packet.
pub const HEADER: u8 = 0xA0;
/// Channels in one packet (one ADS1299).
pub const CHANNELS: usize = 8;

/// ADS1299 reference voltage (V) and full scale of its 24-bit output.
const VREF: f64 = 4.5;
const FULL_SCALE: f64 = 8_388_607.0; // 2^23 - 1

/// µV per count at `gain` (1, 2, 4, 6, 8, 12 or 24): `4.5 / gain / (2^23 - 1) * 1e6`.
pub fn scale_uv(gain: u8) -> f64 {
    VREF / f64::from(gain) / FULL_SCALE * 1e6
}

/// µV of one count at `gain`, computed in f64 and rounded once to f32.
pub fn counts_to_uv(counts: i32, gain: u8) -> f32 {
    (f64::from(counts) * scale_uv(gain)) as f32
}

/// g per count of the LIS3DH accelerometer at the firmware's ±4 g setting (BrainFlow's and the
/// OpenBCI GUI's factor): 0.002 / 16.
pub const ACCEL_G_PER_COUNT: f64 = 0.002 / 16.0;

/// What the six auxiliary bytes hold, from the footer's low nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aux {
    /// 0xC0: accelerometer X, Y, Z as big-endian i16 counts (all zero in packets without a new
    /// accelerometer reading: the LIS3DH runs at 25 Hz).
    Accel([i16; 3]),
    /// 0xC1, 0xC2 and 0xC7..=0xCF: user-defined bytes, passed through.
    Raw([u8; 6]),
    /// 0xC3..=0xC6: two aux bytes and the board's millisecond clock (big-endian u32). `set` is true
    /// for 0xC3/0xC5, the packet following a time-sync `<` command.
    Timestamped { aux: [u8; 2], board_ms: u32, set: bool },
}

/// One parsed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub counter: u8,
    /// Raw signed counts, channel 1 first.
    pub counts: [i32; CHANNELS],
    pub footer: u8,
    pub aux: Aux,
}

/// Sign-extends a 24-bit big-endian value.
fn i24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

fn is_footer(b: u8) -> bool {
    b & 0xF0 == 0xC0
}

impl Packet {
    /// Parses exactly one packet; `None` if the header or footer is wrong.
    pub fn parse(b: &[u8; PACKET_LEN]) -> Option<Packet> {
        if b[0] != HEADER || !is_footer(b[32]) {
            return None;
        }
        let mut counts = [0i32; CHANNELS];
        for (ch, c) in counts.iter_mut().enumerate() {
            *c = i24(&b[2 + 3 * ch..5 + 3 * ch]);
        }
        let a = &b[26..32];
        let aux = match b[32] {
            0xC0 => Aux::Accel([
                i16::from_be_bytes([a[0], a[1]]),
                i16::from_be_bytes([a[2], a[3]]),
                i16::from_be_bytes([a[4], a[5]]),
            ]),
            f @ 0xC3..=0xC6 => Aux::Timestamped {
                aux: [a[0], a[1]],
                board_ms: u32::from_be_bytes([a[2], a[3], a[4], a[5]]),
                set: f == 0xC3 || f == 0xC5,
            },
            _ => Aux::Raw([a[0], a[1], a[2], a[3], a[4], a[5]]),
        };
        Some(Packet { counter: b[1], counts, footer: b[32], aux })
    }
}

/// Counters of what the parser threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    pub packets: u64,
    /// Bytes skipped while looking for the next packet boundary.
    pub skipped_bytes: u64,
}

/// Finds packets in a byte stream and resynchronises after garbage.
///
/// A candidate is a `0xA0` whose byte 32 positions later is a footer. In sync (the candidate starts
/// right after an accepted packet) that is enough. Out of sync (at the start, or after bytes were
/// skipped) a candidate is accepted only once the byte after it is seen to be the next packet's
/// `0xA0`: inside garbage, any 0xA0 … 0xCx 32 bytes apart would otherwise pass for a packet. The
/// price is one packet period (4 ms) of delay, paid only after a resynchronisation.
#[derive(Debug)]
pub struct PacketParser {
    buf: [u8; 2 * PACKET_LEN],
    len: usize,
    /// The buffer starts right after an accepted packet.
    synced: bool,
    stats: ParserStats,
}

impl Default for PacketParser {
    fn default() -> Self {
        PacketParser { buf: [0; 2 * PACKET_LEN], len: 0, synced: false, stats: ParserStats::default() }
    }
}

impl PacketParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Bytes held for the next packet.
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Forgets buffered bytes (after a reconnect the old stream's tail means nothing).
    pub fn reset(&mut self) {
        self.len = 0;
        self.synced = false;
    }

    /// Feeds bytes; calls `on_packet` for every complete packet found, in order.
    pub fn push(&mut self, mut input: &[u8], mut on_packet: impl FnMut(Packet)) {
        while !input.is_empty() {
            let take = (self.buf.len() - self.len).min(input.len());
            self.buf[self.len..self.len + take].copy_from_slice(&input[..take]);
            self.len += take;
            input = &input[take..];
            self.drain(&mut on_packet);
        }
    }

    /// Extracts every packet from the buffer, keeping an incomplete tail.
    fn drain(&mut self, on_packet: &mut impl FnMut(Packet)) {
        let mut start = 0;
        while self.len - start >= PACKET_LEN {
            let candidate: &[u8; PACKET_LEN] = self.buf[start..start + PACKET_LEN].try_into().expect("33 bytes");
            let Some(packet) = Packet::parse(candidate) else {
                self.synced = false;
                self.stats.skipped_bytes += 1;
                start += 1;
                continue;
            };
            if !self.synced {
                match self.buf[..self.len].get(start + PACKET_LEN) {
                    // Out of sync: wait for the byte after the candidate.
                    None => break,
                    Some(&next) if next != HEADER => {
                        self.stats.skipped_bytes += 1;
                        start += 1;
                        continue;
                    }
                    Some(_) => self.synced = true,
                }
            }
            self.stats.packets += 1;
            on_packet(packet);
            start += PACKET_LEN;
        }
        // Bytes that cannot begin a packet need not be kept; skipping any loses sync.
        while start < self.len && self.buf[start] != HEADER {
            self.synced = false;
            self.stats.skipped_bytes += 1;
            start += 1;
        }
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(counter: u8, counts: [i32; 8], footer: u8, aux: [u8; 6]) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = HEADER;
        p[1] = counter;
        for (ch, c) in counts.iter().enumerate() {
            let b = c.to_be_bytes();
            p[2 + 3 * ch..5 + 3 * ch].copy_from_slice(&b[1..4]);
        }
        p[26..32].copy_from_slice(&aux);
        p[32] = footer;
        p
    }

    fn parse_all(bytes: &[u8], chunk: usize) -> (Vec<Packet>, ParserStats) {
        let mut parser = PacketParser::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            parser.push(piece, |p| out.push(p));
        }
        (out, parser.stats())
    }

    #[test]
    fn counts_are_24_bit_twos_complement() {
        let counts = [0, 1, -1, 8_388_607, -8_388_608, 123_456, -654_321, 42];
        let p = Packet::parse(&packet(7, counts, 0xC0, [0xFF, 0xFE, 0, 1, 0x80, 0])).unwrap();
        assert_eq!(p.counts, counts);
        assert_eq!(p.counter, 7);
        assert_eq!(p.aux, Aux::Accel([-2, 1, i16::MIN]));
    }

    #[test]
    fn footers_select_the_aux_layout() {
        let aux = [1, 2, 0x12, 0x34, 0x56, 0x78];
        let ts = Packet::parse(&packet(0, [0; 8], 0xC4, aux)).unwrap();
        assert_eq!(ts.aux, Aux::Timestamped { aux: [1, 2], board_ms: 0x1234_5678, set: false });
        let set = Packet::parse(&packet(0, [0; 8], 0xC5, aux)).unwrap();
        assert!(matches!(set.aux, Aux::Timestamped { set: true, .. }));
        assert_eq!(Packet::parse(&packet(0, [0; 8], 0xC1, aux)).unwrap().aux, Aux::Raw(aux));
        assert!(Packet::parse(&packet(0, [0; 8], 0xB0, aux)).is_none(), "0xB0 is no footer");
    }

    #[test]
    fn the_scale_is_the_ads1299_formula() {
        // 4.5 V / 24 / (2^23 - 1), in µV: 0.02235174... per count.
        assert!((scale_uv(24) - 0.022_351_744_455_307_42).abs() < 1e-15);
        assert_eq!(counts_to_uv(8_388_607, 1), 4.5e6);
    }

    #[test]
    fn a_packet_shaped_pattern_in_garbage_is_not_taken_for_a_packet() {
        // 0xA0 ... 0xC2 32 bytes apart inside garbage, followed by more garbage, then real packets.
        let mut stream = vec![0x55u8; 5];
        let mut fake = [0x11u8; PACKET_LEN];
        fake[0] = HEADER;
        fake[32] = 0xC2;
        stream.extend_from_slice(&fake);
        stream.extend_from_slice(&[0x77; 9]);
        stream.extend_from_slice(&packet(40, [1; 8], 0xC0, [0; 6]));
        stream.extend_from_slice(&packet(41, [2; 8], 0xC0, [0; 6]));
        for chunk in [1, 5, 33, 100] {
            let (packets, _) = parse_all(&stream, chunk);
            let counters: Vec<u8> = packets.iter().map(|p| p.counter).collect();
            assert_eq!(counters, [40, 41], "chunk {chunk}: the fake never passes");
        }
    }

    #[test]
    fn resynchronises_after_garbage_in_any_chunking() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"garbage\xA0\xC0 more");
        stream.extend_from_slice(&packet(1, [5; 8], 0xC0, [0; 6]));
        stream.extend_from_slice(&[0xA0, 0x00, 0xC1]); // a torn header
        stream.extend_from_slice(&packet(2, [-5; 8], 0xC1, [0; 6]));
        stream.extend_from_slice(&packet(3, [9; 8], 0xC6, [0; 6]));
        stream.push(HEADER); // the start of packet 4 confirms packet 3
        for chunk in [1, 2, 7, 33, 34, 1000] {
            let (packets, stats) = parse_all(&stream, chunk);
            let counters: Vec<u8> = packets.iter().map(|p| p.counter).collect();
            assert_eq!(counters, [1, 2, 3], "chunk {chunk}");
            assert_eq!(stats.skipped_bytes, 14 + 3, "chunk {chunk}");
        }
    }
}

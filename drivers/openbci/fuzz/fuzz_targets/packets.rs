//! Arbitrary bytes, cut into arbitrary pieces, through the packet parser and the row assembler
//! (with and without the Daisy). Checks what must hold for any input, not only that nothing panics.
#![no_main]

use bci2token_driver_openbci::packet::{PacketParser, PACKET_LEN};
use bci2token_driver_openbci::rows::{RowAssembler, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the piece sizes, so the same stream is tried in many cuttings.
    let (cut, stream) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };
    let mut parser = PacketParser::new();
    let mut packets = Vec::new();
    for piece in stream.chunks(cut) {
        parser.push(piece, |p| packets.push(p));
    }
    let stats = parser.stats();
    // Every byte is accounted for: in a packet, skipped, or still buffered.
    assert_eq!(stats.packets as usize * PACKET_LEN + stats.skipped_bytes as usize + parser.buffered(), stream.len());
    assert_eq!(stats.packets as usize, packets.len());
    assert!(parser.buffered() <= 2 * PACKET_LEN);
    for p in &packets {
        assert!(p.footer & 0xF0 == 0xC0);
        assert!(p.counts.iter().all(|c| (-(1 << 23)..(1 << 23)).contains(c)));
    }
    // The same bytes in one piece give the same packets.
    let mut whole = PacketParser::new();
    let mut again = Vec::new();
    whole.push(stream, |p| again.push(p));
    assert_eq!(packets, again);

    for daisy in [false, true] {
        let mut rows = RowAssembler::new(daisy);
        for p in &packets {
            match rows.push(p) {
                Step::Row { lost } => {
                    assert!(lost <= if daisy { 127 } else { 255 });
                    assert_eq!(rows.row().len(), if daisy { 16 } else { 8 });
                }
                Step::Pending | Step::Dropped => {}
            }
        }
    }
});

// The calibration benchmark loads models through bci2token-decoder: libtorch's RUNPATH, as the
// daemon's build sets it.
include!("../daemon/decoder/libtorch_link.rs");

fn main() {
    link_libtorch();
}

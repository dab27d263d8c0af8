// bci2tokend links libtorch through the decoder: check its version and set the RUNPATH.
include!("decoder/libtorch_link.rs");

fn main() {
    link_libtorch();
}

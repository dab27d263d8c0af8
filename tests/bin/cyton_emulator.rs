//! The Cyton emulator as a program of its own, for tests that run the daemon somewhere a test
//! process cannot reach (the installed test's booted container): `cyton-emulator DIR` opens a
//! board at DIR/ttyCYTON, prints the pseudo-terminal's own path (/dev/pts/N, which a sandboxed
//! daemon can open where it cannot see DIR) and serves it until killed.

use bci2token_tests::cyton_emulator::{Emulator, EmulatorConfig};

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: cyton-emulator DIR   (opens a Cyton at DIR/ttyCYTON and prints its pty)");
        std::process::exit(2);
    };
    let emulator = Emulator::start(std::path::Path::new(&dir), EmulatorConfig::default());
    let pty = std::fs::read_link(emulator.path()).expect("the emulator's link to its pty");
    println!("{}", pty.display());
    loop {
        std::thread::park();
    }
}

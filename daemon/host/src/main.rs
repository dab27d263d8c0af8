//! `bci2token-driver-host`: started by bci2tokend, one per session, never by hand.

fn main() -> std::process::ExitCode {
    bci2token_driver_host::host_main()
}

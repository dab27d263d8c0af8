//! `bci2tokenctl`: command-line control of `bci2tokend` over its Unix control socket.
//! See docs/bci2tokenctl.md for the commands, environment and exit codes.

mod app;
mod backups;
mod bus;
mod cli;
mod client;
mod error;
mod evaluate;
mod files;
mod generate;
mod monitor;
mod plot;
mod progress;
mod render;
mod socket;
mod stream;
mod table;
mod train;
mod transport;

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::error::{CtlError, Kind};

fn main() -> ExitCode {
    let cli = cli::Cli::parse(); // usage errors: clap prints them and exits with 2
    let env = socket::Env::from_process();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let result = app::run(&cli, &env, &mut out).and_then(|()| out.flush().map_err(CtlError::from_stdout));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.kind == Kind::StdoutClosed {
                return ExitCode::SUCCESS;
            }
            // Do not lose what was already printed (e.g. the events before a failure).
            let _ = out.flush();
            report(&e, cli.json);
            ExitCode::from(e.exit_code())
        }
    }
}

fn report(e: &CtlError, json: bool) {
    let mut err = io::stderr().lock();
    let _ = if json { writeln!(err, "{}", e.to_json_line()) } else { writeln!(err, "bci2tokenctl: {}", e.message) };
}

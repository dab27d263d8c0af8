//! What packagers generate from the command line's own definitions: shell completions and man
//! pages (packaging/build runs both, so they can never drift from the options).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{CtlError, Kind};

/// `completions SHELL`: the completion script on `out`.
pub fn completions<W: Write>(shell: clap_complete::Shell, out: &mut W) -> Result<(), CtlError> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "bci2tokenctl", out);
    Ok(())
}

/// `man-pages DIR`: bci2tokenctl.1 and bci2tokenctl-SUB[-SUB].1 for every visible subcommand.
pub fn man_pages(dir: &Path) -> Result<(), CtlError> {
    let usage = |e: std::io::Error| CtlError::new(Kind::Usage, format!("man-pages {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(usage)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(usage)
}

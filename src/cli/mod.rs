//! Command-line parsing and dispatch (minimal version until the core
//! helper's command line lands; each subcommand is one module with
//! `pub struct Args` and `pub fn run(args: &Args) -> CliResult`).

mod hyperclean;

use clap::Parser;
use std::process::ExitCode;

/// What a subcommand returns: any error is printed with its causes and the
/// process exits with status 1.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Data hyper-cleaning on the bundled digits (see `hyperclean --help`).
    Hyperclean(hyperclean::Args),
}

/// chronos-sync: significance-triggered sparse synchronization for
/// distributed nested optimization.
#[derive(Debug, Parser)]
#[command(name = "chronos-sync", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line, runs the subcommand, and maps errors to exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Hyperclean(args) => hyperclean::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

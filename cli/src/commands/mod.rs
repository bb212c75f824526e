//! Command-line parsing and dispatch.
//!
//! Each subcommand is one module with `pub struct Args` (a `clap::Args`) and
//! `pub fn run(args: &Args) -> CliResult`. Adding one is two lines: its `mod`
//! declaration and one line in the `subcommands!` list below.

pub mod cluster_bench;
pub mod coordinator;
pub mod hyperclean;
pub mod hyperclean_mp;
pub mod hyperclean_rank;
pub mod hyperclean_sweep;
pub mod simulate;
pub mod synthetic;

use clap::Parser;
use std::process::ExitCode;

/// What a subcommand returns: any error is printed with its causes and the
/// process exits with status 1.
pub type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Declares the `Command` enum (one variant per subcommand, its help text
/// taken from the module's `Args`) and its dispatch to `module::run`.
macro_rules! subcommands {
    ($($variant:ident => $module:ident),* $(,)?) => {
        /// The subcommands.
        #[derive(Debug, clap::Subcommand)]
        pub enum Command {
            $(
                #[doc = concat!("The `", stringify!($module), "` subcommand.")]
                $variant($module::Args),
            )*
        }

        impl Command {
            /// Runs the chosen subcommand.
            pub fn run(&self) -> CliResult {
                match self {
                    $(Command::$variant(args) => $module::run(args),)*
                }
            }
        }
    };
}

subcommands! {
    Simulate => simulate,
    Hyperclean => hyperclean,
    HypercleanSweep => hyperclean_sweep,
    HypercleanRank => hyperclean_rank,
    Coordinator => coordinator,
    ClusterBench => cluster_bench,
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
    // With the `png` feature every chart's text goes through a registered
    // font; a missing one is reported by the command that draws.
    #[cfg(feature = "png")]
    let _ = crate::workload::plot_png::register_font();
    match cli.command.run() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

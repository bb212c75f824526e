//! `chronos-sync-coordinator`: the coordinator service on its own (the same
//! flags as `chronos-sync coordinator serve`).

use clap::Parser;
use std::process::ExitCode;

/// The chronos-sync coordinator as a durable gRPC service.
#[derive(Debug, Parser)]
#[command(name = "chronos-sync-coordinator", version, about)]
struct Cli {
    #[command(flatten)]
    serve: chronos_sync_service::cli::ServeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.serve.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

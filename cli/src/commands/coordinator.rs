//! `chronos-sync coordinator serve --listen ADDR --data DIR`: the
//! coordinator as a durable gRPC service (the `chronos-sync-service` crate;
//! cargo feature `service` of this crate, on by default).

#[cfg(feature = "service")]
mod imp {
    use crate::commands::CliResult;

    /// The coordinator service.
    #[derive(Debug, clap::Args)]
    pub struct Args {
        /// What to do.
        #[command(subcommand)]
        pub command: Sub,
    }

    /// Coordinator subcommands.
    #[derive(Debug, clap::Subcommand)]
    pub enum Sub {
        /// Serve the coordinator over gRPC, every change durable in `--data DIR`
        /// before it is answered (SQLite, WAL, full sync). Runs until SIGINT or
        /// SIGTERM; restarted on the same directory it continues exactly where
        /// the last acknowledged request left it.
        Serve(chronos_sync_service::cli::ServeArgs),
    }

    /// Runs the subcommand.
    pub fn run(args: &Args) -> CliResult {
        match &args.command {
            Sub::Serve(serve) => Ok(serve.run()?),
        }
    }
}

#[cfg(not(feature = "service"))]
mod imp {
    use crate::commands::CliResult;

    /// The coordinator service (this build has no `service` feature).
    #[derive(Debug, clap::Args)]
    pub struct Args {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        pub rest: Vec<String>,
    }

    /// Fails: built without the `service` feature.
    pub fn run(_args: &Args) -> CliResult {
        Err("this chronos-sync was built without the `service` feature (cargo build -p chronos-sync-cli --features service)".into())
    }
}

pub use imp::*;

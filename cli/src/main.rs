//! The `chronos-sync` command line: see `chronos-sync --help`.

fn main() -> std::process::ExitCode {
    chronos_sync_cli::commands::main()
}

//! The `chronos-sync` command line: see `chronos-sync --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

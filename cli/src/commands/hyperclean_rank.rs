//! `chronos-sync hyperclean-rank` (hidden): one rank of `hyperclean
//! --processes W`, started by the launcher under mpirun (see
//! [`super::hyperclean_mp`]).

use super::CliResult;

/// Arguments of the hidden rank mode.
pub type Args = super::hyperclean_mp::RankArgs;

/// Runs one rank.
pub fn run(args: &Args) -> CliResult {
    super::hyperclean_mp::run_rank_mode(args)
}

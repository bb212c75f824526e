//! The `chronos-sync` command line and the workloads it runs, kept out of the
//! library so that a framework depending on `chronos-sync` builds none of
//! clap, plotters, smartcore, indicatif or serde.
//!
//! - [`commands`]: the subcommands (`simulate`, `hyperclean`) and their dispatch.
//! - [`workload`]: the data hyper-cleaning workload they run.

#![warn(missing_docs)]

pub mod commands;
pub mod workload;

//! PLACEHOLDER — the `chronos-sync` command line.
fn main() {}

//! PLACEHOLDER — helper "cpu" replaces this file.
/// The multi-threaded CPU backend.
pub struct CpuBackend;

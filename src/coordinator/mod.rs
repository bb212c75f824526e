//! PLACEHOLDER — helper "coordinator" replaces this module.

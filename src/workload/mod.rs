//! PLACEHOLDER — helper "hyperclean" replaces this module.

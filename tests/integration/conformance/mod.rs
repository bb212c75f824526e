//! PLACEHOLDER — replaced by a helper.

//! The size of this machine's last-level cache, which decides whether a
//! pass's output can stay in cache for the next pass or should bypass it.

use std::sync::OnceLock;

/// Assumed when the operating system does not say (a common server L3 slice).
const FALLBACK_BYTES: usize = 32 << 20;

/// Bytes of the largest CPU cache Linux reports for CPU 0
/// (`/sys/devices/system/cpu/cpu0/cache/index*/size`), or 32 MiB where that
/// is not available. Read once per process.
pub fn last_level_cache_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        let largest = (0..8)
            .filter_map(|idx| {
                std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{idx}/size")).ok()
            })
            .filter_map(|text| parse_size(text.trim()))
            .max();
        largest.filter(|&b| b > 0).unwrap_or(FALLBACK_BYTES)
    })
}

/// `"32768K"`, `"32M"`, `"1G"` or a plain byte count, as sysfs writes sizes.
fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1usize << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("12x"), None);
    }
}

//! Fuzz target: the packed-delta decoder on arbitrary bytes.
//!
//! Input: one mode byte, then the buffer. With the mode's low bit set (and a
//! buffer that is at least a header long and a multiple of 4), the target
//! first writes the correct checksum into the header, so that mutations get
//! past the checksum and exercise acceptance as well as every structural
//! check. Whatever the decoder accepts must re-encode to the very same bytes
//! (the format has exactly one encoding per delta), and every accessor must
//! agree with the decoded delta.
//!
//! With `CHRONOS_WIRE_SEED_DIR` set, the binary instead writes a seed corpus
//! of valid buffers there and exits (scripts/fuzz-wire does this).

#![no_main]

use chronos_sync::WireDtype;
use chronos_sync::wire::checksum::checksum;
use chronos_sync::wire::{self, PackedDelta, PackedView};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: write_seeds_if_asked(), |data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    if mode & 1 == 1 && body.len() >= 32 && body.len() % 4 == 0 {
        let mut sealed = body.to_vec();
        let sum = checksum(&sealed).expect("length is a multiple of 4");
        sealed[24..28].copy_from_slice(&sum.to_le_bytes());
        check(&sealed);
    } else {
        check(body);
    }
});

/// The decoder's contract on one buffer: a typed error, or a delta that
/// re-encodes to exactly these bytes.
fn check(bytes: &[u8]) {
    let peeked = wire::peek_count(bytes);
    let view = match PackedView::parse(bytes) {
        Ok(view) => view,
        Err(e) => {
            // Formatting every error must not panic either.
            let _ = e.to_string();
            assert_eq!(wire::decode(bytes), Err(e));
            return;
        }
    };
    assert_eq!(peeked, Ok(view.count()));
    assert_eq!(wire::validate(bytes, view.n(), view.dtype()), Ok(()));
    let delta = view.to_delta();
    assert_eq!(delta.check(), Ok(()));
    assert_eq!(delta.encode().as_deref(), Ok(bytes), "accepted bytes are not the canonical encoding");
    assert_eq!(delta.encoded_len(), bytes.len() as u64);

    let mut entries = 0u64;
    let mut last: Option<u64> = None;
    for chunk in view.chunks() {
        assert_eq!(chunk.first_entry(), entries);
        assert!(chunk.count() <= chunk.len());
        for (j, (i, v)) in chunk.iter().enumerate() {
            assert!(last.is_none_or(|l| i > l));
            assert!(i >= chunk.base() && i < chunk.base() + u64::from(chunk.len()));
            assert_eq!(chunk.value(j).to_bits(), v.to_bits());
            assert_eq!(delta.indices[(entries as usize) + j], i);
            last = Some(i);
        }
        entries += u64::from(chunk.count());
    }
    assert_eq!(entries, view.count());
}

/// Writes valid buffers (mode byte 0 and 1 versions) for a spread of shapes:
/// every dtype, empty and n = 1 buffers, lists, bitmaps with tail bits, the
/// switch-over counts, and several chunks.
fn write_seeds_if_asked() {
    let Some(dir) = std::env::var_os("CHRONOS_WIRE_SEED_DIR") else { return };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let mut written = 0;
    for (d, dtype) in [WireDtype::F32, WireDtype::F16, WireDtype::Bf16].into_iter().enumerate() {
        let shapes: Vec<(u64, Vec<u64>)> = vec![
            (0, vec![]),
            (1, vec![]),
            (1, vec![0]),
            (5, vec![0, 1, 4]),
            (40, vec![0, 1, 2, 33, 39]),
            (70, (0..70).filter(|i| i % 3 != 0).collect()),
            (100, (0..100).collect()),
            (65_536, (0..4096).map(|i| i * 16).collect()),
            (65_536, (0..4097).map(|i| i * 15).collect()),
            (65_536 + 40, vec![3, 9, 100, 65_536, 65_537, 65_575]),
            (3 * 65_536 + 7, vec![1, 65_536 * 2 + 5, 3 * 65_536 + 6]),
            (131_072, (0..131_072).step_by(7).collect()),
        ];
        for (s, (n, indices)) in shapes.into_iter().enumerate() {
            let values = indices.iter().map(|&i| (i as f32 - 20.0) * 0.37).collect();
            let delta = PackedDelta::new(n, dtype, indices, values).expect("seed shapes are valid");
            let bytes = delta.encode().expect("seed shapes encode");
            for mode in [0u8, 1] {
                let mut file = vec![mode];
                file.extend_from_slice(&bytes);
                std::fs::write(dir.join(format!("seed-{d}-{s:02}-{mode}")), file).expect("write a seed");
                written += 1;
            }
        }
    }
    eprintln!("wrote {written} seeds to {}", dir.display());
    std::process::exit(0);
}

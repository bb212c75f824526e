//! Fuzz target: the checkpoint decoder on arbitrary bytes.
//!
//! Input: one mode byte, then the buffer. With the mode's low bit set (and a
//! buffer that is at least a header long and a multiple of 8), the target
//! first writes the correct checksum into the header, so that mutations get
//! past the checksum and exercise the field checks and acceptance as well as
//! the structural ones. Whatever the decoder accepts must re-encode to the
//! very same bytes (one encoding per state), and every rejection must be a
//! typed error that formats without panicking.
//!
//! With `CHRONOS_CHECKPOINT_SEED_DIR` set, the binary instead writes a seed
//! corpus of valid checkpoints there and exits (scripts/fuzz-checkpoint
//! does this).

#![no_main]

use chronos_sync::WireDtype;
use chronos_sync::checkpoint::{BucketState, CHECKSUM_OFFSET, Checkpoint, HEADER_BYTES, checksum};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: write_seeds_if_asked(), |data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    if mode & 1 == 1 && body.len() >= HEADER_BYTES && body.len() % 8 == 0 {
        let mut sealed = body.to_vec();
        let sum = checksum(&sealed).expect("length is a multiple of 8");
        sealed[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
        check(&sealed);
    } else {
        check(body);
    }
});

/// The decoder's contract on one buffer: a typed error, or a checkpoint
/// that re-encodes to exactly these bytes.
fn check(bytes: &[u8]) {
    match Checkpoint::decode(bytes) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(c) => {
            assert_eq!(c.encoded_len(), bytes.len());
            for b in &c.buckets {
                assert_eq!(b.accumulator.len() as u64, b.n);
                assert!(b.since_sync <= b.steps);
                assert!(b.accumulator.iter().all(|v| v.is_finite()));
            }
            let mut out = Vec::new();
            c.encode(&mut out).expect("a decoded checkpoint encodes");
            assert_eq!(out, bytes, "accepted bytes are not the canonical encoding");
        }
    }
}

/// Writes valid checkpoints (mode byte 0 and 1 versions): no buckets, empty
/// buckets, odd and even lengths, every dtype, several buckets.
fn write_seeds_if_asked() {
    let Some(dir) = std::env::var_os("CHRONOS_CHECKPOINT_SEED_DIR") else { return };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    let bucket = |n: u64, dtype: WireDtype, steps: u64, since_sync: u64| BucketState {
        n,
        dtype,
        config_fingerprint: 0x0123_4567_89ab_cdef ^ n,
        steps,
        since_sync,
        accumulator: (0..n).map(|i| (i as f32 - 3.0) * 0.37).collect(),
        budget: None,
    };
    let seeds = [
        Checkpoint { world: 1, rank: 0, buckets: vec![] },
        Checkpoint { world: 2, rank: 1, buckets: vec![bucket(0, WireDtype::F32, 0, 0)] },
        Checkpoint { world: 3, rank: 2, buckets: vec![bucket(1, WireDtype::F16, 5, 5)] },
        Checkpoint {
            world: 8,
            rank: 5,
            buckets: vec![
                bucket(7, WireDtype::Bf16, 100, 3),
                bucket(8, WireDtype::F32, 100, 3),
                bucket(33, WireDtype::F16, 100, 0),
            ],
        },
    ];
    let mut written = 0;
    for (s, c) in seeds.iter().enumerate() {
        let mut bytes = Vec::new();
        c.encode(&mut bytes).expect("seed checkpoints are valid");
        for mode in [0u8, 1] {
            let mut file = vec![mode];
            file.extend_from_slice(&bytes);
            std::fs::write(dir.join(format!("seed-{s:02}-{mode}")), file).expect("write a seed");
            written += 1;
        }
    }
    eprintln!("wrote {written} seeds to {}", dir.display());
    std::process::exit(0);
}

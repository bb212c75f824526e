//! The packed-delta wire codec against docs/wire-format.md: golden bytes that
//! pin the format, round trips across chunk boundaries and list/bitmap
//! switch-overs, mutations that must all be rejected, and one targeted
//! corruption per decoder error.

use crate::common::fixed_proptest;
use chronos_sync::wire::{self, ChunkIndex, PackedDelta, PackedView};
use chronos_sync::{WireDtype, WireError};
use proptest::prelude::*;
use rayon::prelude::*;

const CHUNK: u64 = 65_536;
const DTYPES: [WireDtype; 3] = [WireDtype::F32, WireDtype::F16, WireDtype::Bf16];

// ---------------------------------------------------------------- helpers

/// The format's checksum, written out again from docs/wire-format.md rather
/// than taken from the crate: wrapping sum over words i != 6 of
/// fmix32(w_i ^ (i * 0x9E3779B9)).
fn reference_checksum(b: &[u8]) -> u32 {
    fn fmix(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        h = h.wrapping_mul(0xC2B2_AE35);
        h ^ (h >> 16)
    }
    assert_eq!(b.len() % 4, 0);
    b.chunks(4)
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(i, w)| fmix(u32::from_le_bytes(w.try_into().unwrap()) ^ (i as u32).wrapping_mul(0x9E37_79B9)))
        .fold(0u32, u32::wrapping_add)
}

/// Rewrites the header checksum so a corruption is judged on its structure.
fn reseal(b: &mut [u8]) {
    let sum = reference_checksum(b);
    b[24..28].copy_from_slice(&sum.to_le_bytes());
}

fn parse_err(b: &[u8]) -> WireError {
    match PackedView::parse(b) {
        Ok(_) => panic!("corrupted buffer was accepted"),
        Err(e) => e,
    }
}

/// SplitMix64: a tiny deterministic generator so that large cases are cheap
/// to build from one proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Finite values over many magnitudes, both zeros, subnormals and values
    /// past f16's range (which must saturate).
    fn value(&mut self) -> f32 {
        match self.next() % 8 {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(self.next() as u32 & 0x807F_FFFF), // subnormal
            3 => (self.unit() as f32 - 0.5) * 2.0e5,
            4 => {
                let v = f32::from_bits(self.next() as u32);
                if v.is_finite() { v } else { 1.5 }
            }
            _ => (self.unit() as f32 - 0.5) * 4.0,
        }
    }
}

fn chunk_len(n: u64, c: u64) -> u64 {
    (n - c * CHUNK).min(CHUNK)
}

/// The largest count that a chunk of `len` elements still stores as a list.
fn list_limit(len: u64) -> u64 {
    2 * len.div_ceil(32)
}

/// How many entries each chunk gets.
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Each element independently with this probability.
    Density(f64),
    /// Exactly `list_limit(len) + offset` entries per chunk (clamped to 0..=len):
    /// around the list/bitmap switch-over.
    AroundSwitch(i64),
}

fn build(n: u64, dtype: WireDtype, fill: Fill, seed: u64) -> PackedDelta {
    let mut rng = Rng(seed);
    let mut indices = Vec::new();
    for c in 0..n.div_ceil(CHUNK) {
        let len = chunk_len(n, c);
        match fill {
            Fill::Density(p) => indices.extend((0..len).filter(|_| rng.unit() < p).map(|l| c * CHUNK + l)),
            Fill::AroundSwitch(off) => {
                let k = (list_limit(len) as i64 + off).clamp(0, len as i64) as u64;
                // Selection sampling: exactly k of len, in order.
                let mut need = k;
                for l in 0..len {
                    if rng.next() % (len - l) < need {
                        indices.push(c * CHUNK + l);
                        need -= 1;
                    }
                }
            }
        }
    }
    let values = (0..indices.len()).map(|_| rng.value()).collect();
    PackedDelta::new(n, dtype, indices, values).unwrap()
}

/// Everything a correct round trip implies about one delta.
fn check_round_trip(d: &PackedDelta) {
    let bytes = d.encode().unwrap();
    assert_eq!(bytes.len() as u64, d.encoded_len());
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), reference_checksum(&bytes));
    let view = PackedView::parse(&bytes).unwrap();
    assert_eq!((view.n(), view.dtype(), view.count()), (d.n, d.dtype, d.count()));
    assert_eq!(wire::peek_count(&bytes), Ok(d.count()));
    assert_eq!(wire::validate(&bytes, d.n, d.dtype), Ok(()));

    let back = wire::decode(&bytes).unwrap();
    assert_eq!(back.indices, d.indices);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.values), bits(&d.values));
    assert_eq!(back.encode().unwrap(), bytes, "re-encoding a decoded buffer must give the same bytes");

    let (idx, val): (Vec<u64>, Vec<f32>) = view.iter().unzip();
    assert_eq!(idx, d.indices);
    assert_eq!(bits(&val), bits(&d.values));

    // Chunk metadata, and list vs bitmap exactly where the format says.
    let mut seen = 0u64;
    for (c, chunk) in view.chunks().enumerate() {
        let c = c as u64;
        let len = chunk_len(d.n, c);
        let k = d.indices.iter().filter(|&&i| i / CHUNK == c).count() as u64;
        assert_eq!((chunk.number(), chunk.base(), u64::from(chunk.len())), (c, c * CHUNK, len));
        assert_eq!((u64::from(chunk.count()), chunk.first_entry()), (k, seen));
        match chunk.entries() {
            ChunkIndex::List(b) => {
                assert!(k <= list_limit(len));
                assert_eq!(b.len() as u64, 2 * k);
            }
            ChunkIndex::Bitmap(b) => {
                assert!(k > list_limit(len));
                assert_eq!(b.len() as u64, len.div_ceil(32) * 4);
            }
        }
        for j in 0..k as usize {
            assert_eq!(chunk.value(j).to_bits(), d.values[seen as usize + j].to_bits());
        }
        seen += k;
    }
    assert_eq!(seen, d.count());

    // Chunks applied in parallel give what a sequential scatter gives.
    let n = d.n as usize;
    let mut sequential = vec![0.0f32; n];
    for (&i, &v) in d.indices.iter().zip(&d.values) {
        sequential[i as usize] += v;
    }
    let mut parallel = vec![0.0f32; n];
    parallel.par_chunks_mut(CHUNK as usize).enumerate().for_each(|(c, dst)| {
        for (i, v) in view.chunk(c).unwrap().iter() {
            dst[(i % CHUNK) as usize] += v;
        }
    });
    assert_eq!(bits(&parallel), bits(&sequential));
}

// ---------------------------------------------------------------- golden bytes

#[test]
fn golden_bf16_lists_across_two_chunks() {
    let d = PackedDelta::new(70_000, WireDtype::Bf16, vec![3, 5, 65_546], vec![1.0, -2.5, 0.15625]).unwrap();
    let mut expected: Vec<u8> = Vec::new();
    expected.extend(b"CSPD");
    expected.extend([1, 0]); // version 1
    expected.extend([2, 0]); // bf16, reserved
    expected.extend(70_000u64.to_le_bytes());
    expected.extend(3u64.to_le_bytes());
    expected.extend([0; 4]); // checksum, filled below
    expected.extend([0; 4]); // reserved
    expected.extend([2, 0, 0, 0, 1, 0, 0, 0]); // chunk table: 2, 1
    expected.extend([3, 0, 5, 0]); // chunk 0 list
    expected.extend([10, 0, 0, 0]); // chunk 1 list (65546 - 65536), pad
    expected.extend([0x80, 0x3F, 0x20, 0xC0, 0x20, 0x3E, 0, 0]); // bf16 1.0, -2.5, 0.15625, pad
    let sum = reference_checksum(&expected);
    expected[24..28].copy_from_slice(&sum.to_le_bytes());
    assert_eq!(d.encode().unwrap(), expected);
    assert_eq!(wire::decode(&expected), Ok(d));
}

#[test]
fn golden_f32_bitmap() {
    // 5 entries of 40: a list would take 12 bytes, the bitmap 8.
    let d = PackedDelta::new(40, WireDtype::F32, vec![0, 1, 2, 33, 39], vec![1.0, 2.0, -0.5, 0.0, 1.0e-40]).unwrap();
    let mut expected: Vec<u8> = Vec::new();
    expected.extend(b"CSPD");
    expected.extend([1, 0, 0, 0]);
    expected.extend(40u64.to_le_bytes());
    expected.extend(5u64.to_le_bytes());
    expected.extend([0; 8]);
    expected.extend(5u32.to_le_bytes());
    expected.extend([0b111, 0, 0, 0]); // bits 0, 1, 2
    expected.extend([0x82, 0, 0, 0]); // bits 33 and 39
    for v in [1.0f32, 2.0, -0.5, 0.0, 1.0e-40] {
        expected.extend(v.to_bits().to_le_bytes());
    }
    let sum = reference_checksum(&expected);
    expected[24..28].copy_from_slice(&sum.to_le_bytes());
    assert_eq!(d.encode().unwrap(), expected);
    assert_eq!(wire::decode(&expected), Ok(d));
}

#[test]
fn golden_f16_saturates_and_empty_buffer() {
    let d = PackedDelta::new(1, WireDtype::F16, vec![0], vec![-1.0e9]).unwrap();
    assert_eq!(d.values, vec![-65504.0]);
    let b = d.encode().unwrap();
    assert_eq!(b.len(), 32 + 4 + 4 + 4);
    assert_eq!(&b[36..44], &[0, 0, 0, 0, 0xFF, 0xFB, 0, 0]); // index 0 + pad, f16 -65504 + pad
    let empty = PackedDelta::empty(1, WireDtype::F16).encode().unwrap();
    assert_eq!(empty.len(), 36);
    assert_eq!(&empty[16..24], &[0; 8]);
    assert_eq!(&empty[32..], &[0; 4]);
}

// ---------------------------------------------------------------- round trips

fn n_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..=200, (1u64..=3, -3i64..=3).prop_map(|(k, d)| (k * CHUNK) as i64 + d).prop_map(|n| n as u64),]
}

fn dtype_strategy() -> impl Strategy<Value = WireDtype> {
    prop::sample::select(DTYPES.to_vec())
}

proptest! {
    #![proptest_config(fixed_proptest(96))]

    #[test]
    fn round_trip_any_density(
        n in n_strategy(),
        dtype in dtype_strategy(),
        density in prop_oneof![Just(0.0), Just(1.0), 0.0f64..0.02, 0.0f64..=1.0],
        seed in any::<u64>(),
    ) {
        check_round_trip(&build(n, dtype, Fill::Density(density), seed));
    }

    #[test]
    fn round_trip_at_the_switch_over(
        n in n_strategy(),
        dtype in dtype_strategy(),
        offset in -2i64..=2,
        seed in any::<u64>(),
    ) {
        check_round_trip(&build(n, dtype, Fill::AroundSwitch(offset), seed));
    }
}

#[test]
fn round_trip_edge_shapes() {
    for dtype in DTYPES {
        check_round_trip(&PackedDelta::empty(0, dtype));
        check_round_trip(&PackedDelta::empty(1, dtype));
        check_round_trip(&PackedDelta::empty(3 * CHUNK + 1, dtype));
        check_round_trip(&PackedDelta::new(1, dtype, vec![0], vec![0.75]).unwrap());
        // The last element of every chunk, and the very last element.
        let n = 2 * CHUNK + 1;
        check_round_trip(
            &PackedDelta::new(n, dtype, vec![CHUNK - 1, 2 * CHUNK - 1, 2 * CHUNK], vec![1.0, 2.0, 3.0]).unwrap(),
        );
        // Exactly at the switch-over in a full chunk: 4096 entries is a list, 4097 a bitmap.
        for k in [4096u64, 4097] {
            let d = PackedDelta::new(CHUNK, dtype, (0..k).map(|i| i * 15).collect(), vec![1.0; k as usize]).unwrap();
            let b = d.encode().unwrap();
            let v = PackedView::parse(&b).unwrap();
            assert_eq!(matches!(v.chunk(0).unwrap().entries(), ChunkIndex::Bitmap(_)), k == 4097);
            check_round_trip(&d);
        }
    }
}

// ---------------------------------------------------------------- mutations

fn small_buffers() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dtype in DTYPES {
        out.push(build(70, dtype, Fill::Density(0.1), 1).encode().unwrap()); // list, odd or even
        out.push(build(70, dtype, Fill::Density(0.6), 2).encode().unwrap()); // bitmap with tail bits
        out.push(PackedDelta::new(CHUNK + 3, dtype, vec![1, CHUNK + 2], vec![1.0, -1.0]).unwrap().encode().unwrap());
        out.push(PackedDelta::new(5, dtype, vec![0, 1, 4], vec![1.0, 2.0, 3.0]).unwrap().encode().unwrap());
        out.push(PackedDelta::empty(1, dtype).encode().unwrap());
    }
    out
}

#[test]
fn every_single_byte_change_of_small_buffers_is_rejected() {
    for b in small_buffers() {
        let mut m = b.clone();
        for pos in 0..b.len() {
            for x in 1..=255u8 {
                m[pos] = b[pos] ^ x;
                assert!(PackedView::parse(&m).is_err(), "byte {pos} ^ {x:#04x} accepted");
                m[pos] = b[pos];
            }
        }
    }
}

#[test]
fn every_truncation_of_small_buffers_is_rejected() {
    for b in small_buffers() {
        for len in 0..b.len() {
            assert!(PackedView::parse(&b[..len]).is_err(), "prefix of {len} accepted");
        }
    }
}

proptest! {
    #![proptest_config(fixed_proptest(256))]

    #[test]
    fn mutations_are_rejected(
        n in n_strategy(),
        dtype in dtype_strategy(),
        density in prop_oneof![0.0f64..0.01, 0.0f64..=1.0],
        seed in any::<u64>(),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 1..16),
    ) {
        let b = build(n, dtype, Fill::Density(density), seed).encode().unwrap();
        prop_assert!(PackedView::parse(&b).is_ok());

        let mut m = b.clone();
        m[pos.index(b.len())] ^= xor;
        prop_assert!(PackedView::parse(&m).is_err());

        prop_assert!(PackedView::parse(&b[..cut.index(b.len())]).is_err());

        let mut long = b.clone();
        long.extend(&tail);
        prop_assert!(PackedView::parse(&long).is_err());
        // Extension by whole zero words with a matching checksum is still oversized.
        let mut long = b.clone();
        long.extend([0u8; 4]);
        reseal(&mut long);
        let len = b.len() as u64;
        prop_assert_eq!(parse_err(&long), WireError::Oversized { expected: len, have: len + 4 });
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), header in any::<bool>()) {
        let mut bytes = bytes;
        if header && bytes.len() >= 8 {
            bytes[..6].copy_from_slice(b"CSPD\x01\x00");
        }
        let _ = PackedView::parse(&bytes);
        let _ = wire::peek_count(&bytes);
    }
}

// ---------------------------------------------------------------- one test per error

/// n = 65536 + 40 in bf16: chunk 0 an odd list {3, 9, 100}, chunk 1 a bitmap
/// of 40 bits (bits 0..=9 set), 13 values (odd: a values pad).
fn target() -> (PackedDelta, Vec<u8>) {
    let mut indices = vec![3, 9, 100];
    indices.extend((0..10).map(|i| CHUNK + i));
    let d = PackedDelta::new(CHUNK + 40, WireDtype::Bf16, indices, (1..=13).map(|i| i as f32).collect()).unwrap();
    let b = d.encode().unwrap();
    (d, b)
}

// Offsets in `target()`'s buffer.
const TABLE: usize = 32;
const LIST0: usize = 40; // 3 u16 + pad
const BITMAP1: usize = 48; // 2 words
const VALUES: usize = 56; // 13 bf16 + pad

fn corrupted(edit: impl FnOnce(&mut Vec<u8>)) -> WireError {
    let (_, mut b) = target();
    edit(&mut b);
    reseal(&mut b);
    parse_err(&b)
}

#[test]
fn target_buffer_layout_is_as_assumed() {
    let (d, b) = target();
    let lay = d.layout();
    assert_eq!(lay.index_offsets, vec![LIST0 as u64, BITMAP1 as u64, VALUES as u64]);
    assert_eq!(b.len(), VALUES + 28);
    assert!(PackedView::parse(&b).is_ok());
}

#[test]
fn error_truncated_and_oversized() {
    let (_, b) = target();
    assert_eq!(parse_err(&b[..20]), WireError::Truncated { needed: 32, have: 20 });
    let mut short = b[..b.len() - 4].to_vec();
    reseal(&mut short);
    assert_eq!(parse_err(&short), WireError::Truncated { needed: b.len() as u64, have: b.len() as u64 - 4 });
    // A huge n in a 40-byte buffer: the table alone does not fit.
    assert_eq!(
        corrupted(|b| b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes())),
        WireError::Truncated { needed: 32 + 4 * (1u64 << 44), have: b.len() as u64 }
    );
    let mut long = b.clone();
    long.extend([0; 8]);
    reseal(&mut long);
    assert_eq!(parse_err(&long), WireError::Oversized { expected: b.len() as u64, have: b.len() as u64 + 8 });
}

#[test]
fn error_header_fields() {
    assert_eq!(corrupted(|b| b[0] = b'X'), WireError::BadMagic { found: *b"XSPD" });
    assert_eq!(corrupted(|b| b[4] = 2), WireError::UnsupportedVersion { found: 2, supported: 1 });
    assert_eq!(corrupted(|b| b[6] = 3), WireError::UnknownDtype { code: 3 });
    assert_eq!(corrupted(|b| b[7] = 1), WireError::NonZeroReserved { offset: 7 });
    assert_eq!(corrupted(|b| b[30] = 1), WireError::NonZeroReserved { offset: 30 });
}

#[test]
fn error_padding() {
    assert_eq!(corrupted(|b| b[LIST0 + 6] = 1), WireError::NonZeroReserved { offset: LIST0 as u64 + 6 });
    // Bit 40 of chunk 1 (a 40-element chunk): byte 5 of the bitmap, bit 0.
    assert_eq!(corrupted(|b| b[BITMAP1 + 5] = 1), WireError::NonZeroReserved { offset: BITMAP1 as u64 + 5 });
    assert_eq!(corrupted(|b| b[VALUES + 27] = 1), WireError::NonZeroReserved { offset: VALUES as u64 + 27 });
}

#[test]
fn error_chunk_table() {
    let set = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    assert_eq!(corrupted(|b| set(b, TABLE + 4, 41)), WireError::ChunkOverfull { chunk: 1, count: 41, len: 40 });
    assert_eq!(corrupted(|b| set(b, TABLE, 65_537)), WireError::ChunkOverfull { chunk: 0, count: 65_537, len: 65_536 });
    assert_eq!(
        corrupted(|b| b[16..24].copy_from_slice(&14u64.to_le_bytes())),
        WireError::CountMismatch { header: 14, table: 13, n: CHUNK + 40 }
    );
    // Table says 2 entries in chunk 0 but the header still says 13.
    assert_eq!(corrupted(|b| set(b, TABLE, 2)), WireError::CountMismatch { header: 13, table: 12, n: CHUNK + 40 });
}

#[test]
fn error_list_entries() {
    let set = |b: &mut Vec<u8>, p: usize, v: u16| b[LIST0 + 2 * p..LIST0 + 2 * p + 2].copy_from_slice(&v.to_le_bytes());
    assert_eq!(corrupted(|b| set(b, 1, 3)), WireError::Misordered { chunk: 0, position: 1 });
    assert_eq!(corrupted(|b| set(b, 0, 10)), WireError::Misordered { chunk: 0, position: 1 });
    // Out of range needs a short chunk: move chunk 1 to a list via a fresh buffer.
    let d = PackedDelta::new(CHUNK + 40, WireDtype::F32, vec![5, CHUNK + 1, CHUNK + 39], vec![1.0; 3]).unwrap();
    let mut b = d.encode().unwrap();
    let at = d.layout().index_offsets[1] as usize + 2;
    b[at..at + 2].copy_from_slice(&40u16.to_le_bytes());
    reseal(&mut b);
    assert_eq!(parse_err(&b), WireError::IndexOutOfRange { chunk: 1, index: 40, len: 40 });
}

#[test]
fn error_bitmap_count() {
    assert_eq!(corrupted(|b| b[BITMAP1 + 2] = 1), WireError::BitmapCount { chunk: 1, bits: 11, count: 10 });
    assert_eq!(corrupted(|b| b[BITMAP1] = 0), WireError::BitmapCount { chunk: 1, bits: 2, count: 10 });
}

#[test]
fn error_non_finite_values() {
    // bf16 +inf = 0x7F80, NaN = 0x7FC1.
    assert_eq!(
        corrupted(|b| b[VALUES + 4..VALUES + 6].copy_from_slice(&[0x80, 0x7F])),
        WireError::NonFiniteValue { position: 2 }
    );
    assert_eq!(
        corrupted(|b| b[VALUES + 24..VALUES + 26].copy_from_slice(&[0xC1, 0xFF])),
        WireError::NonFiniteValue { position: 12 }
    );
    for (dtype, bits) in [
        (WireDtype::F32, 0x7F80_0000u32),
        (WireDtype::F32, 0xFFC0_0001),
        (WireDtype::F16, 0xFC00),
        (WireDtype::F16, 0x7E01),
    ] {
        let d = PackedDelta::new(10, dtype, vec![2, 7], vec![1.0, 2.0]).unwrap();
        let mut b = d.encode().unwrap();
        let at = d.layout().values_offset() as usize + dtype.size();
        b[at..at + dtype.size()].copy_from_slice(&bits.to_le_bytes()[..dtype.size()]);
        reseal(&mut b);
        assert_eq!(parse_err(&b), WireError::NonFiniteValue { position: 1 });
    }
}

#[test]
fn error_checksum_and_mismatch() {
    let (d, b) = target();
    let stored = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut m = b.clone();
    m[VALUES] ^= 1; // 1.0 -> another finite bf16
    let actual = reference_checksum(&m);
    assert_eq!(parse_err(&m), WireError::ChecksumMismatch { expected: stored, actual });
    let mut m = b.clone();
    m[24] ^= 0x10;
    assert!(matches!(parse_err(&m), WireError::ChecksumMismatch { .. }));
    assert_eq!(
        wire::validate(&b, d.n, WireDtype::F16),
        Err(WireError::Mismatch { n: d.n, dtype: WireDtype::F16, found_n: d.n, found_dtype: WireDtype::Bf16 })
    );
    assert!(
        matches!(wire::validate(&b, 7, WireDtype::Bf16), Err(WireError::Mismatch { found_n, .. }) if found_n == d.n)
    );
    // An f16 header on bf16 bytes is caught by the checksum (the header is covered).
    let mut m = b.clone();
    m[6] = 1;
    assert!(matches!(parse_err(&m), WireError::ChecksumMismatch { .. }));
}

// ---------------------------------------------------------------- agreement with a backend's packer

/// The CPU backend's packer writes its own bytes (it does not call the
/// encoder); both must agree exactly: the decoder accepts its buffer, the
/// entries are the accumulator's values rounded to the dtype, and the encoder
/// rebuilds the same bytes from the decoded entries.
#[test]
fn cpu_packer_bytes_equal_the_encoder_bytes() {
    use chronos_sync::backend::Backend;
    use chronos_sync::wire::quantize::round_trip;
    use chronos_sync::{CpuBackend, Selection, SyncConfig};

    let n = 2 * CHUNK as usize + 5;
    let selections = [
        Selection::TopK { ratio: 0.01 },
        Selection::TopK { ratio: 0.2 },
        Selection::Dense,
        Selection::Threshold { rel: 1.0 },
    ];
    for dtype in DTYPES {
        for selection in selections {
            let config = SyncConfig::builder().wire_dtype(dtype).selection(selection).build().unwrap();
            let backend = CpuBackend::new();
            let mut state = backend.create_state(n, &config).unwrap();
            let mut rng = Rng(n as u64 ^ dtype.code() as u64);
            let delta_host: Vec<f32> = (0..n).map(|_| (rng.unit() as f32 - 0.5) * 1.0e3).collect();
            let theta_host = vec![1.0f32; n];
            let mut delta = backend.alloc(n).unwrap();
            let mut theta = backend.alloc(n).unwrap();
            backend.upload(&delta_host, &mut delta).unwrap();
            backend.upload(&theta_host, &mut theta).unwrap();
            backend.accumulate(&mut state, &delta, &theta, 0.0).unwrap();
            backend.commit_accumulate(&mut state).unwrap();
            let mut acc = vec![0.0f32; n];
            backend.read_accumulator(&state, &mut acc).unwrap();

            let packed = backend.select_pack(&mut state).unwrap().to_vec();
            let d = wire::decode(&packed).unwrap_or_else(|e| panic!("{dtype:?} {selection:?}: {e}"));
            assert_eq!((d.n, d.dtype), (n as u64, dtype));
            assert!(d.count() > 0);
            for (&i, &v) in d.indices.iter().zip(&d.values) {
                assert_eq!(v.to_bits(), round_trip(acc[i as usize], dtype).to_bits());
            }
            assert_eq!(d.encode().unwrap(), packed, "{dtype:?} {selection:?}: encoder and CPU packer disagree");
        }
    }
}

//! The verdict a device validator writes for one peer buffer
//! (`kernels/validate.cu`), turned back into the host validator's
//! [`WireError`].
//!
//! A verdict is [`VERDICT_WORDS`] little-endian `u32`s: a code (0: the
//! buffer is valid), then three `u64` fields as (lo, hi) word pairs, and a
//! zero word. The codes and which field carries what are listed in
//! [`decode_verdict`]; the kernel checks in the host validator's order
//! ([`super::Validator::validate`]), so the error decoded here is the one the
//! host would have returned for the same bytes.

use crate::config::WireDtype;
use crate::error::WireError;
use crate::wire::layout::FORMAT_VERSION;

/// Words of one rank's verdict.
pub const VERDICT_WORDS: usize = 8;

/// Why a verdict could not be decoded: the device wrote something no
/// validator writes (a driver or kernel defect, never a peer's doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedVerdict {
    /// The code word found.
    pub code: u32,
}

/// Decodes one verdict for a buffer checked against `n` elements of `dtype`.
///
/// Codes: 1 `Truncated {needed: a, have: b}`, 2 `Oversized {expected: a,
/// have: b}`, 3 `BadMagic` (the four bytes in `a`), 4
/// `UnsupportedVersion {found: a}`, 5 `UnknownDtype {code: a}`, 6
/// `NonZeroReserved {offset: a}`, 7 `ChunkOverfull {chunk: a, count: b, len:
/// c}`, 8 `CountMismatch {header: a, table: b, n: c}`, 9
/// `Misordered {chunk: a, position: b}`, 10 `IndexOutOfRange {chunk: a,
/// index: b, len: c}`, 11 `BitmapCount {chunk: a, bits: b, count: c}`, 12
/// `NonFiniteValue {position: a}`, 13 `ChecksumMismatch {expected: a,
/// actual: b}`, 14 `Mismatch {found_n: a, found_dtype: code b}`.
pub fn decode_verdict(
    words: &[u32; VERDICT_WORDS],
    n: u64,
    dtype: WireDtype,
) -> Result<Result<(), WireError>, MalformedVerdict> {
    let field = |i: usize| u64::from(words[1 + 2 * i]) | (u64::from(words[2 + 2 * i]) << 32);
    let (a, b, c) = (field(0), field(1), field(2));
    let code = words[0];
    let bad = MalformedVerdict { code };
    let small = |v: u64| u32::try_from(v).map_err(|_| bad);
    let err = match code {
        0 => return Ok(Ok(())),
        1 => WireError::Truncated { needed: a, have: b },
        2 => WireError::Oversized { expected: a, have: b },
        3 => WireError::BadMagic { found: small(a)?.to_le_bytes() },
        4 => WireError::UnsupportedVersion { found: u16::try_from(a).map_err(|_| bad)?, supported: FORMAT_VERSION },
        5 => WireError::UnknownDtype { code: u8::try_from(a).map_err(|_| bad)? },
        6 => WireError::NonZeroReserved { offset: a },
        7 => WireError::ChunkOverfull { chunk: a, count: small(b)?, len: small(c)? },
        8 => WireError::CountMismatch { header: a, table: b, n: c },
        9 => WireError::Misordered { chunk: a, position: small(b)? },
        10 => WireError::IndexOutOfRange { chunk: a, index: small(b)?, len: small(c)? },
        11 => WireError::BitmapCount { chunk: a, bits: small(b)?, count: small(c)? },
        12 => WireError::NonFiniteValue { position: a },
        13 => WireError::ChecksumMismatch { expected: small(a)?, actual: small(b)? },
        14 => WireError::Mismatch {
            n,
            dtype,
            found_n: a,
            found_dtype: u8::try_from(b).ok().and_then(WireDtype::from_code).ok_or(bad)?,
        },
        _ => return Err(bad),
    };
    Ok(Err(err))
}

/// The verdicts of every rank (`VERDICT_WORDS` words each, in rank order)
/// as the engine reports them: the first failing rank's
/// [`crate::Error::InvalidPeerBuffer`], or a driver error of `backend`'s
/// `call` for a verdict no validator writes.
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "cuda-emu"))]
pub(crate) fn check_verdicts(
    words: &[u32],
    n: u64,
    dtype: WireDtype,
    backend: &'static str,
    call: &'static str,
) -> crate::Result<()> {
    for (rank, verdict) in words.chunks_exact(VERDICT_WORDS).enumerate() {
        let verdict: &[u32; VERDICT_WORDS] = verdict.try_into().expect("chunks of VERDICT_WORDS");
        match decode_verdict(verdict, n, dtype) {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(crate::Error::InvalidPeerBuffer { rank, source }),
            Err(bad) => {
                let message = format!("rank {rank}: the device wrote verdict code {}", bad.code);
                return Err(crate::BackendError::Driver { backend, call, message }.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(code: u32, a: u64, b: u64, c: u64) -> [u32; VERDICT_WORDS] {
        [code, a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32, c as u32, (c >> 32) as u32, 0]
    }

    #[test]
    fn decodes_every_code_and_refuses_what_no_kernel_writes() {
        let d = |w| decode_verdict(&w, 70_000, WireDtype::Bf16);
        assert_eq!(d(words(0, 0, 0, 0)), Ok(Ok(())));
        assert_eq!(d(words(1, 1 << 40, 7, 0)), Ok(Err(WireError::Truncated { needed: 1 << 40, have: 7 })));
        assert_eq!(
            d(words(3, u64::from(u32::from_le_bytes(*b"XSPD")), 0, 0)),
            Ok(Err(WireError::BadMagic { found: *b"XSPD" }))
        );
        assert_eq!(
            d(words(14, 5, 0, 0)),
            Ok(Err(WireError::Mismatch { n: 70_000, dtype: WireDtype::Bf16, found_n: 5, found_dtype: WireDtype::F32 }))
        );
        assert_eq!(d(words(13, 1, 2, 0)), Ok(Err(WireError::ChecksumMismatch { expected: 1, actual: 2 })));
        assert_eq!(d(words(15, 0, 0, 0)), Err(MalformedVerdict { code: 15 }));
        assert_eq!(d(words(7, 0, 1 << 33, 0)), Err(MalformedVerdict { code: 7 }));
        assert_eq!(d(words(14, 5, 9, 0)), Err(MalformedVerdict { code: 14 }));
    }
}

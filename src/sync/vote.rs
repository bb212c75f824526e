//! The vote's layout: what every rank contributes to the one small
//! all-reduce (max) of a step, and how the result is read.
//!
//! `[want_0, .., want_{B-1}, code_0, .., code_{W-1}]` as `u32`: one word per
//! bucket (1 when this rank wants that bucket synced: triggered or forced),
//! then one word per rank that only that rank writes, 0 when its step is fine
//! and otherwise its failure. Under a max-reduce every rank reads back every
//! rank's failure code, so all ranks decide the same thing from the same
//! words: fail the step (naming the ranks) or go on, and which buckets sync.

use crate::error::{Error, FailureCause, RankFailure};

/// Bucket numbers a code can carry (24 bits, the top one meaning "none").
const NO_BUCKET: u32 = (1 << 24) - 1;

/// A failure as this rank's vote word: the cause in the low 8 bits, the
/// bucket + 1 (0: none) above them.
pub(super) fn encode(cause: FailureCause, bucket: Option<usize>) -> u32 {
    let b = bucket.map_or(0, |b| (b as u32).min(NO_BUCKET - 1) + 1);
    cause.code() | (b << 8)
}

/// The failure rank `rank` voted, if any.
pub(super) fn decode(rank: usize, word: u32) -> Option<RankFailure> {
    if word == 0 {
        return None;
    }
    let bucket = match word >> 8 {
        0 => None,
        b => Some((b - 1) as usize),
    };
    Some(RankFailure { rank, bucket, cause: FailureCause::from_code(word & 0xff) })
}

/// The error every rank returns for the failures in `codes` (one word per
/// rank, at least one non-zero). Non-finite input alone keeps its own
/// variant, [`Error::NonFinite`], as the spec names it; any other mix is
/// [`Error::RankFailed`], carrying `local` (this rank's own error) on a
/// failing rank.
pub(super) fn failure_error(codes: &[u32], local: Option<Error>) -> Error {
    let failures: Vec<RankFailure> = codes.iter().enumerate().filter_map(|(r, &w)| decode(r, w)).collect();
    if failures.iter().all(|f| f.cause == FailureCause::NonFinite) {
        return Error::NonFinite { ranks: failures.iter().map(|f| f.rank).collect() };
    }
    Error::RankFailed { failures, local: local.map(Box::new) }
}

/// A packed-length announcement saying "my select-and-pack failed on this
/// bucket" instead of a length: far above any real buffer, so the count
/// exchange carries the failure to every rank and nobody enters the byte
/// exchange.
pub(super) fn failed_pack_len(bucket: usize) -> u64 {
    PACK_FAILED_BASE + bucket as u64
}

/// The bucket of a [`failed_pack_len`] announcement.
pub(super) fn failed_pack_bucket(len: u64) -> Option<usize> {
    len.checked_sub(PACK_FAILED_BASE).map(|b| b as usize)
}

const PACK_FAILED_BASE: u64 = u64::MAX - (1 << 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for cause in
            [FailureCause::NonFinite, FailureCause::LengthMismatch, FailureCause::Backend, FailureCause::Diverged]
        {
            for bucket in [None, Some(0), Some(7), Some(1 << 20)] {
                let w = encode(cause, bucket);
                assert_ne!(w, 0);
                assert_eq!(decode(3, w), Some(RankFailure { rank: 3, bucket, cause }));
            }
        }
        assert_eq!(decode(0, 0), None);
    }

    #[test]
    fn non_finite_alone_keeps_its_variant() {
        let nf = encode(FailureCause::NonFinite, Some(0));
        assert!(matches!(failure_error(&[0, nf, nf], None), Error::NonFinite { ranks } if ranks == [1, 2]));
        let lm = encode(FailureCause::LengthMismatch, Some(0));
        match failure_error(&[nf, lm], None) {
            Error::RankFailed { failures, local: None } => {
                assert_eq!(failures.len(), 2);
                assert_eq!(failures[1].cause, FailureCause::LengthMismatch);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_pack_lengths_are_recognised() {
        assert_eq!(failed_pack_bucket(failed_pack_len(5)), Some(5));
        assert_eq!(failed_pack_bucket(1 << 40), None);
    }
}

//! The result of a variable-size all-gather: every rank's bytes, back to back.

use crate::error::{Error, Result, WireError};

/// Every rank's packed buffer, concatenated in rank order. Reused across
/// steps: clearing keeps the allocation.
///
/// After a device exchange ([`Gathered::set_on_device`]) it holds only the
/// rank offsets: the bytes are in the backend's device memory, where the
/// collective wrote them, and every byte accessor here is empty.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    bytes: Vec<u8>,
    /// `offsets[r]..offsets[r + 1]` is rank r's slice; length W + 1.
    offsets: Vec<usize>,
    /// The bytes are in device memory, not in `bytes`.
    on_device: bool,
}

impl Gathered {
    /// An empty result.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `bytes` in total without a later reallocation.
    pub fn reserve_total(&mut self, bytes: usize, ranks: usize) {
        self.bytes.reserve(bytes.saturating_sub(self.bytes.len()));
        self.offsets.reserve((ranks + 1).saturating_sub(self.offsets.len()));
    }

    /// Empties the buffer, keeping its capacity, and makes room for `lens`
    /// (every rank's announced length). The lengths are untrusted: a sum
    /// that overflows or a reservation the allocator refuses is
    /// [`Error::InvalidPeerBuffer`] naming the largest announcer, never an
    /// abort. Callers bound each length by the configuration's worst case
    /// first ([`crate::SyncGroup`] does), so this is the last line of
    /// defence, not the policy.
    pub fn reset(&mut self, lens: &[u64]) -> Result<()> {
        self.on_device = false;
        self.bytes.clear();
        self.offsets.clear();
        self.offsets.push(0);
        let too_large = |announced: u64| {
            let rank = lens.iter().enumerate().max_by_key(|&(_, &l)| l).map_or(0, |(r, _)| r);
            Error::InvalidPeerBuffer {
                rank,
                source: WireError::AnnouncedTooLarge { announced, limit: isize::MAX as u64 },
            }
        };
        let total = lens.iter().try_fold(0u64, |acc, &l| acc.checked_add(l)).ok_or_else(|| too_large(u64::MAX))?;
        let total_usize =
            usize::try_from(total).ok().filter(|&t| t <= isize::MAX as usize).ok_or_else(|| too_large(total))?;
        self.bytes.try_reserve(total_usize).map_err(|_| too_large(total))?;
        Ok(())
    }

    /// Empties the buffer, keeping its capacity (then [`Gathered::push_rank`]
    /// each rank in order).
    pub fn clear(&mut self) {
        self.on_device = false;
        self.bytes.clear();
        self.offsets.clear();
        self.offsets.push(0);
    }

    /// Records a device exchange of `lens` (every rank's length, already
    /// bounded by the caller): the offsets only, the bytes being in device
    /// memory. Errors as [`Gathered::reset`] on a sum that overflows.
    pub fn set_on_device(&mut self, lens: &[u64]) -> Result<()> {
        self.clear();
        let mut at = 0usize;
        for (rank, &len) in lens.iter().enumerate() {
            at =
                usize::try_from(len).ok().and_then(|l| at.checked_add(l)).filter(|&t| t <= isize::MAX as usize).ok_or(
                    Error::InvalidPeerBuffer {
                        rank,
                        source: WireError::AnnouncedTooLarge { announced: len, limit: isize::MAX as u64 },
                    },
                )?;
            self.offsets.push(at);
        }
        self.on_device = true;
        Ok(())
    }

    /// Whether the bytes are in device memory ([`Gathered::set_on_device`]).
    pub fn is_on_device(&self) -> bool {
        self.on_device
    }

    /// Appends the next rank's bytes (a host exchange from then on).
    pub fn push_rank(&mut self, data: &[u8]) {
        if self.on_device {
            self.clear();
        }
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.bytes.extend_from_slice(data);
        self.offsets.push(self.bytes.len());
    }

    /// Number of ranks present.
    pub fn ranks(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Rank `r`'s bytes (empty after a device exchange).
    pub fn rank_bytes(&self, r: usize) -> &[u8] {
        if self.on_device {
            return &[];
        }
        &self.bytes[self.offsets[r]..self.offsets[r + 1]]
    }

    /// All bytes, concatenated (empty after a device exchange).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Offsets into [`Gathered::as_bytes`]: rank r spans `offsets[r]..offsets[r + 1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Total bytes received (on the host or, after a device exchange, in
    /// device memory).
    pub fn total_len(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Iterates over `(rank, bytes)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> {
        (0..self.ranks()).map(|r| (r, self.rank_bytes(r)))
    }
}

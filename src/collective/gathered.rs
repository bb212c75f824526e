//! The result of a variable-size all-gather: every rank's bytes, back to back.

/// Every rank's packed buffer, concatenated in rank order. Reused across
/// steps: clearing keeps the allocation.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    bytes: Vec<u8>,
    /// `offsets[r]..offsets[r + 1]` is rank r's slice; length W + 1.
    offsets: Vec<usize>,
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

    /// Empties the buffer, keeping its capacity, and reserves room for `lens`.
    pub fn reset(&mut self, lens: &[u64]) {
        self.bytes.clear();
        self.offsets.clear();
        self.offsets.push(0);
        let total: u64 = lens.iter().sum();
        self.bytes.reserve(total as usize);
    }

    /// Appends the next rank's bytes.
    pub fn push_rank(&mut self, data: &[u8]) {
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

    /// Rank `r`'s bytes.
    pub fn rank_bytes(&self, r: usize) -> &[u8] {
        &self.bytes[self.offsets[r]..self.offsets[r + 1]]
    }

    /// All bytes, concatenated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Offsets into [`Gathered::as_bytes`]: rank r spans `offsets[r]..offsets[r + 1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Total bytes received.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// Iterates over `(rank, bytes)`.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> {
        (0..self.ranks()).map(|r| (r, self.rank_bytes(r)))
    }
}

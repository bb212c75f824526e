//! Little-endian byte writer and bounds-checked reader for snapshots, and the
//! CRC-32 that guards them. The reader never panics and never allocates more
//! than the bytes left could describe.

use crate::error::{CoordinatorError, Error, Result};

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) lookup table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes` (the zlib/PNG checksum): detects every burst error of up
/// to 32 bits and every odd number of flipped bits.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

pub(crate) fn corrupt(reason: impl Into<String>) -> Error {
    CoordinatorError::CorruptSnapshot { reason: reason.into() }.into()
}

/// Appends little-endian values.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn len(&mut self, v: usize) {
        self.u64(v as u64);
    }
    pub fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub fn f32s(&mut self, v: &[f32]) {
        for &x in v {
            self.f32(x);
        }
    }
}

/// Reads little-endian values, failing with `CorruptSnapshot` past the end.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, k: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < k {
            return Err(corrupt(format!(
                "truncated: {what} needs {k} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + k];
        self.pos += k;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    /// A count of items each at least `min_item` bytes long; rejects counts
    /// the remaining bytes cannot hold (so a corrupt count never triggers a
    /// huge allocation).
    pub fn count(&mut self, min_item: usize, what: &str) -> Result<usize> {
        let c = self.u64(what)?;
        let fits = usize::try_from(c).ok().filter(|&c| c.saturating_mul(min_item.max(1)) <= self.remaining());
        fits.ok_or_else(|| corrupt(format!("{what} = {c} does not fit in the {} bytes left", self.remaining())))
    }

    /// `len` f32 values.
    pub fn f32s(&mut self, len: usize, what: &str) -> Result<Vec<f32>> {
        let bytes = self.take(len.checked_mul(4).ok_or_else(|| corrupt(format!("{what} too long")))?, what)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// `len` f16 values.
    pub fn f16s(&mut self, len: usize, what: &str) -> Result<Vec<half::f16>> {
        let bytes = self.take(len.checked_mul(2).ok_or_else(|| corrupt(format!("{what} too long")))?, what)?;
        Ok(bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]])).collect())
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(corrupt(format!("{} trailing bytes after the state", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reader_round_trips_and_bounds() {
        let mut w = Writer::default();
        w.u8(7);
        w.u64(u64::MAX);
        w.f32(-1.5);
        w.len(1_000_000);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u64("b").unwrap(), u64::MAX);
        assert_eq!(r.f32("c").unwrap(), -1.5);
        assert!(r.count(4, "d").is_err());
        assert!(r.u8("e").is_err());
    }
}

//! Spec-level twins of the backend, written straight from docs/selection.md
//! and docs/wire-format.md with no shared code: slow, sequential, obvious.

use crate::config::WireDtype;
use crate::wire::checksum::checksum;
use crate::wire::quantize::quantize;

/// `bits(|x|)`.
pub fn key(x: f32) -> u32 {
    x.to_bits() & 0x7fff_ffff
}

/// Exact top-k by sorting: largest keys first, ties to the lower index.
/// Returns the selected indices in increasing order.
pub fn topk_by_sort(acc: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..acc.len()).collect();
    order.sort_by(|&a, &b| key(acc[b]).cmp(&key(acc[a])).then(a.cmp(&b)));
    let mut picked = order[..k].to_vec();
    picked.sort_unstable();
    picked
}

/// The cut search of docs/selection.md, one full scan per histogram.
pub fn radix_select(acc: &[f32], k: usize, kmax: usize) -> Vec<usize> {
    // (digit shift, digit mask, shift of the higher digits that must match)
    let levels = [(20u32, 0x7ffu32, None), (9, 0x7ff, Some(20u32)), (0, 0x1ff, Some(9))];
    let (mut above, mut prefix) = (0usize, 0u32);
    for (shift, mask, higher) in levels {
        let mut hist = vec![0usize; mask as usize + 1];
        for &x in acc {
            let matches = higher.is_none_or(|h| key(x) >> h == prefix >> h);
            if matches {
                hist[((key(x) >> shift) & mask) as usize] += 1;
            }
        }
        let mut b = mask as usize;
        while above + hist[b..].iter().sum::<usize>() < k {
            b -= 1;
        }
        let ge = above + hist[b..].iter().sum::<usize>();
        let cut = prefix | ((b as u32) << shift);
        if ge <= kmax {
            return (0..acc.len()).filter(|&i| key(acc[i]) >= cut).collect();
        }
        above += hist[b + 1..].iter().sum::<usize>();
        prefix = cut;
    }
    let mut ties = k - above;
    let mut out = Vec::new();
    for (i, &x) in acc.iter().enumerate() {
        if key(x) > prefix {
            out.push(i);
        } else if key(x) == prefix && ties > 0 {
            ties -= 1;
            out.push(i);
        }
    }
    out
}

/// The packed buffer for the selected `indices` (increasing) of `acc`.
pub fn pack(acc: &[f32], indices: &[usize], dtype: WireDtype) -> Vec<u8> {
    let n = acc.len();
    let chunks = n.div_ceil(65536);
    let mut out = Vec::new();
    out.extend_from_slice(b"CSPD");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(dtype.code());
    out.push(0);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(indices.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let per_chunk: Vec<Vec<usize>> =
        (0..chunks).map(|c| indices.iter().copied().filter(|&i| i / 65536 == c).map(|i| i % 65536).collect()).collect();
    for local in &per_chunk {
        out.extend_from_slice(&(local.len() as u32).to_le_bytes());
    }
    for (c, local) in per_chunk.iter().enumerate() {
        let len = (n - 65536 * c).min(65536);
        let list = local.len().div_ceil(2) * 4;
        let bitmap = len.div_ceil(32) * 4;
        if local.is_empty() {
            continue;
        }
        if list > bitmap {
            let mut words = vec![0u32; len.div_ceil(32)];
            for &j in local {
                words[j / 32] |= 1 << (j % 32);
            }
            words.iter().for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
        } else {
            local.iter().for_each(|&j| out.extend_from_slice(&(j as u16).to_le_bytes()));
            if local.len() % 2 == 1 {
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    for &i in indices {
        let q = quantize(acc[i], dtype);
        out.extend_from_slice(&q.to_le_bytes()[..dtype.size()]);
    }
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let sum = checksum(&out).expect("whole words");
    out[24..28].copy_from_slice(&sum.to_le_bytes());
    out
}

/// A decoded buffer: dense length, dtype, global indices and value bits.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub n: usize,
    pub dtype: WireDtype,
    pub indices: Vec<usize>,
    pub values: Vec<u32>,
}

/// Decodes a buffer (checking the checksum, the padding and the lengths).
pub fn decode(b: &[u8]) -> Decoded {
    assert_eq!(&b[0..4], b"CSPD");
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 1);
    let dtype = WireDtype::from_code(b[6]).expect("dtype");
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let n = u64_at(8) as usize;
    let count = u64_at(16) as usize;
    assert_eq!(u32_at(24), checksum(b).unwrap(), "checksum");
    assert_eq!(u32_at(28), 0);
    let chunks = n.div_ceil(65536);
    let mut at = 32 + 4 * chunks;
    let mut indices = Vec::new();
    for c in 0..chunks {
        let k = u32_at(32 + 4 * c) as usize;
        let len = (n - 65536 * c).min(65536);
        if k == 0 {
            continue;
        }
        if k.div_ceil(2) * 4 > len.div_ceil(32) * 4 {
            for w in 0..len.div_ceil(32) {
                let word = u32_at(at + 4 * w);
                (0..32).filter(|j| word & (1 << j) != 0).for_each(|j| indices.push(65536 * c + 32 * w + j));
            }
            at += len.div_ceil(32) * 4;
        } else {
            for p in 0..k {
                indices.push(65536 * c + u16::from_le_bytes([b[at + 2 * p], b[at + 2 * p + 1]]) as usize);
            }
            if k % 2 == 1 {
                assert_eq!(&b[at + 2 * k..at + 2 * k + 2], &[0, 0]);
            }
            at += k.div_ceil(2) * 4;
        }
    }
    assert_eq!(indices.len(), count);
    let size = dtype.size();
    let values = (0..count)
        .map(|p| {
            let v = &b[at + size * p..at + size * (p + 1)];
            if size == 4 {
                u32::from_le_bytes(v.try_into().unwrap())
            } else {
                u32::from(u16::from_le_bytes([v[0], v[1]]))
            }
        })
        .collect();
    assert!(b[at + size * count..].iter().all(|&x| x == 0), "value padding");
    assert_eq!(b.len(), (at + size * count).div_ceil(4) * 4, "length");
    Decoded { n, dtype, indices, values }
}

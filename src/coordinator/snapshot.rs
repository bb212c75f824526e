//! Snapshot format: the whole meta-state as bytes, and back.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CHRSNAP\0"
//! 8       2     format version (u16, currently 1)
//! 10      2     reserved, 0
//! 12      4     reserved, 0
//! 16      8     body length B (u64)
//! 24      B     body (below)
//! 24+B    4     CRC-32 (IEEE) of bytes 0 .. 24+B
//! ```
//!
//! Everything is little-endian; floats are stored as their IEEE bits, so a
//! restored coordinator continues bitwise. Body, in order (`len` = u64 count):
//! n, version, params[n] (f32), optimizer code (u8), m[n], len + v (Adam's
//! second moment, empty under SGD), segments (len; start, end, every,
//! pending rounds, updates, accumulator f32s), pending commits (len; worker,
//! commit id, lease, checked-out version, weight f64, loss f32,
//! hypergradient[n]), commit answers oldest first (len; worker, commit id,
//! outcome), leases (next id; active: len, id, worker, version, nanoseconds
//! since the last heartbeat; ended oldest first: len, id, worker, how u8),
//! counters (13 u64, then the staleness histogram as len + pairs), audit log
//! (flag u8, then len + entries), memory (newest step, len; step, loss,
//! encoding u8 0 = f32 / 1 = f16, params[n], hypergradient[n]).
//!
//! Leases keep their remaining time to live across a restore: a worker that
//! heartbeats in time keeps its lease.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use half::f16;

use super::codec::{Reader, Writer, corrupt, crc32};
use super::commit::{AppliedCommit, CommitOutcome, RejectReason};
use super::config::CoordinatorConfig;
use super::lease::{Active, Ended, LeaseTable};
use super::memory::{ContinuumMemory, Entry, Stored};
use super::optimizer;
use super::stats::Counters;
use super::store::{MetaState, Pending};
use super::timescale::Timescales;
use crate::error::{CoordinatorError, Result};

const MAGIC: [u8; 8] = *b"CHRSNAP\0";
const FORMAT_VERSION: u16 = 1;
const HEADER: usize = 24;

fn mismatch(reason: impl Into<String>) -> crate::Error {
    CoordinatorError::SnapshotMismatch { reason: reason.into() }.into()
}

/// Serializes `state`; `now` anchors the leases' time since last heartbeat.
pub(crate) fn encode(s: &MetaState, now: Instant) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(&MAGIC);
    w.u16(FORMAT_VERSION);
    w.u16(0);
    w.u32(0);
    w.u64(0); // body length, patched below
    let n = s.params.len();
    w.len(n);
    w.u64(s.version);
    w.f32s(&s.params);
    w.u8(s.optimizer_code);
    w.f32s(&s.m);
    w.len(s.v.len());
    w.f32s(&s.v);
    w.len(s.timescales.segments.len());
    for seg in &s.timescales.segments {
        w.len(seg.range.start);
        w.len(seg.range.end);
        w.u64(seg.every);
        w.u64(seg.acc_count);
        w.u64(seg.updates);
        w.f32s(&seg.acc);
    }
    w.len(s.pending.len());
    for p in &s.pending {
        w.u64(p.worker);
        w.u64(p.commit_id);
        w.u64(p.lease);
        w.u64(p.checked_out);
        w.f64(p.weight);
        w.f32(p.validation_loss);
        w.f32s(&p.hypergradient);
    }
    w.len(s.answer_order.len());
    for key in &s.answer_order {
        w.u64(key.0);
        w.u64(key.1);
        encode_outcome(&mut w, &s.answers[key]);
    }
    let l = &s.leases;
    w.u64(l.next_id);
    w.len(l.active.len());
    for (&id, a) in &l.active {
        w.u64(id);
        w.u64(a.worker);
        w.u64(a.version);
        let idle = now.saturating_duration_since(a.last_heartbeat);
        w.u64(u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX));
    }
    w.len(l.ended_order.len());
    for id in &l.ended_order {
        let (worker, how) = l.ended[id];
        w.u64(*id);
        w.u64(worker);
        w.u8(how.code());
    }
    for c in s.counters.scalars() {
        w.u64(c);
    }
    w.len(s.counters.staleness_histogram.len());
    for (&k, &v) in &s.counters.staleness_histogram {
        w.u64(k);
        w.u64(v);
    }
    match &s.applied {
        None => w.u8(0),
        Some(log) => {
            w.u8(1);
            w.len(log.len());
            for a in log {
                w.u64(a.worker);
                w.u64(a.commit_id);
                w.u64(a.lease);
                w.u64(a.checked_out);
                w.f64(a.weight);
                w.u64(a.applied_in);
            }
        }
    }
    let m = &s.memory;
    w.u64(m.newest_step);
    w.len(m.entries.len());
    for e in &m.entries {
        w.u64(e.step);
        w.f32(e.validation_loss);
        match (&e.params, &e.hypergradient) {
            (Stored::F32(p), Stored::F32(g)) => {
                w.u8(0);
                w.f32s(p);
                w.f32s(g);
            }
            (p, g) => {
                // Compression always converts both vectors together; a mixed
                // entry cannot exist, but encoding through f16 keeps this total.
                w.u8(1);
                for v in [p, g] {
                    match v {
                        Stored::F16(h) => h.iter().for_each(|x| w.u16(x.to_bits())),
                        Stored::F32(f) => f.iter().for_each(|&x| w.u16(f16::from_f32(x).to_bits())),
                    }
                }
            }
        }
    }
    let body = (w.buf.len() - HEADER) as u64;
    w.buf[16..24].copy_from_slice(&body.to_le_bytes());
    let crc = crc32(&w.buf);
    w.u32(crc);
    w.buf
}

fn encode_outcome(w: &mut Writer, o: &CommitOutcome) {
    match *o {
        CommitOutcome::Accepted { weight, staleness, published } => {
            w.u8(0);
            w.f64(weight);
            w.u64(staleness);
            w.u8(published.is_some() as u8);
            w.u64(published.unwrap_or(0));
        }
        CommitOutcome::Rejected { staleness, reason } => {
            w.u8(1);
            w.u64(staleness);
            let (code, extra) = match reason {
                RejectReason::TooStale { max_staleness } => (0, max_staleness),
                RejectReason::LeaseExpired => (1, 0),
                RejectReason::LeaseReleased => (2, 0),
                RejectReason::LeaseAlreadyCommitted => (3, 0),
            };
            w.u8(code);
            w.u64(extra);
        }
    }
}

fn decode_outcome(r: &mut Reader<'_>) -> Result<CommitOutcome> {
    match r.u8("outcome kind")? {
        0 => {
            let weight = r.f64("weight")?;
            let staleness = r.u64("staleness")?;
            let has = r.u8("published flag")?;
            let v = r.u64("published")?;
            let published = match has {
                0 => None,
                1 => Some(v),
                x => return Err(corrupt(format!("published flag {x}"))),
            };
            Ok(CommitOutcome::Accepted { weight, staleness, published })
        }
        1 => {
            let staleness = r.u64("staleness")?;
            let code = r.u8("reason")?;
            let extra = r.u64("reason detail")?;
            let reason = match code {
                0 => RejectReason::TooStale { max_staleness: extra },
                1 => RejectReason::LeaseExpired,
                2 => RejectReason::LeaseReleased,
                3 => RejectReason::LeaseAlreadyCommitted,
                x => return Err(corrupt(format!("unknown reject reason {x}"))),
            };
            Ok(CommitOutcome::Rejected { staleness, reason })
        }
        x => Err(corrupt(format!("unknown outcome kind {x}"))),
    }
}

/// Checks the envelope and returns the body.
fn open(bytes: &[u8]) -> Result<&[u8]> {
    if bytes.len() < HEADER + 4 {
        return Err(corrupt(format!("{} bytes is shorter than the {}-byte envelope", bytes.len(), HEADER + 4)));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    if bytes[10..16].iter().any(|&b| b != 0) {
        return Err(corrupt("reserved header bytes are not zero"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let body = u64::from_le_bytes(len);
    let have = (bytes.len() - HEADER - 4) as u64;
    if body != have {
        return Err(corrupt(format!("header announces a {body}-byte body, {have} bytes present")));
    }
    let split = bytes.len() - 4;
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[split..]);
    let want = u32::from_le_bytes(crc);
    let got = crc32(&bytes[..split]);
    if want != got {
        return Err(corrupt(format!("checksum mismatch: stored {want:#010x}, computed {got:#010x}")));
    }
    Ok(&bytes[HEADER..split])
}

fn finite(v: &[f32], what: &str) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) { Ok(()) } else { Err(corrupt(format!("non-finite value in {what}"))) }
}

/// Rebuilds a state from `bytes` under `config` (already validated).
pub(crate) fn decode(bytes: &[u8], config: &CoordinatorConfig, now: Instant) -> Result<MetaState> {
    let mut r = Reader::new(open(bytes)?);
    let n = r.count(4, "parameter count")?;
    config.validate_for(n).map_err(|e| mismatch(format!("{e}")))?;
    let version = r.u64("version")?;
    let params = r.f32s(n, "params")?;
    finite(&params, "params")?;
    let code = r.u8("optimizer")?;
    if code != config.optimizer.code() {
        return Err(mismatch(format!("optimizer code {code}, configuration uses {}", config.optimizer.code())));
    }
    let m = r.f32s(n, "first moment")?;
    let v_len = r.count(4, "second moment length")?;
    let want_v = if optimizer::has_second_moment(&config.optimizer) { n } else { 0 };
    if v_len != want_v {
        return Err(corrupt(format!("second moment has {v_len} values, expected {want_v}")));
    }
    let v = r.f32s(v_len, "second moment")?;
    finite(&m, "first moment")?;
    finite(&v, "second moment")?;

    let mut timescales = Timescales::new(config, n);
    let segs = r.count(40, "segment count")?;
    if segs != timescales.segments.len() {
        return Err(mismatch(format!("{segs} timescale segments, configuration has {}", timescales.segments.len())));
    }
    for seg in &mut timescales.segments {
        let start = r.u64("segment start")?;
        let end = r.u64("segment end")?;
        let every = r.u64("segment period")?;
        if (start, end, every) != (seg.range.start as u64, seg.range.end as u64, seg.every) {
            return Err(mismatch(format!(
                "segment {start}..{end} every {every}, configuration has {:?} every {}",
                seg.range, seg.every
            )));
        }
        seg.acc_count = r.u64("segment pending rounds")?;
        seg.updates = r.u64("segment updates")?;
        seg.acc = r.f32s(seg.range.len(), "segment accumulator")?;
        finite(&seg.acc, "segment accumulator")?;
    }

    let count = r.count(36 + 4 * n, "pending count")?;
    let mut pending = Vec::with_capacity(count);
    for _ in 0..count {
        let p = Pending {
            worker: r.u64("pending worker")?,
            commit_id: r.u64("pending commit id")?,
            lease: r.u64("pending lease")?,
            checked_out: r.u64("pending version")?,
            weight: r.f64("pending weight")?,
            validation_loss: r.f32("pending loss")?,
            hypergradient: r.f32s(n, "pending hypergradient")?,
        };
        if !(p.weight.is_finite() && p.weight > 0.0 && p.validation_loss.is_finite()) {
            return Err(corrupt("pending commit with a non-finite or non-positive weight or loss"));
        }
        finite(&p.hypergradient, "pending hypergradient")?;
        pending.push(p);
    }

    let count = r.count(34, "answer count")?;
    let mut answers = HashMap::with_capacity(count.min(config.dedup_capacity));
    let mut answer_order = VecDeque::with_capacity(count.min(config.dedup_capacity));
    for _ in 0..count {
        let key = (r.u64("answer worker")?, r.u64("answer commit id")?);
        let outcome = decode_outcome(&mut r)?;
        if answers.insert(key, outcome).is_some() {
            return Err(corrupt(format!("duplicate answer for {key:?}")));
        }
        answer_order.push_back(key);
    }
    while answer_order.len() > config.dedup_capacity {
        if let Some(old) = answer_order.pop_front() {
            answers.remove(&old);
        }
    }

    let mut leases = LeaseTable::new(config.dedup_capacity);
    leases.next_id = r.u64("next lease id")?;
    let count = r.count(32, "active lease count")?;
    for _ in 0..count {
        let id = r.u64("lease id")?;
        let worker = r.u64("lease worker")?;
        let lv = r.u64("lease version")?;
        let idle = Duration::from_nanos(r.u64("lease idle time")?);
        if id >= leases.next_id || leases.active.contains_key(&id) || lv > version {
            return Err(corrupt(format!("inconsistent active lease {id}")));
        }
        let last_heartbeat = now.checked_sub(idle).unwrap_or(now);
        leases.insert_active(id, Active { worker, version: lv, last_heartbeat });
    }
    let count = r.count(17, "ended lease count")?;
    for _ in 0..count {
        let id = r.u64("ended lease id")?;
        let worker = r.u64("ended lease worker")?;
        let how = r.u8("ended lease reason")?;
        let how = Ended::from_code(how).ok_or_else(|| corrupt(format!("unknown lease end {how}")))?;
        if id >= leases.next_id || leases.active.contains_key(&id) || leases.ended.contains_key(&id) {
            return Err(corrupt(format!("inconsistent ended lease {id}")));
        }
        leases.remember_ended(id, worker, how);
    }

    let mut scalars = [0u64; 13];
    for s in &mut scalars {
        *s = r.u64("counter")?;
    }
    let mut counters = Counters::from_scalars(scalars);
    let count = r.count(16, "histogram length")?;
    let mut histogram = BTreeMap::new();
    for _ in 0..count {
        let k = r.u64("histogram staleness")?;
        let c = r.u64("histogram count")?;
        if histogram.insert(k, c).is_some() {
            return Err(corrupt(format!("duplicate histogram bucket {k}")));
        }
    }
    counters.staleness_histogram = histogram;

    let applied = match r.u8("audit flag")? {
        0 => None,
        1 => {
            let count = r.count(48, "audit log length")?;
            let mut log = Vec::with_capacity(count);
            for _ in 0..count {
                log.push(AppliedCommit {
                    worker: r.u64("audit worker")?,
                    commit_id: r.u64("audit commit id")?,
                    lease: r.u64("audit lease")?,
                    checked_out: r.u64("audit version")?,
                    weight: r.f64("audit weight")?,
                    applied_in: r.u64("audit applied in")?,
                });
            }
            Some(log)
        }
        x => return Err(corrupt(format!("audit flag {x}"))),
    };
    let applied = match (config.audit_log, applied) {
        (true, log) => Some(log.unwrap_or_default()),
        (false, _) => None,
    };

    let mut memory = ContinuumMemory::new(n, config.memory);
    memory.newest_step = r.u64("memory newest step")?;
    let count = r.count(13 + 4 * n, "memory length")?;
    for _ in 0..count {
        let step = r.u64("memory step")?;
        let validation_loss = r.f32("memory loss")?;
        let (params, hypergradient) = match r.u8("memory encoding")? {
            0 => (Stored::F32(r.f32s(n, "memory params")?), Stored::F32(r.f32s(n, "memory hypergradient")?)),
            1 => (Stored::F16(r.f16s(n, "memory params")?), Stored::F16(r.f16s(n, "memory hypergradient")?)),
            x => return Err(corrupt(format!("memory encoding {x}"))),
        };
        let ok = validation_loss.is_finite()
            && step <= memory.newest_step
            && params.to_f32().iter().chain(&hypergradient.to_f32()).all(|x| x.is_finite());
        if !ok {
            return Err(corrupt("inconsistent memory entry"));
        }
        memory.entries.push_back(Entry { step, validation_loss, params, hypergradient });
    }
    memory.shrink_to_capacity();
    r.finish()?;

    Ok(MetaState {
        version,
        params: Arc::from(params),
        optimizer_code: code,
        m,
        v,
        timescales,
        pending,
        answers,
        answer_order,
        answer_capacity: config.dedup_capacity,
        leases,
        counters,
        applied,
        memory,
    })
}

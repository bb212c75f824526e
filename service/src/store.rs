//! The durable store: one SQLite database in WAL mode with
//! `synchronous = FULL`. Every acknowledged change is one transaction holding
//! the coordinator's new snapshot, the idempotency record of the request that
//! caused it and, for an accepted commit, its row in the commit log.
//!
//! Tables:
//! * `meta(key, value)`: `config` (the [`crate::ConfigRecord`], prost bytes).
//! * `state(id = 1, seq, snapshot)`: the coordinator's latest snapshot
//!   (the library's snapshot format) and how many changes it includes.
//! * `idem(worker, kind, id, body, response, created_ms)`: per request key,
//!   the request body and the exact answer bytes; expired after the
//!   configured time.
//! * `accepted(seq, worker, commit_id, lease, checked_out, staleness,
//!   weight_bits, published, loss_bits, hypergradient)`: every accepted
//!   commit in acceptance order (what the crash audit replays).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ServiceError;

/// Idempotency record kinds.
pub(crate) const KIND_CHECKOUT: i64 = 1;
pub(crate) const KIND_COMMIT: i64 = 2;
pub(crate) const KIND_RELEASE: i64 = 3;

/// The database file inside the data directory.
pub const DB_FILE: &str = "coordinator.sqlite3";

/// A stored request record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdemRecord {
    pub worker: u64,
    pub kind: i64,
    pub id: u64,
    pub body: Vec<u8>,
    pub response: Vec<u8>,
}

/// One accepted commit, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedRow {
    /// Position in acceptance order (from 1).
    pub seq: u64,
    /// Worker.
    pub worker: u64,
    /// Commit id.
    pub commit_id: u64,
    /// Lease it was committed on.
    pub lease: u64,
    /// Version checked out.
    pub checked_out: u64,
    /// Staleness at acceptance.
    pub staleness: u64,
    /// Weight.
    pub weight: f64,
    /// Version this commit published, if it completed a round.
    pub published: Option<u64>,
    /// Validation loss.
    pub loss: f32,
    /// Hypergradient.
    pub hypergradient: Vec<f32>,
}

/// A directory's config record and latest snapshot.
pub(crate) type Stored = (Vec<u8>, Vec<u8>);

/// The SQLite connection.
#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
}

fn i(v: u64) -> i64 {
    v as i64
}
fn u(v: i64) -> u64 {
    v as u64
}

/// Decodes a little-endian f32 blob (a persisted record: length checked).
pub fn f32s_from_blob(b: &[u8]) -> Result<Vec<f32>, ServiceError> {
    if !b.len().is_multiple_of(4) {
        return Err(ServiceError::CorruptRecord { what: "hypergradient blob", reason: format!("{} bytes", b.len()) });
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn blob_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Db {
    /// Opens (creating) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir).map_err(|e| ServiceError::Io { what: "create the data directory", source: e })?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ServiceError::Config { reason: format!("SQLite refused WAL mode (got {mode})") });
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             PRAGMA foreign_keys=ON;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, snapshot BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS idem (worker INTEGER NOT NULL, kind INTEGER NOT NULL, id INTEGER NOT NULL,
                 body BLOB NOT NULL, response BLOB NOT NULL, created_ms INTEGER NOT NULL,
                 PRIMARY KEY (worker, kind, id)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS idem_created ON idem (created_ms);
             CREATE TABLE IF NOT EXISTS accepted (seq INTEGER PRIMARY KEY, worker INTEGER NOT NULL,
                 commit_id INTEGER NOT NULL, lease INTEGER NOT NULL, checked_out INTEGER NOT NULL,
                 staleness INTEGER NOT NULL, weight_bits INTEGER NOT NULL, published INTEGER,
                 loss_bits INTEGER NOT NULL, hypergradient BLOB NOT NULL);",
        )?;
        Ok(Db { conn })
    }

    /// The stored config record and snapshot, if the directory was initialized.
    pub fn load(&self) -> Result<Option<Stored>, ServiceError> {
        let config: Option<Vec<u8>> =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'config'", [], |r| r.get(0)).optional()?;
        let snapshot: Option<Vec<u8>> =
            self.conn.query_row("SELECT snapshot FROM state WHERE id = 1", [], |r| r.get(0)).optional()?;
        match (config, snapshot) {
            (Some(c), Some(s)) => Ok(Some((c, s))),
            (None, None) => Ok(None),
            _ => Err(ServiceError::CorruptRecord {
                what: "database",
                reason: "config without state or state without config".into(),
            }),
        }
    }

    /// Initializes an empty directory: config + first snapshot in one transaction.
    pub fn init(&mut self, config: &[u8], snapshot: &[u8]) -> Result<(), ServiceError> {
        let tx = self.conn.transaction()?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('config', ?1)", params![config])?;
        tx.execute("INSERT INTO state (id, seq, snapshot) VALUES (1, 0, ?1)", params![snapshot])?;
        tx.commit()?;
        Ok(())
    }

    /// The live (unexpired) record under a key.
    pub fn lookup(
        &self,
        worker: u64,
        kind: i64,
        id: u64,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<Option<IdemRecord>, ServiceError> {
        let oldest = now_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let rec = self
            .conn
            .query_row(
                "SELECT body, response FROM idem WHERE worker = ?1 AND kind = ?2 AND id = ?3 AND created_ms > ?4",
                params![i(worker), kind, i(id), oldest],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        Ok(rec.map(|(body, response)| IdemRecord { worker, kind, id, body, response }))
    }

    /// One durable change: the new snapshot, the request record (if any), the
    /// accepted commit (if any), and the sweep of expired records, in one
    /// transaction. Returns once it is on disk (`synchronous = FULL`).
    pub fn persist(
        &mut self,
        snapshot: &[u8],
        record: Option<&IdemRecord>,
        accepted: Option<&AcceptedRow>,
        now_ms: i64,
        ttl: Duration,
    ) -> Result<(), ServiceError> {
        let oldest = now_ms.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE state SET seq = seq + 1, snapshot = ?1 WHERE id = 1", params![snapshot])?;
        tx.execute("DELETE FROM idem WHERE created_ms <= ?1", params![oldest])?;
        if let Some(r) = record {
            tx.execute(
                "INSERT OR REPLACE INTO idem (worker, kind, id, body, response, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![i(r.worker), r.kind, i(r.id), r.body, r.response, now_ms],
            )?;
        }
        if let Some(a) = accepted {
            tx.execute(
                "INSERT INTO accepted (worker, commit_id, lease, checked_out, staleness, weight_bits, published, loss_bits, hypergradient)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    i(a.worker),
                    i(a.commit_id),
                    i(a.lease),
                    i(a.checked_out),
                    i(a.staleness),
                    i(a.weight.to_bits()),
                    a.published.map(i),
                    i64::from(a.loss.to_bits()),
                    blob_of(&a.hypergradient)
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Read-only view of a data directory (for audits and tests; open it while
/// the server is stopped or not: WAL readers do not block the writer).
#[derive(Debug)]
pub struct Audit {
    conn: Connection,
}

impl Audit {
    /// Opens the database in `dir` read-only.
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        let conn = Connection::open_with_flags(dir.join(DB_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(Audit { conn })
    }

    /// Every accepted commit in acceptance order.
    pub fn accepted(&self) -> Result<Vec<AcceptedRow>, ServiceError> {
        let mut st = self.conn.prepare(
            "SELECT seq, worker, commit_id, lease, checked_out, staleness, weight_bits, published, loss_bits, hypergradient
             FROM accepted ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Vec<u8>>(9)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, worker, commit_id, lease, checked_out, staleness, wb, published, lb, blob) = row?;
            out.push(AcceptedRow {
                seq: u(seq),
                worker: u(worker),
                commit_id: u(commit_id),
                lease: u(lease),
                checked_out: u(checked_out),
                staleness: u(staleness),
                weight: f64::from_bits(u(wb)),
                published: published.map(u),
                loss: f32::from_bits(u32::try_from(lb).map_err(|_| ServiceError::CorruptRecord {
                    what: "accepted loss",
                    reason: format!("{lb} is not a u32"),
                })?),
                hypergradient: f32s_from_blob(&blob)?,
            });
        }
        Ok(out)
    }

    /// The stored config record and the latest snapshot.
    pub fn state(&self) -> Result<(Vec<u8>, Vec<u8>), ServiceError> {
        let c: Vec<u8> = self.conn.query_row("SELECT value FROM meta WHERE key = 'config'", [], |r| r.get(0))?;
        let s: Vec<u8> = self.conn.query_row("SELECT snapshot FROM state WHERE id = 1", [], |r| r.get(0))?;
        Ok((c, s))
    }

    /// Live idempotency records.
    pub fn record_count(&self) -> Result<u64, ServiceError> {
        Ok(u(self.conn.query_row("SELECT COUNT(*) FROM idem", [], |r| r.get(0))?))
    }
}

//! Leases: who has which version checked out, since when they last showed a
//! sign of life, and how each ended lease ended (so a late commit gets a
//! clear answer instead of an "unknown lease").

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A checked-out version of the outer parameters.
///
/// The lease stays valid while its worker calls
/// [`super::Coordinator::heartbeat`] at least once per `lease_ttl`; it ends
/// with its first commit, with [`super::Coordinator::release`], or by expiry.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Unique id of this lease (never reused by a coordinator or its restores).
    pub id: u64,
    /// The worker that checked it out.
    pub worker: u64,
    /// Version of the outer parameters handed out.
    pub version: u64,
    /// The outer parameters of `version` (shared, never copied per lease).
    pub params: Arc<[f32]>,
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A commit was answered on it (accepted or rejected for staleness).
    Committed,
    /// Its worker stopped heartbeating.
    Expired,
    /// Its worker gave it back.
    Released,
}

impl Ended {
    pub fn code(self) -> u8 {
        match self {
            Ended::Committed => 0,
            Ended::Expired => 1,
            Ended::Released => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Ended::Committed),
            1 => Some(Ended::Expired),
            2 => Some(Ended::Released),
            _ => None,
        }
    }
}

/// A lease that is still out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Active {
    pub worker: u64,
    pub version: u64,
    pub last_heartbeat: Instant,
}

/// What the table knows about a lease id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Out, held by `worker` on `version`.
    Active { worker: u64, version: u64 },
    /// Ended for the given reason (still remembered).
    Ended { worker: u64, how: Ended },
    /// Never issued, or ended so long ago it was forgotten.
    Unknown,
}

/// Every lease out plus a bounded memory of ended ones.
#[derive(Debug, Clone)]
pub(crate) struct LeaseTable {
    pub next_id: u64,
    pub active: BTreeMap<u64, Active>,
    /// Active leases per version: its key count is the number of distinct
    /// versions in flight.
    versions: BTreeMap<u64, usize>,
    pub ended: HashMap<u64, (u64, Ended)>,
    /// Ended lease ids, oldest first (eviction order for `ended`).
    pub ended_order: VecDeque<u64>,
    pub ended_capacity: usize,
}

impl LeaseTable {
    pub fn new(ended_capacity: usize) -> Self {
        LeaseTable {
            next_id: 0,
            active: BTreeMap::new(),
            versions: BTreeMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            ended_capacity,
        }
    }

    /// Distinct versions with at least one active lease.
    pub fn versions_in_flight(&self) -> usize {
        self.versions.len()
    }

    /// Whether a checkout of `version` fits under `max` distinct versions.
    pub fn admits(&self, version: u64, max: usize) -> bool {
        self.versions.contains_key(&version) || self.versions.len() < max
    }

    /// Opens a lease and returns its id.
    pub fn open(&mut self, worker: u64, version: u64, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.insert_active(id, Active { worker, version, last_heartbeat: now });
        id
    }

    /// Re-inserts an active lease (restore) or inserts a new one.
    pub fn insert_active(&mut self, id: u64, a: Active) {
        *self.versions.entry(a.version).or_insert(0) += 1;
        self.active.insert(id, a);
    }

    /// Records an ended lease (restore) or ends one, forgetting the oldest
    /// ended lease beyond capacity.
    pub fn remember_ended(&mut self, id: u64, worker: u64, how: Ended) {
        if self.ended.insert(id, (worker, how)).is_none() {
            self.ended_order.push_back(id);
        }
        while self.ended_order.len() > self.ended_capacity {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Ends an active lease; `false` when it was not active.
    pub fn end(&mut self, id: u64, how: Ended) -> bool {
        let Some(a) = self.active.remove(&id) else {
            return false;
        };
        if let Some(c) = self.versions.get_mut(&a.version) {
            *c -= 1;
            if *c == 0 {
                self.versions.remove(&a.version);
            }
        }
        self.remember_ended(id, a.worker, how);
        true
    }

    pub fn lookup(&self, id: u64) -> Lookup {
        if let Some(a) = self.active.get(&id) {
            return Lookup::Active { worker: a.worker, version: a.version };
        }
        match self.ended.get(&id) {
            Some(&(worker, how)) => Lookup::Ended { worker, how },
            None => Lookup::Unknown,
        }
    }

    /// Renews an active lease; `false` when it is not active.
    pub fn heartbeat(&mut self, id: u64, now: Instant) -> bool {
        match self.active.get_mut(&id) {
            Some(a) => {
                a.last_heartbeat = a.last_heartbeat.max(now);
                true
            }
            None => false,
        }
    }

    /// Renews every active lease of `worker`; returns how many.
    pub fn heartbeat_worker(&mut self, worker: u64, now: Instant) -> usize {
        let mut n = 0;
        for a in self.active.values_mut().filter(|a| a.worker == worker) {
            a.last_heartbeat = a.last_heartbeat.max(now);
            n += 1;
        }
        n
    }

    /// Expires every lease silent for at least `ttl`; returns how many.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let dead: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.last_heartbeat) >= ttl)
            .map(|(&id, _)| id)
            .collect();
        for &id in &dead {
            self.end(id, Ended::Expired);
        }
        dead.len()
    }

    /// When the next active lease will expire, if any.
    pub fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.active.values().map(|a| a.last_heartbeat + ttl).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_versions() {
        let now = Instant::now();
        let mut t = LeaseTable::new(4);
        let a = t.open(1, 0, now);
        let b = t.open(2, 0, now);
        assert_eq!(t.versions_in_flight(), 1);
        assert!(t.admits(0, 1));
        assert!(!t.admits(1, 1));
        t.end(a, Ended::Committed);
        assert_eq!(t.versions_in_flight(), 1);
        t.end(b, Ended::Released);
        assert_eq!(t.versions_in_flight(), 0);
        assert_eq!(t.lookup(a), Lookup::Ended { worker: 1, how: Ended::Committed });
        assert_eq!(t.lookup(99), Lookup::Unknown);
    }

    #[test]
    fn expires_silent_leases_only() {
        let t0 = Instant::now();
        let ttl = Duration::from_millis(10);
        let mut t = LeaseTable::new(4);
        let a = t.open(1, 0, t0);
        let b = t.open(2, 0, t0);
        assert!(t.heartbeat(b, t0 + Duration::from_millis(5)));
        assert_eq!(t.next_expiry(ttl), Some(t0 + ttl));
        assert_eq!(t.expire(t0 + ttl, ttl), 1);
        assert_eq!(t.lookup(a), Lookup::Ended { worker: 1, how: Ended::Expired });
        assert!(matches!(t.lookup(b), Lookup::Active { .. }));
        assert!(!t.heartbeat(a, t0 + ttl));
    }

    #[test]
    fn forgets_the_oldest_ended_lease() {
        let now = Instant::now();
        let mut t = LeaseTable::new(2);
        let ids: Vec<u64> = (0..3).map(|w| t.open(w, 0, now)).collect();
        for &id in &ids {
            t.end(id, Ended::Committed);
        }
        assert_eq!(t.lookup(ids[0]), Lookup::Unknown);
        assert!(matches!(t.lookup(ids[2]), Lookup::Ended { .. }));
    }
}

//! Untrusted bytes: the persisted records (config record, snapshot, commit
//! log blobs, stored answers) and every request decode to a value or a typed
//! error, never a panic, and a refused request changes nothing.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

use chronos_sync::coordinator::{CommitOutcome, CommitRequest, Coordinator, RejectReason};
use chronos_sync_service::store::f32s_from_blob;
use chronos_sync_service::wire::{self, Failure, path};
use chronos_sync_service::{ClientConfig, ConfigRecord, RemoteCoordinator, RunningServer, ServerConfig, ServiceError};

fn temp(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let p = std::env::temp_dir().join(format!("chronos-rec-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn valid_record() -> Vec<u8> {
    ConfigRecord { initial_params: vec![1.0, 2.0, 3.0], min_commits: 2, ..ConfigRecord::standard() }.encode_to_vec()
}

/// A snapshot with leases, pending commits, answers and memory in it.
fn busy_snapshot() -> (Vec<u8>, chronos_sync::CoordinatorConfig) {
    let (rec, config) = ConfigRecord::decode_record(&valid_record()).unwrap();
    let c = Coordinator::new(rec.initial_params, config.clone()).unwrap();
    for id in 0..5 {
        let l = c.checkout(id % 2).unwrap();
        let _ =
            c.commit(&l, CommitRequest { commit_id: id, hypergradient: vec![0.1, -0.2, 0.3], validation_loss: 1.0 });
    }
    let _open = c.checkout(9).unwrap();
    (c.snapshot(), config)
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(i, x) in edits {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn config_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                                  edits in proptest::collection::vec((any::<usize>(), 1..=255u8), 0..6),
                                  cut in proptest::option::of(any::<usize>())) {
        let _ = ConfigRecord::decode_record(&bytes);
        if let Ok((rec, config)) = ConfigRecord::decode_record(&mutate(valid_record(), &edits, cut)) {
            // Whatever decodes builds a coordinator or is a typed error.
            let _ = Coordinator::new(rec.initial_params, config);
        }
    }

    #[test]
    fn snapshots_never_panic(edits in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..6),
                             cut in proptest::option::of(any::<usize>())) {
        let (snap, config) = busy_snapshot();
        let _ = Coordinator::restore(&mutate(snap, &edits, cut), config);
    }

    #[test]
    fn stored_answers_and_blobs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Some(o) = wire::CommitAnswer::decode(&bytes[..]).ok().and_then(|a| wire::outcome_of(&a)) {
            prop_assert_eq!(wire::outcome_of(&wire::answer_of(&o)), Some(o));
        }
        if let Ok(d) = wire::ErrorDetail::decode(&bytes[..]) {
            let s = tonic::Status::with_details(tonic::Code::Internal, "x", Bytes::from(d.encode_to_vec()));
            let _ = wire::from_status(&s);
        }
        match f32s_from_blob(&bytes) {
            Ok(v) => prop_assert_eq!(v.len() * 4, bytes.len()),
            Err(ServiceError::CorruptRecord { .. }) => prop_assert!(bytes.len() % 4 != 0),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn answers_round_trip(weight in 1e-6f64..1.0, staleness in 0u64..10, published in proptest::option::of(0u64..100), r in 0u8..5) {
        let o = match r {
            0 => CommitOutcome::Accepted { weight, staleness, published },
            1 => CommitOutcome::Rejected { staleness, reason: RejectReason::TooStale { max_staleness: 2 } },
            2 => CommitOutcome::Rejected { staleness, reason: RejectReason::LeaseExpired },
            3 => CommitOutcome::Rejected { staleness, reason: RejectReason::LeaseReleased },
            _ => CommitOutcome::Rejected { staleness, reason: RejectReason::LeaseAlreadyCommitted },
        };
        let bytes = wire::answer_of(&o).encode_to_vec();
        prop_assert_eq!(wire::outcome_of(&wire::CommitAnswer::decode(&bytes[..]).unwrap()), Some(o));
    }
}

#[test]
fn a_damaged_database_is_a_typed_error_at_start() {
    // Initialize a directory, then damage its snapshot and its config record.
    let dir = temp("damaged");
    let mut cfg = ServerConfig::new(&dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    drop(RunningServer::spawn(cfg.clone()).unwrap());
    let db = rusqlite_path(&dir);
    for sql in ["UPDATE state SET snapshot = x'00112233'", "UPDATE meta SET value = x'ffffffff' WHERE key = 'config'"] {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(sql, []).unwrap();
        drop(conn);
        match RunningServer::spawn(cfg.clone()) {
            Err(ServiceError::CorruptRecord { .. }) | Err(ServiceError::Coordinator(_)) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn rusqlite_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(chronos_sync_service::store::DB_FILE)
}

#[test]
fn arbitrary_request_bytes_get_typed_errors_and_change_nothing() {
    let dir = temp("fuzzreq");
    let mut cfg = ServerConfig::new(&dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.init = ConfigRecord { initial_params: vec![1.0, 2.0], ..ConfigRecord::standard() };
    let server = RunningServer::spawn(cfg).unwrap();
    let c = RemoteCoordinator::connect(ClientConfig::new(server.endpoint())).unwrap();
    let lease = c.checkout(1).unwrap();
    let before = c.current_state().unwrap();
    let methods =
        [path::CHECKOUT, path::HEARTBEAT, path::COMMIT, path::RELEASE, path::WAIT, path::STATE, path::SNAPSHOT];
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig { cases: 200, ..ProptestConfig::default() },
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    runner
        .run(&(0..methods.len(), proptest::collection::vec(any::<u8>(), 0..64)), |(m, bytes)| {
            let method = methods[m];
            // A wait is bounded: at most 50 ms when it decodes to one.
            let body = match wire::WaitRequest::decode(&bytes[..]) {
                Ok(w) if method == path::WAIT => Bytes::from(
                    wire::WaitRequest { after: w.after.max(1_000), timeout_ms: w.timeout_ms % 50 }.encode_to_vec(),
                ),
                _ => Bytes::from(bytes),
            };
            match c.raw_call(method, body, Duration::from_secs(30)) {
                Ok(_) => {}
                Err(s) => match wire::from_status(&s) {
                    Failure::Typed(_, _) => {}
                    Failure::Transient(r) => prop_assert!(false, "{method}: untyped failure {r}"),
                },
            }
            Ok(())
        })
        .unwrap();
    // Garbage may decode to a well-formed checkout, heartbeat or release
    // (then it is served), never to a commit on a live lease: the version
    // and the parameters are unchanged.
    assert_eq!(c.current_state().unwrap(), before);
    let _ = c.release(&lease);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

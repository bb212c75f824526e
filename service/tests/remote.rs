//! Every operation against a server in another process: round trips, the
//! README worker loop, idempotency (replay, conflict, expiry), access,
//! malformed and oversized requests, backpressure, restart continuity.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use chronos_sync::coordinator::{
    CommitOutcome, CommitRequest, Coordinator, CoordinatorApi, CoordinatorConfig, OuterOptimizer, RejectReason,
};
use chronos_sync::{CoordinatorError, Error};
use chronos_sync_service::wire::{self, Failure, path};
use chronos_sync_service::{Audit, ClientConfig, ConfigRecord, RemoteCoordinator};
use common::{ServerProc, TempDir};

/// The server child (see `common::serve_if_child`); a no-op otherwise.
#[test]
fn server_process() {
    common::serve_if_child();
}

/// The README's worker loop, generic over where the coordinator lives.
fn readme_worker_loop<C: CoordinatorApi + 'static>(coord: Arc<C>) -> chronos_sync::Result<u64> {
    let workers: Vec<_> = (0..2u64)
        .map(|worker| {
            let coord = Arc::clone(&coord);
            std::thread::spawn(move || -> chronos_sync::Result<()> {
                for round in 0..3u64 {
                    let lease = coord.checkout(worker)?;
                    let hypergradient = lease.params.to_vec();
                    let validation_loss = lease.params.iter().map(|p| 0.5 * p * p).sum();
                    let request = CommitRequest { commit_id: round, hypergradient, validation_loss };
                    match coord.commit(&lease, request)? {
                        CommitOutcome::Accepted { .. } => {}
                        CommitOutcome::Rejected { .. } => {}
                    }
                    let _ = coord.wait_for_version(lease.version, Duration::from_millis(200));
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(coord.current_state()?.version)
}

fn typed(e: &Error) -> &CoordinatorError {
    match e {
        Error::Coordinator(c) => c,
        other => panic!("not a coordinator error: {other}"),
    }
}

#[test]
fn readme_worker_loop_runs_against_a_server_in_another_process() {
    let dir = TempDir::new("readme");
    let server = ServerProc::start(dir.path(), &["--init", "1,-1", "--min-commits", "2"]);
    let remote = Arc::new(server.client());
    assert!(readme_worker_loop(Arc::clone(&remote)).unwrap() >= 1);
    // The same loop, unchanged, in process.
    let config = CoordinatorConfig::builder().min_commits(2).build().unwrap();
    let local = Arc::new(Coordinator::new(vec![1.0, -1.0], config).unwrap());
    assert!(readme_worker_loop(local).unwrap() >= 1);
    // Six answers were logged, each commit at most once.
    let audit = Audit::open(dir.path()).unwrap();
    let rows = audit.accepted().unwrap();
    let mut keys: Vec<_> = rows.iter().map(|r| (r.worker, r.commit_id)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), rows.len());
}

#[test]
fn every_operation_round_trips() {
    let dir = TempDir::new("ops");
    let server = ServerProc::start(dir.path(), &["--init", "1,2,3", "--lr", "0.5", "--momentum", "0"]);
    let c = server.client();
    let s0 = c.current_state().unwrap();
    assert_eq!((s0.version, &*s0.params), (0, &[1.0f32, 2.0, 3.0][..]));

    let a = c.checkout(7).unwrap();
    assert_eq!((a.worker, a.version, &*a.params), (7, 0, &[1.0f32, 2.0, 3.0][..]));
    c.heartbeat(&a).unwrap();
    let b = c.checkout(8).unwrap();
    c.release(&b).unwrap();
    // Released: heartbeat says unknown, commit is rejected.
    assert!(matches!(typed(&c.heartbeat(&b).unwrap_err()), CoordinatorError::UnknownLease { .. }));

    let out = c
        .commit(&a, CommitRequest { commit_id: 1, hypergradient: vec![2.0, 2.0, 2.0], validation_loss: 0.25 })
        .unwrap();
    assert_eq!(out, CommitOutcome::Accepted { weight: 1.0, staleness: 0, published: Some(1) });
    assert_eq!(c.wait_for_version(0, Duration::from_secs(30)).unwrap(), 1);
    let err = c.wait_for_version(1, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(typed(&err), CoordinatorError::WaitTimeout { version: 1, .. }));
    let s1 = c.current_state().unwrap();
    assert_eq!(&*s1.params, &[0.0f32, 1.0, 2.0]);

    let late = c.commit(&b, CommitRequest { commit_id: 9, hypergradient: vec![0.0; 3], validation_loss: 0.0 }).unwrap();
    assert!(matches!(late, CommitOutcome::Rejected { reason: RejectReason::LeaseReleased, .. }));

    // The exported snapshot restores in process and continues from there.
    let bytes = c.snapshot().unwrap();
    let (_, config) = ConfigRecord::decode_record(&Audit::open(dir.path()).unwrap().state().unwrap().0).unwrap();
    let local = Coordinator::restore(&bytes, config).unwrap();
    assert_eq!(local.current_version(), 1);
    assert_eq!(&*local.outer_params(), &[0.0f32, 1.0, 2.0]);
    let _ = OuterOptimizer::adam(0.1);
}

#[test]
fn a_retried_commit_gets_the_stored_answer_byte_for_byte_and_a_changed_body_conflicts() {
    let dir = TempDir::new("idem");
    let server = ServerProc::start(dir.path(), &["--init", "1,1", "--min-commits", "2"]);
    let c = server.client();
    let lease = c.checkout(3).unwrap();
    let req = CommitRequest { commit_id: 42, hypergradient: vec![0.5, -0.5], validation_loss: 1.0 };
    let body = RemoteCoordinator::commit_body(&lease, &req);
    let first = c.raw_call(path::COMMIT, body.clone(), Duration::from_secs(30)).unwrap();
    let again = c.raw_call(path::COMMIT, body.clone(), Duration::from_secs(30)).unwrap();
    assert_eq!(first, again, "a retry must get the stored answer byte for byte");
    assert_eq!(
        c.commit(&lease, req.clone()).unwrap(),
        wire::outcome_of(&wire::CommitAnswer::decode(first).unwrap()).unwrap()
    );

    let changed = CommitRequest { hypergradient: vec![0.5, 0.5], ..req };
    let err = c.commit(&lease, changed).unwrap_err();
    assert!(matches!(typed(&err), CoordinatorError::CommitConflict { worker: 3, commit_id: 42 }), "{err}");

    // Applied once: one row in the commit log, still pending (min_commits 2).
    let rows = Audit::open(dir.path()).unwrap().accepted().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(c.current_state().unwrap().version, 0);
}

#[test]
fn request_records_expire_after_the_configured_time() {
    let dir = TempDir::new("expiry");
    let server = ServerProc::start(dir.path(), &["--init", "1,1", "--min-commits", "2", "--idempotency-ttl-s", "3"]);
    let c = server.client();
    let lease = c.checkout(1).unwrap();
    let req = CommitRequest { commit_id: 5, hypergradient: vec![1.0, 1.0], validation_loss: 1.0 };
    c.commit(&lease, req.clone()).unwrap();
    assert!(Audit::open(dir.path()).unwrap().record_count().unwrap() >= 2); // checkout + commit
    let changed = CommitRequest { hypergradient: vec![2.0, 2.0], ..req };
    assert!(matches!(typed(&c.commit(&lease, changed.clone()).unwrap_err()), CoordinatorError::CommitConflict { .. }));

    // Past the time to live the record is gone: a lookup ignores it and the
    // next write sweeps it.
    std::thread::sleep(Duration::from_millis(4500));
    let other = c.checkout(2).unwrap();
    c.release(&other).unwrap();
    let audit = Audit::open(dir.path()).unwrap();
    assert_eq!(audit.record_count().unwrap(), 2, "only the checkout and release just made are left");
    // No record, so no conflict; the coordinator's own rules still apply it
    // at most once (the lease carried its commit).
    let out = c.commit(&lease, changed).unwrap();
    assert!(out.is_accepted() || matches!(out, CommitOutcome::Rejected { .. }));
    assert_eq!(audit.accepted().unwrap().len(), 1, "applied once");
}

#[test]
fn a_configured_secret_is_required_on_every_call() {
    let dir = TempDir::new("auth");
    let server = ServerProc::start_env(
        dir.path(),
        &["--secret-env", "CHRONOS_TEST_SECRET"],
        &[("CHRONOS_TEST_SECRET", "s3cret-token")],
    );
    let none = server.client();
    for e in [none.current_state().unwrap_err(), none.checkout(1).unwrap_err()] {
        assert!(matches!(typed(&e), CoordinatorError::Unauthenticated { .. }), "{e}");
    }
    let mut wrong = server.client_config();
    wrong.secret = Some("guess".into());
    let wrong = RemoteCoordinator::connect(wrong).unwrap();
    assert!(matches!(typed(&wrong.current_state().unwrap_err()), CoordinatorError::Unauthenticated { .. }));
    let mut right = server.client_config();
    right.secret = Some("s3cret-token".into());
    let right = RemoteCoordinator::connect(right).unwrap();
    let lease = right.checkout(1).unwrap();
    assert_eq!(lease.version, 0);
    // The refused checkouts left nothing behind.
    assert_eq!(lease.id, 0);
}

#[test]
fn malformed_and_oversized_requests_get_typed_errors_and_change_nothing() {
    let dir = TempDir::new("malformed");
    let server = ServerProc::start(dir.path(), &["--init", "1,1", "--max-request-bytes", "4096"]);
    let c = server.client();
    let lease = c.checkout(1).unwrap();
    let before = c.current_state().unwrap();
    let garbage = [
        Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff]),
        Bytes::from_static(&[0x0a, 0x7f, 0x01]),
        Bytes::from_static(&[0x1a, 0x03, 0x00, 0x00]),
    ];
    for (method, body) in [path::COMMIT, path::CHECKOUT, path::HEARTBEAT, path::RELEASE, path::WAIT]
        .into_iter()
        .flat_map(|m| garbage.iter().map(move |g| (m, g.clone())))
    {
        let s = c.raw_call(method, body, Duration::from_secs(30)).unwrap_err();
        match wire::from_status(&s) {
            Failure::Typed(Error::Coordinator(CoordinatorError::InvalidRequest { .. }), _) => {}
            other => panic!("{method}: {other:?}"),
        }
    }
    // Oversized: more than 4096 bytes.
    let big = CommitRequest { commit_id: 1, hypergradient: vec![0.0; 5000], validation_loss: 0.0 };
    let e = c.commit(&lease, big).unwrap_err();
    assert!(matches!(typed(&e), CoordinatorError::InvalidRequest { .. }), "{e}");
    // Wrong shape and non-finite values: typed, nothing applied.
    let e =
        c.commit(&lease, CommitRequest { commit_id: 2, hypergradient: vec![1.0], validation_loss: 0.0 }).unwrap_err();
    assert!(matches!(typed(&e), CoordinatorError::ShapeMismatch { expected: 2, actual: 1 }), "{e}");
    let e = c
        .commit(&lease, CommitRequest { commit_id: 3, hypergradient: vec![f32::NAN, 1.0], validation_loss: 0.0 })
        .unwrap_err();
    assert!(matches!(typed(&e), CoordinatorError::NonFinite { .. }), "{e}");
    // A method that does not exist.
    let s = c.raw_call("/chronos.coordinator.v1.Coordinator/Nope", Bytes::new(), Duration::from_secs(30)).unwrap_err();
    assert!(matches!(
        wire::from_status(&s),
        Failure::Typed(Error::Coordinator(CoordinatorError::InvalidRequest { .. }), _)
    ));

    assert_eq!(c.current_state().unwrap(), before);
    assert!(Audit::open(dir.path()).unwrap().accepted().unwrap().is_empty());
    // The lease is still usable.
    let ok =
        c.commit(&lease, CommitRequest { commit_id: 4, hypergradient: vec![1.0, 1.0], validation_loss: 0.0 }).unwrap();
    assert!(ok.is_accepted());
}

#[test]
fn backpressure_and_overload_are_typed_answers_with_a_hint() {
    let dir = TempDir::new("backpressure");
    let server = ServerProc::start(dir.path(), &["--init", "1,1", "--max-in-flight", "1", "--max-concurrent", "1"]);
    let mut cfg = server.client_config();
    cfg.checkout_timeout = Duration::from_millis(300);
    let c = Arc::new(RemoteCoordinator::connect(cfg).unwrap());
    let held = c.checkout(1).unwrap(); // version 0 stays out
    let other = c.checkout(2).unwrap();
    c.commit(&other, CommitRequest { commit_id: 1, hypergradient: vec![1.0, 1.0], validation_loss: 0.0 }).unwrap();
    // Version 1 would be a second version in flight: refused at once, asked
    // again until the checkout timeout, then a typed error.
    let e = c.checkout(3).unwrap_err();
    assert!(matches!(typed(&e), CoordinatorError::Backpressure { worker: 3, in_flight: 1, max: 1, .. }), "{e}");
    let raw = c.raw_call(
        path::CHECKOUT,
        Bytes::from(wire::CheckoutRequest { worker: 3, request_id: 9 }.encode_to_vec()),
        Duration::from_secs(30),
    );
    match wire::from_status(&raw.unwrap_err()) {
        Failure::Typed(Error::Coordinator(CoordinatorError::Backpressure { .. }), Some(hint)) => {
            assert!(hint > Duration::ZERO)
        }
        other => panic!("{other:?}"),
    }
    c.release(&held).unwrap();
    assert_eq!(c.checkout(3).unwrap().version, 1);

    // One request at a time: while a long wait holds the only slot, any other
    // call is answered at once with Overloaded and a hint.
    let waiter = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || c.wait_for_version(1_000, Duration::from_secs(20)))
    };
    let mut seen = false;
    for _ in 0..200 {
        let r = c.raw_call(path::STATE, Bytes::from(wire::Empty {}.encode_to_vec()), Duration::from_secs(30));
        if let Err(s) = r {
            match wire::from_status(&s) {
                Failure::Typed(Error::Coordinator(CoordinatorError::Overloaded { retry_after }), _) => {
                    assert!(retry_after > Duration::ZERO);
                    seen = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen, "never saw Overloaded while the only slot was held");
    drop(waiter);
}

#[test]
fn a_restarted_server_continues_where_the_last_acknowledged_call_left_it() {
    let dir = TempDir::new("restart");
    let mut server = ServerProc::start(dir.path(), &["--init", "1,1", "--min-commits", "2", "--lease-ttl-s", "8"]);
    let c = server.client();
    let a = c.checkout(1).unwrap();
    let b = c.checkout(2).unwrap();
    let req = CommitRequest { commit_id: 1, hypergradient: vec![1.0, 0.0], validation_loss: 0.5 };
    let body = RemoteCoordinator::commit_body(&a, &req);
    let first = c.raw_call(path::COMMIT, body.clone(), Duration::from_secs(30)).unwrap();
    let snap_before = c.snapshot().unwrap();

    server.kill();
    server.restart();
    // The stored answer survives, byte for byte, and is not applied again.
    assert_eq!(c.raw_call(path::COMMIT, body, Duration::from_secs(30)).unwrap(), first);
    // The other lease outlived the restart.
    c.heartbeat(&b).unwrap();
    let state = c.current_state().unwrap();
    assert_eq!(state.version, 0);
    let (_, config) = ConfigRecord::decode_record(&Audit::open(dir.path()).unwrap().state().unwrap().0).unwrap();
    let before = Coordinator::restore(&snap_before, config.clone()).unwrap();
    let after = Coordinator::restore(&c.snapshot().unwrap(), config).unwrap();
    assert_eq!(before.pending_commits(), after.pending_commits());
    assert_eq!(after.pending_commits(), vec![(1, 1)]);

    // ... and still expires when its worker is gone: no heartbeat for longer
    // than the 8 s TTL.
    std::thread::sleep(Duration::from_millis(10_000));
    let late =
        c.commit(&b, CommitRequest { commit_id: 7, hypergradient: vec![0.0, 1.0], validation_loss: 0.5 }).unwrap();
    assert!(matches!(late, CommitOutcome::Rejected { reason: RejectReason::LeaseExpired, .. }), "{late:?}");
    assert!(matches!(typed(&c.heartbeat(&b).unwrap_err()), CoordinatorError::LeaseExpired { .. }));
}

#[test]
fn a_client_rides_out_a_restart_with_the_same_commit_id() {
    let dir = TempDir::new("ride");
    let mut server = ServerProc::start(dir.path(), &["--init", "1,1"]);
    let c = server.client();
    let lease = c.checkout(1).unwrap();
    server.kill();
    // Nobody listens: the client retries with backoff while the server is
    // restarted.
    let addr = server.addr.clone();
    let t = std::thread::spawn(move || {
        let mut cfg = ClientConfig::new(format!("http://{addr}"));
        cfg.retry_budget = Duration::from_secs(60);
        let c = RemoteCoordinator::connect(cfg).unwrap();
        let out = c.commit(&lease, CommitRequest { commit_id: 1, hypergradient: vec![1.0, 1.0], validation_loss: 0.0 });
        (out, c.stats().retries.load(std::sync::atomic::Ordering::Relaxed))
    });
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let (out, _retries) = t.join().unwrap();
    assert!(out.unwrap().is_accepted());
    assert_eq!(c.current_state().unwrap().version, 1);
}

//! `chronos-sync coordinator serve` in another process, and a worker loop
//! against it through the remote client.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chronos_sync::coordinator::{CommitOutcome, CommitRequest, CoordinatorApi};
use chronos_sync_service::{ClientConfig, RemoteCoordinator};

#[test]
fn coordinator_serve_runs_the_worker_loop_from_another_process() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("chronos-cli-serve-{}-{nanos}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_chronos-sync"))
        .args(["coordinator", "serve", "--listen", "127.0.0.1:0", "--init", "1,-1", "--min-commits", "2", "--data"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();

    let coord = Arc::new(RemoteCoordinator::connect(ClientConfig::new(format!("http://{addr}"))).unwrap());
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
        w.join().expect("worker panicked").unwrap();
    }
    assert!(coord.current_state().unwrap().version >= 1);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

//! `chronos-sync hyperclean --processes W` end to end (features `mpi` and
//! `service`; needs Open MPI's `mpirun`, and fails, not skips, without it):
//! a shortened run's structure (staleness across processes is
//! nondeterministic, so no exact figures), and a coordinator service killed
//! mid-run ending the job with an error that names it, with no process left.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chronos-sync")
}

fn require_mpirun() {
    let ok = Command::new("mpirun").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev)"
    );
}

fn temp(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let p = std::env::temp_dir().join(format!("chronos-hcmp-test-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Processes whose command line contains `needle`, other than this test.
fn processes_matching(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if pid != me && cmd.contains(needle) {
            found.push((pid, cmd));
        }
    }
    found
}

const SHORT: &[&str] = &[
    "--rounds",
    "6",
    "--inner-steps",
    "8",
    "--final-steps",
    "8",
    // Eight steps are too few to fit a model from zero under sparse sync:
    // continue from the rounds' model instead.
    "--final-restart",
    "false",
    "--features",
    "511",
    "--baseline-iters",
    "50",
    "--timeout-secs",
    "30",
    "--no-progress",
];

#[test]
fn a_shortened_multi_process_run_has_the_structure_of_the_in_process_one() {
    require_mpirun();
    let out = temp("run");
    let o =
        Command::new(bin()).args(["hyperclean", "--processes", "3", "--out"]).arg(&out).args(SHORT).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("dense sync") && stdout.contains("test accuracy"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("hyperclean.json")).unwrap()).unwrap();
    let noisy = report["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"].as_str().unwrap().starts_with("noisy"))
        .unwrap()["test_accuracy"]
        .as_f64()
        .unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for r in runs {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["workers"].as_u64(), Some(3), "{name}");
        assert!(r["accepted"].as_u64().unwrap() > 0, "{name}: no commit accepted");
        assert!(r["outer_steps"].as_u64().unwrap() > 0, "{name}: no outer step");
        let per_worker = r["bytes_per_worker"].as_array().unwrap();
        assert_eq!(per_worker.len(), 3, "{name}");
        assert!(per_worker.iter().all(|b| b.as_u64().unwrap() > 0), "{name}: a rank sent nothing");
        // Ten classes: far above chance, whatever the staleness did.
        assert!(r["test_accuracy"].as_f64().unwrap() > 0.5, "{name}: {}", r["test_accuracy"]);
        assert!(!r["trace"].as_array().unwrap().is_empty(), "{name}: rank 0's trace is missing");
    }
    // Dense is synchronous (every worker's commit in every outer step): its
    // fit is not hurt by staleness and reaches the noisy-label baseline.
    assert!(
        runs[0]["test_accuracy"].as_f64().unwrap() >= noisy - 0.01,
        "dense {} vs noisy {noisy}",
        runs[0]["test_accuracy"]
    );
    let _ = std::fs::remove_dir_all(&out);
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < until, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_coordinator_service_fails_the_job_naming_it_and_leaves_no_process() {
    require_mpirun();
    let out = temp("kill");
    let mut launcher = Command::new(bin())
        .args(["hyperclean", "--processes", "2", "--rounds", "100000", "--out"])
        .arg(&out)
        .args(&SHORT[2..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tag = format!("chronos-hyperclean-{}-", launcher.id());
    let service = || processes_matching("coordinator serve").into_iter().find(|(_, c)| c.contains(&tag));
    // The service and the ranks are up (the ranks' job dir names the launcher).
    let mut pid = None;
    wait_for("the service and 2 ranks start", Duration::from_secs(120), || {
        pid = service().map(|p| p.0);
        pid.is_some()
            && processes_matching("hyperclean-rank --job").iter().filter(|(_, c)| c.contains(&tag)).count() >= 2
    });
    let pid = pid.unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    // The launcher ends by itself (bounded), with an error naming the service.
    let mut status = None;
    wait_for("the launcher to exit", Duration::from_secs(120), || {
        status = launcher.try_wait().unwrap();
        status.is_some()
    });
    let o = launcher.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!status.unwrap().success());
    assert!(stderr.contains(&format!("the coordinator service (pid {pid}) died")), "{stderr}");
    // No orphans: no rank or mpirun of this job is left.
    wait_for("every rank of the job to be gone", Duration::from_secs(30), || processes_matching(&tag).is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

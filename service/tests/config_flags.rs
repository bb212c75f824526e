//! The coordinator settings a job needs (zeros, Adam, warm-up, timescale
//! groups, continuum memory, decay) through the serve flags and through
//! `ConfigRecord::from_coordinator_config`, persisted backward compatibly,
//! validated with typed errors, and served exactly as the in-process
//! coordinator would run them.

mod common;

use std::time::Duration;

use clap::Parser;
use prost::Message;

use chronos_sync::coordinator::decay::{Exponential, Polynomial};
use chronos_sync::coordinator::{
    CommitRequest, Coordinator, CoordinatorApi, CoordinatorConfig, MemoryConfig, OuterOptimizer, TimescaleGroup,
};
use chronos_sync_service::cli::ServeArgs;
use chronos_sync_service::{ConfigRecord, ServiceError};
use common::{ServerProc, TempDir};

/// The server child (see `common::serve_if_child`); a no-op otherwise.
#[test]
fn server_process() {
    common::serve_if_child();
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn args(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
    let argv = ["serve", "--data", "/nonexistent-never-opened"].into_iter().chain(flags.iter().copied());
    Cli::try_parse_from(argv).map(|c| c.serve)
}

/// A configuration using every persisted setting away from its default.
fn job_config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .max_in_flight(2)
        .max_staleness(3)
        .min_commits(2)
        .lease_ttl(Duration::from_secs(90))
        .optimizer(OuterOptimizer::Adam { lr: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6 })
        .warmup(4)
        .timescale(TimescaleGroup { range: 0..3, every: 2, lr: 0.1, momentum: 0.5, warmup: 3 })
        .timescale(TimescaleGroup { range: 4..6, every: 3, lr: 0.02, momentum: 0.0, warmup: 0 })
        .memory(MemoryConfig { capacity: 17, compress_after: 5, recency_decay: 0.25 })
        .decay(Exponential { base: 0.75 })
        .dedup_capacity(1024)
        .build()
        .unwrap()
}

fn same_settings(a: &CoordinatorConfig, b: &CoordinatorConfig) {
    assert_eq!(a.max_in_flight, b.max_in_flight);
    assert_eq!(a.max_staleness, b.max_staleness);
    assert_eq!(a.min_commits, b.min_commits);
    assert_eq!(a.lease_ttl, b.lease_ttl);
    assert_eq!(a.optimizer, b.optimizer);
    assert_eq!(a.warmup, b.warmup);
    assert_eq!(a.timescales, b.timescales);
    assert_eq!(a.memory, b.memory);
    assert_eq!(a.dedup_capacity, b.dedup_capacity);
    for s in 0..=a.max_staleness {
        assert_eq!(a.decay.weight(s).to_bits(), b.decay.weight(s).to_bits(), "decay weight at staleness {s}");
    }
}

#[test]
fn a_record_from_a_coordinator_config_gives_back_the_same_settings() {
    let config = job_config();
    let record = ConfigRecord::from_coordinator_config(&config, vec![0.5; 8]).unwrap();
    let (back_rec, back) = ConfigRecord::decode_record(&record.encode_to_vec()).unwrap();
    assert_eq!(back_rec, record);
    same_settings(&config, &back);
}

#[test]
fn a_record_written_before_the_new_tags_decodes_to_the_old_settings() {
    // The bytes an old server wrote: tags 1..=11 only.
    let old = ConfigRecord { initial_params: vec![1.0, 2.0], ..ConfigRecord::standard() }.encode_to_vec();
    let (rec, config) = ConfigRecord::decode_record(&old).unwrap();
    assert_eq!((rec.warmup, rec.timescales.len(), rec.memory.is_none(), rec.decay_base), (0, 0, true, None));
    let before = CoordinatorConfig::default();
    assert_eq!(config.warmup, 0);
    assert!(config.timescales.is_empty());
    assert_eq!(config.memory, before.memory);
    for s in 0..=config.max_staleness {
        assert_eq!(config.decay.weight(s), before.decay.weight(s));
    }
}

#[test]
fn the_flags_build_the_same_record_as_the_config() {
    let a = args(&[
        "--init-zeros",
        "8",
        "--max-in-flight",
        "2",
        "--max-staleness",
        "3",
        "--min-commits",
        "2",
        "--lease-ttl-s",
        "90",
        "--optimizer",
        "adam",
        "--lr",
        "0.05",
        "--momentum",
        "0.8",
        "--beta2",
        "0.99",
        "--eps",
        "1e-6",
        "--warmup",
        "4",
        "--timescale",
        "0..3:2:0.1:0.5:3",
        "--timescale",
        "4..6:3:0.02:0",
        "--memory-capacity",
        "17",
        "--memory-compress-after",
        "5",
        "--memory-recency-decay",
        "0.25",
        "--decay-base",
        "0.75",
    ])
    .unwrap();
    let from_flags = a.init_record().unwrap();
    assert_eq!(from_flags, ConfigRecord::from_coordinator_config(&job_config(), vec![0.0; 8]).unwrap());
    // The defaults are today's record for four zeros.
    let d = args(&[]).unwrap().init_record().unwrap();
    let (_, dc) = ConfigRecord::decode_record(&d.encode_to_vec()).unwrap();
    let (_, sc) = ConfigRecord::decode_record(&ConfigRecord::standard().encode_to_vec()).unwrap();
    assert_eq!(d.initial_params, vec![0.0; 4]);
    same_settings(&dc, &sc);
}

#[test]
fn bad_settings_are_typed_errors() {
    // Unparsable groups are refused by the flag parser.
    for bad in ["0..3:2:0.1", "3:2:0.1:0.5", "0..x:2:0.1:0.5", "0..3:2:0.1:0.5:1:9"] {
        assert!(args(&["--timescale", bad]).is_err(), "{bad}");
    }
    assert!(args(&["--init", "1,2", "--init-zeros", "3"]).is_err());
    // Parsable but invalid: typed configuration errors, no panic.
    let cases: &[&[&str]] = &[
        &["--init-zeros", "0"],
        &["--init-zeros", "4", "--timescale", "0..5:1:0.1:0.5"],
        &["--init-zeros", "8", "--timescale", "0..4:1:0.1:0.5", "--timescale", "3..6:1:0.1:0.5"],
        &["--init-zeros", "8", "--timescale", "2..2:1:0.1:0.5"],
        &["--init-zeros", "8", "--timescale", "0..2:0:0.1:0.5"],
        &["--optimizer", "adam", "--beta2", "1.0"],
        &["--lr=-1"],
        &["--memory-recency-decay=-0.5"],
        &["--decay-base", "0"],
        &["--decay-base", "1.5"],
    ];
    for flags in cases {
        let err = args(flags).unwrap().init_record().unwrap_err();
        assert!(matches!(err, ServiceError::Config { .. } | ServiceError::Coordinator(_)), "{flags:?}: {err:?}");
    }
    // A decay a record cannot carry.
    let poly = CoordinatorConfig::builder().decay(Polynomial { power: 1.0 }).build().unwrap();
    assert!(matches!(ConfigRecord::from_coordinator_config(&poly, vec![0.0; 2]), Err(ServiceError::Config { .. })));
    // A damaged record with a group past the parameters.
    let mut rec = ConfigRecord::from_coordinator_config(&job_config(), vec![0.0; 8]).unwrap();
    rec.initial_params.truncate(5);
    assert!(matches!(ConfigRecord::decode_record(&rec.encode_to_vec()), Err(ServiceError::CorruptRecord { .. })));
}

/// Two workers' commits per round, deterministic (one client, in order).
fn drive<C: CoordinatorApi + ?Sized>(coord: &C, rounds: u64) -> Vec<f32> {
    for round in 0..rounds {
        for worker in 0..2u64 {
            let lease = coord.checkout(worker).unwrap();
            let g: Vec<f32> =
                lease.params.iter().enumerate().map(|(i, p)| p - i as f32 * 0.25 + worker as f32).collect();
            let req = CommitRequest { commit_id: round, hypergradient: g, validation_loss: 1.0 / (1 + round) as f32 };
            assert!(coord.commit(&lease, req).unwrap().is_accepted());
        }
    }
    coord.current_state().unwrap().params.to_vec()
}

#[test]
fn a_server_initialized_from_a_record_file_runs_as_the_in_process_coordinator() {
    let dir = TempDir::new("record");
    let config = job_config();
    let initial: Vec<f32> = (0..8).map(|i| i as f32 * 0.1).collect();
    let record = ConfigRecord::from_coordinator_config(&config, initial.clone()).unwrap();
    let file = dir.path().join("init-record");
    std::fs::write(&file, record.encode_to_vec()).unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data, &["--init-record", file.to_str().unwrap()]);
    let remote = drive(&server.client(), 7);
    let local = drive(&Coordinator::new(initial, config).unwrap(), 7);
    assert_eq!(
        remote.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        local.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn a_server_with_stdin_eof_exit_goes_away_with_its_launcher() {
    let dir = TempDir::new("stdin");
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    let flags = ["--data", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--exit-on-stdin-eof"];
    cmd.args(["server_process", "--exact", "--nocapture", "--test-threads", "1"])
        .env(common::CHILD_ENV, flags.join("\u{1f}"))
        .env("CHRONOS_TEST_NO_STDIN_WATCH", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.path().join("address").exists() {
        assert!(std::time::Instant::now() < until, "the server never wrote its address");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child.stdin.take());
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(std::time::Instant::now() < until, "the server outlived its closed stdin");
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Commits per second and p50/p99 commit latency: the in-process
//! coordinator beside the durable gRPC service on loopback (one client,
//! sequential commits, each on its own lease; the service makes every
//! answer durable first: one SQLite transaction with `synchronous = FULL`).
//!
//! `cargo bench -p chronos-sync-service --bench commit`; the percentiles are
//! printed after criterion's figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chronos_sync::coordinator::{CommitRequest, Coordinator, CoordinatorApi, CoordinatorConfig, OuterOptimizer};
use chronos_sync_service::{ClientConfig, ConfigRecord, RemoteCoordinator, RunningServer, ServerConfig};

const N: usize = 16;

fn percentiles(name: &str, lat: &mut [Duration]) {
    if lat.is_empty() {
        return;
    }
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    let total: Duration = lat.iter().sum();
    eprintln!(
        "commit latency {name}: n = {}, p50 = {:.1} us, p99 = {:.1} us, mean rate = {:.0} commits/s",
        lat.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        lat.len() as f64 / total.as_secs_f64()
    );
}

/// Times only the commit calls (each after its own checkout).
fn run<C: CoordinatorApi>(coord: &C, iters: u64, next_id: &mut u64, lat: &mut Vec<Duration>) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let lease = coord.checkout(0).expect("checkout");
        *next_id += 1;
        let hypergradient: Vec<f32> = lease.params.iter().map(|p| 1e-3 * p).collect();
        let req = CommitRequest { commit_id: *next_id, hypergradient, validation_loss: 0.5 };
        let t = Instant::now();
        black_box(coord.commit(&lease, req).expect("commit"));
        let e = t.elapsed();
        total += e;
        lat.push(e);
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));

    let config = CoordinatorConfig {
        optimizer: OuterOptimizer::Sgd { lr: 0.01, momentum: 0.9 },
        dedup_capacity: 1024,
        ..CoordinatorConfig::default()
    };
    let local = Coordinator::new(vec![0.5; N], config).expect("coordinator");
    let (mut id, mut lat) = (0u64, Vec::new());
    g.bench_function("in_process", |b| b.iter_custom(|iters| run(&local, iters, &mut id, &mut lat)));
    let mut in_process = lat;

    let dir = std::env::temp_dir().join(format!("chronos-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut sc = ServerConfig::new(&dir);
    sc.listen = "127.0.0.1:0".parse().expect("addr");
    sc.init = ConfigRecord { initial_params: vec![0.5; N], ..ConfigRecord::standard() };
    let server = RunningServer::spawn(sc).expect("server");
    let remote = RemoteCoordinator::connect(ClientConfig::new(server.endpoint())).expect("client");
    let (mut id, mut lat) = (0u64, Vec::new());
    g.bench_function("grpc_loopback_durable", |b| b.iter_custom(|iters| run(&remote, iters, &mut id, &mut lat)));
    g.finish();
    percentiles("in_process", &mut in_process);
    percentiles("grpc_loopback_durable", &mut lat);
    drop(remote);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

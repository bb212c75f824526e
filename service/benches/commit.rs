//! Commits per second and p50/p99 commit latency: the in-process
//! coordinator beside the durable gRPC service on loopback, with one client
//! (sequential commits, each on its own lease) and with 16 concurrent
//! clients. The service makes every answer durable first: one SQLite
//! transaction with `synchronous = FULL`.
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

const CLIENTS: usize = 16;

/// `CLIENTS` threads, one coordinator handle each, `iters` commits in all;
/// returns the wall time.
fn run_parallel<C: CoordinatorApi>(coords: &[C], iters: u64, next_id: &mut u64, lat: &mut Vec<Duration>) -> Duration {
    let per = iters.div_ceil(coords.len() as u64);
    let base = *next_id;
    *next_id += per * coords.len() as u64;
    let t = Instant::now();
    let lats: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let hs: Vec<_> = coords
            .iter()
            .enumerate()
            .map(|(w, c)| {
                s.spawn(move || {
                    let mut l = Vec::with_capacity(per as usize);
                    for k in 0..per {
                        let lease = c.checkout(w as u64).expect("checkout");
                        let hypergradient: Vec<f32> = lease.params.iter().map(|p| 1e-3 * p).collect();
                        let req = CommitRequest { commit_id: base + k, hypergradient, validation_loss: 0.5 };
                        let t = Instant::now();
                        black_box(c.commit(&lease, req).expect("commit"));
                        l.push(t.elapsed());
                    }
                    l
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).collect()
    });
    let wall = t.elapsed();
    lat.extend(lats.into_iter().flatten());
    // Scale to the requested count (each thread did `per`).
    wall.mul_f64(iters as f64 / (per * coords.len() as u64) as f64)
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
    let mut sequential = lat;

    // 16 clients at once: room for all of them (no backpressure, no staleness
    // rejection), so every commit is accepted.
    let wide = CoordinatorConfig {
        optimizer: OuterOptimizer::Sgd { lr: 0.01, momentum: 0.9 },
        dedup_capacity: 1024,
        max_in_flight: 64,
        max_staleness: 64,
        ..CoordinatorConfig::default()
    };
    let shared = std::sync::Arc::new(Coordinator::new(vec![0.5; N], wide).expect("coordinator"));
    let handles: Vec<std::sync::Arc<Coordinator>> = (0..CLIENTS).map(|_| std::sync::Arc::clone(&shared)).collect();
    let (mut id, mut lat) = (0u64, Vec::new());
    g.bench_function("in_process_16_threads", |b| {
        b.iter_custom(|iters| run_parallel(&handles, iters, &mut id, &mut lat))
    });
    let mut in_process_16 = lat;

    let dir16 = std::env::temp_dir().join(format!("chronos-bench16-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir16);
    let mut sc = ServerConfig::new(&dir16);
    sc.listen = "127.0.0.1:0".parse().expect("addr");
    sc.init =
        ConfigRecord { initial_params: vec![0.5; N], max_in_flight: 64, max_staleness: 64, ..ConfigRecord::standard() };
    let server16 = RunningServer::spawn(sc).expect("server");
    let clients: Vec<RemoteCoordinator> = (0..CLIENTS)
        .map(|_| RemoteCoordinator::connect(ClientConfig::new(server16.endpoint())).expect("client"))
        .collect();
    let (mut id, mut lat) = (0u64, Vec::new());
    g.bench_function("grpc_loopback_durable_16_clients", |b| {
        b.iter_custom(|iters| run_parallel(&clients, iters, &mut id, &mut lat))
    });
    g.finish();
    percentiles("in_process (1 thread)", &mut in_process);
    percentiles("grpc_loopback_durable (1 client)", &mut sequential);
    percentiles("in_process (16 threads; rate = per thread)", &mut in_process_16);
    percentiles("grpc_loopback_durable (16 clients; rate = per client)", &mut lat);
    drop(clients);
    drop(server16);
    drop(remote);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir16);
}

criterion_group!(benches, bench);
criterion_main!(benches);

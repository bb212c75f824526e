//! `chronos-sync simulate`: W ranks ([`CpuBackend`]; threads of this process
//! over [`LocalCollective`], or with `--collective mpi` one MPI process each)
//! run the same seeded workload twice, once with a dense sync every step and
//! once with significance-triggered sparse sync, and the command prints what
//! each cost and how far apart the results are. Under MPI rank 0 prints the
//! table; the other ranks print nothing unless they fail.

use super::CliResult;
use super::synthetic::{Quadratic, relative_l2};
use chronos_sync::collective::Collective;
use chronos_sync::{
    Backend, CollectiveError, CpuBackend, Error, LocalCollective, Selection, SparseSync, SyncConfig, WireDtype,
};
use std::thread;
use std::time::{Duration, Instant};

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Compare dense sync with significance-triggered sync on a synthetic workload",
    long_about = "Runs W ranks as threads of this process (LocalCollective + CPU backend) on a seeded \
                  synthetic workload (a noisy quadratic: updates decay as the parameters converge) twice: \
                  dense f32 sync on every step, and significance-triggered sparse sync with the default \
                  configuration. Prints steps synced, bytes on the wire, the ratio to dense, and the \
                  distance between the two runs' final parameters."
)]
pub struct Args {
    /// Ranks: threads of this process (default 4), or with `--collective mpi`
    /// the job's processes (default: the job's size; a different number is an error).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ranks: Option<u32>,
    /// How ranks exchange: `local` (threads of this process) or `mpi` (one MPI
    /// process per rank; launch with `mpirun -np W chronos-sync simulate --collective mpi`;
    /// needs the `mpi` feature).
    #[arg(long, value_enum, default_value_t = CollectiveKind::Local)]
    pub collective: CollectiveKind,
    /// Parameters (elements of the model vector).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub n: u64,
    /// Steps of each run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub steps: u64,
    /// Seed of the workload; both runs see the same data and noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Step size of the workload's gradient steps at step 1 (decays as 1/sqrt(t)).
    #[arg(long, default_value_t = 0.5, value_parser = positive_f32)]
    pub lr: f32,
    /// Amplitude of each rank's uniform gradient noise.
    #[arg(long, default_value_t = 0.01, value_parser = non_negative_f32)]
    pub noise: f32,
    /// Seconds a rank waits for its peers before the run fails.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
}

/// Which collective the ranks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectiveKind {
    /// Threads of this process over shared memory.
    Local,
    /// One MPI process per rank (feature `mpi`).
    Mpi,
}

/// What one run cost and produced.
struct RunStats {
    /// Steps on which the group synced.
    synced_steps: u64,
    /// Packed bytes sent, summed over ranks and steps.
    payload_bytes: u64,
    /// Vote and count-exchange bytes, summed over ranks and steps.
    control_bytes: u64,
    /// Final parameters (identical on every rank; checked).
    theta: Vec<f32>,
    wall: Duration,
}

/// What one rank saw.
struct RankOutcome {
    synced_steps: u64,
    payload_bytes: u64,
    control_bytes: u64,
    theta: Vec<f32>,
}

/// Runs `simulate`.
pub fn run(args: &Args) -> CliResult {
    match args.collective {
        CollectiveKind::Local => {
            let world = args.ranks.unwrap_or(4) as usize;
            let n = usize::try_from(args.n)?;
            check_memory(world, n)?;
            let timeout = Duration::from_secs(args.timeout_secs);
            let threads = CpuBackend::new().threads();
            let problem = Quadratic::new(n, args.seed, args.lr, args.noise);
            let header = format!("CPU backend, {threads} threads, ranks are threads");
            let (dense, sparse) = (dense_config()?, SyncConfig::default());
            print_header(args, world, n, &header);
            let d = run_mode(&problem, world, args.steps, &dense, timeout)?;
            let s = run_mode(&problem, world, args.steps, &sparse, timeout)?;
            print_table(args, &problem, &d, &s);
            Ok(())
        }
        CollectiveKind::Mpi => run_mpi(args),
    }
}

/// The dense baseline: f32, every entry, every step.
fn dense_config() -> Result<SyncConfig, Error> {
    SyncConfig::builder()
        .adaptive(false)
        .threshold(0.0)
        .max_accumulation_steps(1)
        .selection(Selection::Dense)
        .wire_dtype(WireDtype::F32)
        .build()
}

fn print_header(args: &Args, world: usize, n: usize, how: &str) {
    println!("chronos-sync simulate: {world} ranks x {n} parameters, {} steps, seed {} ({how})", args.steps, args.seed);
}

fn print_table(args: &Args, problem: &Quadratic, dense: &RunStats, sparse: &RunStats) {
    let wire = |s: &RunStats| s.payload_bytes + s.control_bytes;
    let rows = [("dense (f32, every step)", dense), ("significance-triggered (defaults)", sparse)];
    println!();
    println!(
        "{:<34} {:>12} {:>17} {:>14} {:>18} {:>10}",
        "run", "steps synced", "bytes on the wire", "ratio to dense", "dist. to optimum", "wall time"
    );
    for (name, s) in rows {
        println!(
            "{:<34} {:>12} {:>17} {:>14.4} {:>18.4e} {:>8.2} s",
            name,
            format!("{}/{}", s.synced_steps, args.steps),
            human_bytes(wire(s)),
            wire(s) as f64 / wire(dense).max(1) as f64,
            problem.progress(&s.theta),
            s.wall.as_secs_f64()
        );
    }
    println!();
    println!(
        "final parameter distance, triggered vs dense (relative L2): {:.4e}",
        relative_l2(&sparse.theta, &dense.theta)
    );
    println!(
        "bytes on the wire: packed buffers ({} dense, {} triggered) plus vote/count control traffic, \
         summed over ranks, each buffer counted once",
        human_bytes(dense.payload_bytes),
        human_bytes(sparse.payload_bytes)
    );
    println!("dist. to optimum: ||theta - opt|| / ||theta_0 - opt|| of the final parameters (1 = no progress)");
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(_args: &Args) -> CliResult {
    Err("--collective mpi needs a chronos-sync built with the `mpi` feature \
         (cargo build --release -p chronos-sync-cli --features mpi)"
        .into())
}

/// This process is one rank of an MPI job: run both configurations, gather
/// the counters over the job, check the replicas, and print on rank 0.
#[cfg(feature = "mpi")]
fn run_mpi(args: &Args) -> CliResult {
    use chronos_sync::MpiCollective;
    use chronos_sync::collective::mpi as cmpi;
    let expected = args.ranks.map(|r| r as usize);
    let universe = cmpi::init(expected)?;
    let world_comm = universe.world();
    let timeout = Duration::from_secs(args.timeout_secs);
    let n = usize::try_from(args.n)?;
    let problem = Quadratic::new(n, args.seed, args.lr, args.noise);
    let mut stats = Vec::new();
    let mut world = 0;
    for config in [dense_config()?, SyncConfig::default()] {
        let mut collective = MpiCollective::new(&world_comm, timeout)?;
        world = collective.world_size();
        let rank = collective.rank();
        if rank == 0 && stats.is_empty() {
            print_header(args, world, n, "CPU backend, 1 thread per rank, ranks are MPI processes");
        }
        let start = Instant::now();
        let outcome = run_rank(&problem, &mut collective, args.steps, config, Some(1));
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                // The collective may be broken with an operation pending:
                // report and end the whole job (see MpiCollective's docs).
                eprintln!("error: rank {rank}: {e}");
                cmpi::abort(1);
            }
        };
        let wall = start.elapsed();
        let mut gathered = Vec::new();
        let mut sum = |c: &mut MpiCollective, v: u64| -> Result<u64, Error> {
            c.all_gather_u64(v, &mut gathered)?;
            Ok(gathered.iter().sum())
        };
        let payload_bytes = sum(&mut collective, outcome.payload_bytes)?;
        let control_bytes = sum(&mut collective, outcome.control_bytes)?;
        let hash = outcome
            .theta
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(x.to_bits())).wrapping_mul(0x100_0000_01b3));
        collective.all_gather_u64(hash, &mut gathered)?;
        if let Some(r) = gathered.iter().position(|&h| h != gathered[0]) {
            return Err(format!("replica of rank {r} differs from rank 0 (a bug)").into());
        }
        stats.push(RunStats {
            synced_steps: outcome.synced_steps,
            payload_bytes,
            control_bytes,
            theta: outcome.theta,
            wall,
        });
        if rank != 0 {
            stats.pop();
        }
    }
    if stats.len() == 2 {
        let _ = world;
        print_table(args, &problem, &stats[0], &stats[1]);
    }
    Ok(())
}

/// Runs every rank of one configuration on its own thread.
fn run_mode(
    problem: &Quadratic,
    world: usize,
    steps: u64,
    config: &SyncConfig,
    timeout: Duration,
) -> Result<RunStats, Error> {
    let handles = LocalCollective::group(world, timeout)?;
    let start = Instant::now();
    let outcomes: Vec<Result<RankOutcome, Error>> = thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .map(|mut c| s.spawn(move || run_rank(problem, &mut c, steps, config.clone(), None)))
            .collect();
        joins
            .into_iter()
            .enumerate()
            .map(|(r, j)| {
                j.join()
                    .unwrap_or_else(|_| Err(CollectiveError::Broken { reason: format!("rank {r} panicked") }.into()))
            })
            .collect()
    });
    let wall = start.elapsed();
    let mut ranks = Vec::with_capacity(world);
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(o) => ranks.push(o),
            // Report the root cause: a peer's `Broken` only echoes it.
            Err(e) => {
                let echo = matches!(e, Error::Collective(CollectiveError::Broken { .. }));
                if first_error.is_none() || (!echo && first_error.as_ref().is_some_and(|(was_echo, _)| *was_echo)) {
                    first_error = Some((echo, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    if let Some(r) = ranks.iter().position(|o| !bits(&o.theta).eq(bits(&ranks[0].theta))) {
        return Err(
            CollectiveError::Broken { reason: format!("replica of rank {r} differs from rank 0 (a bug)") }.into()
        );
    }
    Ok(RunStats {
        synced_steps: ranks[0].synced_steps,
        payload_bytes: ranks.iter().map(|o| o.payload_bytes).sum(),
        control_bytes: ranks.iter().map(|o| o.control_bytes).sum(),
        theta: ranks.swap_remove(0).theta,
        wall,
    })
}

/// One rank's loop: compute the update from the current parameters, step.
/// `threads` fixes the backend's worker threads (default: the machine's).
fn run_rank<C: Collective>(
    problem: &Quadratic,
    collective: C,
    steps: u64,
    config: SyncConfig,
    threads: Option<usize>,
) -> Result<RankOutcome, Error> {
    let backend = match threads {
        Some(t) => CpuBackend::with_threads(t)?,
        None => CpuBackend::new(),
    };
    let n = problem.start().len();
    let rank = collective.rank();
    let mut theta = backend.alloc(n)?;
    backend.upload(problem.start(), &mut theta)?;
    let mut delta = backend.alloc(n)?;
    let mut host_theta = problem.start().to_vec();
    let mut host_delta = vec![0.0f32; n];
    let mut sync = SparseSync::new(backend, collective, n, config)?;
    let mut out = RankOutcome { synced_steps: 0, payload_bytes: 0, control_bytes: 0, theta: Vec::new() };
    for t in 1..=steps {
        problem.update(rank, t, &host_theta, &mut host_delta);
        sync.backend().upload(&host_delta, &mut delta)?;
        let report = sync.step(&delta, &mut theta)?;
        out.control_bytes += report.control_bytes;
        if report.synced {
            out.synced_steps += 1;
            out.payload_bytes += report.bytes_sent;
            // Parameters change only on a sync.
            sync.backend().download(&theta, &mut host_theta)?;
        }
    }
    out.theta = host_theta;
    Ok(out)
}

fn bits(v: &[f32]) -> impl Iterator<Item = u32> + '_ {
    v.iter().map(|x| x.to_bits())
}

/// Parses a finite f32 > 0.
fn positive_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be finite and > 0, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a finite f32 >= 0.
fn non_negative_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be finite and >= 0, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses runs that cannot fit in memory, with the estimate and the fix.
fn check_memory(world: usize, n: usize) -> CliResult {
    // Per rank: parameters, update, host copies and backend state (about 8
    // vectors of n f32), plus the gathered dense buffers of every rank.
    let per_rank = 8.0 * 4.0 * n as f64 + world as f64 * (4.0 + 1.0 / 8.0) * n as f64;
    let need = world as f64 * per_rank + 12.0 * n as f64;
    if let Some(avail) = available_memory() {
        if need > avail as f64 {
            return Err(format!(
                "--ranks {world} --n {n} needs about {} of memory, only {} is available: lower --ranks or --n",
                human_bytes(need as u64),
                human_bytes(avail)
            )
            .into());
        }
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo, when there is one.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes in decimal units with three significant digits.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.50 kB");
        assert_eq!(human_bytes(3_600_000_000), "3.60 GB");
    }

    #[test]
    fn a_small_simulation_syncs_less_than_dense_and_stays_close() {
        let problem = Quadratic::new(2_000, 7, 0.5, 0.01);
        let timeout = Duration::from_secs(30);
        let dense = SyncConfig::builder()
            .adaptive(false)
            .threshold(0.0)
            .max_accumulation_steps(1)
            .selection(Selection::Dense)
            .wire_dtype(WireDtype::F32)
            .build()
            .unwrap();
        let d = run_mode(&problem, 3, 200, &dense, timeout).unwrap();
        let s = run_mode(&problem, 3, 200, &SyncConfig::default(), timeout).unwrap();
        assert_eq!(d.synced_steps, 200);
        assert!(s.synced_steps < 150 && s.synced_steps >= 4, "{}", s.synced_steps);
        assert!(s.payload_bytes * 10 < d.payload_bytes);
        // Both runs made progress and ended close to each other.
        assert!(problem.progress(&d.theta) < 0.95, "{}", problem.progress(&d.theta));
        assert!(problem.progress(&s.theta) < 0.95, "{}", problem.progress(&s.theta));
        assert!(relative_l2(&s.theta, &d.theta) < 0.05, "{}", relative_l2(&s.theta, &d.theta));
    }
}

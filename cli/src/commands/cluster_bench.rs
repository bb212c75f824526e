//! `chronos-sync cluster-bench` (feature `mpi`): measured wall-clock of one
//! MPI job (launch with `mpirun -np W`, e.g. inside `scripts/cluster`) on
//! the synthetic quadratic of `simulate`, three ways in the same job:
//!
//! 1. **dense `MPI_Allreduce`** of every rank's f32 update every step (what a
//!    user would otherwise run), `theta += sum / W`;
//! 2. **seed**: the seed's configuration, significance-triggered `TopK` 1%,
//!    threshold 0.01 (adaptive warm-up), f32 values on the wire;
//! 3. **best**: the crate's best configuration for this workload (by default
//!    `TopKApprox` 1% with bf16 values, synced every step; see `--best-*`).
//!
//! Every mode starts from the same parameters and sees the same gradient
//! noise. Per mode, rank 0 reports the median and mean wall time per step
//! (compute + exchange; the loss evaluation is not timed), the time to reach
//! the target loss, the final loss, and bytes per rank per step: what the
//! engine sent (for dense, the ring all-reduce's `2 (W-1)/W * 4n`) and, when
//! `--measure-dev` names a network device (`lo` inside `scripts/cluster`),
//! the bytes that device really transmitted divided by W. The table is
//! printed as markdown; `--json` and `--svg` write the figures and a plot of
//! loss against wall-clock time.

use super::CliResult;
#[cfg(feature = "mpi")]
use super::synthetic::Quadratic;
#[cfg(feature = "mpi")]
use std::path::Path;
use std::path::PathBuf;

/// Arguments of `cluster-bench`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Measured wall-clock per step under MPI: dense MPI_Allreduce vs the seed's and the best configuration",
    long_about = "Run under mpirun (e.g. `scripts/cluster 1gbit -- mpirun -np 4 chronos-sync cluster-bench`). \
                  Runs dense MPI_Allreduce every step, the seed's configuration (TopK 1%, threshold 0.01) and \
                  the best configuration on the same seeded quadratic; rank 0 prints time per step, time to \
                  the target loss, bytes per rank and the final loss. Needs the `mpi` feature."
)]
pub struct Args {
    /// Parameters per rank.
    #[arg(long, default_value_t = 1 << 22, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub n: u64,
    /// Steps of each mode.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub steps: u64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Step size at step 1 (decays as 1/sqrt(t)).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f32,
    /// Amplitude of each rank's gradient noise.
    #[arg(long, default_value_t = 0.01)]
    pub noise: f32,
    /// Seconds a rank waits for its peers before the job fails.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// Fraction kept by the best configuration's `TopKApprox`.
    #[arg(long, default_value_t = 0.01)]
    pub best_ratio: f64,
    /// Use `Threshold { rel }` (keep `|acc_i| >= rel * rms(acc)`) instead of
    /// `TopKApprox` in the best configuration.
    #[arg(long)]
    pub best_rel: Option<f64>,
    /// Significance threshold of the best configuration.
    #[arg(long, default_value_t = 0.01)]
    pub best_threshold: f64,
    /// Longest run of steps without a sync in the best configuration (1:
    /// every step; on this workload skipped syncs cost more loss than they
    /// save time, see docs/cluster-results.md).
    #[arg(long, default_value_t = 1)]
    pub best_max_accumulation: u64,
    /// Target loss as a multiple of the dense run's final loss.
    #[arg(long, default_value_t = 1.01)]
    pub target_factor: f64,
    /// A network device whose transmitted bytes rank 0 reads before and
    /// after each mode (`lo` inside `scripts/cluster`, where every byte
    /// between ranks crosses it).
    #[arg(long)]
    pub measure_dev: Option<String>,
    /// A label for the run (e.g. the link speed), printed and stored.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a plot (loss against wall-clock seconds) as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Instead of the comparison: time 5 dense MPI_Allreduce of `--n` f32
    /// against the bytes a ring all-reduce moves over one shared link at
    /// `--rate`, print both, and fail when the measured time is under half
    /// the predicted one (the link is not shaped). Used by `scripts/cluster`.
    #[arg(long)]
    pub allreduce_check: bool,
    /// The link's rate for `--allreduce-check`, as tc spells it (`1gbit`, `500mbit`).
    #[arg(long)]
    pub rate: Option<String>,
}

/// Bits per second of a tc rate such as `1gbit`, `10gbit` or `500mbit`.
pub fn parse_rate(rate: &str) -> Option<f64> {
    let digits = rate.strip_suffix("bit")?;
    let (num, mult) = match digits.chars().last()? {
        'k' => (&digits[..digits.len() - 1], 1e3),
        'm' => (&digits[..digits.len() - 1], 1e6),
        'g' => (&digits[..digits.len() - 1], 1e9),
        _ => (digits, 1.0),
    };
    num.parse::<f64>().ok().filter(|v| *v > 0.0).map(|v| v * mult)
}

/// One mode's measured figures.
#[cfg(feature = "mpi")]
#[derive(Debug, Clone, serde::Serialize)]
struct ModeResult {
    name: String,
    steps: u64,
    synced_steps: u64,
    median_step_ms: f64,
    mean_step_ms: f64,
    total_s: f64,
    time_to_target_s: Option<f64>,
    final_loss: f64,
    bytes_per_rank_per_step: f64,
    measured_dev_bytes_per_rank_per_step: Option<f64>,
    /// `(seconds since the mode's start, loss)` after every step that changed the parameters.
    curve: Vec<(f64, f64)>,
}

#[cfg(feature = "mpi")]
#[derive(Debug, serde::Serialize)]
struct Report {
    label: String,
    world: usize,
    n: usize,
    steps: u64,
    target_loss: f64,
    initial_loss: f64,
    modes: Vec<ModeResult>,
}

/// Runs `cluster-bench`.
#[cfg(not(feature = "mpi"))]
pub fn run(_args: &Args) -> CliResult {
    Err("cluster-bench needs a chronos-sync built with the `mpi` feature \
         (cargo build --release -p chronos-sync-cli --features mpi)"
        .into())
}

/// Bytes transmitted by network device `dev` of this process's network
/// namespace (`/proc/net/dev` is per namespace; `/sys/class/net` shows the
/// namespace sysfs was mounted in, which `unshare -n` does not change).
#[cfg(feature = "mpi")]
fn dev_tx_bytes(dev: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = text.lines().find(|l| l.trim_start().split(':').next() == Some(dev))?;
    // After "dev:": 8 receive fields, then transmit bytes.
    line.split_once(':')?.1.split_whitespace().nth(8)?.parse().ok()
}

/// Runs `cluster-bench`.
#[cfg(feature = "mpi")]
pub fn run(args: &Args) -> CliResult {
    use chronos_sync::collective::mpi as cmpi;
    use chronos_sync::{Selection, SyncConfig, WireDtype};
    use mpi::collective::CommunicatorCollectives;
    use mpi::topology::Communicator;

    let universe = cmpi::init(None)?;
    let comm = universe.world();
    let rank = usize::try_from(comm.rank())?;
    let world = usize::try_from(comm.size())?;
    let n = usize::try_from(args.n)?;
    if args.allreduce_check {
        return allreduce_check(&comm, n, args);
    }
    let problem = Quadratic::new(n, args.seed, args.lr, args.noise);
    let timeout = std::time::Duration::from_secs(args.timeout_secs);
    if rank == 0 {
        println!(
            "chronos-sync cluster-bench {}: {world} MPI processes x {n} parameters, {} steps per mode",
            args.label, args.steps
        );
    }
    let seed = SyncConfig::builder()
        .threshold(0.01)
        .selection(Selection::TopK { ratio: 0.01 })
        .wire_dtype(WireDtype::F32)
        .build()?;
    let best = SyncConfig::builder()
        .threshold(args.best_threshold)
        .max_accumulation_steps(args.best_max_accumulation)
        .selection(match args.best_rel {
            Some(rel) => Selection::Threshold { rel },
            None => Selection::TopKApprox { ratio: args.best_ratio, slack: 0.25 },
        })
        .wire_dtype(WireDtype::Bf16)
        .build()?;
    let modes: Vec<(String, Option<SyncConfig>)> = vec![
        ("dense MPI_Allreduce (f32, every step)".into(), None),
        ("seed: TopK 1%, threshold 0.01, f32".into(), Some(seed)),
        (
            if let Some(rel) = args.best_rel {
                format!("best: Threshold {rel} x rms, at most {} steps apart, bf16", args.best_max_accumulation)
            } else if args.best_max_accumulation == 1 {
                format!("best: TopKApprox {}%, every step, bf16", args.best_ratio * 100.0)
            } else {
                format!(
                    "best: TopKApprox {}%, threshold {}, at most {} steps apart, bf16",
                    args.best_ratio * 100.0,
                    args.best_threshold,
                    args.best_max_accumulation
                )
            },
            Some(best),
        ),
    ];
    let mut results = Vec::new();
    for (name, config) in modes {
        comm.barrier();
        let dev_before = args.measure_dev.as_deref().and_then(dev_tx_bytes);
        let r = match config {
            None => run_dense(&comm, &problem, args.steps)?,
            Some(config) => match run_sparse(&comm, &problem, args.steps, config, timeout) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: rank {rank}: {e}");
                    cmpi::abort(1);
                }
            },
        };
        comm.barrier();
        let dev_after = args.measure_dev.as_deref().and_then(dev_tx_bytes);
        let measured = match (dev_before, dev_after) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / world as f64 / args.steps as f64),
            _ => None,
        };
        results.push(ModeResult { name, measured_dev_bytes_per_rank_per_step: measured, ..r });
    }
    if rank != 0 {
        return Ok(());
    }
    let target = results[0].final_loss * args.target_factor;
    for r in &mut results {
        r.time_to_target_s = r.curve.iter().find(|&&(_, l)| l <= target).map(|&(t, _)| t);
    }
    let report = Report {
        label: args.label.clone(),
        world,
        n,
        steps: args.steps,
        target_loss: target,
        initial_loss: problem.loss(problem.start()),
        modes: results,
    };
    print_markdown(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.svg {
        write_svg(&report, path)?;
    }
    Ok(())
}

/// See [`Args::allreduce_check`].
#[cfg(feature = "mpi")]
fn allreduce_check(comm: &mpi::topology::SimpleCommunicator, n: usize, args: &Args) -> CliResult {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::topology::Communicator;
    use std::time::Instant;
    let rate = args.rate.as_deref().ok_or("--allreduce-check needs --rate (e.g. 1gbit)")?;
    let bits_per_s = parse_rate(rate).ok_or_else(|| format!("--rate {rate}: expected e.g. 1gbit, 500mbit"))?;
    let world = usize::try_from(comm.size())?;
    let send: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut recv = vec![0.0f32; n];
    comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum()); // warm-up: connections
    comm.barrier();
    let dev_before = args.measure_dev.as_deref().and_then(dev_tx_bytes);
    let reps = 5;
    let mut times = Vec::new();
    for _ in 0..reps {
        comm.barrier();
        let start = Instant::now();
        comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
        comm.barrier();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let dev_after = args.measure_dev.as_deref().and_then(dev_tx_bytes);
    if comm.rank() != 0 {
        return Ok(());
    }
    // A ring all-reduce: every rank sends 2 (W-1)/W of the vector; all of it
    // crosses the one shared link.
    let bytes = 2.0 * (world as f64 - 1.0) * 4.0 * n as f64;
    let predicted_ms = bytes * 8.0 / bits_per_s * 1e3;
    let measured_ms = median_ms(times);
    print!(
        "shaping check: dense MPI_Allreduce of {n} f32 over {world} ranks: measured {measured_ms:.1} ms (median of \
         {reps}); a ring all-reduce moves {} over the shared link, {predicted_ms:.1} ms at {rate}",
        human(bytes)
    );
    if let (Some(a), Some(b)) = (dev_before, dev_after) {
        print!("; the link carried {} per all-reduce", human(b.saturating_sub(a) as f64 / reps as f64));
    }
    println!(" (measured / predicted = {:.2})", measured_ms / predicted_ms);
    if measured_ms < 0.5 * predicted_ms {
        return Err(format!(
            "the link is not shaped to {rate}: the all-reduce took {measured_ms:.1} ms, under half of {predicted_ms:.1} ms"
        )
        .into());
    }
    Ok(())
}

#[cfg(feature = "mpi")]
fn print_markdown(r: &Report) {
    let dense = &r.modes[0];
    println!();
    println!(
        "| {} | time/step median | time/step mean | speed-up (mean) | time to target | steps synced | bytes/rank/step (engine) | bytes/rank/step (measured on the link) | final loss | vs dense |",
        if r.label.is_empty() { "mode" } else { &r.label }
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &r.modes {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1}x | {} | {}/{} | {} | {} | {:.6e} | {:+.3}% |",
            m.name,
            m.median_step_ms,
            m.mean_step_ms,
            dense.mean_step_ms / m.mean_step_ms,
            m.time_to_target_s.map_or_else(|| "not reached".to_string(), |t| format!("{t:.2} s")),
            m.synced_steps,
            m.steps,
            human(m.bytes_per_rank_per_step),
            m.measured_dev_bytes_per_rank_per_step.map_or_else(|| "-".to_string(), human),
            m.final_loss,
            100.0 * (m.final_loss / dense.final_loss - 1.0),
        );
    }
    println!();
    println!(
        "target loss {:.6e} (dense final x {:.3}); initial loss {:.6e}; W = {}, n = {}",
        r.target_loss,
        r.target_loss / dense.final_loss,
        r.initial_loss,
        r.world,
        r.n
    );
}

#[cfg(feature = "mpi")]
fn human(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(feature = "mpi")]
fn median_ms(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { 0.5 * (v[m - 1] + v[m]) }
}

/// Dense `MPI_Allreduce` (sum) of every rank's update every step.
#[cfg(feature = "mpi")]
fn run_dense(
    comm: &mpi::topology::SimpleCommunicator,
    problem: &Quadratic,
    steps: u64,
) -> Result<ModeResult, Box<dyn std::error::Error + Send + Sync>> {
    use mpi::collective::{CommunicatorCollectives, SystemOperation};
    use mpi::topology::Communicator;
    use std::time::Instant;
    let rank = usize::try_from(comm.rank())?;
    let world = usize::try_from(comm.size())?;
    let n = problem.start().len();
    let mut theta = problem.start().to_vec();
    let mut delta = vec![0.0f32; n];
    let mut sum = vec![0.0f32; n];
    let weight = 1.0 / world as f32;
    let (mut times, mut curve) = (Vec::new(), Vec::new());
    let mut elapsed = 0.0;
    for t in 1..=steps {
        let start = Instant::now();
        problem.update(rank, t, &theta, &mut delta);
        comm.all_reduce_into(&delta[..], &mut sum[..], SystemOperation::sum());
        theta.iter_mut().zip(&sum).for_each(|(x, s)| *x += weight * s);
        let dt = start.elapsed().as_secs_f64();
        times.push(dt * 1e3);
        elapsed += dt;
        if rank == 0 {
            curve.push((elapsed, problem.loss(&theta)));
        }
    }
    let bytes = 2.0 * (world as f64 - 1.0) / world as f64 * 4.0 * n as f64;
    Ok(ModeResult {
        name: String::new(),
        steps,
        synced_steps: steps,
        mean_step_ms: elapsed * 1e3 / steps as f64,
        median_step_ms: median_ms(times),
        total_s: elapsed,
        time_to_target_s: None,
        final_loss: problem.loss(&theta),
        bytes_per_rank_per_step: bytes,
        measured_dev_bytes_per_rank_per_step: None,
        curve,
    })
}

/// Significance-triggered sync over [`chronos_sync::MpiCollective`].
#[cfg(feature = "mpi")]
fn run_sparse(
    comm: &mpi::topology::SimpleCommunicator,
    problem: &Quadratic,
    steps: u64,
    config: chronos_sync::SyncConfig,
    timeout: std::time::Duration,
) -> Result<ModeResult, chronos_sync::Error> {
    use chronos_sync::{Collective, CpuBackend, MpiCollective, SparseSync};
    use std::time::Instant;
    let mut collective = MpiCollective::new(comm, timeout)?;
    let rank = collective.rank();
    let n = problem.start().len();
    let backend = CpuBackend::with_threads(1)?;
    // The CPU backend steps the caller's own slices: no upload of the
    // update, no download of the parameters (what a framework does).
    let mut host_theta = problem.start().to_vec();
    let mut host_delta = vec![0.0f32; n];
    let mut sync = SparseSync::new(backend, &mut collective, n, config)?;
    let (mut times, mut curve) = (Vec::new(), Vec::new());
    let (mut elapsed, mut synced, mut bytes) = (0.0, 0u64, 0u64);
    for t in 1..=steps {
        let start = Instant::now();
        problem.update(rank, t, &host_theta, &mut host_delta);
        let report = sync.step(&host_delta, &mut host_theta)?;
        let dt = start.elapsed().as_secs_f64();
        times.push(dt * 1e3);
        elapsed += dt;
        bytes += report.bytes_sent + report.control_bytes;
        if report.synced {
            synced += 1;
            if rank == 0 {
                curve.push((elapsed, problem.loss(&host_theta)));
            }
        }
    }
    drop(sync);
    // Every rank's bytes, averaged.
    let mut all = Vec::new();
    collective.all_gather_u64(bytes, &mut all)?;
    let mean_bytes = all.iter().sum::<u64>() as f64 / all.len().max(1) as f64;
    Ok(ModeResult {
        name: String::new(),
        steps,
        synced_steps: synced,
        mean_step_ms: elapsed * 1e3 / steps as f64,
        median_step_ms: median_ms(times),
        total_s: elapsed,
        time_to_target_s: None,
        final_loss: problem.loss(&host_theta),
        bytes_per_rank_per_step: mean_bytes / steps as f64,
        measured_dev_bytes_per_rank_per_step: None,
        curve,
    })
}

/// Loss against wall-clock seconds, one line per mode (log-scale loss).
#[cfg(feature = "mpi")]
fn write_svg(r: &Report, path: &Path) -> std::io::Result<()> {
    use plotters::prelude::*;
    let other = |e: String| std::io::Error::other(e);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| other(e.to_string()))?;
    let t_max = r.modes.iter().map(|m| m.total_s).fold(0.0, f64::max).max(1e-3);
    let losses = r.modes.iter().flat_map(|m| m.curve.iter().map(|&(_, l)| l)).chain([r.initial_loss]);
    let lo = losses.clone().fold(f64::INFINITY, f64::min).max(1e-300);
    let hi = losses.fold(0.0, f64::max).max(lo * 1.01);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("cluster-bench {}: loss vs wall-clock (W = {}, n = {})", r.label, r.world, r.n),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((t_max / 1e3..t_max * 1.05).log_scale(), (lo * 0.95..hi * 1.05).log_scale())
        .map_err(|e| other(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("wall-clock seconds (log scale)")
        .y_desc("loss (log scale)")
        .draw()
        .map_err(|e| other(e.to_string()))?;
    let palette = [RED, BLUE, GREEN];
    for (i, m) in r.modes.iter().enumerate() {
        let color = palette[i % palette.len()];
        chart
            .draw_series(LineSeries::new(m.curve.iter().copied(), color.stroke_width(2)))
            .map_err(|e| other(e.to_string()))?
            .label(format!("{} ({:.1} ms/step)", m.name, m.mean_step_ms))
            .legend(move |(x, y0)| PathElement::new(vec![(x, y0), (x + 18, y0)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| other(e.to_string()))?;
    root.present().map_err(|e| other(e.to_string()))
}

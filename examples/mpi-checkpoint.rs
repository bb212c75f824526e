//! A training job over [`MpiCollective`] that checkpoints periodically and
//! resumes from its last complete checkpoint: the subject of
//! `scripts/mpi-faults` (kill one rank mid-run, restart, compare).
//!
//! ```sh
//! mpirun -np 4 target/release/examples/mpi-checkpoint --dir /tmp/ck --steps 200 --every 10
//! mpirun -np 4 target/release/examples/mpi-checkpoint --dir /tmp/ck --steps 200 --every 10 --resume
//! ```
//!
//! Every `--every` steps each rank writes `DIR/rank<r>-step<t>.ckpt` (the
//! engine's checkpoint plus its parameters; written to a temporary file and
//! renamed, so a file is either complete or absent) and keeps its last two.
//! `--resume` restarts from the largest step for which every rank's file
//! exists. On any error a rank prints `rank <r>: typed error: <e>` and ends
//! the job with `MPI_Abort` (a broken MPI collective cannot be recovered in
//! place; see the `MpiCollective` docs). At the end each rank writes its
//! final parameters to `DIR/final-rank<r>.bin` (raw little-endian f32).

use chronos_sync::collective::mpi as cmpi;
use chronos_sync::{Backend, Collective, CpuBackend, MpiCollective, SparseSync, SyncConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

const N: usize = 100_000;

struct Opts {
    dir: PathBuf,
    steps: u64,
    every: u64,
    resume: bool,
    sleep: Duration,
    timeout: Duration,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        dir: PathBuf::from("mpi-checkpoints"),
        steps: 200,
        every: 10,
        resume: false,
        sleep: Duration::from_millis(0),
        timeout: Duration::from_secs(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(val()?),
            "--steps" => o.steps = val()?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--every" => o.every = val()?.parse().map_err(|e| format!("--every: {e}"))?,
            "--sleep-ms" => o.sleep = Duration::from_millis(val()?.parse().map_err(|e| format!("--sleep-ms: {e}"))?),
            "--timeout-secs" => {
                o.timeout = Duration::from_secs(val()?.parse().map_err(|e| format!("--timeout-secs: {e}"))?)
            }
            "--resume" => o.resume = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if o.every == 0 {
        return Err("--every must be > 0".into());
    }
    Ok(o)
}

/// Rank `rank`'s update at step `t`: seeded, decaying, rank-specific.
fn update(rank: usize, t: u64, theta: &[f32], out: &mut [f32]) {
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (rank as u64) << 32 ^ t;
    let lr = 0.3 / (t as f32).sqrt();
    for (i, (d, &x)) in out.iter_mut().zip(theta).enumerate() {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let noise = ((z >> 40) as f32) * (1.0 / (1u32 << 23) as f32) - 1.0;
        let target = ((i % 97) as f32) * 0.01;
        *d = -lr * ((x - target) + 0.05 * noise);
    }
}

fn ckpt_path(dir: &Path, rank: usize, t: u64) -> PathBuf {
    dir.join(format!("rank{rank}-step{t}.ckpt"))
}

/// The largest step with a checkpoint from every rank (0: none).
fn last_complete(dir: &Path, world: usize) -> u64 {
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("rank0-step")?.strip_suffix(".ckpt")?.parse().ok()
        })
        .collect();
    steps.sort_unstable();
    steps.into_iter().rev().find(|&t| (0..world).all(|r| ckpt_path(dir, r, t).exists())).unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn run(o: &Opts, world_comm: &mpi::topology::SimpleCommunicator) -> chronos_sync::Result<()> {
    let c = MpiCollective::new(world_comm, o.timeout)?;
    let (rank, world) = (c.rank(), c.world_size());
    let backend = CpuBackend::with_threads(1)?;
    let mut theta = backend.alloc(N)?;
    let mut delta = backend.alloc(N)?;
    let mut host_theta = vec![0.0f32; N];
    let mut host_delta = vec![0.0f32; N];
    let mut sync = SparseSync::new(backend, c, N, SyncConfig::default())?;
    let mut first = 1;
    if o.resume {
        let t = last_complete(&o.dir, world);
        if t > 0 {
            let bytes = std::fs::read(ckpt_path(&o.dir, rank, t)).map_err(|e| io_err("read checkpoint", e))?;
            let split = bytes.len().checked_sub(4 * N).ok_or(chronos_sync::Error::InvalidConfig {
                field: "checkpoint file",
                reason: "shorter than the parameters".into(),
            })?;
            sync.as_group_mut().restore(&bytes[..split])?;
            host_theta = bytes[split..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            first = t + 1;
            if rank == 0 {
                eprintln!("resuming from the checkpoint of step {t}");
            }
        }
    }
    sync.backend().upload(&host_theta, &mut theta)?;
    for t in first..=o.steps {
        update(rank, t, &host_theta, &mut host_delta);
        sync.backend().upload(&host_delta, &mut delta)?;
        let report = sync.step(&delta, &mut theta)?;
        if report.synced {
            sync.backend().download(&theta, &mut host_theta)?;
        }
        if t % o.every == 0 {
            let mut bytes = sync.as_group().checkpoint()?;
            bytes.extend(host_theta.iter().flat_map(|x| x.to_le_bytes()));
            write_atomic(&ckpt_path(&o.dir, rank, t), &bytes).map_err(|e| io_err("write checkpoint", e))?;
            if t > 2 * o.every {
                let _ = std::fs::remove_file(ckpt_path(&o.dir, rank, t - 2 * o.every));
            }
        }
        if !o.sleep.is_zero() {
            std::thread::sleep(o.sleep);
        }
    }
    let bytes: Vec<u8> = host_theta.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_atomic(&o.dir.join(format!("final-rank{rank}.bin")), &bytes).map_err(|e| io_err("write final", e))?;
    Ok(())
}

fn io_err(what: &'static str, e: std::io::Error) -> chronos_sync::Error {
    chronos_sync::Error::InvalidConfig { field: what, reason: e.to_string() }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let universe = match cmpi::init(None) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let _ = std::fs::create_dir_all(&o.dir);
    if let Err(e) = run(&o, &universe.world()) {
        let rank = mpi::topology::Communicator::rank(&universe.world());
        eprintln!("rank {rank}: typed error: {e}");
        cmpi::abort(3);
    }
}

//! `chronos-sync hyperclean --processes W`: each configuration as W MPI
//! processes with the coordinator service in a process of its own.
//!
//! Per configuration the launcher (this process) starts `chronos-sync
//! coordinator serve` on a free loopback port in a fresh data directory,
//! initialized with exactly `system::coordinator_config(..)` and
//! `system::initial_outer_params(..)` (an `--init-record` file), and a fresh
//! shared secret in [`launch::SECRET_ENV`]; then `mpirun -np W chronos-sync
//! hyperclean-rank --job DIR -- <the same hyperclean flags>`. Every rank
//! rebuilds the same problem from the flags, connects a
//! [`RemoteCoordinator`], and runs `system::run_rank` over an
//! [`MpiCollective`]; rank 0 gathers every rank's `RankOutput` over the
//! collective's byte all-gather and exports the coordinator's snapshot. The
//! launcher restores that snapshot into an in-process `Coordinator` and builds
//! the run's metrics with `system::summarize`, so the report is the one the
//! in-process mode prints. Any child dying fails the run with an error that
//! names it; both children are stopped on every exit path.
//!
//! [`RemoteCoordinator`]: chronos_sync_service::RemoteCoordinator
//! [`MpiCollective`]: chronos_sync::collective::MpiCollective
//! [`launch::SECRET_ENV`]: crate::workload::launch::SECRET_ENV

use crate::workload::sweep::SweepPoint;

/// Which configuration a rank job runs (the launcher writes it into the job
/// directory; every rank reads it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VariantChoice {
    /// `hyperclean::main_variants(args)[index]`.
    Main(usize),
    /// A point of the sweep's grid.
    Sweep(SweepPoint),
}

/// Arguments of the hidden `hyperclean-rank` subcommand (started by the
/// launcher under mpirun, never by hand).
#[derive(Debug, clap::Args)]
#[command(hide = true, about = "One rank of `hyperclean --processes W` (started by the launcher under mpirun)")]
pub struct RankArgs {
    /// The job directory the launcher prepared (`job.json`; results go there).
    #[arg(long)]
    pub job: std::path::PathBuf,
    /// The launcher's `hyperclean` flags, after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub hyperclean: Vec<String>,
}

#[cfg(all(feature = "mpi", feature = "service"))]
pub use imp::{run_rank_mode, run_variant};

#[cfg(all(feature = "mpi", feature = "service"))]
mod imp {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use chronos_sync::collective::{Collective, Gathered, MpiCollective, mpi as cmpi};
    use chronos_sync::coordinator::{CommitOutcome, CommitRequest, Coordinator, CoordinatorApi, CurrentState, Lease};
    use chronos_sync_service::{ClientConfig, ConfigRecord, RemoteCoordinator};
    use prost::Message;

    use super::{RankArgs, VariantChoice};
    use crate::commands::CliResult;
    use crate::commands::hyperclean::{self, Args};
    use crate::workload::launch::{self, RankJob, SECRET_ENV, ServiceChild};
    use crate::workload::problem::Problem;
    use crate::workload::system::{self, OuterStore, RankOutput, RunMetrics, SystemConfig, Variant};

    /// What rank 0 hands the launcher: every rank's output and the measured
    /// wall-clock (the snapshot goes next to it as raw bytes).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Gather {
        wall_s: f64,
        outputs: Vec<RankOutput>,
    }

    /// What the launcher tells the ranks.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Job {
        choice: VariantChoice,
        endpoint: String,
        /// The data seed (what `--repeat` changes between comparisons; the
        /// passed-through flags carry the first one).
        seed: u64,
    }

    const JOB_FILE: &str = "job.json";
    const GATHER_FILE: &str = "outputs.json";
    const SNAPSHOT_FILE: &str = "snapshot.bin";

    /// How long the launcher lets one rank job run: every blocking call of a
    /// rank is bounded by `--timeout-secs`, so a job that overruns this many
    /// of them is stuck in a way the ranks do not see.
    const JOB_LIMIT_TIMEOUTS: u32 = 60;

    fn variant_of(args: &Args, choice: &VariantChoice) -> Result<Variant, String> {
        match choice {
            VariantChoice::Main(i) => hyperclean::main_variants(args)
                .into_iter()
                .nth(*i)
                .ok_or_else(|| format!("there is no configuration {i}")),
            VariantChoice::Sweep(p) => Ok(p.variant()),
        }
    }

    /// The `hyperclean` flags after the subcommand name of this process's
    /// command line (what the ranks parse again), without the sweep's own
    /// switches.
    fn passthrough_flags() -> Vec<String> {
        std::env::args()
            .skip(2)
            .filter(|a| !crate::commands::hyperclean_sweep::SWEEP_ONLY_SWITCHES.contains(&a.as_str()))
            .collect()
    }

    /// Runs `variant` as `cfg.workers` MPI processes and a coordinator
    /// service; returns the metrics the in-process mode would report.
    pub fn run_variant(
        args: &Args,
        problem: &Problem,
        cfg: &SystemConfig,
        variant: &Variant,
        choice: VariantChoice,
    ) -> Result<RunMetrics, Box<dyn std::error::Error + Send + Sync>> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let dir = launch::fresh_dir("hyperclean")?;
        let result = run_in(&exe, &dir, args, problem, cfg, variant, choice);
        match &result {
            Ok(_) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(_) => eprintln!("hyperclean: the failed run's files are in {}", dir.display()),
        }
        result
    }

    fn run_in(
        exe: &Path,
        dir: &Path,
        args: &Args,
        problem: &Problem,
        cfg: &SystemConfig,
        variant: &Variant,
        choice: VariantChoice,
    ) -> Result<RunMetrics, Box<dyn std::error::Error + Send + Sync>> {
        let config = system::coordinator_config(problem, cfg, variant)?;
        let record =
            ConfigRecord::from_coordinator_config(&config, system::initial_outer_params(problem, cfg, variant))?;
        let record_file = dir.join("init-record");
        std::fs::write(&record_file, record.encode_to_vec())?;
        let secret = launch::fresh_secret()?;
        let mut service = ServiceChild::start(exe, &dir.join("data"), &record_file, &secret, Duration::from_secs(60))?;
        let job = Job { choice, endpoint: service.endpoint().to_owned(), seed: args.seed };
        std::fs::write(dir.join(JOB_FILE), serde_json::to_vec(&job)?)?;
        let mut rank_args: Vec<String> =
            vec!["hyperclean-rank".into(), "--job".into(), dir.display().to_string(), "--".into()];
        rank_args.extend(passthrough_flags());
        let ranks = RankJob::start(cfg.workers, exe, &rank_args, &secret, &dir.join("ranks.log"))?;
        ranks.wait(&mut service, cfg.timeout * JOB_LIMIT_TIMEOUTS)?;
        drop(service);
        let gather: Gather = serde_json::from_slice(&std::fs::read(dir.join(GATHER_FILE))?)?;
        if gather.outputs.len() != cfg.workers || gather.outputs.iter().enumerate().any(|(r, o)| o.rank != r) {
            return Err(format!("rank 0 gathered {} outputs, not one per rank in order", gather.outputs.len()).into());
        }
        let snapshot = std::fs::read(dir.join(SNAPSHOT_FILE))?;
        let coordinator = Coordinator::restore(&snapshot, config)?;
        Ok(system::summarize(problem, variant, &gather.outputs, &coordinator, gather.wall_s))
    }

    /// The coordinator as the ranks see it: a client for every call, and a
    /// second one whose checkout gives up at the first backpressure answer
    /// (`OuterStore::try_checkout`).
    struct RemoteStore {
        main: RemoteCoordinator,
        quick: RemoteCoordinator,
    }

    impl RemoteStore {
        fn connect(endpoint: &str, secret: String, timeout: Duration) -> chronos_sync::Result<Self> {
            let mut c = ClientConfig::new(endpoint);
            c.secret = Some(secret);
            c.rpc_timeout = timeout;
            c.connect_timeout = timeout.min(Duration::from_secs(5));
            c.retry_budget = timeout;
            c.checkout_timeout = timeout;
            let mut q = c.clone();
            q.checkout_timeout = Duration::from_millis(1);
            Ok(RemoteStore { main: RemoteCoordinator::connect(c)?, quick: RemoteCoordinator::connect(q)? })
        }
    }

    impl CoordinatorApi for RemoteStore {
        fn checkout(&self, worker: u64) -> chronos_sync::Result<Lease> {
            self.main.checkout(worker)
        }
        fn heartbeat(&self, lease: &Lease) -> chronos_sync::Result<()> {
            self.main.heartbeat(lease)
        }
        fn commit(&self, lease: &Lease, request: CommitRequest) -> chronos_sync::Result<CommitOutcome> {
            self.main.commit(lease, request)
        }
        fn release(&self, lease: &Lease) -> chronos_sync::Result<()> {
            self.main.release(lease)
        }
        fn wait_for_version(&self, after: u64, timeout: Duration) -> chronos_sync::Result<u64> {
            self.main.wait_for_version(after, timeout)
        }
        fn current_state(&self) -> chronos_sync::Result<CurrentState> {
            self.main.current_state()
        }
        fn export_snapshot(&self) -> chronos_sync::Result<Vec<u8>> {
            self.main.snapshot()
        }
    }

    impl OuterStore for RemoteStore {
        fn try_checkout(&self, worker: u64) -> chronos_sync::Result<Lease> {
            self.quick.checkout(worker)
        }
    }

    #[derive(clap::Parser)]
    struct HypercleanCli {
        #[command(flatten)]
        args: Args,
    }

    /// One rank of the job (`hyperclean-rank`): any error ends the whole job
    /// (`MPI_Abort`) after printing it with the rank's number.
    pub fn run_rank_mode(rank_args: &RankArgs) -> CliResult {
        let universe = cmpi::init(None)?;
        let world = universe.world();
        let rank = usize::try_from(mpi::topology::Communicator::rank(&world))?;
        match rank_body(rank_args, &world, rank) {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("error: rank {rank}: {e}");
                cmpi::abort(1);
            }
        }
    }

    fn rank_body(
        rank_args: &RankArgs,
        world: &mpi::topology::SimpleCommunicator,
        rank: usize,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        use clap::Parser;
        let argv = std::iter::once("hyperclean".to_owned()).chain(rank_args.hyperclean.iter().cloned());
        let mut args = HypercleanCli::try_parse_from(argv)?.args;
        let job: Job = serde_json::from_slice(&std::fs::read(rank_args.job.join(JOB_FILE))?)?;
        args.seed = job.seed;
        let cfg = hyperclean::system_config(&args);
        let variant = variant_of(&args, &job.choice)?;
        let size = usize::try_from(mpi::topology::Communicator::size(world))?;
        if size != cfg.workers {
            return Err(format!("the job has {size} processes but the flags ask for {} workers", cfg.workers).into());
        }
        let problem = Arc::new(Problem::digits(&hyperclean::problem_spec(&args))?);
        let secret = std::env::var(SECRET_ENV).map_err(|_| format!("{SECRET_ENV} is not set"))?;
        let store = RemoteStore::connect(&job.endpoint, secret, cfg.timeout)?;
        let mut collective = MpiCollective::new(world, cfg.timeout)?;
        // A common start: every rank leaves this barrier at (nearly) the same time.
        collective.all_reduce_max(&mut [0u32])?;
        let start = Instant::now();
        let output = system::run_rank(&problem, &cfg, &variant, rank, &mut collective, &store, start, &|| {})?;
        let wall_s = start.elapsed().as_secs_f64();
        let bytes = serde_json::to_vec(&output)?;
        let mut lens = Vec::new();
        collective.all_gather_u64(bytes.len() as u64, &mut lens)?;
        let mut gathered = Gathered::new();
        collective.all_gather_bytes(&bytes, &lens, &mut gathered)?;
        if rank == 0 {
            let outputs = (0..size)
                .map(|r| serde_json::from_slice::<RankOutput>(gathered.rank_bytes(r)))
                .collect::<Result<Vec<_>, _>>()?;
            let snapshot = store.export_snapshot()?;
            write_atomically(&rank_args.job.join(SNAPSHOT_FILE), &snapshot)?;
            write_atomically(&rank_args.job.join(GATHER_FILE), &serde_json::to_vec(&Gather { wall_s, outputs })?)?;
        }
        // Nobody leaves (and MPI_Finalize) before rank 0 has written.
        collective.all_reduce_max(&mut [0u32])?;
        Ok(())
    }

    fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp: PathBuf = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(not(all(feature = "mpi", feature = "service")))]
mod imp_missing {
    use super::{RankArgs, VariantChoice};
    use crate::commands::CliResult;
    use crate::commands::hyperclean::Args;
    use crate::workload::problem::Problem;
    use crate::workload::system::{RunMetrics, SystemConfig, Variant};

    const NEEDS: &str = "--processes needs a chronos-sync built with the `mpi` and `service` features \
                         (cargo build --release -p chronos-sync-cli --features mpi)";

    /// Fails: this build cannot start ranks.
    pub fn run_variant(
        _args: &Args,
        _problem: &Problem,
        _cfg: &SystemConfig,
        _variant: &Variant,
        _choice: VariantChoice,
    ) -> Result<RunMetrics, Box<dyn std::error::Error + Send + Sync>> {
        Err(NEEDS.into())
    }

    /// Fails: this build cannot be a rank.
    pub fn run_rank_mode(_args: &RankArgs) -> CliResult {
        Err(NEEDS.into())
    }
}

#[cfg(not(all(feature = "mpi", feature = "service")))]
pub use imp_missing::{run_rank_mode, run_variant};

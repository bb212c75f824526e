//! The child processes of a multi-process run: the coordinator service
//! (`chronos-sync coordinator serve` on a free loopback port, in a fresh data
//! directory, with a shared secret in the environment) and the `mpirun` job
//! of the ranks. Every wait is bounded; whichever child dies first is named in
//! the error, and both are stopped on every exit path (drop), so a failed run
//! leaves no process behind.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variable carrying the shared secret to the service and the
/// ranks (never on a command line, where `ps` would show it).
pub const SECRET_ENV: &str = "CHRONOS_HYPERCLEAN_SECRET";

/// How often the launcher looks at its children while it waits.
const POLL: Duration = Duration::from_millis(50);

/// Why a multi-process run could not start or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A file or process operation failed.
    #[error("could not {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator service did not report its address in time.
    #[error("the coordinator service did not start within {after:?}{}", tail_text(.log))]
    ServiceStart {
        /// How long the launcher waited.
        after: Duration,
        /// The end of its output.
        log: String,
    },
    /// The coordinator service exited while the ranks still needed it.
    #[error("the coordinator service (pid {pid}) died: {status}; the rank job was stopped{}", tail_text(.log))]
    ServiceDied {
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// The end of its output.
        log: String,
    },
    /// `mpirun` (a rank) failed.
    #[error("the rank job (mpirun -np {world}) failed: {status}{}", tail_text(.log))]
    RanksFailed {
        /// Processes in the job.
        world: usize,
        /// How mpirun ended.
        status: ExitStatus,
        /// The end of the job's output.
        log: String,
    },
    /// The rank job did not end in time; it was stopped.
    #[error("the rank job (mpirun -np {world}) did not finish within {after:?}; it was stopped{}", tail_text(.log))]
    RanksTimedOut {
        /// Processes in the job.
        world: usize,
        /// The limit.
        after: Duration,
        /// The end of the job's output.
        log: String,
    },
}

fn tail_text(log: &str) -> String {
    if log.trim().is_empty() { String::new() } else { format!("\n--- its last output ---\n{}", log.trim_end()) }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// The last `max` bytes of a log file (lossy UTF-8); empty if unreadable.
pub fn log_tail(path: &Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else { return String::new() };
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// A fresh random secret (32 hex digits from the kernel's generator).
pub fn fresh_secret() -> Result<String, LaunchError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read /dev/urandom for the shared secret"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new, empty directory for one run (under the system temp dir).
pub fn fresh_dir(tag: &str) -> Result<PathBuf, LaunchError> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("chronos-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// Stops a child: SIGTERM (mpirun forwards it to its ranks and reaps them;
/// the service exits cleanly), then SIGKILL after `grace`. Uses the `kill`
/// utility for the SIGTERM: the launcher has no libc binding, and this is not
/// a hot path. Children share the launcher's process group, so a Ctrl-C at
/// the terminal reaches them too.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The coordinator service, a child process of the launcher.
#[derive(Debug)]
pub struct ServiceChild {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl ServiceChild {
    /// Starts `exe coordinator serve` on `127.0.0.1:0` in `data_dir`,
    /// initialized from the `ConfigRecord` bytes in `init_record`, the secret
    /// read from [`SECRET_ENV`] (set to `secret` for the child). Waits at most
    /// `timeout` for its `listening on ADDR` line. Its standard input is a
    /// pipe held by this value: if the launcher dies, the service exits.
    pub fn start(
        exe: &Path,
        data_dir: &Path,
        init_record: &Path,
        secret: &str,
        timeout: Duration,
    ) -> Result<Self, LaunchError> {
        let log = data_dir.with_extension("log");
        let stderr = std::fs::File::create(&log).map_err(io(format!("create {}", log.display())))?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "coordinator",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--exit-on-stdin-eof",
            "--secret-env",
            SECRET_ENV,
        ])
        .arg("--data")
        .arg(data_dir)
        .arg("--init-record")
        .arg(init_record)
        .env(SECRET_ENV, secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
        let mut child = cmd.spawn().map_err(io(format!("start {} coordinator serve", exe.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                    break;
                }
            }
            // Keep draining so the service never blocks on a full pipe.
            for _ in lines {}
        });
        let start = Instant::now();
        loop {
            match rx.recv_timeout(POLL) {
                Ok(addr) => return Ok(ServiceChild { child, endpoint: format!("http://{addr}"), log }),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed without an address: it exited (or will).
                    stop(&mut child, Duration::from_secs(5));
                    return Err(LaunchError::ServiceStart { after: start.elapsed(), log: log_tail(&log, 4000) });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LaunchError::ServiceDied { pid: child.id(), status, log: log_tail(&log, 4000) });
            }
            if start.elapsed() >= timeout {
                stop(&mut child, Duration::from_secs(2));
                return Err(LaunchError::ServiceStart { after: timeout, log: log_tail(&log, 4000) });
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Its process id (for tests that kill it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err(ServiceDied)` once the service has exited.
    pub fn check_alive(&mut self) -> Result<(), LaunchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                Err(LaunchError::ServiceDied { pid: self.child.id(), status, log: log_tail(&self.log, 4000) })
            }
            Ok(None) => Ok(()),
            Err(e) => Err(io("poll the coordinator service")(e)),
        }
    }
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// The Open MPI settings of `scripts/test-mpi` and `scripts/cluster`: TCP
/// only, over the loopback (so every byte between ranks crosses the link that
/// `scripts/cluster` shapes), and running as root allowed (CI containers).
/// A variable already set in the launcher's environment wins.
pub const MPI_ENV: [(&str, &str); 6] = [
    ("OMPI_MCA_pml", "ob1"),
    ("OMPI_MCA_btl", "tcp,self"),
    ("OMPI_MCA_btl_tcp_if_include", "lo"),
    ("OMPI_MCA_oob_tcp_if_include", "lo"),
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
];

/// The `mpirun -np W` job of the ranks.
#[derive(Debug)]
pub struct RankJob {
    child: Child,
    world: usize,
    log: PathBuf,
}

impl RankJob {
    /// Starts `mpirun --oversubscribe -np world exe rank_args...` with [`MPI_ENV`] and `secret` in [`SECRET_ENV`]; its
    /// output goes to `log`.
    pub fn start(
        world: usize,
        exe: &Path,
        rank_args: &[String],
        secret: &str,
        log: &Path,
    ) -> Result<Self, LaunchError> {
        let out = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicate the job log handle"))?;
        let mut cmd = Command::new("mpirun");
        cmd.args(["--oversubscribe", "-np", &world.to_string()]).arg(exe).args(rank_args);
        for (k, v) in MPI_ENV {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        cmd.env(SECRET_ENV, secret).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(io("start mpirun (is Open MPI installed? apt-get install openmpi-bin)"))?;
        Ok(RankJob { child, world, log: log.to_owned() })
    }

    /// Waits until the job ends (Ok on success), the service dies, or
    /// `limit` passes; on any failure the job is stopped before returning.
    pub fn wait(mut self, service: &mut ServiceChild, limit: Duration) -> Result<(), LaunchError> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    // The service may be why: name it first if it died.
                    service.check_alive()?;
                    return Err(LaunchError::RanksFailed { world: self.world, status, log: log_tail(&self.log, 6000) });
                }
                Ok(None) => {}
                Err(e) => return Err(io("poll mpirun")(e)),
            }
            // Drop (at `?`) stops the job.
            service.check_alive()?;
            if start.elapsed() >= limit {
                stop(&mut self.child, Duration::from_secs(5));
                return Err(LaunchError::RanksTimedOut {
                    world: self.world,
                    after: limit,
                    log: log_tail(&self.log, 6000),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RankJob {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

//! An MPI [`Collective`] (feature `mpi`): ranks are processes of one MPI job,
//! driven through rsmpi's raw bindings to the system's MPI (Open MPI on
//! Debian).
//!
//! # Launching
//! Start the job with `mpirun -np W <program>`; each process calls
//! [`init`] once (it checks that a launcher started it and, when asked, that
//! the world has the expected size), then [`MpiCollective::new`] on the
//! universe's world communicator. A process started without a launcher, or in
//! a world of another size than expected, gets [`CollectiveError::Launch`]
//! with a message that says what to run instead.
//!
//! # Operations
//! Every call is one non-blocking MPI collective on a private duplicate of
//! the world communicator (so the application's own MPI traffic cannot
//! interleave with it), polled with `MPI_Test` until it completes or the
//! collective's deadline passes:
//! - vote: `MPI_Iallreduce` (`MPI_MAX` over `uint32_t`);
//! - counts: `MPI_Iallgather` of one `uint64_t` per rank;
//! - payload: `MPI_Iallgatherv` of bytes, every rank's exact length (no
//!   padding).
//!
//! Open MPI progresses a non-blocking collective only inside MPI calls, so
//! the poll keeps calling `MPI_Test`: it yields between the first tests and
//! then sleeps a few tens of microseconds, so that oversubscribed ranks
//! leave the cores to their peers. Inputs are copied into buffers this
//! collective owns and results are received into its own buffers, so an
//! operation still in flight never points into memory the caller may free.
//! The bytes delivered are exactly the bytes sent: an engine on
//! `MpiCollective` computes bitwise the same parameters as on
//! [`super::LocalCollective`].
//!
//! # Bounds
//! Announced lengths are untrusted: [`Gathered::reset`] bounds their sum
//! before anything is allocated (the engines bound each length by the
//! selection rule's worst case before that), and MPI counts are C `int`s, so
//! one rank's length and the total must each fit in `i32::MAX` bytes;
//! larger is [`Error::InvalidPeerBuffer`], never a truncated transfer.
//!
//! # Timeouts, and what the caller does next
//! On expiry a call returns [`Error::Timeout`] with an empty `missing` list
//! (MPI does not say which peer is late). An MPI collective cannot be
//! cancelled or freed while pending, so the request and the buffers it uses
//! are deliberately leaked, and the collective is broken from then on:
//! every later call returns [`CollectiveError::Broken`] at once. An MPI error
//! code seen while polling (a peer's connection lost) breaks it the same way
//! and is returned as [`CollectiveError::Mpi`].
//!
//! The process cannot rejoin that job: MPI offers no way to shrink or
//! repair `MPI_COMM_WORLD`, and `MPI_Finalize` with a collective still
//! pending may block forever. The caller therefore **writes its checkpoint
//! ([`crate::SyncGroup::checkpoint`] plus its parameters) and ends the job
//! with [`abort`]**, which calls `MPI_Abort` so the launcher stops every
//! rank at once; the job is then started again (by the user, a batch
//! system's requeue, or a supervising script) and every rank restores from
//! the last checkpoint. Dropping a broken collective does not touch MPI.

use super::{Collective, Gathered};
use crate::error::{CollectiveError, Error, Result, WireError};
use ::mpi::ffi;
use ::mpi::raw::AsRaw;
use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

/// Tests before the poll starts sleeping between them.
const SPIN_TESTS: u32 = 200;
/// Sleep between tests once spinning is over.
const POLL_SLEEP: Duration = Duration::from_micros(20);

/// Environment variables a launcher sets in every process it starts, with
/// the world size as value: Open MPI's `mpirun`, then PMI (MPICH's Hydra,
/// Slurm's `srun`) and PMIx.
const LAUNCHER_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// The world size announced by the launcher that started this process, or
/// `None` when no launcher did (the process was started directly).
pub fn launcher_world_size() -> Option<usize> {
    LAUNCHER_SIZE_VARS.iter().find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// Initializes MPI for this process (once; threads may call MPI one at a
/// time, `MPI_THREAD_SERIALIZED`) and returns the universe, which finalizes
/// MPI when dropped.
///
/// Errors, all [`CollectiveError::Launch`]: the process was not started by
/// a launcher (`mpirun`, `srun`); `expected_world` is given and the job's
/// world has another size; MPI was already initialized.
pub fn init(expected_world: Option<usize>) -> Result<::mpi::environment::Universe> {
    let Some(announced) = launcher_world_size() else {
        let hint = expected_world.map_or_else(|| "W".to_string(), |w| w.to_string());
        return Err(launch(format!(
            "this process was not started by an MPI launcher (none of {} is set); run it as \
             `mpirun -np {hint} <command>`",
            LAUNCHER_SIZE_VARS.join(", ")
        )));
    };
    let (universe, _) = ::mpi::initialize_with_threading(::mpi::Threading::Serialized)
        .ok_or_else(|| launch("MPI is already initialized in this process".into()))?;
    let size = usize::try_from(::mpi::topology::Communicator::size(&universe.world())).unwrap_or(0);
    if size != announced {
        return Err(launch(format!("the launcher announced {announced} processes but MPI_COMM_WORLD has {size}")));
    }
    if let Some(expected) = expected_world {
        if expected != size {
            return Err(launch(format!(
                "the job has {size} processes but {expected} ranks were asked for: launch it with \
                 `mpirun -np {expected}` (or pass the job's size)"
            )));
        }
    }
    Ok(universe)
}

/// Ends the whole MPI job with exit status `code` (`MPI_Abort` on
/// `MPI_COMM_WORLD`): the launcher stops every rank. The way out after a
/// broken collective; see the module documentation. Exits the process
/// directly when MPI is not running.
pub fn abort(code: i32) -> ! {
    // SAFETY: MPI_Abort may be called at any time after initialization; it
    // does not return.
    unsafe {
        if ::mpi::environment::is_initialized() && !::mpi::environment::is_finalized() {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
    }
    std::process::exit(code)
}

fn launch(reason: String) -> Error {
    CollectiveError::Launch { reason }.into()
}

/// The text MPI gives for an error code.
fn mpi_error(call: &'static str, code: c_int) -> Error {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING (256 in Open MPI) bytes.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    let message = if rc == 0 {
        buf.truncate(usize::try_from(len).unwrap_or(0).min(512));
        String::from_utf8_lossy(&buf).into_owned()
    } else {
        "unknown MPI error".to_string()
    };
    CollectiveError::Mpi { call, code, message }.into()
}

/// An MPI handle (a pointer in Open MPI) that may move between threads;
/// MPI was initialized with `MPI_THREAD_SERIALIZED` and the collective is
/// used by one thread at a time.
#[derive(Clone, Copy)]
struct Handle<T>(T);
// SAFETY: see above.
unsafe impl<T> Send for Handle<T> {}

/// Buffers an operation in flight may read or write. Leaked (never freed)
/// once the collective is broken, because MPI may still use them.
#[derive(Default)]
struct Buffers {
    vote_in: Vec<u32>,
    vote_out: Vec<u32>,
    count_in: Vec<u64>,
    count_out: Vec<u64>,
    send: Vec<u8>,
    recv: Vec<u8>,
    recv_counts: Vec<c_int>,
    displs: Vec<c_int>,
}

/// One rank's handle on an MPI job's ranks; see the module documentation.
///
/// Every blocking call returns within [`Collective::timeout`]. After a
/// timeout or an MPI error the collective is broken: every later call
/// returns [`CollectiveError::Broken`]; checkpoint and end the job with
/// [`abort`].
///
/// [`init`] asks for `MPI_THREAD_SERIALIZED`: the collective may move to
/// another thread, but no two threads of a process may call MPI at the same
/// time, so several `MpiCollective`s of one process are stepped one after
/// another (or share one through [`super::SharedCollective`]).
pub struct MpiCollective {
    comm: Handle<ffi::MPI_Comm>,
    rank: usize,
    world: usize,
    timeout: Duration,
    buffers: ManuallyDrop<Buffers>,
    broken: Option<String>,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl MpiCollective {
    /// A collective over every process of `comm` (normally the universe's
    /// `world()`), whose calls give up after `timeout`. Duplicates the
    /// communicator (`MPI_Comm_idup`, itself polled against the timeout) and
    /// makes MPI errors on the duplicate return codes instead of aborting.
    ///
    /// Errors: a zero `timeout` is [`Error::InvalidConfig`]; peers that do
    /// not create theirs within the timeout, [`Error::Timeout`]; an MPI
    /// failure, [`CollectiveError::Mpi`].
    pub fn new<C: AsRaw<Raw = ffi::MPI_Comm>>(comm: &C, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::InvalidConfig { field: "timeout", reason: "must be > 0".into() });
        }
        let parent = comm.as_raw();
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: `parent` is a valid communicator of an initialized MPI.
        unsafe {
            check("MPI_Comm_rank", ffi::MPI_Comm_rank(parent, &mut rank))?;
            check("MPI_Comm_size", ffi::MPI_Comm_size(parent, &mut size))?;
        }
        let mut this = MpiCollective {
            // SAFETY: RSMPI_COMM_NULL is a constant handle.
            comm: Handle(unsafe { ffi::RSMPI_COMM_NULL }),
            rank: usize::try_from(rank).unwrap_or(0),
            world: usize::try_from(size).unwrap_or(0),
            timeout,
            buffers: ManuallyDrop::new(Buffers::default()),
            broken: None,
        };
        // The duplicate is written by the pending `MPI_Comm_idup`; it lives
        // in a leaked box so that a timeout leaves MPI a valid place to write.
        let dup: &'static mut ffi::MPI_Comm = Box::leak(Box::new(this.comm.0));
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: `dup` outlives the request (it is leaked).
        let rc = unsafe { ffi::MPI_Comm_idup(parent, dup, &mut request) };
        check("MPI_Comm_idup", rc)?;
        this.wait("MPI_Comm_idup", request)?;
        this.comm = Handle(*dup);
        // SAFETY: the duplicate is valid; RSMPI_ERRORS_RETURN is a constant.
        let rc = unsafe { ffi::MPI_Comm_set_errhandler(this.comm.0, ffi::RSMPI_ERRORS_RETURN) };
        check("MPI_Comm_set_errhandler", rc)?;
        Ok(this)
    }

    /// Whether an earlier failure broke the collective (every call fails).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn usable(&self) -> Result<()> {
        match &self.broken {
            Some(reason) => Err(CollectiveError::Broken { reason: reason.clone() }.into()),
            None => Ok(()),
        }
    }

    /// Polls `request` until it completes or the timeout passes. On expiry or
    /// an MPI error the collective is broken (the request and its buffers
    /// are left to MPI for good).
    fn wait(&mut self, op: &'static str, mut request: ffi::MPI_Request) -> Result<()> {
        let start = Instant::now();
        let mut tests = 0u32;
        loop {
            let mut flag: c_int = 0;
            // SAFETY: `request` is a live request; its buffers are owned by
            // `self.buffers` (or leaked) and outlive it.
            let rc = unsafe { ffi::MPI_Test(&mut request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            if rc != 0 {
                let err = mpi_error(op, rc);
                self.broken = Some(format!("rank {}: {err}", self.rank));
                return Err(err);
            }
            if flag != 0 {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                let after = self.timeout;
                self.broken = Some(format!(
                    "rank {} timed out after {after:?} in {op}; the MPI operation is still pending and cannot be \
                     cancelled: checkpoint and end the job (chronos_sync::collective::mpi::abort)",
                    self.rank
                ));
                return Err(Error::Timeout { op, missing: Vec::new(), after });
            }
            tests = tests.saturating_add(1);
            if tests < SPIN_TESTS {
                std::thread::yield_now();
            } else {
                std::thread::sleep(POLL_SLEEP);
            }
        }
    }
}

fn check(call: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 { Ok(()) } else { Err(mpi_error(call, rc)) }
}

/// `value` as an MPI count, or the bound error naming `rank`.
fn as_count(value: u64, rank: usize) -> Result<c_int> {
    c_int::try_from(value).map_err(|_| Error::InvalidPeerBuffer {
        rank,
        source: WireError::AnnouncedTooLarge { announced: value, limit: c_int::MAX as u64 },
    })
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn all_reduce_max(&mut self, values: &mut [u32]) -> Result<()> {
        self.usable()?;
        let count = as_count(values.len() as u64, self.rank)?;
        let b = &mut *self.buffers;
        b.vote_in.clear();
        b.vote_in.extend_from_slice(values);
        b.vote_out.clear();
        b.vote_out.resize(values.len().max(1), 0);
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: both buffers hold `count` u32 and stay alive (owned by
        // `self`, leaked if the request never completes).
        let rc = unsafe {
            ffi::MPI_Iallreduce(
                b.vote_in.as_ptr().cast::<c_void>(),
                b.vote_out.as_mut_ptr().cast::<c_void>(),
                count,
                ffi::RSMPI_UINT32_T,
                ffi::RSMPI_MAX,
                self.comm.0,
                &mut request,
            )
        };
        check("MPI_Iallreduce", rc)?;
        self.wait("all_reduce_max", request)?;
        values.copy_from_slice(&self.buffers.vote_out[..values.len()]);
        Ok(())
    }

    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        self.usable()?;
        let world = self.world;
        let b = &mut *self.buffers;
        b.count_in.clear();
        b.count_in.push(value);
        b.count_out.clear();
        b.count_out.resize(world, 0);
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: one u64 in, `world` out, both owned by `self`.
        let rc = unsafe {
            ffi::MPI_Iallgather(
                b.count_in.as_ptr().cast::<c_void>(),
                1,
                ffi::RSMPI_UINT64_T,
                b.count_out.as_mut_ptr().cast::<c_void>(),
                1,
                ffi::RSMPI_UINT64_T,
                self.comm.0,
                &mut request,
            )
        };
        check("MPI_Iallgather", rc)?;
        self.wait("all_gather_u64", request)?;
        out.clear();
        out.extend_from_slice(&self.buffers.count_out);
        Ok(())
    }

    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        self.usable()?;
        let world = self.world;
        if lens.len() != world {
            return Err(Error::LengthMismatch { what: "all_gather_bytes lens", expected: world, actual: lens.len() });
        }
        let own = lens[self.rank];
        if own != send.len() as u64 {
            return Err(Error::LengthMismatch {
                what: "all_gather_bytes send (must equal lens[rank])",
                expected: usize::try_from(own).unwrap_or(usize::MAX),
                actual: send.len(),
            });
        }
        // Bounds the announced lengths before anything is allocated.
        out.reset(lens)?;
        let b = &mut *self.buffers;
        b.recv_counts.clear();
        b.displs.clear();
        let mut total = 0u64;
        for (r, &len) in lens.iter().enumerate() {
            b.recv_counts.push(as_count(len, r)?);
            b.displs.push(as_count(total, r)?);
            total += len;
        }
        let total_count = as_count(total, self.rank)?;
        let total = usize::try_from(total_count).unwrap_or(0);
        b.send.clear();
        b.send.extend_from_slice(send);
        b.recv.clear();
        b.recv.try_reserve(total.max(1)).map_err(|_| Error::InvalidPeerBuffer {
            rank: self.rank,
            source: WireError::AnnouncedTooLarge { announced: total as u64, limit: c_int::MAX as u64 },
        })?;
        b.recv.resize(total.max(1), 0);
        let send_count = b.recv_counts[self.rank];
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: `send` holds `send_count` bytes, `recv` `total` bytes laid
        // out by `recv_counts`/`displs`; all are owned by `self`.
        let rc = unsafe {
            ffi::MPI_Iallgatherv(
                b.send.as_ptr().cast::<c_void>(),
                send_count,
                ffi::RSMPI_UINT8_T,
                b.recv.as_mut_ptr().cast::<c_void>(),
                b.recv_counts.as_ptr(),
                b.displs.as_ptr(),
                ffi::RSMPI_UINT8_T,
                self.comm.0,
                &mut request,
            )
        };
        check("MPI_Iallgatherv", rc)?;
        self.wait("all_gather_bytes", request)?;
        let b = &*self.buffers;
        for (r, &len) in lens.iter().enumerate() {
            let start = usize::try_from(b.displs[r]).unwrap_or(0);
            out.push_rank(&b.recv[start..start + len as usize]);
        }
        Ok(())
    }

    fn reserve_payload(&mut self, max_bytes_per_rank: usize) {
        if self.broken.is_some() {
            return; // the buffers may be in use by a pending operation
        }
        let b = &mut *self.buffers;
        let _ = b.send.try_reserve(max_bytes_per_rank.saturating_sub(b.send.len()));
        let total = max_bytes_per_rank.saturating_mul(self.world);
        let _ = b.recv.try_reserve(total.saturating_sub(b.recv.len()));
    }
}

impl Drop for MpiCollective {
    fn drop(&mut self) {
        if self.broken.is_some() {
            // A pending operation may still read or write the buffers and
            // the communicator: leave both to MPI.
            return;
        }
        // SAFETY: no operation is pending; the buffers are ours to free.
        unsafe { ManuallyDrop::drop(&mut self.buffers) };
        // SAFETY: a valid communicator, freed before MPI is finalized only.
        unsafe {
            if self.comm.0 != ffi::RSMPI_COMM_NULL && !::mpi::environment::is_finalized() {
                let mut comm = self.comm.0;
                ffi::MPI_Comm_free(&mut comm);
            }
        }
    }
}

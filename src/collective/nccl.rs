//! An NCCL [`Collective`] (feature `nccl`): ranks are GPUs, one communicator
//! per rank, driven through cudarc's dynamically loaded `libnccl`.
//!
//! # Host bytes, device staging
//! The [`Collective`] trait exchanges host bytes (the packed buffers the
//! backends return). Each call therefore copies its input into a persistent
//! device send buffer owned by this collective, runs the NCCL operation on
//! the collective's stream into a persistent device receive buffer, and
//! copies the result back into a persistent host buffer: one host-to-device
//! and one device-to-host copy per call. Every step makes one call (the
//! vote) and a syncing step two more (the counts, the payload): two copies
//! per step, four more per sync, the payload's being the rank's own packed
//! bytes up and every rank's bytes down (with the padded path below, `max`
//! bytes up and `max * world` down). Combined with a GPU
//! backend, whose `select_pack` reads the packed bytes back to the host and
//! whose `apply` uploads the gathered bytes again, each packed byte crosses
//! PCIe twice more than a device-resident exchange would: small next to the
//! network transfer for sparse buffers, and the price of a backend-agnostic
//! trait.
//!
//! # Device memory, no staging
//! A CUDA backend on this collective's stream ([`NcclCollective::stream`],
//! [`crate::CudaBackend::on_stream`]) exchanges its packed buffers with
//! [`Collective::all_gather_device`] instead: one grouped `ncclBroadcast`
//! per rank from the backend's packed buffer straight into its receive
//! memory, ordered on the one stream after the pack kernels and before the
//! validation and apply kernels, and no byte of the payload on the host
//! (the vote and the counts still stage their few bytes as above).
//!
//! The device staging buffers grow (to the next power of two) when a call
//! needs more than any before and are never shrunk, so steady-state steps
//! allocate no device memory. Nothing else is created per call either: the
//! vote is staged straight from the caller's words, the padded path sends
//! the send staging's whole slot instead of a padded copy, and every wait
//! records the collective's one event.
//!
//! # Operations
//! - vote: `ncclAllReduce` (max, u32) in place;
//! - counts: `ncclAllGather` of one u64 per rank;
//! - payload: when the agreed total is at most [`NcclCollective::broadcast_limit`]
//!   bytes, one grouped `ncclBroadcast` per rank with that rank's exact length
//!   (no padding); otherwise one `ncclAllGather` of every rank's buffer padded
//!   to the agreed maximum, the padding dropped on the host.
//!
//! # Timeouts
//! Every call waits for its work with a watchdog, the copy of the result
//! back to the host included: the stream is polled until the work completes
//! or [`Collective::timeout`] elapses. On expiry (a rank
//! that never arrived) the communicator is aborted with `ncclCommAbort` —
//! which makes the blocked kernels return — and the call returns
//! [`Error::Timeout`] with an empty `missing` list: NCCL does not report
//! which rank failed to arrive, so these timeouts name no rank (the same
//! holds for a `ncclCommInitRank` that times out). The collective is then
//! broken and every later call returns [`CollectiveError::Broken`]. Asynchronous NCCL errors seen while
//! waiting (`ncclCommGetAsyncError`) abort the same way and are returned as
//! [`CollectiveError::Nccl`] with the NCCL result code.

use super::{Collective, DeviceBytes, DeviceMemory, Gathered};
use crate::error::{BackendError, CollectiveError, Error, Result};
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};
use cudarc::nccl::result::{self as nccl, NcclError};
use cudarc::nccl::sys;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A 128-byte NCCL unique id: created on one rank with [`NcclId::new`] and
/// handed to every rank (through any side channel) before
/// [`NcclCollective::new`].
#[derive(Clone, Copy)]
pub struct NcclId(pub [u8; 128]);

impl std::fmt::Debug for NcclId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NcclId(..)")
    }
}

fn nccl_present() -> Result<()> {
    // SAFETY: only tries to dlopen the library.
    if unsafe { sys::is_culib_present() } {
        Ok(())
    } else {
        Err(BackendError::Unavailable {
            backend: "nccl",
            reason: "libnccl.so.2 not found (install NCCL, e.g. `pip install nvidia-nccl-cu13`, and add it to \
                     LD_LIBRARY_PATH)"
                .into(),
        }
        .into())
    }
}

/// The NCCL result code and its documented meaning (cudarc's `NcclError`
/// has no `Display`, so the conversion is spelled out here).
fn nccl_error(call: &'static str, e: NcclError) -> Error {
    let code = e.0 as u32;
    let message = match code {
        1 => "unhandled CUDA error",
        2 => "system error (network, socket or resource failure)",
        3 => "internal NCCL error",
        4 => "invalid argument",
        5 => "invalid usage",
        6 => "remote error (a peer failed)",
        7 => "operation in progress",
        _ => "unknown NCCL result",
    }
    .to_string();
    CollectiveError::Nccl { call, code, message }.into()
}

fn driver_error(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| BackendError::Driver { backend: "nccl", call, message: format!("{e}") }.into()
}

impl NcclId {
    /// A fresh unique id (call on one rank only).
    pub fn new() -> Result<Self> {
        nccl_present()?;
        let id = nccl::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
        Ok(NcclId(id.internal.map(|c| c as u8)))
    }
}

/// A communicator handle that may cross threads (NCCL allows it; the
/// pointer itself is only an id).
struct SendComm(sys::ncclComm_t);
// SAFETY: see above; ownership moves with the value.
unsafe impl Send for SendComm {}

/// `ncclCommInitRank` blocks until every rank joins, so it runs on a helper
/// thread and is waited for with the timeout. On expiry the call returns
/// [`Error::Timeout`]; should the init complete later, the helper aborts the
/// orphaned communicator itself.
fn init_with_timeout(
    stream: &Arc<CudaStream>,
    id: NcclId,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<sys::ncclComm_t> {
    let (tx, rx) = std::sync::mpsc::channel::<std::result::Result<SendComm, NcclError>>();
    let ctx = stream.context().clone();
    std::thread::Builder::new()
        .name(format!("nccl-init-{rank}"))
        .spawn(move || {
            if ctx.bind_to_thread().is_err() {
                let _ = tx.send(Err(NcclError(sys::ncclResult_t::ncclUnhandledCudaError)));
                return;
            }
            let unique = sys::ncclUniqueId { internal: id.0.map(|b| b as ::core::ffi::c_char) };
            let mut comm = std::mem::MaybeUninit::uninit();
            // SAFETY: `comm` is written by NCCL on success; rank < world <= i32::MAX.
            let res = unsafe { nccl::comm_init_rank(comm.as_mut_ptr(), world as i32, unique, rank as i32) }
                // SAFETY: initialised by the successful call.
                .map(|_| SendComm(unsafe { comm.assume_init() }));
            if let Err(std::sync::mpsc::SendError(Ok(orphan))) = tx.send(res) {
                // SAFETY: nobody else holds this communicator.
                let _ = unsafe { nccl::comm_abort(orphan.0) };
            }
        })
        .map_err(|e| BackendError::Driver { backend: "nccl", call: "spawn", message: e.to_string() })?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(comm)) => Ok(comm.0),
        Ok(Err(e)) => Err(nccl_error("ncclCommInitRank", e)),
        Err(_) => Err(Error::Timeout { op: "ncclCommInitRank", missing: Vec::new(), after: timeout }),
    }
}

/// A device staging buffer that grows to the largest size requested.
struct Staging {
    buf: Option<CudaSlice<u8>>,
}

impl Staging {
    fn ensure(&mut self, stream: &Arc<CudaStream>, bytes: usize) -> Result<(&mut CudaSlice<u8>, u64)> {
        let have = self.buf.as_ref().map_or(0, |b| b.len());
        if have < bytes.max(8) {
            let cap = bytes.max(8).next_power_of_two();
            let slice = stream
                .alloc_zeros::<u8>(cap)
                .map_err(|_| BackendError::OutOfMemory { backend: "nccl", bytes: cap as u64 })?;
            self.buf = Some(slice);
        }
        let buf = self.buf.as_mut().expect("allocated above");
        let ptr = {
            let (p, _sync) = buf.device_ptr(stream);
            p
        };
        Ok((buf, ptr))
    }
}

/// One rank of an NCCL group. See the module documentation.
pub struct NcclCollective {
    comm: sys::ncclComm_t,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    timeout: Duration,
    broadcast_limit: usize,
    broken: Option<String>,
    send: Staging,
    recv: Staging,
    host: Vec<u8>,
    /// Recorded by every watchdog wait: one event for the collective's
    /// life, not one per call.
    done: CudaEvent,
}

// SAFETY: the communicator is used by one thread at a time (all methods take
// `&mut self`); NCCL communicators may move between threads.
unsafe impl Send for NcclCollective {}

impl std::fmt::Debug for NcclCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCollective")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish()
    }
}

impl NcclCollective {
    /// Joins the group `id` as `rank` of `world`, issuing all work on
    /// `stream` (whose context selects the GPU). Blocks until every rank has
    /// joined — call it concurrently on all ranks.
    ///
    /// Errors: [`BackendError::Unavailable`] without `libnccl`;
    /// [`CollectiveError::InvalidRank`] for `rank >= world`;
    /// [`CollectiveError::Nccl`] when initialisation fails.
    pub fn new(stream: Arc<CudaStream>, id: NcclId, rank: usize, world: usize, timeout: Duration) -> Result<Self> {
        if world == 0 || rank >= world || world > i32::MAX as usize {
            return Err(CollectiveError::InvalidRank { rank, world }.into());
        }
        nccl_present()?;
        stream.context().bind_to_thread().map_err(driver_error("cuCtxSetCurrent"))?;
        let done = stream.context().new_event(None).map_err(driver_error("cuEventCreate"))?;
        let comm = init_with_timeout(&stream, id, rank, world, timeout)?;
        Ok(NcclCollective {
            comm,
            stream,
            rank,
            world,
            timeout,
            broadcast_limit: 1 << 20,
            broken: None,
            send: Staging { buf: None },
            recv: Staging { buf: None },
            host: Vec::new(),
            done,
        })
    }

    /// The stream every NCCL call of this rank is issued on (a backend on
    /// it exchanges in device memory: [`Collective::device_memory`]).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Payloads whose agreed total is at most this many bytes go by grouped
    /// broadcasts, larger ones by a padded all-gather (default 1 MiB).
    pub fn broadcast_limit(&self) -> usize {
        self.broadcast_limit
    }

    /// Sets [`NcclCollective::broadcast_limit`].
    pub fn set_broadcast_limit(&mut self, bytes: usize) {
        self.broadcast_limit = bytes;
    }

    fn check_usable(&self) -> Result<()> {
        match &self.broken {
            Some(reason) => Err(CollectiveError::Broken { reason: reason.clone() }.into()),
            None => Ok(()),
        }
    }

    fn abort(&mut self, reason: String) {
        if self.broken.is_none() {
            // SAFETY: the communicator is live (not yet aborted).
            let _ = unsafe { nccl::comm_abort(self.comm) };
            self.broken = Some(reason);
        }
    }

    /// The watchdog: waits for the work queued so far, polling the stream and
    /// NCCL's asynchronous error state until done or the timeout expires.
    fn wait(&mut self, op: &'static str) -> Result<()> {
        self.done.record(&self.stream).map_err(driver_error("cuEventRecord"))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            if self.done.try_is_complete().map_err(driver_error("cuEventQuery"))? {
                return Ok(());
            }
            let mut async_err = sys::ncclResult_t::ncclSuccess;
            // SAFETY: live communicator; NCCL writes one result code.
            let _ = unsafe { sys::ncclCommGetAsyncError(self.comm, &mut async_err) };
            if async_err != sys::ncclResult_t::ncclSuccess && async_err != sys::ncclResult_t::ncclInProgress {
                let err = nccl_error(op, NcclError(async_err));
                self.abort(format!("{err}"));
                return Err(err);
            }
            if start.elapsed() >= self.timeout {
                self.abort(format!("{op} timed out after {:?}", self.timeout));
                return Err(Error::Timeout { op, missing: Vec::new(), after: self.timeout });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    fn stage_in(&mut self, src: &[u8], capacity: usize) -> Result<u64> {
        let (buf, ptr) = self.send.ensure(&self.stream, capacity)?;
        if !src.is_empty() {
            let mut view = buf.slice_mut(0..src.len());
            self.stream.memcpy_htod(src, &mut view).map_err(driver_error("cuMemcpyHtoDAsync"))?;
        }
        Ok(ptr)
    }

    /// Copies the first `bytes` of the receive staging into `host`, then
    /// the watchdog wait (bounded, like every wait of this collective).
    fn stage_out(&mut self, bytes: usize, op: &'static str) -> Result<()> {
        self.host.resize(bytes, 0);
        if bytes == 0 {
            return Ok(());
        }
        let buf = self.recv.buf.as_ref().expect("recv staging allocated before the collective");
        let view = buf.slice(0..bytes);
        self.stream.memcpy_dtoh(&view, &mut self.host).map_err(driver_error("cuMemcpyDtoHAsync"))?;
        self.wait(op)
    }

    fn cu_stream(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as sys::cudaStream_t
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        if self.broken.is_none() {
            // SAFETY: live communicator, destroyed exactly once.
            let _ = unsafe { nccl::comm_abort(self.comm) };
        }
    }
}

impl Collective for NcclCollective {
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
        self.check_usable()?;
        let bytes = std::mem::size_of_val(values);
        let ptr = self.stage_in(bytemuck::cast_slice(values), bytes)?;
        let (_, out) = self.recv.ensure(&self.stream, bytes)?;
        // SAFETY: both buffers hold at least values.len() u32 on this stream.
        unsafe {
            nccl::all_reduce(
                ptr as *const _,
                out as *mut _,
                values.len(),
                sys::ncclDataType_t::ncclUint32,
                sys::ncclRedOp_t::ncclMax,
                self.comm,
                self.cu_stream(),
            )
        }
        .map_err(|e| nccl_error("ncclAllReduce", e))?;
        self.wait("all_reduce_max")?;
        self.stage_out(bytes, "all_reduce_max")?;
        values.copy_from_slice(bytemuck::cast_slice(&self.host[..bytes]));
        Ok(())
    }

    fn all_gather_u64(&mut self, value: u64, out: &mut Vec<u64>) -> Result<()> {
        self.check_usable()?;
        let ptr = self.stage_in(&value.to_le_bytes(), 8)?;
        let (_, dst) = self.recv.ensure(&self.stream, 8 * self.world)?;
        // SAFETY: send holds 8 bytes, recv 8 * world, both on this stream.
        unsafe {
            nccl::all_gather(
                ptr as *const _,
                dst as *mut _,
                1,
                sys::ncclDataType_t::ncclUint64,
                self.comm,
                self.cu_stream(),
            )
        }
        .map_err(|e| nccl_error("ncclAllGather", e))?;
        self.wait("all_gather_u64")?;
        self.stage_out(8 * self.world, "all_gather_u64")?;
        out.clear();
        out.extend(self.host.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))));
        Ok(())
    }

    /// The GPU of this collective's stream, and the stream: a backend on
    /// the same stream ([`crate::CudaBackend::on_stream`] with
    /// [`NcclCollective::stream`]) exchanges its packed buffers in device
    /// memory.
    fn device_memory(&self) -> Option<DeviceMemory> {
        Some(DeviceMemory::Cuda { ordinal: self.stream.context().ordinal(), stream: self.stream.cu_stream() as u64 })
    }

    /// One grouped `ncclBroadcast` per rank, from `send` straight into its
    /// offset in `recv`, on this collective's stream; then the watchdog
    /// wait (the one host wait of the exchange). No staging copy.
    unsafe fn all_gather_device(&mut self, send: DeviceBytes, lens: &[u64], recv: DeviceBytes) -> Result<()> {
        self.check_usable()?;
        if lens.len() != self.world {
            return Err(Error::LengthMismatch { what: "lens", expected: self.world, actual: lens.len() });
        }
        if send.len as u64 != lens[self.rank] {
            return Err(Error::LengthMismatch { what: "send", expected: lens[self.rank] as usize, actual: send.len });
        }
        let total = lens.iter().try_fold(0u64, |a, &l| a.checked_add(l));
        if total.is_none_or(|t| t > recv.len as u64) {
            let expected = total.map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
            return Err(Error::LengthMismatch { what: "recv", expected, actual: recv.len });
        }
        nccl::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
        let mut offset = 0u64;
        let mut failed = None;
        for (r, &len) in lens.iter().enumerate() {
            if len > 0 && failed.is_none() {
                // SAFETY: by the caller's contract `recv` holds every rank's
                // bytes (checked above) and `send` this rank's, both device
                // memory ordered on this stream.
                let res = unsafe {
                    nccl::broadcast(
                        send.ptr as *const _,
                        (recv.ptr + offset) as *mut _,
                        len as usize,
                        sys::ncclDataType_t::ncclUint8,
                        r as i32,
                        self.comm,
                        self.cu_stream(),
                    )
                };
                failed = res.err();
            }
            offset += len;
        }
        let end = nccl::group_end();
        if let Some(e) = failed {
            return Err(nccl_error("ncclBroadcast", e));
        }
        end.map_err(|e| nccl_error("ncclGroupEnd", e))?;
        self.wait("all_gather_device")
    }

    /// `ncclAllReduce` (max, u32) in place on this collective's stream,
    /// then the watchdog wait: no staging copy.
    unsafe fn all_reduce_max_device(&mut self, words: DeviceBytes) -> Result<()> {
        self.check_usable()?;
        if words.len % 4 != 0 {
            let expected = words.len.next_multiple_of(4);
            return Err(Error::LengthMismatch { what: "all_reduce_max_device words", expected, actual: words.len });
        }
        // SAFETY: by the caller's contract `words` holds `words.len / 4` u32
        // of device memory ordered on this stream.
        unsafe {
            nccl::all_reduce(
                words.ptr as *const _,
                words.ptr as *mut _,
                words.len / 4,
                sys::ncclDataType_t::ncclUint32,
                sys::ncclRedOp_t::ncclMax,
                self.comm,
                self.cu_stream(),
            )
        }
        .map_err(|e| nccl_error("ncclAllReduce", e))?;
        self.wait("all_reduce_max_device")
    }

    /// `ncclAllGather` of one u64 per rank between the caller's device
    /// buffers on this collective's stream, then the watchdog wait.
    unsafe fn all_gather_u64_device(&mut self, send: DeviceBytes, recv: DeviceBytes) -> Result<()> {
        self.check_usable()?;
        if send.len != 8 {
            return Err(Error::LengthMismatch { what: "all_gather_u64_device send", expected: 8, actual: send.len });
        }
        if recv.len != 8 * self.world {
            let expected = 8 * self.world;
            return Err(Error::LengthMismatch { what: "all_gather_u64_device recv", expected, actual: recv.len });
        }
        // SAFETY: by the caller's contract, 8 and 8 * world bytes of device
        // memory ordered on this stream.
        unsafe {
            nccl::all_gather(
                send.ptr as *const _,
                recv.ptr as *mut _,
                1,
                sys::ncclDataType_t::ncclUint64,
                self.comm,
                self.cu_stream(),
            )
        }
        .map_err(|e| nccl_error("ncclAllGather", e))?;
        self.wait("all_gather_u64_device")
    }

    fn all_gather_bytes(&mut self, send: &[u8], lens: &[u64], out: &mut Gathered) -> Result<()> {
        self.check_usable()?;
        if lens.len() != self.world {
            return Err(Error::LengthMismatch { what: "lens", expected: self.world, actual: lens.len() });
        }
        if send.len() as u64 != lens[self.rank] {
            return Err(Error::LengthMismatch { what: "send", expected: lens[self.rank] as usize, actual: send.len() });
        }
        // Bounds the announced lengths (checked sum, fallible reservation)
        // before anything below sizes a buffer from them.
        out.reset(lens)?;
        // `reset` checked that the lengths' sum fits a usize, so each does.
        let total = lens.iter().map(|&l| l as usize).sum::<usize>();
        let max = lens.iter().copied().max().unwrap_or(0) as usize;
        if max.checked_mul(self.world).is_none_or(|b| b > isize::MAX as usize) {
            let rank = lens.iter().position(|&l| l as usize == max).unwrap_or(0);
            return Err(Error::InvalidPeerBuffer {
                rank,
                source: crate::error::WireError::AnnouncedTooLarge {
                    announced: max as u64,
                    limit: (isize::MAX as usize / self.world) as u64,
                },
            });
        }
        if total <= self.broadcast_limit {
            // Grouped broadcasts: rank r's exact bytes land at its offset.
            let src = self.stage_in(send, send.len())?;
            let (_, dst) = self.recv.ensure(&self.stream, total)?;
            nccl::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
            let mut offset = 0u64;
            let mut failed = None;
            for (r, &len) in lens.iter().enumerate() {
                let len = len as usize;
                if len > 0 && failed.is_none() {
                    // SAFETY: dst holds `total` bytes, src holds lens[rank] on the root.
                    let res = unsafe {
                        nccl::broadcast(
                            src as *const _,
                            (dst + offset) as *mut _,
                            len,
                            sys::ncclDataType_t::ncclUint8,
                            r as i32,
                            self.comm,
                            self.cu_stream(),
                        )
                    };
                    failed = res.err();
                }
                offset += len as u64;
            }
            let end = nccl::group_end();
            if let Some(e) = failed {
                return Err(nccl_error("ncclBroadcast", e));
            }
            end.map_err(|e| nccl_error("ncclGroupEnd", e))?;
            self.wait("all_gather_bytes")?;
            self.stage_out(total, "all_gather_bytes")?;
            let mut at = 0;
            for &len in lens {
                let len = len as usize;
                out.push_rank(&self.host[at..at + len]);
                at += len;
            }
        } else {
            // Padded all-gather: every rank sends `max` bytes, its own bytes
            // first; the rest of its slot is whatever the staging held
            // (receivers read only each rank's agreed length), so nothing
            // is copied or allocated to pad it.
            let src = self.stage_in(send, max)?;
            let (_, dst) = self.recv.ensure(&self.stream, max * self.world)?;
            // SAFETY: send holds `max` bytes, recv `max * world`.
            unsafe {
                nccl::all_gather(
                    src as *const _,
                    dst as *mut _,
                    max,
                    sys::ncclDataType_t::ncclUint8,
                    self.comm,
                    self.cu_stream(),
                )
            }
            .map_err(|e| nccl_error("ncclAllGather", e))?;
            self.wait("all_gather_bytes")?;
            self.stage_out(max * self.world, "all_gather_bytes")?;
            for (r, &len) in lens.iter().enumerate() {
                out.push_rank(&self.host[r * max..r * max + len as usize]);
            }
        }
        Ok(())
    }
}

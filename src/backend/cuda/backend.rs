//! The host orchestration of the CUDA kernels, written once: which kernels
//! run for each [`Backend`] operation, their grids and the buffers they use.
//! Generic over the [`KernelRunner`] that executes them (cudarc on a GPU, or
//! the CPU emulation of the same `.cu` sources).

use super::kernels::{Arg, BINS, BLOCK, DESC_WORDS, Kernel};
use super::peers::describe;
use super::runner::KernelRunner;
use super::state::{CONTROL_BYTES, ControlLayout, Deferred, INFO_OFFSET, KernelState, Speculative, chunks};
use crate::backend::transfer::TransferCounter;
use crate::backend::{Backend, HostPeerCheck, StepStatus, TransferCounts};
use crate::collective::{DeviceBytes, DeviceLens, DeviceMemory, DeviceVote, Gathered, PackedOnDevice};
use crate::config::{Selection, SyncConfig};
use crate::error::{BackendError, CollectiveError, Error, Result};
use crate::wire::verdict::{VERDICT_WORDS, check_verdicts};

/// A dense `f32` vector in a runner's device memory: the backend's own
/// allocation ([`Backend::alloc`]) or the caller's memory
/// ([`KernelBackend::wrap_device_memory`]), which dropping leaves alone.
pub struct DeviceBuffer<M> {
    mem: M,
    len: usize,
}

/// The CUDA backend over a [`KernelRunner`]: see [`super::CudaBackend`] (GPU)
/// and `CudaEmuBackend` (CPU emulation, feature `cuda-emu`).
pub struct KernelBackend<R: KernelRunner> {
    runner: R,
    label: &'static str,
    counter: TransferCounter,
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected != actual {
        return Err(Error::LengthMismatch { what, expected, actual });
    }
    Ok(())
}

impl<R: KernelRunner> KernelBackend<R> {
    /// Wraps `runner`; `label` names the backend in [`Backend::name`].
    pub fn from_runner(runner: R, label: &'static str) -> Self {
        KernelBackend { runner, label, counter: TransferCounter::default() }
    }

    /// Host traffic, waits and device allocations of this backend since it
    /// was created, counted at the [`KernelRunner`] seam (every `write` is a
    /// host-to-device copy, every `read` a device-to-host copy and a wait,
    /// every `alloc_zeroed` a buffer creation), so the CPU emulation and
    /// cudarc report the same counts for the same steps. Subtract two
    /// snapshots with [`TransferCounts::since`].
    pub fn transfer_counts(&self) -> TransferCounts {
        self.counter.snapshot()
    }

    fn write(&self, dst: &mut R::Mem, offset: usize, src: &[u8]) -> Result<()> {
        self.counter.h2d(src.len() as u64);
        self.runner.write(dst, offset, src)
    }

    fn read(&self, src: &R::Mem, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.counter.d2h(dst.len() as u64);
        self.counter.wait();
        self.runner.read(src, offset, dst)
    }

    fn alloc_mem(&self, bytes: usize) -> Result<R::Mem> {
        self.counter.buffer();
        self.runner.alloc_zeroed(bytes)
    }

    /// Wraps `len` `f32`s of the caller's device memory at device address
    /// `ptr` as a vector of this backend, with no copy: steps read the
    /// caller's gradient and update the caller's parameters in place, so a
    /// step uploads neither (a framework's tensor, by its data pointer and
    /// element count). Dropping the vector leaves the memory to its owner.
    ///
    /// Checked here, each a [`BackendError::Unsupported`] naming what is
    /// wrong: `len >= 1`, `4 * len` without overflow, `ptr` 16-byte aligned
    /// (the kernels read `float4`), and, on a GPU, that the driver knows
    /// `ptr` as device (or managed) memory of this backend's device inside
    /// an allocation that holds all `4 * len` bytes.
    ///
    /// # Safety
    /// The memory must stay allocated while the vector lives and hold `f32`s
    /// (any bits: a step checks its inputs for non-finite values). Work the
    /// caller issues on it on other streams must be ordered with this
    /// backend's stream by the caller (one stream:
    /// [`super::CudaBackend::on_stream`] on the framework's own). On the CPU
    /// emulation, `ptr` is a host address and nothing but null can be checked.
    pub unsafe fn wrap_device_memory(&self, ptr: u64, len: usize) -> Result<DeviceBuffer<R::Mem>> {
        let unsupported = |what: String| -> Error { BackendError::Unsupported { backend: self.label, what }.into() };
        if len == 0 {
            return Err(unsupported("wrapping 0 elements (needs at least 1)".into()));
        }
        let bytes =
            len.checked_mul(4).ok_or_else(|| unsupported(format!("wrapping {len} elements (4 * len overflows)")))?;
        if ptr % 16 != 0 {
            return Err(unsupported(format!(
                "wrapping {ptr:#x}, which is not 16-byte aligned (the kernels read float4)"
            )));
        }
        // SAFETY: the caller's contract above is `borrow`'s.
        let mem = unsafe { self.runner.borrow(ptr, bytes) }?;
        Ok(DeviceBuffer { mem, len })
    }

    /// The runner executing the kernels.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Blocks for a grid-stride pass over `n` elements read as `float4`.
    fn stride_grid(&self, n: usize) -> u32 {
        let wanted = n.div_ceil(4).div_ceil(BLOCK as usize).max(1);
        wanted.min(self.runner.stride_blocks().max(1) as usize) as u32
    }

    fn launch(&self, kernel: Kernel, grid: u32, args: &[Arg]) -> Result<()> {
        // SAFETY: every pointer passed by this module comes from a live
        // allocation of `self.runner` sized for the kernel's documented
        // accesses (KernelState::new, DeviceBuffer lengths checked against n).
        unsafe { self.runner.launch(kernel, grid, args) }
    }

    fn p(&self, mem: &R::Mem) -> Arg {
        Arg::Ptr(self.runner.ptr(mem))
    }

    fn fill(&self, mem: &R::Mem, words: usize, value: u32) -> Result<()> {
        let grid = (words.div_ceil(BLOCK as usize)).clamp(1, self.runner.stride_blocks().max(1) as usize) as u32;
        self.launch(Kernel::FillU32, grid, &[self.p(mem), Arg::U64(words as u64), Arg::U32(value)])
    }

    /// The selection and pack kernels, on accumulator `slot`, writing the
    /// packed buffer and its pack info on the device, behind `gate`
    /// (`cs_pack_gate`). Under [`Gate::Trigger`] and [`Gate::DeviceVote`]
    /// the slot is this step's new accumulator, and the Threshold rule's cut
    /// comes from the status the fused pass just wrote.
    fn pack_kernels(&self, st: &KernelState<R::Mem>, slot: usize, gate: Gate) -> Result<()> {
        let n = st.n;
        let status = self.p(&st.control);
        let vote = Arg::Ptr(self.runner.ptr(&st.control) + ControlLayout::VOTE as u64);
        let (mode, world) = match gate {
            Gate::Trigger => (0, 0),
            Gate::Always => (1, 0),
            Gate::DeviceVote => (2, st.world as u32),
        };
        self.launch(Kernel::PackGate, 1, &[status, Arg::U32(mode), self.p(&st.sel), vote, Arg::U32(world)])?;
        let fixed = |cut: u32, rel: f32, from_status: bool| {
            self.launch(
                Kernel::SelectFixed,
                1,
                &[
                    self.p(&st.sel),
                    Arg::U32(cut),
                    status,
                    Arg::F32(rel),
                    Arg::U64(n as u64),
                    Arg::U32(u32::from(from_status)),
                ],
            )
        };
        match st.config.selection {
            Selection::TopK { .. } | Selection::TopKApprox { .. } => {
                let k = st.config.selection.k(n).unwrap_or(1);
                let kmax = match st.config.selection {
                    Selection::TopKApprox { slack, .. } => ((k as f64) * (1.0 + slack)).floor().min(n as f64) as usize,
                    _ => k,
                }
                .max(k);
                self.cut_search(st, slot, k as u32, kmax as u32)?;
            }
            Selection::Threshold { rel } if gate == Gate::Always => {
                let cut = (rel as f32) * (st.committed_status.acc_sq / n as f32).sqrt();
                fixed(cut.to_bits(), rel as f32, false)?;
            }
            Selection::Threshold { rel } => fixed(0, rel as f32, true)?,
            _ => fixed(0, 0.0, false)?,
        }
        let c = chunks(n) as u32;
        let acc = self.p(&st.acc[slot]);
        let info = Arg::Ptr(self.runner.ptr(&st.control) + INFO_OFFSET as u64);
        let dtype = Arg::U32(u32::from(st.config.wire_dtype.code()));
        self.launch(Kernel::ChunkCount, c, &[acc, Arg::U64(n as u64), self.p(&st.sel), self.p(&st.counts)])?;
        self.launch(
            Kernel::PackLayout,
            1,
            &[
                self.p(&st.counts),
                Arg::U32(c),
                Arg::U64(n as u64),
                dtype,
                self.p(&st.sel),
                self.p(&st.desc),
                self.p(&st.packed),
                info,
            ],
        )?;
        self.launch(Kernel::PackChunk, c, &[acc, self.p(&st.sel), self.p(&st.desc), info, dtype, self.p(&st.packed)])?;
        let words = self.runner.size(&st.packed) / 4;
        let grid = words.div_ceil(BLOCK as usize).clamp(1, self.runner.stride_blocks().max(1) as usize) as u32;
        self.launch(Kernel::Checksum, grid, &[self.p(&st.packed), info, self.p(&st.sel)])?;
        Ok(())
    }

    /// Parses the pack info (the packed length, checked against the staging
    /// buffer, and the entry count) from the control block's bytes.
    fn parse_pack_info(&self, st: &KernelState<R::Mem>, info: &[u8]) -> Result<(usize, u64)> {
        let word = |i: usize| u64::from_le_bytes(info[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let total = usize::try_from(word(0)).unwrap_or(usize::MAX);
        if total > self.runner.size(&st.packed) {
            return Err(BackendError::Driver {
                backend: self.label,
                call: "cs_pack_layout",
                message: format!("packed size {total} exceeds the staging buffer"),
            }
            .into());
        }
        Ok((total, word(1)))
    }

    /// Reads the pack info of a pack after the vote (24 bytes).
    fn pack_info(&self, st: &KernelState<R::Mem>) -> Result<(usize, u64)> {
        let mut info = [0u8; 24];
        self.read(&st.control, INFO_OFFSET, &mut info)?;
        self.parse_pack_info(st, &info)
    }

    /// The packed buffer of the committed accumulator: the fused pass's
    /// speculative one when it is for that accumulator (its length and entry
    /// count already on the host), else packed now (`None`: read the info
    /// when needed).
    fn pack_committed(&self, st: &mut KernelState<R::Mem>) -> Result<Option<(usize, u64)>> {
        match st.speculative.take() {
            Some(spec) if spec.slot == st.committed => Ok(Some((spec.total, spec.entries))),
            _ => {
                self.pack_kernels(st, st.committed, Gate::Always)?;
                Ok(None)
            }
        }
    }

    /// The radix select of docs/selection.md for the top-k rules, entirely on
    /// the device (the level-1 histogram comes from the fused pass).
    fn cut_search(&self, st: &KernelState<R::Mem>, slot: usize, k: u32, kmax: u32) -> Result<()> {
        let acc = &st.acc[slot];
        let n = Arg::U64(st.n as u64);
        let grid = self.stride_grid(st.n);
        let cut = |hist: &R::Mem, level: u32, next: &R::Mem| {
            self.launch(
                Kernel::CutSearch,
                1,
                &[self.p(hist), Arg::U32(level), Arg::U32(k), Arg::U32(kmax), self.p(&st.sel), self.p(next)],
            )
        };
        let hist = |level: u32, out: &R::Mem| {
            self.launch(Kernel::HistLevel, grid, &[self.p(acc), n, Arg::U32(level), self.p(&st.sel), self.p(out)])
        };
        cut(&st.hist1[slot], 1, &st.hist2)?;
        hist(2, &st.hist2)?;
        cut(&st.hist2, 2, &st.hist3)?;
        hist(3, &st.hist3)?;
        cut(&st.hist3, 3, &st.hist3)
    }
}

/// When the pack kernels pack (`cs_pack_gate`'s modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// The fused pass's speculative pack: when this rank's test triggered.
    Trigger,
    /// A pack after the host's vote said sync.
    Always,
    /// After a vote reduced on the device: when it says sync and no rank
    /// failed.
    DeviceVote,
}

impl<R: KernelRunner> KernelBackend<R> {
    /// Lays the control block out for `world` ranks, growing it (once per
    /// world size) when it is too small.
    fn ensure_control(&self, st: &mut KernelState<R::Mem>, world: usize) -> Result<ControlLayout> {
        let layout = ControlLayout { world };
        if self.runner.size(&st.control) < layout.len() {
            // The status is rewritten every step, but verdicts not read yet
            // must survive the move: read them first (the one case where
            // they cost a readback of their own).
            if st.deferred == Deferred::Unread {
                st.host_verdicts.resize(VERDICT_WORDS * st.world, 0);
                let at = ControlLayout { world: st.world }.verdicts();
                self.read(&st.control, at, bytemuck::cast_slice_mut(&mut st.host_verdicts))?;
                st.deferred = Deferred::Read;
            }
            st.control = self.alloc_mem(layout.len().next_power_of_two())?;
        }
        st.world = world;
        Ok(layout)
    }

    /// The fused pass of `accumulate` into the spare accumulator, writing
    /// the status into the control block; nothing is read back.
    fn fused(
        &self,
        st: &KernelState<R::Mem>,
        delta: &DeviceBuffer<R::Mem>,
        theta: &DeviceBuffer<R::Mem>,
        tau: f32,
    ) -> Result<()> {
        check_len("delta", st.n, delta.len)?;
        check_len("theta", st.n, theta.len)?;
        let spare = 1 - st.committed;
        self.fill(&st.hist1[spare], BINS, 0)?;
        self.launch(
            Kernel::FusedPass,
            st.grid,
            &[
                self.p(&st.acc[st.committed]),
                self.p(&delta.mem),
                self.p(&theta.mem),
                self.p(&st.acc[spare]),
                self.p(&st.part_acc),
                self.p(&st.part_theta),
                self.p(&st.part_nonfinite),
                self.p(&st.hist1[spare]),
                Arg::U64(st.n as u64),
            ],
        )?;
        self.launch(
            Kernel::FusedFinish,
            1,
            &[
                self.p(&st.part_acc),
                self.p(&st.part_theta),
                self.p(&st.part_nonfinite),
                Arg::U32(st.grid),
                Arg::F32(tau),
                self.p(&st.control),
            ],
        )
    }

    /// Reads the control block up to `len` bytes into `host_control`, and
    /// the verdicts with it when a device validation left them unread.
    fn read_control(&self, st: &mut KernelState<R::Mem>, len: usize) -> Result<StepStatus> {
        let layout = ControlLayout { world: st.world };
        let unread = st.deferred == Deferred::Unread;
        let len = if unread { layout.len() } else { len };
        st.host_control.resize(len, 0);
        self.read(&st.control, 0, &mut st.host_control)?;
        let raw = &st.host_control;
        if unread {
            st.host_verdicts.clear();
            st.host_verdicts.extend(
                raw[layout.verdicts()..].chunks_exact(4).map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes"))),
            );
            st.deferred = Deferred::Read;
        }
        Ok(bytemuck::pod_read_unaligned(&raw[..std::mem::size_of::<StepStatus>()]))
    }
}

impl<R: KernelRunner> Backend for KernelBackend<R> {
    type Vector = DeviceBuffer<R::Mem>;
    type Buffer = DeviceBuffer<R::Mem>;
    type State = KernelState<R::Mem>;

    fn name(&self) -> String {
        format!("{} ({})", self.label, self.runner.device_name())
    }

    fn alloc(&self, n: usize) -> Result<Self::Buffer> {
        Ok(DeviceBuffer { mem: self.alloc_mem((4 * n).max(16))?, len: n })
    }

    fn upload(&self, src: &[f32], dst: &mut Self::Vector) -> Result<()> {
        check_len("upload", dst.len, src.len())?;
        self.write(&mut dst.mem, 0, bytemuck::cast_slice(src))
    }

    fn download(&self, src: &Self::Vector, dst: &mut [f32]) -> Result<()> {
        check_len("download", src.len, dst.len())?;
        self.read(&src.mem, 0, bytemuck::cast_slice_mut(dst))
    }

    fn buffer_len(&self, buf: &Self::Vector) -> usize {
        buf.len
    }

    fn create_state(&self, n: usize, config: &SyncConfig) -> Result<Self::State> {
        if n == 0 || n >= u32::MAX as usize {
            return Err(BackendError::Unsupported {
                backend: self.label,
                what: format!("vectors of {n} elements (1 ..= 2^32 - 2 supported: u32 histogram counts)"),
            }
            .into());
        }
        KernelState::new(&self.runner, &self.counter, n, config, self.stride_grid(n))
    }

    fn read_accumulator(&self, state: &Self::State, dst: &mut [f32]) -> Result<()> {
        check_len("accumulator", state.n, dst.len())?;
        self.read(&state.acc[state.committed], 0, bytemuck::cast_slice_mut(dst))
    }

    fn write_accumulator(&self, state: &mut Self::State, src: &[f32]) -> Result<()> {
        check_len("accumulator", state.n, src.len())?;
        let committed = state.committed;
        state.speculative = None;
        state.deferred = Deferred::None;
        self.write(&mut state.acc[committed], 0, bytemuck::cast_slice(src))
    }

    fn accumulate(
        &self,
        st: &mut Self::State,
        delta: &Self::Vector,
        theta: &Self::Vector,
        tau: f32,
    ) -> Result<StepStatus> {
        self.fused(st, delta, theta, tau)?;
        st.speculative = None;
        let spare = 1 - st.committed;
        self.pack_kernels(st, spare, Gate::Trigger)?;
        // One readback: the status, the speculative pack's info, and the
        // verdicts of a device exchange that nobody has read yet.
        let status = self.read_control(st, CONTROL_BYTES)?;
        if status.triggered != 0 {
            let (total, entries) = self.parse_pack_info(st, &st.host_control[INFO_OFFSET..INFO_OFFSET + 24])?;
            st.speculative = Some(Speculative { slot: spare, total, entries });
        }
        st.pending = Some(status);
        Ok(status)
    }

    /// The fused pass (unless the host failed first) and `cs_vote_word`,
    /// nothing read back; the words are in the control block.
    fn accumulate_and_vote(
        &self,
        st: &mut Self::State,
        step: Option<(&Self::Vector, &Self::Vector, f32)>,
        vote: DeviceVote,
    ) -> Result<DeviceBytes> {
        if vote.rank >= vote.world || u32::try_from(vote.world).is_err() {
            return Err(CollectiveError::InvalidRank { rank: vote.rank, world: vote.world }.into());
        }
        let layout = self.ensure_control(st, vote.world)?;
        st.speculative = None;
        st.pending = None;
        st.voted_fused = false;
        let code = match (vote.code, step) {
            (0, Some((delta, theta, tau))) => {
                self.fused(st, delta, theta, tau)?;
                st.voted_fused = true;
                0
            }
            // No step without a host failure: vote a backend failure
            // rather than a sync of stale data.
            (0, None) => crate::error::FailureCause::Backend.code(),
            (code, _) => code,
        };
        let words = Arg::Ptr(self.runner.ptr(&st.control) + ControlLayout::VOTE as u64);
        self.launch(
            Kernel::VoteWord,
            1,
            &[
                self.p(&st.control),
                Arg::U32(u32::from(vote.forced)),
                Arg::U32(vote.rank as u32),
                Arg::U32(vote.world as u32),
                Arg::U32(code),
                Arg::U32(vote.nonfinite_code),
                words,
            ],
        )?;
        Ok(DeviceBytes { ptr: self.runner.ptr(&st.control) + ControlLayout::VOTE as u64, len: 4 * layout.vote_words() })
    }

    /// The pack kernels on the new accumulator behind the reduced vote
    /// (`cs_pack_gate` mode 2); the packed length is the pack info's first
    /// word.
    fn pack_after_device_vote(&self, st: &mut Self::State) -> Result<DeviceLens> {
        let layout = ControlLayout { world: st.world };
        if st.world == 0 {
            return Err(BackendError::Unsupported {
                backend: self.label,
                what: "packing after a device vote before accumulate_and_vote".into(),
            }
            .into());
        }
        self.pack_kernels(st, 1 - st.committed, Gate::DeviceVote)?;
        let base = self.runner.ptr(&st.control);
        Ok(DeviceLens {
            send: DeviceBytes { ptr: base + INFO_OFFSET as u64, len: 8 },
            recv: DeviceBytes { ptr: base + layout.lens() as u64, len: 8 * st.world },
        })
    }

    fn read_device_vote(&self, st: &mut Self::State, vote: &mut [u32], lens: &mut [u64]) -> Result<StepStatus> {
        let layout = ControlLayout { world: st.world };
        check_len("vote words", layout.vote_words(), vote.len())?;
        check_len("lens", layout.world, lens.len())?;
        let status = self.read_control(st, layout.verdicts())?;
        let raw = &st.host_control;
        for (w, b) in vote.iter_mut().zip(raw[ControlLayout::VOTE..].chunks_exact(4)) {
            *w = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        for (l, b) in lens.iter_mut().zip(raw[layout.lens()..].chunks_exact(8)) {
            *l = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        if !st.voted_fused {
            return Ok(status);
        }
        st.pending = Some(status);
        if vote[0] != 0 && vote[1..].iter().all(|&w| w == 0) {
            let (total, entries) = self.parse_pack_info(st, &st.host_control[INFO_OFFSET..INFO_OFFSET + 24])?;
            st.speculative = Some(Speculative { slot: 1 - st.committed, total, entries });
        }
        Ok(status)
    }

    fn commit_accumulate(&self, st: &mut Self::State) -> Result<()> {
        if let Some(status) = st.pending.take() {
            st.committed = 1 - st.committed;
            st.committed_status = status;
        }
        Ok(())
    }

    fn select_pack<'s>(&self, st: &'s mut Self::State) -> Result<&'s [u8]> {
        let known = self.pack_committed(st)?;
        if let (Some((total, _)), None) = (known, st.bounded_read) {
            st.host_packed.resize(total, 0);
            self.read(&st.packed, 0, &mut st.host_packed)?;
            return Ok(&st.host_packed);
        }
        if let Some(bound) = st.bounded_read {
            // One readback: the rule's largest buffer, cut to the length its
            // header and chunk table give (read with the shared reader, which
            // checks them: a device that wrote an inconsistent table is a
            // driver error).
            st.host_packed.resize(bound, 0);
            self.read(&st.packed, 0, &mut st.host_packed)?;
            let total = st.table.read_prefix(&st.host_packed);
            let lay = st.table.layout();
            return match total {
                Ok(total) if total <= bound as u64 && lay.n == st.n as u64 && lay.dtype == st.config.wire_dtype => {
                    st.host_packed.truncate(total as usize);
                    Ok(&st.host_packed)
                }
                other => Err(BackendError::Driver {
                    backend: self.label,
                    call: "cs_pack_layout",
                    message: format!("device wrote an inconsistent header or chunk table ({other:?}, bound {bound})"),
                }
                .into()),
            };
        }
        let (total, _) = self.pack_info(st)?;
        st.host_packed.resize(total, 0);
        self.read(&st.packed, 0, &mut st.host_packed)?;
        Ok(&st.host_packed)
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        Some(self.runner.device_memory())
    }

    /// The buffer the fused pass packed speculatively, with nothing to read
    /// (its length and entry count came with the status). Without one (this
    /// rank's test did not trigger), the pack kernels, then one readback of
    /// the 24-byte pack info, except under the dense rule, whose length and
    /// count are known (every entry, every chunk a bitmap: the bounded size
    /// is the size; a device that wrote another layout fails the validation
    /// of its own buffer like any peer's). The packed bytes stay on the
    /// device.
    fn pack_on_device(&self, st: &mut Self::State) -> Result<PackedOnDevice> {
        let (total, entries) = match (self.pack_committed(st)?, st.config.selection, st.bounded_read) {
            (Some(known), _, _) => known,
            (None, Selection::Dense, Some(total)) => (total, st.n as u64),
            (None, _, _) => self.pack_info(st)?,
        };
        Ok(PackedOnDevice { bytes: DeviceBytes { ptr: self.runner.ptr(&st.packed), len: total }, entries })
    }

    fn receive_on_device(&self, st: &mut Self::State, total: usize) -> Result<DeviceBytes> {
        st.validated = false;
        grow(self, &mut st.peer_bytes, total)?;
        let g = st.peer_bytes.as_ref().expect("grow always leaves an allocation");
        Ok(DeviceBytes { ptr: self.runner.ptr(g), len: self.runner.size(g) })
    }

    /// On the device: the gathered bytes (unless the collective wrote them
    /// there) and each rank's (offset, length) are uploaded, and
    /// `cs_validate_peers` checks every rank in one launch (one block per
    /// rank, the host validator's checks in its order) and writes the apply
    /// descriptors and one verdict per rank after the control words. For
    /// host bytes one readback of 32 bytes per rank brings the verdicts
    /// now. For a device exchange nothing is read back: the apply kernels
    /// check the verdicts on the device, the next `accumulate` reads them
    /// with the status, and [`Backend::deferred_verdict`] reports them.
    /// `host` is not used. The next `apply` with the same `gathered`
    /// uploads nothing.
    fn validate_peers(&self, st: &mut Self::State, gathered: &Gathered, _host: HostPeerCheck<'_>) -> Result<()> {
        st.validated = false;
        st.deferred = Deferred::None;
        let world = gathered.ranks();
        if world == 0 {
            return Ok(());
        }
        let all = gathered.as_bytes();
        let offsets = gathered.offsets();
        st.host_spans.clear();
        for r in 0..world {
            st.host_spans.extend_from_slice(&[offsets[r] as u64, (offsets[r + 1] - offsets[r]) as u64]);
        }
        let c = chunks(st.n);
        if gathered.is_on_device() {
            // The collective wrote the bytes into `peer_bytes`
            // (`receive_on_device`), which must hold them.
            if st.peer_bytes.as_ref().is_none_or(|g| self.runner.size(g) < gathered.total_len()) {
                return Err(BackendError::Unsupported {
                    backend: self.label,
                    what: "validating a device exchange larger than the memory receive_on_device gave".into(),
                }
                .into());
            }
        } else {
            grow(self, &mut st.peer_bytes, all.len())?;
        }
        grow(self, &mut st.peer_desc, world * c * DESC_WORDS * 4)?;
        grow(self, &mut st.peer_spans, 16 * world)?;
        let layout = self.ensure_control(st, world)?;
        let (Some(g), Some(d), Some(sp)) = (st.peer_bytes.as_mut(), st.peer_desc.as_ref(), st.peer_spans.as_mut())
        else {
            unreachable!("grow always leaves an allocation");
        };
        if !gathered.is_on_device() {
            self.write(g, 0, all)?;
        }
        self.write(sp, 0, bytemuck::cast_slice(&st.host_spans))?;
        let dtype = st.config.wire_dtype;
        let verdicts = Arg::Ptr(self.runner.ptr(&st.control) + layout.verdicts() as u64);
        self.launch(
            Kernel::ValidatePeers,
            world as u32,
            &[self.p(g), self.p(sp), Arg::U64(st.n as u64), Arg::U32(u32::from(dtype.code())), self.p(d), verdicts],
        )?;
        if gathered.is_on_device() {
            st.deferred = Deferred::Unread;
        } else {
            st.host_verdicts.resize(VERDICT_WORDS * world, 0);
            self.read(&st.control, layout.verdicts(), bytemuck::cast_slice_mut(&mut st.host_verdicts))?;
            check_verdicts(&st.host_verdicts, st.n as u64, dtype, self.label, "cs_validate_peers")?;
        }
        st.validated_offsets.clear();
        st.validated_offsets.extend_from_slice(offsets);
        st.validated = true;
        Ok(())
    }

    /// The verdicts of the last device exchange: from the host copy the
    /// last `accumulate` read with the status, else read back now.
    fn deferred_verdict(&self, st: &Self::State) -> Result<()> {
        let (n, dtype) = (st.n as u64, st.config.wire_dtype);
        match st.deferred {
            Deferred::None => Ok(()),
            Deferred::Read => check_verdicts(&st.host_verdicts, n, dtype, self.label, "cs_validate_peers"),
            Deferred::Unread => {
                let mut words = vec![0u32; VERDICT_WORDS * st.world];
                let at = ControlLayout { world: st.world }.verdicts();
                self.read(&st.control, at, bytemuck::cast_slice_mut(&mut words))?;
                check_verdicts(&words, n, dtype, self.label, "cs_validate_peers")
            }
        }
    }

    fn apply(
        &self,
        st: &mut Self::State,
        theta: &mut Self::Vector,
        gathered: &Gathered,
        own_rank: usize,
        weight: f32,
    ) -> Result<()> {
        check_len("theta", st.n, theta.len)?;
        // Error feedback changes the committed accumulator below.
        st.speculative = None;
        let world = gathered.ranks();
        if own_rank >= world {
            return Err(CollectiveError::InvalidRank { rank: own_rank, world }.into());
        }
        let dtype = st.config.wire_dtype;
        let on_device = std::mem::take(&mut st.validated) && st.validated_offsets == gathered.offsets();
        if gathered.is_on_device() && !on_device {
            return Err(BackendError::Unsupported {
                backend: self.label,
                what: "applying a device exchange that validate_peers did not accept just before".into(),
            }
            .into());
        }
        if !on_device {
            // Not the exchange `validate_peers` just checked: describe the
            // buffers on the host and upload them with their descriptors.
            st.host_desc.clear();
            for (r, bytes) in gathered.iter() {
                describe(&mut st.table, bytes, gathered.offsets()[r] as u64, st.n, dtype, &mut st.host_desc)
                    .map_err(|source| Error::InvalidPeerBuffer { rank: r, source })?;
            }
            let all = gathered.as_bytes();
            let desc_bytes: &[u8] = bytemuck::cast_slice(&st.host_desc);
            grow(self, &mut st.peer_bytes, all.len())?;
            grow(self, &mut st.peer_desc, desc_bytes.len())?;
            let (Some(g), Some(d)) = (st.peer_bytes.as_mut(), st.peer_desc.as_mut()) else {
                unreachable!("grow always leaves an allocation");
            };
            self.write(g, 0, all)?;
            self.write(d, 0, desc_bytes)?;
        }
        let (Some(g), Some(d)) = (st.peer_bytes.as_ref(), st.peer_desc.as_ref()) else {
            unreachable!("validate_peers or the upload above left both allocations");
        };
        let c = chunks(st.n);
        // A device exchange's verdicts are still on the device: every launch
        // below checks them there.
        let gate_ranks = if on_device && st.deferred == Deferred::Unread { st.world as u32 } else { 0 };
        let verdicts = Arg::Ptr(self.runner.ptr(&st.control) + ControlLayout { world: st.world }.verdicts() as u64);
        let rank_desc = |r: usize| Arg::Ptr(self.runner.ptr(d) + (r * c * DESC_WORDS * 4) as u64);
        let run = |mode: u32, r: usize, acc: &R::Mem| {
            self.launch(
                Kernel::ApplyEntries,
                c as u32,
                &[
                    Arg::Ptr(self.runner.ptr(g)),
                    rank_desc(r),
                    Arg::U32(u32::from(dtype.code())),
                    Arg::U32(mode),
                    self.p(&st.sum),
                    self.p(&st.mark),
                    self.p(&theta.mem),
                    self.p(acc),
                    Arg::F32(weight),
                    verdicts,
                    Arg::U32(gate_ranks),
                ],
            )
        };
        let acc = &st.acc[st.committed];
        for r in 0..world {
            run(0, r, acc)?;
        }
        for r in 0..world {
            run(1, r, acc)?;
        }
        if st.config.error_feedback {
            run(2, own_rank, acc)?;
        } else {
            let grid = self.stride_grid(st.n);
            self.launch(
                Kernel::ZeroIfValid,
                grid,
                &[self.p(acc), Arg::U64(st.n as u64), verdicts, Arg::U32(gate_ranks)],
            )?;
        }
        Ok(())
    }
}

/// Makes `slot` hold at least `bytes` bytes (doubling, so repeated exchanges
/// of similar size stop allocating).
fn grow<R: KernelRunner>(backend: &KernelBackend<R>, slot: &mut Option<R::Mem>, bytes: usize) -> Result<()> {
    let have = slot.as_ref().map_or(0, |m| backend.runner.size(m));
    if have < bytes.max(16) {
        *slot = Some(backend.alloc_mem(bytes.max(16).next_power_of_two())?);
    }
    Ok(())
}

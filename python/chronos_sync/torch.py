"""chronos-sync as a ``DistributedDataParallel`` comm hook.

Usage, on the process group the job already has::

    from chronos_sync.torch import ChronosState, chronos_hook

    state = ChronosState(model=ddp.module, scale=lr, selection="topk", ratio=0.02)
    ddp.register_comm_hook(state, chronos_hook)

Semantics (what DDP receives from the hook). DDP hands the hook this rank's
local gradient of one bucket and applies whatever tensor the returned future
holds as the bucket's gradient. For every bucket the hook runs the crate's
step of the spec with

* ``delta = scale * grad`` (``scale`` defaults to 1; set it to the learning
  rate of plain SGD so that the significance test compares the parameter
  update the optimizer would make, ``||scale * acc||``, with the bucket's
  parameters ``||theta||``);
* ``theta`` = a flattened copy of the bucket's parameters, taken at every
  call into one persistent buffer per bucket (the parameters themselves are
  scattered over several tensors, so the engine cannot work on them in
  place; the copy is the one copy the hook makes, and it only feeds the
  significance test and the apply).

When the group syncs, the engine adds ``(1/W) * sum_r sent_r`` to that copy;
the hook returns the difference ``(theta_after - theta_before) / scale``:
the globally agreed average of what every rank sent, identical on every rank
to the bit. When the group does not sync it returns zeros. What a rank did
not send stays in its accumulator as error feedback and goes out later, so
nothing is lost (conservation holds over the whole group:
``sum_r sum_t delta == sum_r acc + W * scale * sum_t returned``).

Collectives: the vote (an all-reduce MAX of a small int64 tensor), the count
exchange (an all-gather of one int64 per rank) and the payload (an
all-gather of uint8 tensors padded to the largest count, and to at least one
byte: gloo fails on zero-element collectives) run on the DDP process group
itself (gloo on CPU; on NCCL the small tensors live on the current CUDA
device and the gradient is copied to the host for the CPU engine). Every
call waits at most ``timeout`` seconds. A failure completes the hook's
future with one of ``chronos_sync``'s exceptions on every rank that sees it
(``backward()`` raises it; see ``chronos_hook``).

Buckets: DDP rebuilds its buckets after the first iteration, so the first
``dense_steps`` iterations (default 1) are plain averaged all-reduces, as
PowerSGD does; engines are keyed by the bucket's parameters (their positions
in ``model.parameters()`` when a model is given, otherwise the bucket's index
and length), so a rebuilt bucket gets its own engine.
"""

import datetime
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from . import _native
from ._native import Backend, Engine

__all__ = ["ChronosState", "chronos_hook", "ProcessGroupComm"]

_FORMAT = "chronos_sync.torch/1"


class ProcessGroupComm:
    """The crate's collective over a ``torch.distributed`` process group.

    Every call is issued with ``async_op=True`` and waited for at most
    ``timeout`` seconds. ``sent_bytes`` counts the bytes this rank handed to
    the process group.
    """

    def __init__(self, group: Optional[Any] = None, timeout: float = 60.0):
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        self.timeout = float(timeout)
        self._td = datetime.timedelta(seconds=self.timeout)
        backend = str(dist.get_backend(self.group)).lower()
        if backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        self.sent_bytes = 0
        self.calls = 0

    def _wait(self, work: Any, op: str) -> None:
        if work.wait(self._td) is False:
            raise TimeoutError(f"{op} timed out after {self.timeout} s")

    def all_reduce_max(self, values: List[int]) -> List[int]:
        t = torch.tensor(values if values else [0], dtype=torch.int64, device=self.device)
        self.sent_bytes += t.numel() * 8
        self.calls += 1
        self._wait(dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group, async_op=True), "all_reduce_max")
        return t.tolist()[: len(values)]

    def all_gather_u64(self, value: int) -> List[int]:
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        out = [torch.empty(1, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        self.sent_bytes += 8
        self.calls += 1
        self._wait(dist.all_gather(out, t, group=self.group, async_op=True), "all_gather_u64")
        return [int(o.item()) for o in out]

    def all_gather_bytes(self, send: bytes, lens: List[int]) -> bytes:
        width = max(max(lens), 1)  # never a zero-element collective
        buf = torch.zeros(width, dtype=torch.uint8)
        if send:
            buf[: len(send)] = torch.frombuffer(bytearray(send), dtype=torch.uint8)
        buf = buf.to(self.device)
        out = [torch.empty(width, dtype=torch.uint8, device=self.device) for _ in range(self.world_size)]
        self.sent_bytes += width
        self.calls += 1
        self._wait(dist.all_gather(out, buf, group=self.group, async_op=True), "all_gather_bytes")
        return b"".join(o[:n].cpu().numpy().tobytes() for o, n in zip(out, lens))


class _Entry:
    __slots__ = ("engine", "theta", "before", "delta", "velocity", "last")

    def __init__(self, engine: Engine, n: int):
        self.engine = engine
        self.theta = torch.zeros(n, dtype=torch.float32)
        self.before = torch.zeros(n, dtype=torch.float32)
        self.delta = torch.zeros(n, dtype=torch.float32)
        self.velocity = torch.zeros(n, dtype=torch.float32)
        self.last: Dict[str, Any] = {}


class ChronosState:
    """State of the chronos-sync comm hook: one engine per bucket on one
    shared CPU backend, the collective over the process group, the
    configuration, and counters.

    ``config`` keywords are ``chronos_sync.Engine``'s (``selection``,
    ``ratio``, ``threshold``, ``wire_dtype``, ...); defaults are the spec's
    (top-1 %, threshold 0.01 adaptive, bf16). ``syncs`` counts the bucket
    steps that synced; ``sent_bytes`` the bytes handed to the process group.
    """

    def __init__(
        self,
        process_group: Optional[Any] = None,
        *,
        model: Optional[torch.nn.Module] = None,
        scale: float = 1.0,
        timeout: float = 60.0,
        dense_steps: int = 1,
        momentum: float = 0.0,
        threads: Optional[int] = None,
        **config: Any,
    ):
        if not (scale > 0.0):
            raise _native.ConfigError(f"scale must be positive, got {scale}")
        self.comm = ProcessGroupComm(process_group, timeout)
        self.backend = Backend(threads)
        self.scale = float(scale)
        self.dense_steps = int(dense_steps)
        if not (0.0 <= momentum < 1.0):
            raise _native.ConfigError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.config = dict(config)
        self.iteration = 0
        self.syncs = 0
        self.last_error: Optional[BaseException] = None
        self.engines: Dict[str, _Entry] = {}
        self._pending: Dict[str, bytes] = {}
        self._pending_velocity: Dict[str, torch.Tensor] = {}
        self._index = {id(p): i for i, p in enumerate(model.parameters())} if model is not None else None

    # -- keys and engines --------------------------------------------------
    def _key(self, bucket: Any, n: int) -> str:
        if self._index is not None:
            try:
                return "p" + ",".join(str(self._index[id(p)]) for p in bucket.parameters())
            except KeyError:
                pass
        return f"b{bucket.index()}:{n}"

    def _entry(self, key: str, n: int) -> _Entry:
        entry = self.engines.get(key)
        if entry is None:
            entry = _Entry(Engine(self.backend, self.comm, n, **self.config), n)
            saved = self._pending.pop(key, None)
            if saved is not None:
                entry.engine.restore(saved)
            v = self._pending_velocity.pop(key, None)
            if v is not None:
                entry.velocity.copy_(v)
            self.engines[key] = entry
        elif entry.engine.n != n:
            raise _native.ConfigError(f"bucket {key} changed length from {entry.engine.n} to {n}")
        return entry

    # -- checkpoints -------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Everything a restarted job needs: per-bucket engine checkpoints
        (residuals, counters, configuration fingerprint) and the iteration."""
        engines = {k: e.engine.checkpoint() for k, e in self.engines.items()}
        velocity = {k: e.velocity.clone() for k, e in self.engines.items()}
        for k, b in self._pending.items():
            engines.setdefault(k, b)
        for k, v in self._pending_velocity.items():
            velocity.setdefault(k, v)
        return {"format": _FORMAT, "iteration": self.iteration, "syncs": self.syncs, "engines": engines,
                "velocity": velocity}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores a ``state_dict()``; engines not created yet are restored
        when their bucket first arrives."""
        if state.get("format") != _FORMAT:
            raise _native.ConfigError(f"not a {_FORMAT} state dict: format {state.get('format')!r}")
        self.iteration = int(state["iteration"])
        self.syncs = int(state.get("syncs", 0))
        self._pending = {}
        self._pending_velocity = {}
        for key, saved in state["engines"].items():
            saved = bytes(saved)
            if key in self.engines:
                self.engines[key].engine.restore(saved)
            else:
                self._pending[key] = saved
        for key, v in state.get("velocity", {}).items():
            if key in self.engines:
                self.engines[key].velocity.copy_(v)
            else:
                self._pending_velocity[key] = v.clone()

    # -- reporting ---------------------------------------------------------
    @property
    def sent_bytes(self) -> int:
        """Bytes this rank handed to the process group through the hook."""
        return self.comm.sent_bytes

    def reports(self) -> Dict[str, Dict[str, Any]]:
        """Each engine's last step report."""
        return {k: e.last for k, e in self.engines.items()}


def _completed(t: torch.Tensor) -> "torch.futures.Future[torch.Tensor]":
    fut: "torch.futures.Future[torch.Tensor]" = torch.futures.Future()
    fut.set_result(t)
    return fut


def _dense(state: "ChronosState", grad: torch.Tensor) -> "torch.futures.Future[torch.Tensor]":
    comm = state.comm
    t = grad.detach().clone()
    comm.sent_bytes += t.numel() * t.element_size()
    comm.calls += 1
    comm._wait(dist.all_reduce(t, group=comm.group, async_op=True), "all_reduce")
    return _completed(t.div_(comm.world_size))


def chronos_hook(state: ChronosState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The comm hook: ``ddp.register_comm_hook(state, chronos_hook)``.

    Returns a completed future of a tensor of the bucket's shape, identical
    on every rank (see the module docs for the semantics). A failure (a
    NaN/inf gradient on any rank: ``NonFiniteError`` on every rank; a peer
    that stops: ``SyncTimeoutError`` / ``CollectiveFailedError``) completes
    the future with the crate's exception instead of raising, so DDP's
    reducer stays consistent: ``backward()`` raises it (DDP rewraps it as a
    ``RuntimeError`` carrying the crate's message), the next iteration runs
    normally, and ``state.last_error`` holds the typed exception. A failed
    step changes no state. Called directly, ``future.wait()`` raises it.
    """
    try:
        fut = _step(state, bucket)
    except Exception as e:  # the future carries it; DDP re-raises it in backward()
        state.last_error = e
        fut = torch.futures.Future()
        fut.set_exception(e)
        return fut
    if bucket.is_last():
        state.iteration += 1
    return fut


def _step(state: ChronosState, bucket: Any) -> "torch.futures.Future[torch.Tensor]":
    grad = bucket.buffer()
    if state.iteration < state.dense_steps:
        return _dense(state, grad)
    n = grad.numel()
    entry = state._entry(state._key(bucket, n), n)
    with torch.no_grad():
        torch.cat([p.detach().reshape(-1).float().cpu() for p in bucket.parameters()], out=entry.theta)
        entry.before.copy_(entry.theta)
        g = grad.detach()
        velocity = None
        if state.momentum:
            # Momentum correction (as in DGC): the rank's momentum runs
            # before the sparsification, so the accumulator holds what
            # momentum SGD would apply; committed only if the step succeeds.
            velocity = torch.add(g.reshape(-1).to("cpu", torch.float32), entry.velocity, alpha=state.momentum)
            g = velocity
        if state.scale != 1.0:
            torch.mul(g.reshape(-1).to("cpu", torch.float32), state.scale, out=entry.delta)
            d = entry.delta
        elif g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous():
            d = g.reshape(-1)  # zero-copy: the engine reads DDP's bucket buffer
        else:
            entry.delta.copy_(g.reshape(-1))
            d = entry.delta
    # On failure this raises before anything below changes.
    entry.last = entry.engine.step(d.numpy(), entry.theta.numpy())
    state.syncs += int(entry.last["synced"])
    if velocity is not None:
        entry.velocity.copy_(velocity)
    out = torch.sub(entry.theta, entry.before)
    if state.scale != 1.0:
        out.div_(state.scale)
    return _completed(out.to(grad.device, grad.dtype).view_as(grad))

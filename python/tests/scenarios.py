"""Per-rank bodies of the distributed tests (run in spawned processes)."""

from __future__ import annotations

import io
import os
import time
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist

import chronos_sync
from chronos_sync.torch import ChronosState, chronos_hook


class FakeBucket:
    """The part of ``dist.GradBucket`` the hook uses."""

    def __init__(self, buffer: torch.Tensor, params: List[torch.Tensor], index: int = 0, last: bool = True):
        self._buffer, self._params, self._index, self._last = buffer, params, index, last

    def buffer(self) -> torch.Tensor:
        return self._buffer

    def parameters(self) -> List[torch.Tensor]:
        return self._params

    def gradients(self) -> List[torch.Tensor]:
        return [self._buffer]

    def index(self) -> int:
        return self._index

    def is_last(self) -> bool:
        return self._last


def shared_params(n: int) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(7)  # the same on every rank
    return [torch.randn(n // 2, generator=g), torch.randn(n - n // 2, generator=g)]


def grad(rank: int, t: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(n, generator=g) * 0.05


def ddp_identical(rank: int, world: int, steps: int = 8, bucket_cap_mb: float = 25.0) -> Dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    state = ChronosState(model=model, timeout=10, ratio=0.05, threshold=0.001)
    outs: List[bytes] = []

    def hook(s, bucket):
        fut = chronos_hook(s, bucket)
        assert fut.value().shape == bucket.buffer().shape
        outs.append(fut.value().numpy().tobytes())
        return fut

    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=g)
        y = torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().tobytes()
    synced = sum(1 for r in state.reports().values() if r.get("synced"))
    return {"outs": outs, "params": params, "keys": sorted(state.engines), "synced": synced}


def conservation(rank: int, world: int, steps: int = 25, n: int = 3000) -> Dict[str, Any]:
    params = shared_params(n)
    state = ChronosState(timeout=10, dense_steps=0, ratio=0.02, max_accumulation_steps=4)
    sum_delta = np.zeros(n)
    sum_out = np.zeros(n)
    syncs = 0
    for t in range(steps):
        gr = grad(rank, t, n)
        sum_delta += gr.numpy().astype(np.float64)
        out = chronos_hook(state, FakeBucket(gr, params)).value()
        sum_out += out.numpy().astype(np.float64)
        syncs += int(next(iter(state.reports().values()))["synced"])
    acc = np.zeros(n, dtype=np.float32)
    next(iter(state.engines.values())).engine.read_accumulator(acc)
    return {"sum_delta": sum_delta, "sum_out": sum_out, "acc": acc.astype(np.float64), "syncs": syncs}


def roundtrip(rank: int, world: int, n: int = 2000) -> Dict[str, Any]:
    params = shared_params(n)
    cfg = dict(timeout=10, dense_steps=0, ratio=0.01, selection="topk_approx", threshold=0.02, momentum=0.9)
    state = ChronosState(**cfg)
    for t in range(6):
        chronos_hook(state, FakeBucket(grad(rank, t, n), params))
    blob = io.BytesIO()
    torch.save(state.state_dict(), blob)
    cont = [chronos_hook(state, FakeBucket(grad(rank, t, n), params)).value().clone() for t in range(6, 14)]
    end_a = state.state_dict()
    blob.seek(0)
    restored = ChronosState(**cfg)
    restored.load_state_dict(torch.load(blob))
    again = [chronos_hook(restored, FakeBucket(grad(rank, t, n), params)).value().clone() for t in range(6, 14)]
    end_b = restored.state_dict()
    return {
        "same_outs": all(torch.equal(a, b) for a, b in zip(cont, again)),
        "same_state": end_a["engines"] == end_b["engines"]
        and all(torch.equal(end_a["velocity"][k], end_b["velocity"][k]) for k in end_a["velocity"]),
        "any_nonzero": any(bool(a.abs().sum() > 0) for a in cont),
    }


def nan_gradient(rank: int, world: int, n: int = 1000) -> Dict[str, Any]:
    params = shared_params(n)
    state = ChronosState(timeout=10, dense_steps=0, momentum=0.5)
    for t in range(2):
        chronos_hook(state, FakeBucket(grad(rank, t, n), params))
    before = state.state_dict()
    before_v = {k: v.clone() for k, v in before["velocity"].items()}
    bad = grad(rank, 2, n)
    if rank == 1:
        bad[5] = float("nan")
    raised = None
    try:
        chronos_hook(state, FakeBucket(bad, params)).wait()
    except chronos_sync.ChronosError as e:
        raised = (type(e).__name__, str(e))
        assert state.last_error is e
    now = state.state_dict()
    unchanged = (now["engines"] == before["engines"] and now["iteration"] == before["iteration"]
                 and all(torch.equal(now["velocity"][k], before_v[k]) for k in before_v))
    after = chronos_hook(state, FakeBucket(grad(rank, 3, n), params)).value()
    return {"raised": raised, "unchanged": unchanged, "after_ok": bool(torch.isfinite(after).all())}


def stopping_rank(rank: int, world: int, mode: str, n: int = 1000) -> Dict[str, Any]:
    params = shared_params(n)
    state = ChronosState(timeout=3, dense_steps=0)
    for t in range(2):
        chronos_hook(state, FakeBucket(grad(rank, t, n), params))
    if rank == world - 1:
        if mode == "exit":
            os._exit(0)
        time.sleep(120)
    start = time.monotonic()
    raised = None
    try:
        chronos_hook(state, FakeBucket(grad(rank, 2, n), params)).wait()
    except chronos_sync.ChronosError as e:
        raised = (type(e).__name__, str(e))
    return {"raised": raised, "elapsed": time.monotonic() - start}


def ddp_nan(rank: int, world: int, steps: int = 5) -> Dict[str, Any]:
    """A NaN in one rank's batch at step 2, through real DDP."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    ddp = DDP(model)
    state = ChronosState(model=model, timeout=10, threshold=0.001)
    ddp.register_comm_hook(state, chronos_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)
    log = []
    for t in range(steps):
        x = torch.randn(8, 16, generator=g)
        if t == 2 and rank == 1:
            x[0, 0] = float("nan")
        opt.zero_grad()
        try:
            torch.nn.functional.cross_entropy(ddp(x), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
            log.append("ok")
        except RuntimeError as e:
            log.append(str(e))
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().tobytes()
    return {"log": log, "last_error": type(state.last_error).__name__, "params": params}

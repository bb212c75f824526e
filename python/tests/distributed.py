"""Runs a scenario in W real processes on a gloo group over 127.0.0.1."""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import socket
import traceback
from typing import Any, Callable, Dict, List


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn: Callable, rank: int, world: int, port: int, pg_timeout: float, kwargs: Dict, q: Any) -> None:
    import torch
    import torch.distributed as dist

    torch.manual_seed(1234 + rank)
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=pg_timeout),
        )
        out = fn(rank, world, **kwargs)
        q.put((rank, "ok", out))
    except BaseException as e:  # reported to the parent, which fails the test
        q.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        # Flush the result, then exit hard: a peer that vanished leaves
        # gloo's teardown hanging.
        q.close()
        q.join_thread()
        os._exit(0)


def run_ranks(fn: Callable, world: int, *, timeout: float = 60.0, pg_timeout: float = 20.0,
              expect: int | None = None, **kwargs: Any) -> List[Any]:
    """Runs ``fn(rank, world, **kwargs)`` on every rank; returns the results by
    rank (None for a rank that reported nothing). Raises if a rank raised."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(fn, r, world, port, pg_timeout, kwargs, q)) for r in range(world)]
    for p in procs:
        p.start()
    results: List[Any] = [None] * world
    errors = []
    want = world if expect is None else expect
    import queue as _queue
    import time

    deadline = time.monotonic() + timeout
    got = 0
    try:
        while got < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {got} of {want} ranks reported within {timeout} s")
            try:
                rank, status, out = q.get(timeout=left)
            except _queue.Empty:
                continue
            got += 1
            if status == "ok":
                results[rank] = out
            else:
                errors.append(f"rank {rank}: {out}")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        raise AssertionError("\n".join(errors))
    return results

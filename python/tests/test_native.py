"""The extension module alone: inputs, errors, a group of one."""

from __future__ import annotations

import time

import numpy as np
import pytest

import chronos_sync


class Solo:
    rank, world_size, timeout = 0, 1, 5.0

    def all_reduce_max(self, values):
        return list(values)

    def all_gather_u64(self, value):
        return [value]

    def all_gather_bytes(self, send, lens):
        return bytes(send)


class Broken(Solo):
    def all_reduce_max(self, values):
        raise RuntimeError("peer went away")


def engine(n=100, comm=None, **kw):
    return chronos_sync.Engine(chronos_sync.Backend(1), comm or Solo(), n, **kw)


def test_step_in_place_without_copies():
    e = engine(selection="dense", wire_dtype="f32", threshold=0.0, adaptive=False)
    delta = np.full(100, 0.5, dtype=np.float32)
    params = np.ones(100, dtype=np.float32)
    report = e.step(delta, params)
    assert report["synced"] and report["step"] == 1
    assert np.all(params == 1.5)  # written into the caller's buffer


def test_bad_inputs_are_exceptions():
    e = engine()
    ok = np.ones(100, dtype=np.float32)
    with pytest.raises(ValueError):
        e.step(np.ones(100, dtype=np.float64), ok)
    with pytest.raises(ValueError):
        e.step(np.ones(99, dtype=np.float32), ok)
    with pytest.raises(ValueError):
        e.step(ok, ok)  # overlapping
    with pytest.raises(ValueError):
        e.step(np.ones(200, dtype=np.float32)[::2], ok)
    ro = np.ones(100, dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        e.step(ok.copy(), ro)
    with pytest.raises(chronos_sync.ConfigError):
        engine(selection="nope")
    with pytest.raises(chronos_sync.ConfigError):
        engine(ratio=2.0)
    with pytest.raises(chronos_sync.ChronosError):
        e.restore(b"not a checkpoint")
    assert e.steps == 0


def test_nan_is_non_finite_error():
    e = engine()
    d = np.ones(100, dtype=np.float32)
    d[3] = np.nan
    with pytest.raises(chronos_sync.NonFiniteError, match="non-finite"):
        e.step(d, np.ones(100, dtype=np.float32))
    assert e.steps == 0


def test_callback_failure_is_collective_error_with_cause():
    e = engine(comm=Broken())
    with pytest.raises(chronos_sync.CollectiveFailedError) as info:
        e.step(np.ones(100, dtype=np.float32), np.ones(100, dtype=np.float32) * 2)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "peer went away" in str(info.value)


def test_checkpoint_round_trip():
    a = engine(threshold=0.05)
    p = np.ones(100, dtype=np.float32)
    a.step(np.full(100, 0.01, dtype=np.float32), p)
    b = engine(threshold=0.05)
    b.restore(a.checkpoint())
    assert b.checkpoint() == a.checkpoint() and b.steps == 1


class Timed(Solo):
    """Records when the engine first calls back (the end of its local pass)."""

    def __init__(self):
        self.first = None

    def all_reduce_max(self, values):
        if self.first is None:
            self.first = time.perf_counter()
        return list(values)


def test_gil_is_released_while_the_engine_works():
    # While the engine runs its local pass over 2^24 values (tens of ms), a
    # Python thread keeps running; with the GIL held it could not.
    import threading

    n = 1 << 24
    delta = np.full(n, 1e-3, dtype=np.float32)
    params = np.ones(n, dtype=np.float32)
    best = 0
    for _ in range(3):
        comm = Timed()
        e = engine(n=n, comm=comm, threshold=0.05)
        ticks = []
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks.append(time.perf_counter())

        t = threading.Thread(target=spin)
        t.start()
        time.sleep(0.02)
        start = time.perf_counter()
        e.step(delta, params)
        stop.set()
        t.join()
        # Only the first half of the engine's local pass counts: with the GIL
        # held, the spinner could run only once the engine calls back into
        # Python, at the end of that pass.
        mid = start + (comm.first - start) / 2
        inside = sum(1 for x in ticks if start < x < mid)
        best = max(best, inside)
        if best >= 10:
            break
    assert best >= 10, f"only {best} Python ticks while the engine ran"

"""The DDP comm hook on real multi-process gloo groups."""

from __future__ import annotations

import numpy as np
import pytest

import scenarios
from distributed import run_ranks


@pytest.mark.parametrize("world,cap", [(2, 0.001), (4, 25.0)])
def test_hook_result_identical_on_every_rank(world, cap):
    # cap 0.001 MB: one bucket per parameter tensor, rebuilt after the first
    # iteration; each gets its own engine, keyed by its parameters.
    res = run_ranks(scenarios.ddp_identical, world, bucket_cap_mb=cap)
    keys = res[0]["keys"]
    assert keys and all(k.startswith("p") for k in keys)
    assert len(keys) > 1 if cap < 1 else len(keys) == 1
    assert res[0]["synced"] > 0
    assert any(any(b != 0 for b in out) for out in res[0]["outs"])
    for r in res[1:]:
        assert r["outs"] == res[0]["outs"]
        assert r["params"] == res[0]["params"]
        assert r["keys"] == keys


def test_residual_is_conserved():
    world = 2
    res = run_ranks(scenarios.conservation, world)
    assert res[0]["syncs"] > 0
    assert np.array_equal(res[0]["sum_out"], res[1]["sum_out"])
    total_delta = sum(r["sum_delta"] for r in res)
    kept = sum(r["acc"] for r in res)
    sent = world * res[0]["sum_out"]
    np.testing.assert_allclose(total_delta, kept + sent, rtol=0, atol=2e-5)
    assert np.abs(kept).sum() > 0  # something really was held back


def test_state_dict_round_trip_continues_bitwise():
    res = run_ranks(scenarios.roundtrip, 2)
    for r in res:
        assert r["same_outs"] and r["same_state"] and r["any_nonzero"]


def test_nan_on_one_rank_raises_everywhere_and_changes_nothing():
    res = run_ranks(scenarios.nan_gradient, 2)
    assert res[0]["raised"] is not None
    assert res[0]["raised"][0] == "NonFiniteError"
    assert "rank(s) [1]" in res[0]["raised"][1]
    assert all(r["raised"] == res[0]["raised"] for r in res)
    assert all(r["unchanged"] and r["after_ok"] for r in res)


@pytest.mark.parametrize("mode", ["exit", "sleep"])
def test_a_stopping_rank_makes_the_others_raise_within_the_timeout(mode):
    world = 3
    res = run_ranks(scenarios.stopping_rank, world, expect=world - 1, pg_timeout=5, timeout=90, mode=mode)
    for r in res[: world - 1]:
        assert r["raised"] is not None, r
        assert r["raised"][0] in ("SyncTimeoutError", "CollectiveFailedError")
        assert r["elapsed"] < 3 + 10


def test_nan_through_ddp_fails_that_step_on_every_rank_and_training_continues():
    res = run_ranks(scenarios.ddp_nan, 2)
    for r in res:
        assert r["log"][:2] == ["ok", "ok"] and r["log"][3:] == ["ok", "ok"], r["log"]
        assert "non-finite input on rank(s) [1]" in r["log"][2]
        assert r["last_error"] == "NonFiniteError"
    assert res[0]["params"] == res[1]["params"]

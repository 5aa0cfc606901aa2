"""The informed bound (Bélády with noisy next-call times) and the model-error measurement."""

from __future__ import annotations

import math

import pytest

from saga.graphs.retention.cache import replay
from saga.graphs.retention.evaluate import evaluate, make_policy
from saga.graphs.retention.gapmix import FeatureGapModel, prediction_log_errors
from saga.graphs.retention.policies import InformedBoundPolicy, LRUPolicy, OraclePolicy
from saga.graphs.retention.predictors import PredictionCache
from saga.graphs.retention.workload import ReplaySettings, build_workload
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, SessionTrace

from .conftest import make_session
from .test_policies import three_streams

pytestmark = pytest.mark.unit
TRACE = ReplaySettings(arrivals="trace", folds=1)


def ended_stream_case() -> list[SessionTrace]:
    """X uses page 1 at t=0 and t=3; W page 4 at t=1 and never again; Z page 3 at t=2 (cache 2).

    LRU evicts x (oldest) for z and misses it at t=3 (4 misses); knowing only that W has ended
    is enough to evict w instead (3 misses, the oracle's count).
    """
    x = make_session("x", [(0.0, [1], STOP_TOOL_USE), (3.0, [1], STOP_END_TURN)])
    w = make_session("w", [(0.0, [4], STOP_END_TURN)], start_s=1.0)
    z = make_session("z", [(0.0, [3], STOP_END_TURN)], start_s=2.0)
    return [x, w, z]


def test_exact_times_are_the_oracle() -> None:
    wl = build_workload(three_streams(), TRACE)
    assert replay(wl, 2, InformedBoundPolicy(0.0)).recomputed_pages == 4
    assert replay(wl, 2, OraclePolicy()).recomputed_pages == 4


def test_knowing_the_ends_alone_saves_what_lru_loses_to_ended_streams() -> None:
    wl = build_workload(ended_stream_case(), TRACE)
    assert replay(wl, 2, LRUPolicy()).recomputed_pages == 4
    assert replay(wl, 2, OraclePolicy()).recomputed_pages == 3
    for seed in range(3):  # ended streams first, LRU among the rest: no draw matters
        assert replay(wl, 2, InformedBoundPolicy(math.inf, seed)).recomputed_pages == 3


def test_noise_can_reverse_the_order_and_is_reproducible() -> None:
    # X uses page 1 at t=0 and t=3, Y page 2 at t=1 and t=4, Z page 3 at t=2 and t=10 (cache 2).
    # At t=2 the oracle evicts y (next use 4 > 3), then x once it has ended: one miss beyond the
    # three first uses. A large error sometimes evicts x first: x and then z miss again.
    x = make_session("x", [(0.0, [1], STOP_TOOL_USE), (3.0, [1], STOP_END_TURN)])
    y = make_session("y", [(0.0, [2], STOP_TOOL_USE), (3.0, [2], STOP_END_TURN)], start_s=1.0)
    z = make_session("z", [(0.0, [3], STOP_TOOL_USE), (8.0, [3], STOP_END_TURN)], start_s=2.0)
    wl = build_workload([x, y, z], TRACE)
    assert replay(wl, 2, OraclePolicy()).recomputed_pages == 4
    assert replay(wl, 2, InformedBoundPolicy(0.0)).recomputed_pages == 4
    got = [replay(wl, 2, InformedBoundPolicy(3.0, seed)).recomputed_pages for seed in range(40)]
    assert set(got) == {4, 5}
    assert got == [replay(wl, 2, InformedBoundPolicy(3.0, seed)).recomputed_pages for seed in range(40)]


def test_negative_sigma_is_refused() -> None:
    with pytest.raises(ValueError, match="sigma"):
        InformedBoundPolicy(-0.1)


def test_evaluate_runs_the_bound_only_on_request() -> None:
    wl = build_workload(three_streams(), TRACE)
    rep = evaluate(wl, [2 / 3], ["lru", "informed"], informed_sigma=0.0)
    assert [r.policy for r in rep.rows] == ["lru", "informed"]
    assert rep.row(2 / 3, "informed").gap_closed == pytest.approx(1.0)
    assert rep.settings["informed_sigma"] == 0.0
    made = make_policy("informed", PredictionCache(wl, []), informed_sigma=0.5)
    assert isinstance(made, InformedBoundPolicy)
    with pytest.raises(ValueError, match="unknown policy"):
        evaluate(wl, [0.5], ["clairvoyant"])


def _regular(sid: str, gap: float, n: int = 4) -> SessionTrace:
    """Calls of 1 s with ``gap`` seconds between them, all tool_use but the last."""
    calls = [(i * (1.0 + gap), [i + 1], STOP_TOOL_USE if i < n - 1 else STOP_END_TURN, 1.0) for i in range(n)]
    return make_session(sid, calls)


def test_model_error_is_zero_on_its_own_regular_population_and_signed() -> None:
    model = FeatureGapModel([_regular(f"t{i}", 2.0) for i in range(40)], min_samples=5)
    same = prediction_log_errors(model, [_regular("h", 2.0)], own_weight=0.0)
    assert same.at_start == pytest.approx([0.0] * 3)
    assert same.at_end == pytest.approx([0.0] * 3)
    slower = prediction_log_errors(model, [_regular("h", 4.0)], own_weight=0.0)
    # predicted 1 + 2 = 3 s from each call's start, truly 1 + 4 = 5 s: ln(3/5) each time
    assert slower.at_start == pytest.approx([math.log(3 / 5)] * 3)
    assert slower.at_end == pytest.approx([math.log(3 / 5)] * 3)
    # the stream's own history pulls later predictions towards what it has shown
    mixed = prediction_log_errors(model, [_regular("h", 4.0)], own_weight=0.9, own_prior=1.0)
    assert abs(mixed.at_end[-1]) < abs(mixed.at_end[0])

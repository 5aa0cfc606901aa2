"""The feature gap model (gapmix.py), the SAGA policy in feature mode, and leak-free positions."""

from __future__ import annotations

import numpy as np
import pytest

from saga.graphs.retention.cache import replay
from saga.graphs.retention.gapmix import FeatureGapModel, GapContext, StreamGaps, density, out_bin, prediction
from saga.graphs.retention.gapmodel import EmpiricalGapPredictor
from saga.graphs.retention.policies import LRUPolicy, SagaPolicy
from saga.graphs.retention.predictors import PredictionCache, held_out_predictors
from saga.graphs.retention.workload import ReplaySettings, build_workload
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, LLMCall

from .conftest import make_session

pytestmark = pytest.mark.unit


def _call(stop: str, out: int) -> LLMCall:
    return LLMCall(start_s=0.0, duration_s=0.0, prompt_tokens=1, output_tokens=out, stop=stop)


def test_out_bins_are_log_spaced() -> None:
    assert [out_bin(n, 4) for n in (0, 127, 128, 511, 512, 2047, 2048, 10**6)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out_bin(10**6, 1) == 0


def test_model_conditions_on_stop_and_falls_back() -> None:
    # 40 sessions: tool_use gaps of 2 s then end_turn followed by a 100 s gap, then the end
    sessions = [
        make_session(
            f"s{i}", [(0.0, [1], STOP_TOOL_USE), (2.0, [1, 2], STOP_END_TURN), (102.0, [1, 2, 3], "")]
        )
        for i in range(40)
    ]
    m = FeatureGapModel(sessions, min_samples=30)
    tool = m.context(_call(STOP_TOOL_USE, 0), False)
    assert tool.median == pytest.approx(2.0)
    assert tool.q == 1.0
    human = m.context(_call(STOP_END_TURN, 0), False)
    assert human.median == pytest.approx(100.0)
    last = m.context(_call("", 0), False)
    assert last.q == 0.0
    assert last.ends == 40
    # an unseen (stop, bin, sub-agent) falls back to the stop reason's sample
    assert m.context(_call(STOP_TOOL_USE, 5000), True).median == pytest.approx(2.0)


def test_density_prefers_soon_and_drops_ended() -> None:
    soon = GapContext(np.array([1.0] * 10), 0, 1.0)
    late = GapContext(np.array([50.0] * 10), 0, 50.0)
    gone = GapContext(np.array([1.0] * 10), 1000, 1.0)
    none = np.zeros(0)
    d = [density(c, none, 1.0, 0.0, 0.0, 20.0) for c in (soon, late, gone)]
    assert d[0] > d[2] > d[1] == 0.0
    # a slow stream (scale 100) looks like the late context
    assert density(soon, none, 100.0, 0.0, 0.0, 20.0) == 0.0
    # the stream's own past gaps pull the mixture: own gaps of 1 s make "late" likely soon
    assert density(late, np.array([1.0, 1.0]), 1.0, 0.5, 0.0, 20.0) > 0.0


def test_prediction_conditions_on_elapsed() -> None:
    ctx = GapContext(np.array([1.0, 2.0, 4.0, 8.0, 100.0]), 5, 4.0)
    p0 = prediction(ctx, np.zeros(0), 1.0, 0.0, 0.0)
    p9 = prediction(ctx, np.zeros(0), 1.0, 0.0, 9.0)
    assert p0.p_continue == pytest.approx(0.5)
    assert p9.p_continue == pytest.approx(1 / 6)  # one gap of 5 outlasts 9 s, against 5 ends
    assert p9.gap_quantiles_s[-1] == pytest.approx(91.0)


def test_stream_scale_is_shrunk() -> None:
    g = StreamGaps([])
    assert g.scale(3.0) == 1.0
    g.add(np.e * 11 - 1, 10.0)  # log1p(gap) - log1p(10) = 1
    assert g.scale(3.0) == pytest.approx(np.exp(1 / 4))


def test_positions_do_not_reveal_the_last_call() -> None:
    # every stream's last call has no tool record; its position must look like any other call
    sessions = [
        make_session(f"s{i}", [(0.0, [1], STOP_TOOL_USE), (1.0, [1, 2], STOP_TOOL_USE)]) for i in range(4)
    ]
    wl = build_workload(sessions, ReplaySettings(arrivals="trace", folds=2))
    pc = PredictionCache(wl, held_out_predictors(wl, lambda tr: EmpiricalGapPredictor(tr)))
    tools = {pc.position(r).current_tool for r in range(wl.n_requests)}
    assert tools == {"tool"}


def test_feature_saga_replays_and_beats_nothing_worse_than_lru_on_a_simple_case() -> None:
    sessions = [
        make_session(
            f"s{i}",
            [(0.0, [10 * i + 1], STOP_TOOL_USE), (1.0, [10 * i + 1, 10 * i + 2], STOP_END_TURN)],
            start_s=0.5 * i,
        )
        for i in range(6)
    ]
    wl = build_workload(sessions, ReplaySettings(arrivals="trace", folds=2))
    pc = PredictionCache(wl, held_out_predictors(wl, lambda tr: EmpiricalGapPredictor(tr)))
    saga = replay(wl, 3, SagaPolicy(pc)).recomputed_pages
    assert saga <= replay(wl, 3, LRUPolicy()).recomputed_pages

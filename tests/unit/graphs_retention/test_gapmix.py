"""The time-to-next-call model (gapmix.py), the SAGA policy on it, and leak-free online state."""

from __future__ import annotations

import pytest

from saga.graphs.retention.cache import replay
from saga.graphs.retention.gapmix import (
    START,
    FeatureGapModel,
    Sample,
    StreamHistory,
    out_bin,
    step_bin,
    value_density,
)
from saga.graphs.retention.gapmodel import EmpiricalGapPredictor
from saga.graphs.retention.policies import LRUPolicy, SagaPolicy
from saga.graphs.retention.policies.saga import fold_models
from saga.graphs.retention.predictors import PredictionCache, held_out_predictors
from saga.graphs.retention.workload import ReplaySettings, build_workload
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, LLMCall, SessionTrace

from .conftest import make_session

pytestmark = pytest.mark.unit
INF = float("inf")


def _call(stop: str, out: int) -> LLMCall:
    return LLMCall(start_s=0.0, duration_s=0.0, prompt_tokens=1, output_tokens=out, stop=stop)


def _sample(values: list[float], lives: list[float] | None = None) -> Sample:
    s = Sample()
    for i, v in enumerate(values):
        s.add(v if lives is None else lives[i], v)
    return s


def test_out_bins_are_log_spaced() -> None:
    assert [out_bin(n, 4) for n in (0, 127, 128, 511, 512, 2047, 2048, 10**6)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out_bin(10**6, 1) == 0


def test_model_conditions_on_stop_and_falls_back() -> None:
    # 40 sessions: a 1 s tool_use call, a 2 s gap, an end_turn call, a 100 s gap, a last call
    sessions = [
        make_session(
            f"s{i}",
            [(0.0, [1], STOP_TOOL_USE, 1.0), (3.0, [1, 2], STOP_END_TURN), (103.0, [1, 2, 3], "")],
        )
        for i in range(40)
    ]
    m = FeatureGapModel(sessions, min_samples=30)
    assert m.gap(_call(STOP_TOOL_USE, 0), False, 0).given(0.0) == ([2.0] * 40, 0)
    assert m.gap(_call(STOP_END_TURN, 0), False, 1).given(0.0) == ([100.0] * 40, 0)
    assert m.gap(_call("", 0), False, 2).given(0.0) == ([], 40)  # the last call: the stream ends
    # an unseen (stop, bin, sub-agent, step) falls back to the stop reason's sample
    assert m.gap(_call(STOP_TOOL_USE, 5000), True, 7).given(0.0) == ([2.0] * 40, 0)
    assert [step_bin(i) for i in range(5)] == [0, 1, 1, 2, 2]
    # running: from the call's start to the next call, by the previous response's stop reason
    first = m.running(START, False)
    assert first.given(0.0) == ([3.0] * 40, 0)
    assert first.given(1.5) == ([], 0)  # no first call ran longer than 1 s
    assert m.running(STOP_END_TURN, False).given(0.0) == ([], 40)


def test_value_density_prefers_soon_and_drops_ended() -> None:
    soon, late = _sample([1.0] * 10), _sample([50.0] * 10)
    gone = _sample([1.0] * 10 + [INF] * 1000)
    d = [value_density(s, None, 0.5, 5.0, 0.0) for s in (soon, late, gone)]
    assert d[0] == pytest.approx(1.0)
    assert d[1] == pytest.approx(1 / 50)
    assert d[2] == pytest.approx(10 / 1010)
    assert value_density(_sample([INF] * 5), None, 0.5, 5.0, 0.0) == 0.0
    # the stream's own past gaps pull the mixture: own gaps of 1 s make "late" likely soon
    own = _sample([1.0] * 20)
    assert value_density(late, own, 1.0, 5.0, 0.0) == pytest.approx(1.0)  # own weight 0.8: median 1 s
    assert value_density(late, own, 0.5, 5.0, 0.0) == pytest.approx(1 / 50)  # own weight 0.4: 50 s


def test_value_density_conditions_on_elapsed() -> None:
    s = _sample([1.0, 2.0, 4.0, 8.0, 100.0, INF, INF, INF, INF, INF])
    # at 0: P(next) = 1/2, median of (1, 2, 4, 8, 100) = 4
    assert value_density(s, None, 0.5, 5.0, 0.0) == pytest.approx(0.5 / 4.0)
    # 9 s in: one gap of 100 outlasts, against 5 ends; remaining 91 s
    assert value_density(s, None, 0.5, 5.0, 9.0) == pytest.approx((1 / 6) / 91.0)
    # running: only the pairs whose duration reached the elapsed time count
    run = _sample([3.0, 30.0, INF], lives=[1.0, 5.0, 5.0])
    assert value_density(run, None, 0.5, 5.0, 2.0) == pytest.approx(0.5 / 28.0)


def test_no_population_uses_the_stream_alone() -> None:
    h = StreamHistory()
    h.add(_call(STOP_TOOL_USE, 0), 0.0, 1.0, 3.0)
    h.add(_call(STOP_TOOL_USE, 0), 3.0, 4.0, 6.0)
    assert h.running.given(0.0) == ([3.0, 3.0], 0)
    assert h.gaps[STOP_TOOL_USE].given(0.0) == ([2.0, 2.0], 0)
    assert value_density(Sample(), h.gaps[STOP_TOOL_USE], 0.5, 5.0, 0.0) == pytest.approx(0.5)
    assert value_density(Sample(), None, 0.5, 5.0, 0.0) == 0.0


def test_fold_models_hold_out_the_evaluated_sessions() -> None:
    sessions = [
        make_session(f"s{i}", [(0.0, [10 * i], STOP_TOOL_USE), (float(i + 1), [10 * i, 10 * i + 1], "")])
        for i in range(20)
    ]
    wl = build_workload(sessions, ReplaySettings(arrivals="trace", folds=2))
    models = fold_models(wl, 4, "on", 1)
    for k, m in enumerate(models):
        gaps = m.gap(_call(STOP_TOOL_USE, 0), False, 0).given(0.0)[0]
        # session i's only gap lasts i + 1 s: the model of fold k holds exactly the other folds'
        assert gaps == sorted(float(int(s.trace.session_id[1:]) + 1) for s in wl.streams if s.fold != k)
        assert 0 < len(gaps) < 20


def test_a_running_call_reveals_nothing_of_its_response() -> None:
    # the same stream whose second call ends the turn (long output) or asks for a tool: while that
    # call runs (3 s to 13 s), SAGA must value both alike; once the response is out, it may not
    train = [
        make_session(
            f"t{i}",
            [
                (0.0, [100 + i], STOP_TOOL_USE, 1.0),
                (5.0, [100 + i], STOP_END_TURN, 2.0),
                (50.0, [100 + i], ""),
            ],
        )
        for i in range(100)
    ]
    dens = []
    for stop, out in ((STOP_END_TURN, 5000), (STOP_TOOL_USE, 10)):
        first = LLMCall(0.0, 1.0, 1, 0, None, (1,), STOP_TOOL_USE)
        second = LLMCall(3.0, 10.0, 2, out, None, (1, 2), stop)
        x = SessionTrace("x", "agent", (first, second), block_size=1)
        wl = build_workload([x, *train], ReplaySettings(arrivals="trace", folds=2))
        pol = SagaPolicy()
        replay(wl, 100, pol)  # the tracker now stands after x's second call was sent
        dens.append((pol.density(0, 4.0), pol.density(0, 13.5)))
    assert dens[0][0] == dens[1][0] > 0.0
    assert 0.0 < dens[0][1] < dens[1][1]  # 43 s after end_turn in training, 4 s after tool_use


def test_positions_do_not_reveal_the_last_call() -> None:
    # every stream's last call has no tool record; its position must look like any other call
    sessions = [
        make_session(f"s{i}", [(0.0, [1], STOP_TOOL_USE), (1.0, [1, 2], STOP_TOOL_USE)]) for i in range(4)
    ]
    wl = build_workload(sessions, ReplaySettings(arrivals="trace", folds=2))
    pc = PredictionCache(wl, held_out_predictors(wl, lambda tr: EmpiricalGapPredictor(tr)))
    tools = {pc.position(r).current_tool for r in range(wl.n_requests)}
    assert tools == {"tool"}


def test_saga_is_no_worse_than_lru_on_a_simple_case() -> None:
    sessions = [
        make_session(
            f"s{i}",
            [(0.0, [10 * i + 1], STOP_TOOL_USE), (1.0, [10 * i + 1, 10 * i + 2], STOP_END_TURN)],
            start_s=0.5 * i,
        )
        for i in range(6)
    ]
    wl = build_workload(sessions, ReplaySettings(arrivals="trace", folds=2))
    saga = replay(wl, 3, SagaPolicy()).recomputed_pages
    assert saga <= replay(wl, 3, LRUPolicy()).recomputed_pages


def _end_turn_sessions(lengths: list[int], prefix: str) -> list[SessionTrace]:
    """Sessions of ``end_turn`` calls 10 s apart, one per length."""
    return [
        make_session(f"{prefix}{i}", [(10.0 * j, list(range(j + 1)), STOP_END_TURN) for j in range(n)])
        for i, n in enumerate(lengths)
    ]


def test_auto_splits_gap_contexts_by_position_only_where_it_predicts_continuation() -> None:
    # half the conversations stop after one call, the rest run four: whether a stream goes on
    # depends on its position (first call: 50 %; second and third: always; fourth: never)
    telling = _end_turn_sessions([1, 4] * 100, "t")
    ctx = ("gap", STOP_END_TURN, 0, False)
    auto = FeatureGapModel(telling, min_samples=10)
    assert auto.split == {ctx}
    first, second = (auto.gap(_call(STOP_END_TURN, 0), False, i).given(0.0) for i in (0, 1))
    assert (len(first[0]), first[1]) == (100, 100)
    assert (len(second[0]), second[1]) == (200, 0)
    off = FeatureGapModel(telling, min_samples=10, step_bins="off")
    assert off.split == set()
    pooled = off.gap(_call(STOP_END_TURN, 0), False, 1).given(0.0)
    assert (len(pooled[0]), pooled[1]) == (300, 200)  # every position alike
    on = FeatureGapModel(telling, min_samples=10, step_bins="on")
    assert on.split is None
    assert on.gap(_call(STOP_END_TURN, 0), False, 1).given(0.0) == second
    # the same chance of going on at every position (geometric lengths, 2^(12-n) sessions of n
    # calls: about half of the streams at any position stop there): no split pays
    geometric = [n for n in range(1, 12) for _ in range(2 ** (12 - n))]
    plain = FeatureGapModel(_end_turn_sessions(geometric, "g"), min_samples=10)
    assert plain.split == set()


def test_step_bins_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="step_bins must be one of off, on, auto"):
        FeatureGapModel([], step_bins="yes")

"""AEGPredictor: conditional gaps, continuation, cold start, online refresh."""

from __future__ import annotations

import pytest

from saga.graphs import synthetic as synth
from saga.graphs.aeg import GraphSet, build_graphs
from saga.graphs.api import QUANTILE_LEVELS, SessionPosition
from saga.graphs.predict import AEGPredictor
from saga.graphs.trace import LLMCall, SessionTrace

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pred() -> AEGPredictor:
    return AEGPredictor(build_graphs(synth.sessions(1500, seed=11)))


def _pos(stop: str, tool: str | None, steps: int = 3, agent: str = "wf") -> SessionPosition:
    return SessionPosition(
        agent_type=agent, steps_done=steps, context_tokens=1000, current_tool=tool, last_stop=stop
    )


def test_known_tool_gap(pred: AEGPredictor) -> None:
    p = pred.next_call(_pos("tool_use", "bash"), 0.0)
    assert p.median_gap_s == pytest.approx(synth.BASH_MEDIAN_S, rel=0.15)
    assert p.p_continue > 0.99
    assert p.confidence > 0.9
    assert len(p.gap_quantiles_s) == len(QUANTILE_LEVELS)
    assert p.expected_new_tokens == pytest.approx(250, rel=0.2)


def test_conditioning_on_elapsed_time(pred: AEGPredictor) -> None:
    pos = _pos("end_turn", "human")
    p0 = pred.next_call(pos, 0.0)
    assert p0.p_continue == pytest.approx(1 - synth.P_END_AFTER_TURN, abs=0.06)
    p60 = pred.next_call(pos, 60.0)
    p300 = pred.next_call(pos, 300.0)
    # remaining time to the next call: median of (G - 60 | G >= 60) for a log-normal around 60 s
    assert 0 < p60.median_gap_s < p0.median_gap_s
    # silence makes continuation less likely
    assert p0.p_continue > p60.p_continue > p300.p_continue
    assert p300.p_continue < 0.1


def test_unknown_tool_uses_tool_type_prior(pred: AEGPredictor) -> None:
    p = pred.next_call(_pos("tool_use", "sql_query"), 0.0)
    assert p.median_gap_s == pytest.approx(0.12, rel=0.15)  # BRIEF §2 DB query p50 120 ms
    assert p.confidence == 0.0


def test_unseen_agent_falls_back_to_pooled(pred: AEGPredictor) -> None:
    p = pred.next_call(_pos("tool_use", "bash", agent="never-seen"), 0.0)
    assert p.confidence == 0.0
    assert p.median_gap_s == pytest.approx(synth.BASH_MEDIAN_S, rel=0.2)


def test_empty_graphs_give_priors() -> None:
    pred = AEGPredictor(GraphSet())
    p = pred.next_call(_pos("tool_use", "bash"), 0.0)
    assert p.median_gap_s == pytest.approx(0.18, rel=0.15)  # code execution prior
    assert p.p_continue == pytest.approx(0.5)
    assert pred.remaining(_pos("tool_use", "bash")).confidence == 0.0


def test_remaining_decreases_for_turn_end(pred: AEGPredictor) -> None:
    r_tool = pred.remaining(_pos("tool_use", None, steps=2))
    r_end = pred.remaining(_pos("end_turn", None, steps=2))
    assert r_tool.expected_calls > r_end.expected_calls > 0
    assert r_tool.expected_time_s > 0


def test_observe_refreshes_tables() -> None:
    gs = GraphSet()
    pred = AEGPredictor(gs)
    pos = _pos("end_turn", None, steps=1, agent="a")
    before = pred.next_call(pos, 0.0).p_continue
    s_end = SessionTrace("x", "a", (LLMCall(0, 1, 10, 1, stop="end_turn"),))
    for _ in range(50):
        pred.observe(s_end)
    after = pred.next_call(pos, 0.0)
    assert before == pytest.approx(0.5)
    assert after.p_continue < 0.15
    assert after.confidence > 0.5

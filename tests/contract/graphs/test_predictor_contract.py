"""Conformance suite every ``Predictor`` (graphs/api.py) must pass."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga.graphs import synthetic
from saga.graphs.aeg import GraphSet, build_graphs
from saga.graphs.api import QUANTILE_LEVELS, Predictor, SessionPosition
from saga.graphs.predict import AEGPredictor

pytestmark = pytest.mark.contract

_TRAINED = build_graphs(synthetic.sessions(300, seed=5))
FACTORIES: dict[str, Callable[[], Predictor]] = {
    "aeg-trained": lambda: AEGPredictor(_TRAINED),
    "aeg-empty": lambda: AEGPredictor(GraphSet()),
}

positions = st.builds(
    SessionPosition,
    agent_type=st.sampled_from(["wf", "wf/sub", "other"]),
    steps_done=st.integers(0, 10_000),
    context_tokens=st.integers(0, 10**6),
    current_tool=st.one_of(
        st.none(), st.sampled_from(["bash", "read_file", "human", "x-unknown", "agent:wf/sub"])
    ),
    last_stop=st.sampled_from(["tool_use", "end_turn", ""]),
    is_subagent=st.booleans(),
)
elapsed = st.one_of(st.just(0.0), st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=150, deadline=None)
@given(pos=positions, e=elapsed)
def test_next_call_is_a_distribution(name: str, pos: SessionPosition, e: float) -> None:
    p = FACTORIES[name]().next_call(pos, e)
    assert 0.0 <= p.p_continue <= 1.0
    assert 0.0 <= p.confidence <= 1.0
    assert len(p.gap_quantiles_s) == len(QUANTILE_LEVELS)
    assert all(q >= 0 for q in p.gap_quantiles_s)
    assert all(a <= b + 1e-9 for a, b in zip(p.gap_quantiles_s, p.gap_quantiles_s[1:], strict=False))
    assert p.expected_new_tokens >= 0
    assert 0.0 <= p.prob_next_within(10.0) <= 1.0


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=100, deadline=None)
@given(pos=positions)
def test_remaining_is_non_negative(name: str, pos: SessionPosition) -> None:
    r = FACTORIES[name]().remaining(pos)
    assert min(r.expected_calls, r.expected_prefill_tokens, r.expected_output_tokens, r.expected_time_s) >= 0
    assert 0.0 <= r.confidence <= 1.0


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_continuation_never_rises_with_silence(name: str) -> None:
    pred = FACTORIES[name]()
    pos = SessionPosition("wf", 3, 100, "human", "end_turn")
    ps = [pred.next_call(pos, e).p_continue for e in (0, 1, 10, 100, 1000, 10_000, 100_000)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(ps))

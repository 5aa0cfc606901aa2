"""Property tests on random small workloads.

- the fast segment replay equals a brute-force page-level replay for LRU and the oracle;
- the oracle never recomputes more than any policy.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga.graphs.api import Predictor
from saga.graphs.retention.cache import replay
from saga.graphs.retention.evaluate import make_policy
from saga.graphs.retention.gapmodel import EmpiricalGapPredictor
from saga.graphs.retention.predictors import PredictionCache
from saga.graphs.retention.workload import ReplaySettings, build_workload
from saga.graphs.trace import SessionTrace

from .conftest import make_session
from .reference import reference_replay

pytestmark = pytest.mark.unit
TRACE = ReplaySettings(arrivals="trace", folds=1)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[SessionTrace], int]:
    n_streams = draw(st.integers(1, 4))
    shared = draw(st.booleans())  # a common first page across streams (a shared system prompt)
    sessions = []
    next_hash = 1000
    for s in range(n_streams):
        hashes: list[int] = [0] if shared else []
        calls = []
        t = 0.0
        for _ in range(draw(st.integers(1, 5))):
            if hashes and draw(st.integers(0, 4)) == 0:  # rewrite: branch off an earlier prefix
                hashes = hashes[: draw(st.integers(0, len(hashes)))]
            for _ in range(draw(st.integers(0 if hashes else 1, 3))):
                next_hash += 1
                hashes.append(next_hash)
            stop = draw(st.sampled_from(["tool_use", "end_turn", ""]))
            calls.append((t, list(hashes), stop, draw(st.sampled_from([0.0, 0.5, 2.0]))))
            t += draw(st.floats(0.1, 20.0))
        start = draw(st.floats(0.0, 30.0))
        sessions.append(
            make_session(f"s{s}", calls, start_s=start, agent_type=draw(st.sampled_from(["a", "b"])))
        )
    capacity = draw(st.integers(1, 12))
    return sessions, capacity


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_segment_replay_matches_page_level_reference(case: tuple[list[SessionTrace], int]) -> None:
    sessions, cap = case
    wl = build_workload(sessions, TRACE)
    for name in ("lru", "oracle"):
        fast = replay(wl, cap, make_policy(name, PredictionCache(wl, []))).recomputed_pages
        assert fast == reference_replay(wl, cap, name), name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_oracle_is_never_worse_than_any_policy(case: tuple[list[SessionTrace], int]) -> None:
    sessions, cap = case
    wl = build_workload(sessions, TRACE)
    preds: list[Predictor] = [EmpiricalGapPredictor(sessions, min_samples=1)]
    oracle = replay(wl, cap, make_policy("oracle", PredictionCache(wl, preds))).recomputed_pages
    for name in ("lru", "ttl", "weighted", "saga", "informed"):
        got = replay(wl, cap, make_policy(name, PredictionCache(wl, preds), ttl_s=5.0)).recomputed_pages
        assert oracle <= got, name

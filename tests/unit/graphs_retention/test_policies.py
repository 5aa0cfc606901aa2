"""Hand-computed tiny replays, one per policy, and the evaluator's bookkeeping."""

from __future__ import annotations

import pytest

from saga.graphs.retention.cache import replay
from saga.graphs.retention.policies import (
    LRUPolicy,
    OraclePolicy,
    SagaPolicy,
    SagaRetentionSettings,
    TTLPolicy,
    WeightedScorePolicy,
)
from saga.graphs.retention.predictors import PredictionCache
from saga.graphs.retention.workload import ReplaySettings, WorkloadError, build_workload
from saga.graphs.trace import STOP_END_TURN, STOP_TOOL_USE, SessionTrace

from .conftest import FakePredictor, make_session

pytestmark = pytest.mark.unit
TRACE = ReplaySettings(arrivals="trace", folds=1)


def three_streams(stop_x: str = STOP_TOOL_USE, stop_y: str = STOP_END_TURN) -> list[SessionTrace]:
    """X uses page 1 at t=0 and t=3, Y page 2 at t=1 and t=4, Z page 3 at t=2 (cache of 2).

    Every policy misses the first use of x, y, z (3); LRU then evicts x for z and y for x (5
    misses); the oracle evicts y at t=2 (next use t=4 > t=3) and misses only y again (4).
    """
    x = make_session("x", [(0.0, [1], stop_x), (3.0, [1], stop_x)], agent_type="fast")
    y = make_session("y", [(0.0, [2], stop_y), (3.0, [2], stop_y)], start_s=1.0, agent_type="slow")
    z = make_session("z", [(0.0, [3], STOP_END_TURN)], start_s=2.0, agent_type="slow")
    return [x, y, z]


def test_lru_and_oracle_hand_computed() -> None:
    wl = build_workload(three_streams(), TRACE)
    assert replay(wl, 2, LRUPolicy()).recomputed_pages == 5
    assert replay(wl, 2, OraclePolicy()).recomputed_pages == 4


def test_ttl_pins_streams_in_a_tool_gap() -> None:
    # X is in a tool gap (pinned 10 s), Y after end_turn is not: Y goes for Z, Z for Y again.
    wl = build_workload(three_streams(), TRACE)
    assert replay(wl, 2, TTLPolicy(ttl_s=10.0)).recomputed_pages == 4
    # with both streams after end_turn nothing is pinned: plain LRU
    wl2 = build_workload(three_streams(stop_x=STOP_END_TURN), TRACE)
    assert replay(wl2, 2, TTLPolicy(ttl_s=10.0)).recomputed_pages == 5
    # an expired pin is no pin: at t=2 X's pin (0.5 s) has lapsed, LRU evicts x
    assert replay(wl, 2, TTLPolicy(ttl_s=0.5)).recomputed_pages == 5


def test_weighted_score_hand_computed() -> None:
    # t=2: X scores 0.3·1 + 0.5·0 + 0.2·1 = 0.5, Y 0.3·0.5 + 0.5·1 + 0.2 = 0.85: Y goes.
    # t=4: X 0.3·0.5 + 0 + 0.2 = 0.35, Z 0.3·1 + 0.5 + 0.2 = 1.0: Z goes. 4 misses.
    wl = build_workload(three_streams(), TRACE)
    pc = PredictionCache(wl, [FakePredictor()])
    assert replay(wl, 2, WeightedScorePolicy(pc)).recomputed_pages == 4
    # weights that only look at age make it LRU again
    pc2 = PredictionCache(wl, [FakePredictor()])
    assert replay(wl, 2, WeightedScorePolicy(pc2, w_age=1.0, w_reuse=0.0, w_size=0.0)).recomputed_pages == 5


def test_saga_keeps_the_stream_predicted_to_return() -> None:
    # No population to learn from (one fold): only the streams' own histories. X called at 0, 1
    # and 2 s (gaps of 1 s) and returns at 5; Y called once at 2.2 and never again. Z at 2.5
    # needs a page of the full cache (2): SAGA evicts Y (nothing says it returns), LRU evicts X
    # (least recently used), which then misses again at 5: SAGA 3 misses, LRU 4.
    x = make_session(
        "x", [(0.0, [1], STOP_TOOL_USE), (1.0, [1], STOP_TOOL_USE), (2.0, [1], STOP_TOOL_USE), (5.0, [1], "")]
    )
    y = make_session("y", [(0.0, [2], STOP_TOOL_USE)], start_s=2.2)
    z = make_session("z", [(0.0, [3], STOP_TOOL_USE)], start_s=2.5)
    wl = build_workload([x, y, z], TRACE)
    assert replay(wl, 2, SagaPolicy()).recomputed_pages == 3
    assert replay(wl, 2, LRUPolicy()).recomputed_pages == 4


def test_saga_keeps_a_prefix_shared_by_streams() -> None:
    # Page 1 is the first page of a, b, c and d (a shared system prompt); nothing is known of any
    # stream (one fold, no history), so every stream is worth 0 and LRU breaks ties. Cache of 3.
    # At 3.7 V needs 2 pages: c's page 13 goes, which leaves page 1 a leaf. With the shared-prefix
    # rule page 1 is worth its reuse rate (3 touches in 2.7 s) and W's page 9 goes instead, so d
    # reuses page 1 at 4 (9 misses); without it (plain LRU among equals) page 1 goes (10 misses).
    a = make_session("a", [(0.0, [1, 11], STOP_TOOL_USE)], start_s=1.0)
    b = make_session("b", [(0.0, [1, 12], STOP_TOOL_USE)], start_s=2.0)
    c = make_session("c", [(0.0, [1, 13], STOP_TOOL_USE)], start_s=3.0)
    w = make_session("w", [(0.0, [9], STOP_TOOL_USE), (1.5, [9], STOP_TOOL_USE)], start_s=3.5)
    v = make_session("v", [(0.0, [8, 7], STOP_TOOL_USE)], start_s=3.7)
    d = make_session("d", [(0.0, [1, 14], STOP_TOOL_USE)], start_s=4.0)
    wl = build_workload([a, b, c, w, v, d], TRACE)
    assert replay(wl, 3, SagaPolicy()).recomputed_pages == 9
    assert replay(wl, 3, SagaPolicy(SagaRetentionSettings(shared_prefixes=False))).recomputed_pages == 10


def test_prefix_semantics_tail_first() -> None:
    # A [1,2,3] at 0; B [11,12] at 1 evicts A's tail page 3 (cap 4); A [1,2,3,4] at 2 reuses
    # [1,2] and recomputes 3 and 4, evicting B's two pages. 3 + 2 + 2 = 7.
    a = make_session("a", [(0.0, [1, 2, 3], STOP_TOOL_USE), (2.0, [1, 2, 3, 4], STOP_TOOL_USE)])
    b = make_session("b", [(0.0, [11, 12], STOP_TOOL_USE)], start_s=1.0)
    wl = build_workload([a, b], TRACE)
    res = replay(wl, 4, LRUPolicy())
    assert res.recomputed_pages == 7
    assert res.requested_pages == 9
    assert res.evicted_pages == 3


def test_dead_branches_go_first_under_saga() -> None:
    # Stream A rewrites its context at t=1 ([1,5] instead of [1,2,3]): pages 2,3 are a dead
    # branch. B (predicted never to return, so LRU would keep... ) arrives at t=2 needing 2 pages
    # in a cache of 5: SAGA evicts the dead branch, not A's live context nor B.
    a = make_session(
        "a", [(0.0, [1, 2, 3], STOP_TOOL_USE), (1.0, [1, 5], STOP_TOOL_USE), (3.0, [1, 5, 6], "")]
    )
    b = make_session("b", [(0.0, [20, 21], STOP_TOOL_USE)], start_s=2.0, agent_type="fast")
    wl = build_workload([a, b], TRACE)
    res = replay(wl, 5, SagaPolicy())
    # misses: 3 (first) + 1 (page 5) + 2 (b) + 1 (page 6) = 7, no re-miss of 1 or 5
    assert res.recomputed_pages == 7


def test_working_set_peak() -> None:
    # A's pages [1,2] live from t=0 to A's end (t=10), page 3 at t=10; B's [11,12] from 1 to 5.
    a = make_session("a", [(0.0, [1, 2], STOP_TOOL_USE), (10.0, [1, 2, 3], "")])
    b = make_session("b", [(0.0, [11, 12], STOP_TOOL_USE), (4.0, [11, 12], "")], start_s=1.0)
    wl = build_workload([a, b], TRACE)
    assert wl.working_set_pages == 4
    assert wl.compulsory_pages() == 5


def test_poisson_arrivals_are_seeded() -> None:
    sessions = [
        make_session(f"s{i}", [(0.0, [i * 10], ""), (5.0, [i * 10, i * 10 + 1], "")]) for i in range(20)
    ]
    w1 = build_workload(sessions, ReplaySettings(arrivals="poisson", seed=3, sessions_alive=2))
    w2 = build_workload(sessions, ReplaySettings(arrivals="poisson", seed=3, sessions_alive=2))
    w3 = build_workload(sessions, ReplaySettings(arrivals="poisson", seed=4, sessions_alive=2))
    assert w1.req_time.tolist() == w2.req_time.tolist()
    assert w1.req_time.tolist() != w3.req_time.tolist()
    # Little's law: mean duration 5 s and 2 alive → rate 0.4/s → 20 sessions span ~50 s
    assert 15.0 < w1.req_time.max() < 150.0


def test_bad_workloads_are_rejected() -> None:
    no_hashes = make_session("n", [(0.0, [], "")])
    with pytest.raises(WorkloadError, match="no prefix-block hashes"):
        build_workload([no_hashes])
    with pytest.raises(WorkloadError, match="arrivals"):
        build_workload(three_streams(), ReplaySettings(arrivals="bogus"))
    with pytest.raises(ValueError, match="at least one page"):
        replay(build_workload(three_streams(), TRACE), 0, LRUPolicy())

"""The batching bound: its optimisation, its inputs, and that no simulated schedule beats it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga.graphs.trace import LLMCall, SessionTrace, ToolCall
from saga.scheduler.sim.bound import BoundError, _solve, batching_bound
from saga.scheduler.sim.limits import physical_limits
from saga.scheduler.sim.loop import Simulator
from saga.scheduler.sim.profiles import PROFILES
from saga.scheduler.sim.systems import get_system
from saga.scheduler.workloads.model import TenantSpec, Workload

pytestmark = pytest.mark.unit

CFG = replace(PROFILES["llama8b-h100"], page_size=16, kv_capacity_tokens=200_000)


def _session(sid: str, start: float, calls: int, prompt: int, output: int) -> SessionTrace:
    cs, tools = [], []
    t = 0.0
    for i in range(calls):
        cs.append(LLMCall(t, 1.0, prompt + i * (output + 50), output, stop="tool_use"))
        if i + 1 < calls:
            tools.append(ToolCall("bash", t + 1.0, t + 1.5, i))
        t += 1.5
    return SessionTrace(sid, "coder", tuple(cs), tuple(tools), (), tenant="t", start_s=start)


def _workload(n: int = 8) -> Workload:
    sessions = tuple(
        _session(f"s{i}", 0.2 * i, 3 + i % 3, 2_000 + 500 * i, 60 + 20 * (i % 4)) for i in range(n)
    )
    return Workload("tiny", sessions, {"t": TenantSpec()}, seed=0)


def test_no_excess_when_every_token_can_run_alone() -> None:
    cost = np.array([1e-3, 2e-3, 5e-4])
    count = np.array([10.0, 5.0, 20.0])
    excess, used = _solve(cost, count, steps=35.0)
    assert excess == 0.0
    assert used == 35.0


def test_the_optimum_batches_cheap_tokens_wider() -> None:
    cost = np.array([1e-4, 1e-2])
    count = np.array([100.0, 100.0])
    excess, used = _solve(cost, count, steps=40.0)
    assert used == pytest.approx(40.0, rel=1e-6)
    # b = sqrt(mu / c): the cheap tokens' batch is 10x the expensive ones' (or the latter run alone)
    mu_lo = (100 / 40 * (math.sqrt(1e-4) + math.sqrt(1e-2))) ** 2  # both above 1: closed form
    b = np.maximum(1.0, np.sqrt(mu_lo / cost))
    assert excess == pytest.approx(float((count * cost * (b - 1)).sum()), rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(1e-5, 1e-2), min_size=2, max_size=40),
    data=st.data(),
)
def test_no_schedule_has_less_excess_than_the_bound(costs: list[float], data: st.DataObject) -> None:
    """Any split of the tokens into steps: sum over steps of (b - 1) x C >= the optimum at S steps."""
    n = len(costs)
    steps = data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))  # token -> step label
    groups: dict[int, list[float]] = {}
    for c, s in zip(costs, steps, strict=True):
        groups.setdefault(s, []).append(c)
    actual = sum((len(g) - 1) * sum(g) for g in groups.values())
    bound, used = _solve(np.array(costs), np.ones(n), float(len(groups)))
    assert used <= len(groups) * (1 + 1e-6)
    assert bound <= actual * (1 + 1e-6) + 1e-12


def test_plenty_of_capacity_gives_the_physical_limit() -> None:
    w = _workload()
    lim = physical_limits(w, CFG)
    b = batching_bound(w.sessions, lim, CFG, replicas=100, horizon_s=1e6)
    assert b.feasible
    assert b.excess_s == 0.0
    assert b.ratio == pytest.approx(1.0)


def test_work_beyond_capacity_is_infeasible() -> None:
    w = _workload()
    lim = physical_limits(w, CFG)
    b = batching_bound(w.sessions, lim, CFG, replicas=1, horizon_s=1e-3)
    assert not b.feasible
    assert math.isinf(b.mean_task_s)


def test_less_capacity_never_lowers_the_bound() -> None:
    w = _workload()
    lim = physical_limits(w, CFG)
    ratios = [batching_bound(w.sessions, lim, CFG, 1, h).ratio for h in (400.0, 40.0, 20.0, 12.0)]
    assert ratios == sorted(ratios)
    assert ratios[-1] > 1.0


def test_bad_inputs_are_named() -> None:
    w = _workload()
    lim = physical_limits(w, CFG)
    with pytest.raises(BoundError, match="replicas"):
        batching_bound(w.sessions, lim, CFG, 0, 10.0)
    with pytest.raises(BoundError, match="horizon_s"):
        batching_bound(w.sessions, lim, CFG, 1, float("nan"))
    with pytest.raises(BoundError, match="s3"):
        batching_bound(w.sessions, {k: v for k, v in lim.items() if k != "s3"}, CFG, 1, 10.0)
    with pytest.raises(BoundError, match="no sessions"):
        batching_bound([], lim, CFG, 1, 10.0)


@pytest.mark.parametrize("name", ["saga", "round_robin", "cache_aware"])
def test_no_simulated_schedule_beats_the_bound(name: str) -> None:
    """On the simulator's own replica model, with the horizon = the run's makespan."""
    w = _workload(12)
    lim = physical_limits(w, CFG)
    r = Simulator(w, get_system(name), 1, CFG, limits=lim).run()
    tops = [o for o in r.outcomes if not o.is_subagent]
    assert all(o.completed for o in tops)
    makespan = max(o.end_s for o in r.outcomes) - min(o.start_s for o in r.outcomes)
    b = batching_bound(w.sessions, lim, CFG, 1, makespan)
    mean_t = sum(o.completion_s for o in tops) / len(tops)
    assert b.feasible
    assert b.excess_s > 0
    assert mean_t >= b.mean_task_s * 0.99  # the limits' own 1% (tests/unit/scheduler/test_sim.py)


def test_the_bound_is_tight_when_batching_is_the_only_cost() -> None:
    """Sixteen one-call tasks with short prompts decode together: the bound is the run, nearly."""
    sessions = tuple(
        SessionTrace(
            f"q{i}", "coder", (LLMCall(0.0, 1.0, 200 + i, 400, stop="end_turn"),), (), (), start_s=0.0
        )
        for i in range(16)
    )
    w = Workload("together", sessions, {"default": TenantSpec()}, seed=0)
    lim = physical_limits(w, CFG)
    r = Simulator(w, get_system("saga"), 1, CFG, limits=lim).run()
    makespan = max(o.end_s for o in r.outcomes)
    mean_t = sum(o.completion_s for o in r.outcomes) / len(r.outcomes)
    b = batching_bound(w.sessions, lim, CFG, 1, makespan)
    assert b.mean_batch > 10  # the capacity forces wide batches
    assert b.mean_task_s <= mean_t * 1.01
    assert b.mean_task_s >= mean_t * 0.9
    assert b.ratio > 1.05

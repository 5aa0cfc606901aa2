"""Workload generators: reproducibility, shapes, arrivals, load calibration, io, bad input."""

from __future__ import annotations

import io
import itertools
import statistics
from pathlib import Path

import numpy as np
import pytest

from saga.graphs.trace import (
    STOP_END_TURN,
    STOP_TOOL_USE,
    TOOL_HUMAN,
    LLMCall,
    SessionTrace,
    SubAgent,
    ToolCall,
)
from saga.scheduler.workloads import (
    DEFAULT_TENANT_CLASSES,
    ArrivalProcess,
    GapPolicy,
    IterationCostModel,
    LogNormal,
    SweBenchParams,
    Workload,
    WorkloadError,
    arrival_times,
    calibrate_rate,
    demand_fn,
    get_workload,
    load_workload,
    new_prefill_tokens,
    offered_load,
    physical_limit_s,
    read_workload,
    save_workload,
    servegen_tenant_classes,
    session_demand_s,
    write_workload,
)
from saga.scheduler.workloads.synthetic import swe_bench_session, webarena_session
from saga.scheduler.workloads.transform import compress_gaps, copy_session, shared_chain

pytestmark = pytest.mark.unit

COST = IterationCostModel()


# ------------------------------------------------------------------ arrivals


@pytest.mark.parametrize(
    "proc", [ArrivalProcess(), ArrivalProcess("gamma", 2.5), ArrivalProcess("weibull", 1.8)]
)
def test_arrival_rate_and_cv(proc: ArrivalProcess) -> None:
    rng = np.random.default_rng(7)
    t = arrival_times(rng, proc, 4.0, n=40_000)
    gaps = np.diff([0.0, *t])
    assert gaps.mean() == pytest.approx(0.25, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(proc.cv, rel=0.1)
    h = arrival_times(np.random.default_rng(7), proc, 4.0, horizon_s=1000.0)
    assert all(0 < x < 1000 for x in h)
    assert len(h) == pytest.approx(4000, rel=0.1)


def test_arrival_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(WorkloadError, match="rate"):
        arrival_times(rng, ArrivalProcess(), 0.0, n=3)
    with pytest.raises(WorkloadError, match="exactly one"):
        arrival_times(rng, ArrivalProcess(), 1.0)
    with pytest.raises(WorkloadError, match="kind"):
        ArrivalProcess("uniform")
    with pytest.raises(WorkloadError, match="cv"):
        ArrivalProcess("gamma", 0.0)


# ------------------------------------------------------------------ generators


def test_swe_bench_shape() -> None:
    sessions = [swe_bench_session(3, i) for i in range(60)]
    steps = [len(s.calls) for s in sessions]
    assert min(steps) >= 5
    assert max(steps) <= 150
    assert 25 <= statistics.median(steps) <= 60
    for s in sessions[:10]:
        prompts = [c.prompt_tokens for c in s.calls]
        # append-only context (until a context reset halves it)
        assert all(b >= a or b <= 128_000 // 2 + 20_000 for a, b in itertools.pairwise(prompts))
        assert s.calls[-1].stop == STOP_END_TURN
        assert all(c.stop == STOP_TOOL_USE for c in s.calls[:-1])
        assert {t.name for t in s.tools} <= {"code_execution", "file_op"}
        assert len(s.tools) == len(s.calls) - 1
        # consecutive calls share their prefix: almost everything is cached
        news = new_prefill_tokens(s)
        assert sum(news[1:]) < 0.2 * sum(c.prompt_tokens for c in s.calls[1:])
    # the shared system block is the same chain in every session
    n = 5000 // 64
    assert (
        sessions[0].calls[0].block_hashes[:n]
        == sessions[1].calls[0].block_hashes[:n]
        == shared_chain("swe_bench", n)
    )
    assert sessions[0].calls[0].block_hashes[n] != sessions[1].calls[0].block_hashes[n]


def test_webarena_shape() -> None:
    sessions = [webarena_session(3, i) for i in range(60)]
    steps = [len(s.calls) for s in sessions]
    assert min(steps) >= 3
    assert max(steps) <= 30
    s = sessions[0]
    assert {t.name for t in s.tools} == {"web_api"}
    news = new_prefill_tokens(s)
    # only the 2000-token system block (31 full blocks) is reused between steps
    for c, new in zip(s.calls, news, strict=True):
        assert new == c.prompt_tokens - (2000 // 64) * 64


def test_reproducible_by_seed() -> None:
    a = get_workload("swe_bench", seed=5, n_sessions=20, rate=0.5)
    b = get_workload("swe_bench", seed=5, n_sessions=20, rate=0.5)
    c = get_workload("swe_bench", seed=6, n_sessions=20, rate=0.5)
    assert a.sessions == b.sessions
    assert a.sessions != c.sessions
    m1 = get_workload("multi_tenant", seed=2, duration_s=600.0, rate=0.3, pool_size=16)
    m2 = get_workload("multi_tenant", seed=2, duration_s=600.0, rate=0.3, pool_size=16)
    assert m1.sessions == m2.sessions


def test_load_calibration_within_tolerance() -> None:
    dem = demand_fn(COST)
    w = get_workload("webarena", seed=1, n_sessions=1500, replicas=4, load=0.8, pool_size=400)
    rate = w.params["rate_per_s"]
    mean_demand = statistics.fmean(dem(s) for s in w.sessions)
    assert rate * mean_demand / 4 == pytest.approx(0.8, rel=0.08)
    horizon = w.sessions[-1].start_s
    assert offered_load(w.sessions, 4, dem, horizon) == pytest.approx(0.8, rel=0.1)
    # a caller-supplied demand function is used as given
    w2 = get_workload("swe_bench", seed=1, n_sessions=10, replicas=10, load=0.5, demand=lambda s: 20.0)
    assert w2.params["rate_per_s"] == pytest.approx(0.25)


def test_calibrate_rate_errors() -> None:
    s = webarena_session(0, 0)
    with pytest.raises(WorkloadError, match="empty"):
        calibrate_rate([], 1, 0.8, demand_fn(COST))
    with pytest.raises(WorkloadError, match="replicas"):
        calibrate_rate([s], 0, 0.8, demand_fn(COST))
    with pytest.raises(WorkloadError, match="zero demand"):
        calibrate_rate([s], 1, 0.8, lambda _: 0.0)


def test_multi_tenant_mix() -> None:
    short = SweBenchParams(steps=LogNormal(8, 0.3, 2, 20))
    w = get_workload(
        "multi_tenant", seed=4, duration_s=4000.0, rate=0.5, swe_bench_params=short, pool_size=32
    )
    by = w.by_tenant()
    assert set(by) == {"heavy-0", "medium-0", "medium-1", "light-0", "light-1", "light-2", "light-3"}
    shares = w.params["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert len(by["heavy-0"]) / len(w.sessions) == pytest.approx(shares["heavy-0"], rel=0.15)
    assert min(len(v) for v in by.values()) > 0
    assert w.tenants["light-0"].slo_class == "interactive"
    assert w.tenants["heavy-0"].slo_factor == 3.0
    assert {s.agent_type for s in by["light-0"]} == {"webarena"}
    assert {s.agent_type for s in by["heavy-0"]} == {"swe_bench"}
    # bursty: per-tenant inter-arrival CV above 1
    t = [s.start_s for s in by["heavy-0"]]
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() > 1.0


def test_registry_errors() -> None:
    with pytest.raises(WorkloadError, match="unknown workload"):
        get_workload("nope")
    with pytest.raises(WorkloadError, match="exactly one"):
        get_workload("swe_bench", rate=1.0)
    with pytest.raises(WorkloadError, match="rate"):
        get_workload("swe_bench", n_sessions=3)
    with pytest.raises(WorkloadError, match="unknown parameters"):
        get_workload("webarena", n_sessions=3, rate=1.0, bogus=1)
    bad = SweBenchParams(tool_mix={"x": 1.0})
    with pytest.raises(WorkloadError, match="tool_mix"):
        get_workload("swe_bench", n_sessions=2, rate=1.0, swe_bench_params=bad)


# ------------------------------------------------------------------ demand / limit on a hand-made session


def _hand_session() -> SessionTrace:
    sub = SessionTrace(
        session_id="p/sub",
        agent_type="sub",
        calls=(LLMCall(0.0, 1.0, 100, 10),),
        parent_id="p",
    )
    return SessionTrace(
        session_id="p",
        agent_type="a",
        calls=(
            LLMCall(0.0, 2.0, 1000, 11, stop=STOP_TOOL_USE),
            LLMCall(5.0, 2.0, 1100, 1, stop=STOP_END_TURN),
            LLMCall(607.0, 1.0, 1200, 1),
        ),
        tools=(ToolCall("code_execution", 2.0, 5.0, 0), ToolCall(TOOL_HUMAN, 7.0, 607.0, 1)),
        subagents=(SubAgent(after_call=0, start_s=2.0, session=sub),),
        shared_prefix_tokens=500,
    )


def test_physical_limit_and_demand_by_hand() -> None:
    m = IterationCostModel(
        overhead_s=0.01, prefill_s_per_token=0.001, decode_s_per_token=0.0, decode_batch=10
    )
    s = _hand_session()
    # no hashes: call 0 reuses the 500 shared tokens, later calls extend the previous context
    assert new_prefill_tokens(s) == [500, 89, 99]
    c0 = 0.01 + 0.5 + 10 * 0.01
    sub = 0.01 + 0.1 + 9 * 0.01
    c1 = 0.01 + 0.089
    c2 = 0.01 + 0.099
    # sub-agent spawned after call 0 (offset 0), its recorded end 3.0, parent resumes 2.0 s later
    expected = c0 + sub + 2.0 + c1 + 600.0 + c2
    assert physical_limit_s(s, m) == pytest.approx(expected)
    d = session_demand_s(s, m)
    assert d == pytest.approx(
        0.5 + 0.01 * (1 + 1.1) + 0.1 + 0.01 * (1 + 1.0) + 0.089 + 0.01 * 1.1 + 0.099 + 0.01 * 1.1
    )


def test_gap_compression() -> None:
    s = _hand_session()
    c = compress_gaps(s, GapPolicy(max_human_gap_s=60.0))
    assert c.calls[2].start_s - c.calls[1].end_s == pytest.approx(60.0)
    assert c.calls[1].start_s == pytest.approx(5.0)  # the tool gap is kept
    assert c.duration_s == pytest.approx(s.duration_s - 540.0)
    human = [t for t in c.tools if t.name == TOOL_HUMAN]
    assert human[0].duration_s == pytest.approx(60.0)
    assert compress_gaps(s, GapPolicy()) is s
    half = compress_gaps(s, GapPolicy(gap_scale=0.5))
    # the parent still waits for its sub-agent (1 s long, spawned right after call 0)
    assert half.calls[1].start_s >= half.calls[0].end_s + 1.0
    with pytest.raises(WorkloadError):
        GapPolicy(gap_scale=0.0)


def test_copy_session_has_own_namespace() -> None:
    s = swe_bench_session(0, 0)
    c = copy_session(s, 2)
    assert c.session_id == "swe-0-0#2"
    n = 5000 // 64
    assert c.calls[0].block_hashes[:n] == s.calls[0].block_hashes[:n]
    assert not set(c.calls[0].block_hashes[n:]) & set(s.calls[0].block_hashes[n:])


# ------------------------------------------------------------------ claude code (synthetic pool always)


def test_claude_code_with_given_sessions() -> None:
    pool = [_hand_session(), swe_bench_session(1, 1)]
    w = get_workload("claude_code", seed=3, n_sessions=5, rate=0.1, sessions=pool)
    ids = [s.session_id for s in w.sessions]
    assert len(set(ids)) == 5
    assert {i.split("#")[0] for i in ids} == {"p", "swe-1-1"}
    # default policy caps human think time at 120 s
    hand = next(s for s in w.sessions if s.session_id == "p")
    assert hand.calls[2].start_s - hand.calls[1].end_s == pytest.approx(120.0)


def test_claude_code_traces(weka_path: str) -> None:
    w = get_workload("claude_code", seed=1, n_sessions=600, replicas=64, load=0.8, path=weka_path)
    assert len(w.sessions) == 600
    assert w.params["pool"] > 400
    assert any("#1" in s.session_id for s in w.sessions)  # more sessions than the pool: copies
    s = w.sessions[0]
    n = s.shared_prefix_tokens // s.block_size
    assert n > 0
    assert s.calls[0].block_hashes[:n] == shared_chain(s.agent_type, n)
    # with real hashes most of each follow-up prompt is a prefix hit (README: 96% of blocks)
    news = new_prefill_tokens(s)
    assert sum(news[1:]) < 0.3 * sum(c.prompt_tokens for c in s.calls[1:])
    for x in w.sessions[:50]:
        gaps = [
            b.start_s - a.end_s for a, b in zip(x.calls, x.calls[1:], strict=False) if a.stop == STOP_END_TURN
        ]
        assert all(g <= 120.0 + 1e-6 for g in gaps)


# ------------------------------------------------------------------ servegen / io


def test_servegen_defaults_match_file(servegen_path: str) -> None:
    assert servegen_tenant_classes(servegen_path) == DEFAULT_TENANT_CLASSES


def test_servegen_bad_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot read"):
        servegen_tenant_classes(str(tmp_path / "missing.csv.gz"))


def test_jsonl_round_trip(tmp_path: Path) -> None:
    w = get_workload("multi_tenant", seed=1, n_sessions=30, rate=0.5)
    p = tmp_path / "w.jsonl"
    save_workload(w, p)
    back = load_workload(p)
    assert back.sessions == w.sessions
    assert dict(back.tenants) == dict(w.tenants)
    assert back.seed == w.seed
    assert back.params["rate_per_s"] == w.params["rate_per_s"]


def test_jsonl_errors_name_line() -> None:
    w = get_workload("webarena", seed=1, n_sessions=2, rate=0.5)
    buf = io.StringIO()
    write_workload(w, buf)
    lines = buf.getvalue().splitlines()
    with pytest.raises(WorkloadError, match="line 2: missing field 'calls'"):
        read_workload(io.StringIO(lines[0] + "\n" + lines[1].replace('"calls"', '"callz"') + "\n"))
    with pytest.raises(WorkloadError, match="line 1: not a SAGA workload"):
        read_workload(io.StringIO('{"kind": "x"}\n'))
    with pytest.raises(WorkloadError, match="line 3: not JSON"):
        read_workload(io.StringIO("\n".join([*lines[:2], "{"])))
    with pytest.raises(WorkloadError, match="empty"):
        read_workload(io.StringIO(""))


def test_workload_validate() -> None:
    s = webarena_session(0, 0)
    with pytest.raises(WorkloadError, match="no sessions"):
        Workload("w", (), {}, 0).validate()
    with pytest.raises(WorkloadError, match="tenant"):
        Workload("w", (s,), {}, 0).validate()

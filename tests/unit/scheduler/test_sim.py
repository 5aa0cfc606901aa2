"""The cluster simulator on small workloads: completion, determinism, limits, pins, CLI."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import pytest

from saga.cli import main as saga_main
from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall
from saga.scheduler.report import load_json, load_results, write_result
from saga.scheduler.settings import LaneSettings
from saga.scheduler.sim.limits import physical_limits, simulated_limits
from saga.scheduler.sim.loop import SimError, Simulator
from saga.scheduler.sim.profiles import PROFILES
from saga.scheduler.sim.systems import SYSTEMS, get_system
from saga.scheduler.workloads.model import TenantSpec, Workload

pytestmark = pytest.mark.unit

CFG = replace(PROFILES["llama8b-h100"], page_size=16, kv_capacity_tokens=60_000)


def _session(sid: str, start: float, n: int, base: int, sub: SessionTrace | None = None) -> SessionTrace:
    calls = []
    hashes: tuple[int, ...] = tuple(range(10_000, 10_064))  # shared 1k-token system prompt
    t = 0.0
    for i in range(n):
        hashes = hashes + tuple(base * 1000 + i * 100 + j for j in range(20))
        calls.append(LLMCall(t, 1.0, len(hashes) * 16, 40, block_hashes=hashes, stop="tool_use"))
        t += 1.0 + 2.0 + i  # call, then a tool gap growing with the step
    tools = tuple(ToolCall("bash", c.end_s, c.end_s + 2.0 + i, i) for i, c in enumerate(calls[:-1]))
    subs = (SubAgent(0, calls[0].end_s + 0.5, sub),) if sub is not None else ()
    return SessionTrace(sid, "coder", tuple(calls), tools, subs, tenant="t", start_s=start, block_size=16)


def _workload() -> Workload:
    sub = replace(_session("w0.sub", 0.0, 3, 99), parent_id="w0", agent_type="helper")
    sessions = tuple(_session(f"w{i}", 0.5 * i, 4 + i % 3, i + 1, sub if i == 0 else None) for i in range(8))
    return Workload("tiny", sessions, {"t": TenantSpec(slo_factor=2.0)}, seed=0)


def _run(name: str, w: Workload, limits: dict[str, float]) -> tuple[float, ...]:
    r = Simulator(w, get_system(name), 2, CFG, limits=limits).run()
    r.validate()
    assert all(o.completed for o in r.outcomes), name
    assert r.meta["pin_deadline_violations"] == 0
    tops = {o.session_id: o for o in r.outcomes if not o.is_subagent}
    assert set(tops) == {s.session_id for s in w.sessions}
    for sid, o in tops.items():
        assert o.completion_s >= limits[sid] * 0.99, (name, sid)
    assert any(o.is_subagent for o in r.outcomes)
    return tuple(o.end_s for o in r.outcomes)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_every_system_completes_every_session_above_the_limit(name: str) -> None:
    w = _workload()
    limits = physical_limits(w, CFG)
    assert _run(name, w, limits) == _run(name, w, limits)  # deterministic


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_a_call_the_replica_refuses_fails_its_session_and_the_run_goes_on(name: str) -> None:
    """A prompt past the replicas' context length fits their KV pool, so the engine dispatches
    it; the replica model refuses it (SGLang's 400). Before, the exception ended the whole run."""
    w = _workload()  # call i's prompt is 1,344 + 320·i tokens plus 40 output tokens
    cfg = replace(CFG, context_length=2400)  # the 5th call (2,624 tokens) is refused
    r = Simulator(w, get_system(name), 2, cfg).run()
    r.validate()
    tops = {o.session_id: o for o in r.outcomes if not o.is_subagent}
    assert {sid for sid, o in tops.items() if o.completed} == {"w0", "w3", "w6"}  # the 4-call ones
    failed = [o for o in tops.values() if not o.completed]
    assert len(failed) == 5
    assert all(o.rejected == 1 and o.calls == 4 for o in failed)
    assert r.meta["calls_refused_by_replicas"] == 5
    assert r.meta["sessions_not_completed"] == 5


def test_analytic_limits_match_a_lone_replay() -> None:
    w = _workload()
    a = physical_limits(w, CFG)
    b = simulated_limits(w, CFG)
    for sid in a:
        assert a[sid] == pytest.approx(b[sid], rel=0.02)


def test_saga_keeps_sessions_home_and_pins() -> None:
    w = _workload()
    r = Simulator(w, get_system("saga"), 2, CFG).run()
    rr = Simulator(w, get_system("round_robin"), 2, CFG).run()
    saga_cached = sum(o.cached_tokens for o in r.outcomes)
    rr_cached = sum(o.cached_tokens for o in rr.outcomes)
    assert saga_cached > rr_cached
    assert sum(o.recomputed_tokens for o in r.outcomes) <= sum(o.recomputed_tokens for o in rr.outcomes)


def _simulate(out: Path) -> int:
    return saga_main(
        [
            "simulate", "--workload", "webarena", "--replicas", "2", "--sessions", "6", "--seed", "3",
            "--systems", "saga,sticky", "--out", str(out), "--no-plots", "--no-progress",
        ]
    )  # fmt: skip


def test_saga_simulate_cli_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / "saga.json").write_text("{}")  # a stale plain result from an older run
    assert _simulate(out) == 0
    names = ("report.md", "report.json", "saga.json.gz", "sticky.json.gz", "limits.json.gz", "run.json")
    for name in names:
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # the stale saga.json is gone
    assert "saga" in (out / "report.md").read_text()
    saga, sticky = load_results([out / "saga.json.gz", out / "sticky.json.gz"])
    assert (saga.system, sticky.system) == ("saga", "sticky")
    assert gzip.decompress((out / "saga.json.gz").read_bytes()).decode() == saga.to_json()
    limits = load_json(out / "limits.json.gz")
    assert set(limits) == {o.session_id for o in saga.outcomes}
    # a rerun with the same content writes the same bytes; RunResults differ only in wall_s
    again = tmp_path / "again"
    assert _simulate(again) == 0
    assert (again / "limits.json.gz").read_bytes() == (out / "limits.json.gz").read_bytes()
    for name in ("saga.json.gz", "sticky.json.gz"):
        (r1,), (r2,) = load_results([out / name]), load_results([again / name])
        assert replace(r1, wall_s=None) == replace(r2, wall_s=None)
        assert write_result(replace(r1, wall_s=None), tmp_path / "a.json.gz").read_bytes() == (
            write_result(replace(r2, wall_s=None), tmp_path / "b.json.gz").read_bytes()
        )
    assert saga_main(["simulate", "--workload", "webarena", "--systems", "nope", "--out", str(out)]) == 2


def test_saga_simulate_measures_only_the_window_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def sim(out: Path, *extra: str) -> int:
        return saga_main(
            ["simulate", "--workload", "webarena", "--replicas", "2", "--duration-s", "120", "--load", "0.5",
             "--seed", "3", "--systems", "saga", "--out", str(out), "--no-plots", "--no-progress", *extra]
        )  # fmt: skip

    assert sim(tmp_path / "w", "--warmup-s", "30", "--cooldown-s", "20") == 0
    run = load_json(tmp_path / "w" / "run.json")
    assert run["measured_arrivals_s"] == [30.0, 100.0]
    (r,) = load_results([tmp_path / "w" / "saga.json.gz"])
    assert r.meta["measured_arrivals_s"] == [30.0, 100.0]
    inside = [o for o in r.outcomes if not o.is_subagent and 30.0 <= o.start_s < 100.0]
    assert 0 < len(inside) < sum(1 for o in r.outcomes if not o.is_subagent)  # the file keeps every task
    md = (tmp_path / "w" / "report.md").read_text()
    assert "measured: tasks arriving in [30, 100) s" in md
    assert f"| saga | all | {len(inside)}/{len(inside)} |" in md
    capsys.readouterr()
    assert sim(tmp_path / "x", "--warmup-s", "-1") == 2
    assert "--warmup-s must be >= 0" in capsys.readouterr().err
    assert sim(tmp_path / "y", "--warmup-s", "100", "--cooldown-s", "20") == 2
    assert "leave no arrivals to measure" in capsys.readouterr().err


def test_a_stuck_call_stops_the_run_instead_of_sampling_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a call the replica never runs left only the self-re-arming SAMPLE event in
    the heap; the loop sampled an idle cluster forever and the series grew without bound (the
    >16 GB ``saga simulate --workload swe_bench --replicas 64 --duration-s 900`` run)."""
    w = _workload()
    sim = Simulator(w, get_system("saga"), 1, CFG, sample_period_s=1.0)
    model = sim.models["r000"]
    monkeypatch.setattr(model, "submit", lambda req, now: None)  # the replica loses requests
    with pytest.raises(SimError, match=r"deadlock at t=.*calls waiting: w\d+#0 on r000"):
        sim.run()
    ts, _ = sim.kv_series["r000"]
    assert len(ts) <= 6  # sessions arrive by t=3.5 s: sampling stops with the last real event
    assert len(sim.hit_series[0]) == len(ts)


def test_workload_params_reach_the_workload_and_bad_ones_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def sim(out: str, *extra: str) -> int:
        return saga_main(
            ["simulate", "--workload", "multi_tenant", "--replicas", "2", "--sessions", "12", "--seed", "3",
             "--systems", "saga", "--out", str(tmp_path / out), "--no-plots", "--no-progress", *extra]
        )  # fmt: skip

    per_class = 'tenants_per_class={"heavy": 1, "medium": 1, "light": 2}'
    assert sim("ok", "--workload-param", per_class) == 0
    (r,) = load_results([tmp_path / "ok" / "saga.json.gz"])
    assert {o.tenant for o in r.outcomes} <= {"heavy-0", "medium-0", "light-0", "light-1"}
    assert load_json(tmp_path / "ok" / "run.json")["args"]["workload_param"] == [per_class]
    capsys.readouterr()
    assert sim("a", "--workload-param", "tenants_per_class") == 2
    assert "expected KEY=JSON" in capsys.readouterr().err
    assert sim("b", "--workload-param", "tenants_per_class={light: 2}") == 2
    assert "--workload-param tenants_per_class: not JSON" in capsys.readouterr().err
    assert sim("c", "--workload-param", "no_such_param=1") == 2
    assert "no_such_param" in capsys.readouterr().err


def test_the_workload_tenants_are_the_engine_tenant_policies() -> None:
    w = _workload()
    w = replace(w, tenants={"t": TenantSpec(slo_factor=2.0), "u": TenantSpec(weight=3.0, slo_factor=1.5)})
    sim = Simulator(w, get_system("saga"), 2, CFG)
    f = sim.engine.settings.fairness
    assert f.slo_factors == {"t": 2.0, "u": 1.5}
    assert f.weights == {"t": 1.0, "u": 3.0}


def test_the_slo_lane_size_is_sampled_without_moving_the_lane() -> None:
    """Half the sessions are of a tight tenant; lanes form from the share alone (hold_s 0)."""
    w = _workload()
    sessions = tuple(replace(s, tenant="fast" if i % 2 else "t") for i, s in enumerate(w.sessions))
    tenants = {"t": TenantSpec(slo_factor=3.0), "fast": TenantSpec(slo_factor=1.5)}
    w = replace(w, sessions=sessions, tenants=tenants)
    saga = get_system("saga")
    lanes = LaneSettings(hold_s=0.0, min_work_s=0.0, max_reserved=0.5, relative_load=1.0)
    system = replace(saga, settings=replace(saga.settings, lanes=lanes))
    sim = Simulator(w, system, 3, CFG, sample_period_s=1.0)
    r = sim.run()
    r.validate()
    assert r.lane_replicas.t_s == r.cache_hit_rate.t_s
    assert max(r.lane_replicas.values) >= 1  # a lane formed and the samples saw it
    assert r.lane_replicas.values[0] == 0.0  # nothing measured at the first arrival
    quiet = Simulator(w, system, 3, CFG, sample_period_s=0.0).run()  # no samples at all
    assert [o.end_s for o in quiet.outcomes] == [o.end_s for o in r.outcomes]

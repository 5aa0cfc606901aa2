"""Pure parts of ``saga bench``: prompts reproduce prefix structure, the CPU guard's verdict."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest
import yaml

from saga.bench.procs import MACHINE, CpuTrace, cpu_verdict
from saga.bench.prompts import CHARS_PER_TOKEN, ID_HI, ID_LO, PromptBuilder, prompt_token_ids, token_ids
from saga.emulator.core import tokenizer
from saga.graphs.trace import LLMCall, SessionTrace
from saga.scheduler.workloads.model import TenantSpec

pytestmark = pytest.mark.unit


def _session(sid: str, calls: list[tuple[int, tuple[int, ...]]]) -> SessionTrace:
    return SessionTrace(
        session_id=sid,
        agent_type="t",
        calls=tuple(
            LLMCall(start_s=float(i), duration_s=0.5, prompt_tokens=n, output_tokens=4, block_hashes=h)
            for i, (n, h) in enumerate(calls)
        ),
        block_size=4,
    )


def test_equal_block_hashes_give_equal_token_prefixes() -> None:
    a = _session("a", [(10, (1, 2)), (14, (1, 2, 3))])
    b = _session("b", [(9, (1, 5))])
    pb = PromptBuilder()
    a0, a1, b0 = (prompt_token_ids(pb.call_text(s, i)) for s, i in ((a, 0), (a, 1), (b, 0)))
    assert (len(a0), len(a1), len(b0)) == (10, 14, 9)
    assert a1[:8] == a0[:8]  # blocks 1, 2 shared inside the session
    assert b0[:4] == a0[:4]  # block 1 shared across sessions
    assert b0[4:8] != a0[4:8]  # block 5 != block 2
    assert a1[8:] != a0[8:]  # tails are per call


def test_text_tokenizes_back_to_the_ids_at_fixed_width() -> None:
    ids = token_ids(12345, 300)
    assert all(ID_LO <= t < ID_HI for t in ids)
    text = PromptBuilder().block_text(12345, 300)
    assert len(text) == CHARS_PER_TOKEN * 300
    assert tokenizer.encode(text) == ids  # the emulator's tokenizer maps the words back
    assert token_ids(12345, 10) == ids[:10]  # prefix-stable stream


def test_session_without_hashes_is_append_only() -> None:
    s = SessionTrace(
        session_id="x",
        agent_type="t",
        calls=(LLMCall(0.0, 1.0, 5, 1), LLMCall(2.0, 1.0, 9, 1)),
    )
    pb = PromptBuilder()
    first, second = prompt_token_ids(pb.call_text(s, 0)), prompt_token_ids(pb.call_text(s, 1))
    assert second[:5] == first


def _trace(role: str, cores: list[float], period: float = 1.0) -> CpuTrace:
    return CpuTrace(role, 1, [period * (i + 1) for i in range(len(cores))], cores)


def test_cpu_guard_flags_a_saturated_process() -> None:
    v = cpu_verdict(
        [_trace("router", [0.2] * 10 + [0.98] * 10), _trace("saga", [0.3] * 20)],
        window_s=5.0,
        per_process_limit=0.9,
        machine_limit=0.9,
        machine_cores=4,
    )
    assert not v.valid
    assert "router" in v.reasons[0]
    assert v.peak_by_role["router"] == pytest.approx(0.98)


def test_cpu_guard_flags_a_saturated_machine_and_passes_a_quiet_one() -> None:
    busy = [_trace(f"replica-{i}", [0.7] * 12) for i in range(3)]
    v = cpu_verdict(busy, window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2)
    assert not v.valid
    assert "all processes" in v.reasons[0]
    assert v.machine_peak == pytest.approx(2.1)
    quiet = [_trace(f"replica-{i}", [0.2] * 12) for i in range(3)]
    ok = cpu_verdict(quiet, window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2)
    assert ok.valid
    assert not ok.reasons


def test_a_short_spike_below_the_window_does_not_invalidate() -> None:
    v = cpu_verdict(
        [_trace("saga", [0.1] * 4 + [1.0] + [0.1] * 5)],
        window_s=5.0,
        per_process_limit=0.9,
        machine_limit=0.9,
        machine_cores=2,
    )
    assert v.valid


def test_a_busy_machine_invalidates_even_when_our_processes_are_quiet() -> None:
    quiet = [_trace("saga", [0.1] * 12), _trace(MACHINE, [1.95] * 12)]
    v = cpu_verdict(quiet, window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2)
    assert not v.valid
    assert "all users" in v.reasons[0]
    assert MACHINE not in [r.split()[0] for r in v.reasons if "pid" in r]


def test_wire_session_ids_follow_the_header_rule_and_stay_unique() -> None:
    import re

    from saga.bench.replay import wire_session_id

    ids = ["heavy-0/swe-1-0", "a b", "x" * 300, "x" * 299 + "y", "ok-1.2:3"]
    wire = [wire_session_id(i) for i in ids]
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", w) for w in wire)
    assert len(set(wire)) == len(ids)
    assert wire[0] == "heavy-0:swe-1-0"
    assert wire[-1] == "ok-1.2:3"


def test_first_reading_is_weighted_by_its_own_short_interval() -> None:
    # The baseline was read 10 ms before the first sample: one 10 ms CPU tick over that interval
    # reads as 1 core, but it is 10 ms of a 5 s window, not a whole sampling period.
    tr = CpuTrace("router", 1, [0.01 + 0.5 * i for i in range(12)], [1.0] + [0.2] * 11, start_s=0.0)
    v = cpu_verdict([tr], window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2)
    assert v.valid
    assert v.peak_by_role["router"] == pytest.approx((0.01 * 1.0 + 5.0 * 0.2) / 5.01, rel=1e-3)


def test_the_machine_s_first_reading_is_weighted_by_its_own_short_interval_too() -> None:
    """Regression: the /proc/stat trace's baseline was read a few ms before the first sweep and
    its first rate (a few 10 ms ticks over those ms: 15 cores) was weighted as a whole 0.5 s
    sampling period, so a quiet machine read 2.5 of 2 cores in its first window (a
    multi_tenant/cache_aware run of 2026-11-24 was marked invalid this way)."""
    machine = CpuTrace(MACHINE, 0, [0.002 + 0.5 * i for i in range(12)], [15.0] + [0.3] * 11, start_s=0.0)
    saga = CpuTrace("saga", 1, [0.002 + 0.5 * i for i in range(12)], [0.1] * 12, start_s=0.0)
    v = cpu_verdict([saga, machine], window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2)
    assert v.valid, v.reasons
    assert v.peak_by_role[MACHINE] == pytest.approx((0.002 * 15.0 + 5.0 * 0.3) / 5.002, rel=1e-3)
    busy = CpuTrace(MACHINE, 0, machine.t_s, [1.95] * 12, start_s=0.0)
    assert not cpu_verdict(
        [saga, busy], window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2
    ).valid


def test_dumped_traces_reverify_to_the_same_verdict_and_bad_files_are_named(tmp_path: Path) -> None:
    from saga.bench.cli import run_cpu_verdict
    from saga.bench.procs import CpuSampler, CpuTraceError, reverify

    sampler = CpuSampler(machine_cores=2)
    sampler.traces = {
        "saga": CpuTrace("saga", 7, [0.5 * (i + 1) for i in range(12)], [0.2] * 12, start_s=0.0),
        MACHINE: CpuTrace(MACHINE, 0, [0.5 * (i + 1) for i in range(12)], [1.95] * 12, start_s=0.0),
    }
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "swe_bench-saga-cpu.json.gz"
    sampler.dump(path)
    again = reverify(path)
    assert again == sampler.verdict()
    assert not again.valid
    args = argparse.Namespace(paths=[str(tmp_path)])
    assert run_cpu_verdict(args) == 3  # invalid, as saga bench e2e exits

    sampler.traces = {"saga": sampler.traces["saga"]}
    sampler.dump(path)
    assert run_cpu_verdict(args) == 0
    assert run_cpu_verdict(argparse.Namespace(paths=[str(tmp_path / "none")])) == 2

    bad = tmp_path / "bad-cpu.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(CpuTraceError, match=r"bad-cpu\.json\.gz: not a gzipped JSON"):
        reverify(bad)
    uneven = {"role": "x", "pid": 1, "t_s": [1.0], "cores": []}
    doc = {"version": 1, "window_s": 5, "per_process_limit": 0.9, "machine_limit": 0.9, "machine_cores": 2}
    with gzip.open(bad, "wt") as f:
        json.dump({**doc, "traces": [uneven]}, f)
    with pytest.raises(CpuTraceError, match=r"traces\[0\]\.t_s and traces\[0\]\.cores"):
        reverify(bad)
    assert run_cpu_verdict(argparse.Namespace(paths=[str(bad)])) == 2


def test_processes_watched_late_are_summed_with_the_same_sweeps() -> None:
    # Both are read in the same sweeps at t = 1..10; the router was only watched from t = 6 and
    # its first reading is a spike. Summing by index would add it to the replica's t = 1 reading.
    replica = CpuTrace("replica-0", 1, [float(i) for i in range(1, 11)], [0.5] * 5 + [0.1] * 5)
    router = CpuTrace("router", 2, [float(i) for i in range(6, 11)], [0.1] * 5, start_s=5.0)
    v = cpu_verdict(
        [replica, router], window_s=5.0, per_process_limit=0.9, machine_limit=0.9, machine_cores=2
    )
    assert v.machine_peak == pytest.approx(0.2)


def test_saga_never_refuses_a_prompt_the_emulated_replicas_accept() -> None:
    """SAGA's limits in the benchmark are the replicas' own: a tighter prompt limit would drop
    tasks from SAGA's run that the routers pass through (seen with 287k-token Claude Code
    prompts against a 262,144-token limit). The prompt limit is auto (0: the replicas'
    max_req_input_len); the body limit holds a prompt of the replicas' whole context."""
    from saga.bench.e2e import E2ESettings, replica_config
    from saga.bench.systems import saga_config
    from saga.service.config import load_text

    tenants = {"default": TenantSpec(), "batch": TenantSpec(weight=2.0, slo_factor=3.0)}
    cfg = saga_config({"r0": "http://127.0.0.1:1"}, tenants, http_port=1, grpc_port=2,
                      metrics_port=3, redis_url=None)  # fmt: skip
    spec = load_text(yaml.safe_dump(cfg)).spec
    assert [(t.name, t.weight, t.deadline_factor) for t in spec.tenants] == [
        ("batch", 2.0, 3.0),
        ("default", 1.0, 1.5),
    ]
    limits = spec.limits
    replica = replica_config(E2ESettings(("saga",), 1, 0.8, 1.0, 1, Path("."), ""))
    assert "max_prompt_tokens" not in cfg["spec"]["limits"]
    assert limits.max_prompt_tokens == 0
    assert limits.max_request_bytes >= replica.context_length * (CHARS_PER_TOKEN + 1)

"""``saga bench e2e`` at a tiny scale: it runs, the report has every section, and the peers
really were SAGA and the sglang-router processes (no performance assertion)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from saga.bench.cli import build_workload, register
from saga.bench.e2e import E2ESettings, run_e2e
from saga.bench.procs import BenchProcessError, reverify
from saga.scheduler.report import load_results

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        importlib.util.find_spec("sglang_router") is None, reason="sglang-router not installed"
    ),
]

SECTIONS = (
    "## Per system",
    "### Per tenant",
    "## Live run: validity (CPU guard)",
    "## Live run: peers and replicas (replicas' own /metrics)",
    "## Speedups",
    "Simulator agreement",
    "## Issue targets (one run)",
    "### SLO attainment per tenant",
)


def _args(tmp: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(
        ["bench", "e2e", "--replicas", "2", "--sessions", "3", "--size", "tiny", "--out", str(tmp)]
    )


def _settings(out: Path, systems: tuple[str, ...], simulate: bool = True) -> E2ESettings:
    """2 emulated replicas at load 0.8, time scale 4, seed 1, no progress bars."""
    return E2ESettings(
        systems=systems,
        replicas=2,
        load=0.8,
        time_scale=4.0,
        seed=1,
        out_dir=out,
        command="pytest tiny",
        page_size=64,
        progress=False,
        simulate=simulate,
    )


async def test_tiny_run_writes_every_section_through_the_real_router(tmp_path: Path) -> None:
    systems: tuple[str, ...] = ("saga", "cache_aware", "manual")
    if shutil.which("redis-server") is not None:
        systems = ("saga", "saga-redis", "cache_aware", "manual")
    args = _args(tmp_path)
    w = build_workload("swe_bench", args)
    s = _settings(tmp_path, systems)
    summary = await run_e2e([w], s, echo=lambda _: None)

    md = (tmp_path / "report.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    assert sorted(p.name for p in tmp_path.glob("*-completion_cdf.png"))
    assert list(tmp_path.glob("*-speedup.png"))
    assert list(tmp_path.glob("*-hit_rate.png"))
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert set(bench["cpu"]) == {f"swe_bench/{x}" for x in systems}
    for system in systems:  # the raw traces re-verify to the verdict the report holds
        again = reverify(tmp_path / "logs" / f"swe_bench-{system}-cpu.json.gz")
        assert again.valid == bench["cpu"][f"swe_bench/{system}"]["valid"]
        assert again.machine_peak == pytest.approx(bench["cpu"][f"swe_bench/{system}"]["machine_peak_cores"])
    assert bench["versions"]["sglang-router"] != "not installed"

    total_calls = sum(x.total_calls for x in w.sessions)
    assert not list(tmp_path.glob("swe_bench-*.json"))  # RunResults are written gzipped only
    for system in systems:
        (r,) = load_results([tmp_path / f"swe_bench-{system}.json.gz"])
        assert len([o for o in r.outcomes if not o.is_subagent]) == len(w.sessions)
        assert all(o.completed for o in r.outcomes), summary["replicas"][f"swe_bench/{system}"]["errors"]
        peer = bench["peers"][f"swe_bench/{system}"]
        assert peer["pid_listens_on_port"], peer  # the process we started served the port we called
        assert peer["calls_sent"] == total_calls
        # every call reached a replica (the front end forwarded it; replicas count it themselves)
        assert bench["replicas"][f"swe_bench/{system}"]["totals"]["sglang:num_requests"] == total_calls
        argv = " ".join(peer["argv"])
        if system in ("cache_aware", "manual"):
            assert "sglang_router.launch_router" in argv
            assert f"--policy {system}" in argv
            assert "router" in " ".join(peer["cmdline_at_end"])  # the live process is the router
            assert str(peer["port"]) in peer["url"]
        else:
            assert "-m saga.cli serve" in argv
            assert "--time-scale" in argv


async def test_a_system_that_cannot_start_is_reported_and_the_others_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """saga-redis without a redis-server fails to start: the run goes on with the other
    systems, compares only them, and names the failure (with its traceback file)."""
    real_which = shutil.which

    def which(name: str, *args: object, **kw: object) -> str | None:
        return None if name == "redis-server" else real_which(name)

    monkeypatch.setattr(shutil, "which", which)
    args = _args(tmp_path)
    w = build_workload("swe_bench", args)
    alone = _settings(tmp_path / "alone", ("saga-redis",))
    with pytest.raises(
        BenchProcessError, match="every system failed: swe_bench/saga-redis: RedisServerMissing"
    ):
        await run_e2e([w], alone, echo=lambda _: None)
    s = _settings(tmp_path, ("saga-redis", "cache_aware", "manual"), simulate=False)
    summary = await run_e2e([w], s, echo=lambda _: None)

    (why,) = summary["failures"].values()
    assert list(summary["failures"]) == ["swe_bench/saga-redis"]
    assert "redis-server is not on PATH" in why
    assert (tmp_path / "logs" / "swe_bench-saga-redis-failure.txt").read_text().startswith("Traceback")
    assert set(summary["live_speedups"]) == {"cache_aware", "manual"}
    assert summary["settings"]["systems"] == ["saga-redis", "cache_aware", "manual"]
    assert summary["targets"] == {}  # no SAGA system completed: no target row
    md = (tmp_path / "report.md").read_text()
    assert "## Failed runs (left out of every comparison)" in md
    assert "| swe_bench/saga-redis | RedisServerMissing: redis-server is not on PATH" in md
    assert not (tmp_path / "swe_bench-saga-redis.json.gz").exists()
    for system in ("cache_aware", "manual"):
        (r,) = load_results([tmp_path / f"swe_bench-{system}.json.gz"])
        assert all(o.completed for o in r.outcomes)

"""Report metrics on hand-made outcomes, rendering, and bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from saga.scheduler.report import (
    ALL,
    MEASURED_KEY,
    ReportError,
    RunResult,
    Series,
    SessionOutcome,
    build_report,
    geomean,
    jain,
    measured,
    percentile,
    render_markdown,
    write_report,
    write_result,
)
from saga.scheduler.report.__main__ import main as report_main

pytestmark = pytest.mark.unit


def _o(sid: str, tenant: str, start: float, dur: float, **kw: Any) -> SessionOutcome:
    return SessionOutcome(
        session_id=sid,
        tenant=tenant,
        agent_type="a",
        start_s=start,
        end_s=start + dur,
        calls=2,
        **kw,
    )


def _run(system: str, durs: dict[str, float], **kw: Any) -> RunResult:
    outs = [
        _o(
            sid,
            "A" if sid < "c" else "B",
            0.0,
            d,
            deadline_s=10.0,
            slo_met=d <= 10.0,
            prompt_tokens=100,
            cached_tokens=50,
            output_tokens=10,
            recomputed_tokens=20,
            ttft_s=(0.1, 0.3),
        )
        for sid, d in durs.items()
    ]
    base: dict[str, Any] = {
        "system": system,
        "workload": "w",
        "seed": 1,
        "replicas": 2,
        "load": 0.8,
        "outcomes": tuple(outs),
        "duration_s": 60.0,
        "kv_util": {"r0": Series((0.0, 1.0), (0.2, 0.4)), "r1": Series((0.0, 1.0), (0.6, 0.8))},
        "cache_hit_rate": Series((0.0, 30.0), (0.5, 0.7)),
    }
    base.update(kw)
    return RunResult(**base)


def test_primitives() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 50) is None
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ReportError):
        geomean([1.0, 0.0])
    with pytest.raises(ReportError):
        jain([-1.0])


def test_metrics_on_hand_made_outcomes() -> None:
    base = _run("base", {"a": 4.0, "b": 8.0, "c": 12.0, "d": 20.0})
    fast = _run("fast", {"a": 2.0, "b": 4.0, "c": 6.0, "d": 5.0})
    limits = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 5.0}
    rep = build_report([base, fast], baseline="base", limits=limits)
    (sr,) = rep.scenarios
    # speedups: base/fast per task = 2, 2, 2, 4 -> geomean 2^(5/4)
    assert sr.speedups["fast"] == pytest.approx(2**1.25)
    assert sr.speedups["base"] == pytest.approx(1.0)
    assert sr.speedup_pairs["fast"] == 4
    assert rep.overall_speedups["fast"] == pytest.approx(2**1.25)
    g = next(x for x in sr.stats if x.system == "base" and x.tenant == ALL)
    assert g.mean_s == pytest.approx(11.0)
    assert g.p50_s == pytest.approx(10.0)
    assert g.p99_s == pytest.approx(12.0 + 0.97 * 8.0)
    assert g.slo_attainment == pytest.approx(0.5)  # 4 and 8 meet the 10 s deadline
    assert g.tasks_per_min == pytest.approx(4.0)
    assert g.tokens_per_s == pytest.approx(4 * 110 / 60.0)
    assert g.recomputed_share == pytest.approx(0.2)
    assert g.kv_util_mean == pytest.approx(0.5)
    assert g.hit_rate_mean == pytest.approx(0.6)
    assert g.ttft_p50_s == pytest.approx(0.2)
    # normalised completion 4, 4, 4, 4 -> Jain 1, limit ratio 4
    assert g.jain_tasks == pytest.approx(1.0)
    assert g.limit_ratio == pytest.approx(4.0)
    f = next(x for x in sr.stats if x.system == "fast" and x.tenant == ALL)
    xs = [2.0, 2.0, 2.0, 1.0]
    assert f.jain_tasks == pytest.approx(sum(xs) ** 2 / (4 * sum(x * x for x in xs)))
    assert f.limit_ratio == pytest.approx(math.exp(sum(map(math.log, xs)) / 4))
    # tenants: A = {a, b}, B = {c, d}
    tb = next(x for x in sr.stats if x.system == "fast" and x.tenant == "B")
    assert tb.tasks == 2
    assert tb.mean_s == pytest.approx(5.5)
    assert f.jain_tenants == pytest.approx(jain([2.0, 1.5]))
    assert (g.lane_mean, g.lane_max, g.lane_first_s) == (None, None, None)  # no lane series


def test_the_slo_lane_is_summed_up_when_one_formed() -> None:
    lane = Series((0.0, 30.0, 60.0, 90.0), (0.0, 0.0, 2.0, 1.0))
    with_lane = _run("laned", {"a": 4.0, "b": 8.0}, lane_replicas=lane)
    without = _run("plain", {"a": 4.0, "b": 8.0}, lane_replicas=Series((0.0, 30.0), (0.0, 0.0)))
    rep = build_report([with_lane, without], baseline="plain")
    g = {x.system: x for x in rep.scenarios[0].stats if x.tenant == ALL}
    assert (g["laned"].lane_mean, g["laned"].lane_max, g["laned"].lane_first_s) == (0.75, 2.0, 60.0)
    assert g["plain"].lane_max is None
    md = render_markdown(rep, {"command": "c"})
    assert "### SLO lane" in md
    assert "| laned | 0.75 | 2 | 60 |" in md
    assert "| plain |" not in md.split("### SLO lane")[1].split("###")[0]


def test_a_measurement_window_counts_only_the_tasks_arriving_in_it() -> None:
    outs = tuple(_o(sid, "A", start, 4.0 + start, deadline_s=10.0, slo_met=start < 5) for sid, start in
                 (("a", 0.0), ("b", 10.0), ("c", 20.0), ("d", 30.0)))  # fmt: skip
    r = RunResult(system="s", workload="w", seed=0, replicas=1, load=1.0, outcomes=outs, duration_s=60.0)
    w = replace(r, meta={MEASURED_KEY: [10.0, 30.0]})
    m = measured(w)
    assert [o.session_id for o in m.outcomes] == ["b", "c"]
    assert m.duration_s == 20.0
    assert measured(m) == m
    assert measured(r) is r
    g = next(x for x in build_report([w]).scenarios[0].stats if x.tenant == ALL)
    assert g.tasks == 2
    assert g.mean_s == pytest.approx(19.0)  # b and c take 14 and 24 s
    assert g.slo_attainment == 0.0
    assert g.tasks_per_min == pytest.approx(2 / (20.0 / 60.0))
    for bad in ([30.0, 10.0], [-1.0, 5.0], "10-30", [1.0], [0.0, float("inf")]):
        broken = replace(r, meta={MEASURED_KEY: bad})
        with pytest.raises(ReportError, match=MEASURED_KEY):
            build_report([broken])


def test_incomplete_and_subagents() -> None:
    outs = (
        _o("a", "A", 0, 5.0, deadline_s=10.0, slo_met=True),
        _o("b", "A", 0, 50.0, deadline_s=10.0, slo_met=False, completed=False),
        _o("a/sub", "A", 1, 2.0, is_subagent=True, output_tokens=7),
    )
    r = RunResult(system="s", workload="w", seed=0, replicas=1, load=1.0, outcomes=outs, duration_s=60.0)
    g = next(x for x in build_report([r]).scenarios[0].stats if x.tenant == ALL)
    assert (g.tasks, g.completed) == (2, 1)
    assert g.slo_attainment == pytest.approx(0.5)
    assert g.output_tokens_per_s == pytest.approx(7 / 60.0)


def test_bad_input_errors() -> None:
    with pytest.raises(ReportError, match="no results"):
        build_report([])
    r = _run("base", {"a": 1.0})
    with pytest.raises(ReportError, match="baseline"):
        build_report([r], baseline="nope")
    with pytest.raises(ReportError, match="more than once"):
        build_report([r, r])
    with pytest.raises(ReportError, match="no physical limit"):
        build_report([r], limits={})
    none_done = _run("x", {"a": 1.0}, outcomes=(_o("a", "A", 0, 1.0, completed=False),))
    with pytest.raises(ReportError, match="no system completed"):
        build_report([none_done])


def test_render_and_cli(tmp_path: Path) -> None:
    base = _run("base", {"a": 4.0, "b": 8.0, "c": 12.0})
    fast = _run("fast", {"a": 2.0, "b": 4.0, "c": 6.0})
    rep = build_report([base, fast], baseline="base")
    md = render_markdown(rep, {"command": "cmd x"})
    for section in (
        "## Geometric-mean speedup",
        "### Per system",
        "### Cluster",
        "### Speedup over base",
        "### Per tenant",
        "cmd x",
    ):
        assert section in md
    files = write_report(rep, [base, fast], tmp_path / "out", command="cmd")
    names = {p.name for p in files}
    assert {"report.md", "report.json"} <= names
    assert sum(n.endswith(".png") for n in names) == 4
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["overall_speedups"]["fast"] == pytest.approx(2.0)
    assert data["environment"]["seeds"] == [1]
    # CLI over files: a plain .json (older folders) and a gzipped .json.gz (what runs write now)
    (tmp_path / "base.json").write_text(base.to_json())
    write_result(fast, tmp_path / "fast.json.gz")
    rc = report_main(
        [
            str(tmp_path / "base.json"),
            str(tmp_path / "fast.json.gz"),
            "--out",
            str(tmp_path / "cli"),
            "--baseline",
            "base",
            "--no-plots",
        ]
    )
    assert rc == 0
    assert (tmp_path / "cli" / "report.md").is_file()
    (tmp_path / "bad.json").write_text("{")
    assert report_main([str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 2

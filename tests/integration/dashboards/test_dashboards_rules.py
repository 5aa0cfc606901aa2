"""Grafana dashboards and Prometheus rules: generated JSON up to date, tsc against
@grafana/schema, every PromQL expression parsed by promtool, metric names from docs/metrics.md,
and `promtool test rules` cases for the alerts the chart renders."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "saga"
DASH = CHART / "dashboards"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: run scripts/ensure-system-deps.sh (apt package prometheus)"
)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool (only from tests marked ``needs_promtool``, so it is on the PATH)."""
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def load_build() -> Any:
    spec = importlib.util.spec_from_file_location("saga_dashboards_build", DASH / "build.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASH.glob("saga-*.json"))}


def exprs(d: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(saga_[a-z_]+)`", text, flags=re.M))


def test_generated_files_are_up_to_date() -> None:
    build = load_build()
    assert set(dashboards()) == set(build.DASHBOARDS)
    for name in build.DASHBOARDS:
        assert (DASH / name).read_text() == build.render(name), (
            f"{name} is stale: run python {DASH / 'build.py'}"
        )
    assert (DASH / "typecheck.ts").read_text() == build.render_ts(), "typecheck.ts is stale: run build.py"


def test_dashboards_cover_the_issue_and_use_documented_metrics() -> None:
    known = documented_metrics()
    assert len(known) >= 19
    used: set[str] = set()
    for name, d in dashboards().items():
        assert d["uid"], name
        assert d["panels"], name
        for title, e in exprs(d):
            for m in re.findall(r"\b(saga_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[(\s)]|$)", e):
                assert m in known, f"{name} / {title}: {m} is not in docs/metrics.md"
                used.add(m)
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                m = re.search(r"label_values\((saga_[a-z_]+),", v["query"]["query"])
                assert m
                assert m.group(1) in known
    for needed in (
        "saga_tasks_total",
        "saga_task_completion_seconds",
        "saga_kv_retention_total",
        "saga_replica_cache_hit_ratio",
        "saga_decisions_total",
        "saga_steals_total",
        "saga_queue_depth",
        "saga_admission_rejections_total",
        "saga_build_info",
    ):
        assert needed in used, needed


def promql_for_promtool(expr: str) -> str:
    """Grafana variables replaced by values Prometheus accepts."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace('"$tenant"', '".*"')
        .replace('"$replica"', '".*"')
    )


@needs_promtool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = []
    for name, d in dashboards().items():
        for i, (_title, e) in enumerate(exprs(d)):
            rules.append(
                {
                    "record": f"check:{name.removesuffix('.json').replace('-', '_')}:{i}",
                    "expr": promql_for_promtool(e),
                }
            )
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(rules)} rules found" in r.stdout


@needs_promtool
def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum(rate(saga_calls_total[5m]"}]}]}
        )
    )
    r = promtool("check", "rules", str(path))
    assert r.returncode != 0


def rendered_rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    helm = pytest.importorskip("helm_python")
    vals = {"metrics": {"prometheusRule": {"enabled": True}}}
    vals["metrics"]["prometheusRule"].update(values or {})
    with helm.Chart.load(CHART) as chart:
        out = chart.render(vals, name="saga", namespace="saga-system")
    pr = yaml.safe_load(out["saga/templates/prometheusrule.yaml"])
    return {"groups": pr["spec"]["groups"]}


@needs_promtool
def test_rendered_rules_check_and_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rendered_rules()))
    shutil.copy(CHART / "tests" / "rules-test.yaml", tmp_path / "rules-test.yaml")
    check = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    test = promtool("test", "rules", "rules-test.yaml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr


@needs_promtool
def test_rule_tests_fail_when_threshold_changes(tmp_path: Path) -> None:
    """The rule tests can fail: with a 0.8 SLO target the acme alert (attainment 0.9) must not fire."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rendered_rules({"sloAttainmentTarget": 0.8})))
    shutil.copy(CHART / "tests" / "rules-test.yaml", tmp_path / "rules-test.yaml")
    test = promtool("test", "rules", "rules-test.yaml", cwd=tmp_path)
    assert test.returncode != 0
    assert "SagaSLOAttainmentLow" in test.stdout + test.stderr


def _tsc() -> list[str]:
    tsc = DASH / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip("dashboards/node_modules missing: run scripts/ensure-system-deps.sh (npm ci)")
    return [str(tsc)]


def test_dashboards_typecheck_against_grafana_schema() -> None:
    r = subprocess.run(
        [*_tsc(), "--noEmit", "-p", "tsconfig.json"], capture_output=True, text=True, cwd=DASH, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_typecheck_catches_a_bad_dashboard() -> None:
    bad = DASH / "_negative_check.ts"
    bad.write_text(
        "import type { Dashboard } from '@grafana/schema';\n"
        "type Exact<T> = T extends string ? `${T}` : T extends readonly (infer U)[] ? Exact<U>[]"
        " : T extends object ? { [K in keyof T]: Exact<T[K]> } : T;\n"
        "export const a: Exact<Dashboard> = { title: 't', panelz: [] };\n"
        "export const b: Exact<Dashboard> = { title: 't', panels: [{ type: 'timeseries',"
        " fieldConfig: { defaults: { thresholds: { mode: 'sometimes', steps: [] } }, overrides: [] } }] };\n"
    )
    try:
        r = subprocess.run(
            [
                *_tsc(),
                "--noEmit",
                "--strict",
                "--skipLibCheck",
                "--moduleResolution",
                "bundler",
                "--module",
                "esnext",
                "--target",
                "es2020",
                bad.name,
            ],
            capture_output=True,
            text=True,
            cwd=DASH,
            timeout=120,
        )
    finally:
        bad.unlink()
    assert r.returncode != 0
    assert "panelz" in r.stdout
    assert "sometimes" in r.stdout

"""A real Prometheus scrapes a running `saga serve` (with emulated SGLang replicas and SDK
traffic) and every dashboard query is evaluated against it through the Prometheus HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
DASH = ROOT / "deploy" / "helm" / "saga" / "dashboards"
PROMETHEUS = shutil.which("prometheus")
# Series that exist only after an event this short run does not provoke: no call is rejected by
# admission control, and the engine releases the KV of a cold agent type at tool calls
# ("release"/"not_worth": no graph predicts reuse yet), so nothing is pinned or kept. Their
# queries are still parsed by promtool in test_dashboards_rules.py; every other query must
# return data.
EVENT_ONLY = ("saga_admission_rejections_total", "saga_kv_pinned_sessions", 'outcome="kept"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not up after {timeout}s")
        time.sleep(0.1)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if PROMETHEUS is None:
        pytest.skip("prometheus missing: run scripts/ensure-system-deps.sh (apt package prometheus)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        replica_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "saga.cli",
                    "emulate",
                    "--replicas",
                    "1",
                    "--port",
                    str(replica_port),
                    "--time-scale",
                    "50",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        grpc_p, http_p, metrics_p, prom_p = free_port(), free_port(), free_port(), free_port()
        cfg = tmp_path / "saga.yaml"
        cfg.write_text(
            "apiVersion: saga.dev/v1alpha1\nkind: SchedulerConfig\nmetadata: {name: scrape-test}\nspec:\n"
            f"  listen: {{grpc: '127.0.0.1:{grpc_p}', http: '127.0.0.1:{http_p}', "
            f"metrics: '127.0.0.1:{metrics_p}'}}\n"
            "  auth: {anonymous_tenant: acme}\n"
            "  tenants: [{name: acme, weight: 1.0, slo_s: 3600}]\n"
            f"  replicas: {{static: ['http://127.0.0.1:{replica_port}']}}\n"
            "  state: {backend: memory}\n"
        )
        wait_http(f"http://127.0.0.1:{replica_port}/health")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "saga.cli", "serve", "--config", str(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_http(f"http://127.0.0.1:{metrics_p}/metrics")
        prom_cfg = tmp_path / "prometheus.yml"
        prom_cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: saga\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{metrics_p}']}}]\n"
        )
        procs.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_p}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        prom = f"http://127.0.0.1:{prom_p}"
        wait_http(f"{prom}/-/ready")
        yield {"prom": prom, "grpc": f"127.0.0.1:{grpc_p}"}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def drive_traffic(target: str) -> None:
    from saga.client import SagaClient

    with SagaClient(target, timeout_s=60) as client:
        for i in range(4):
            with client.session(agent="scrape-agent") as s:
                s.generate(f"task {i}: read the repository", max_new_tokens=16)
                with s.tool("file_op"):
                    pass
                for _chunk in s.stream(f"task {i}: now fix the bug", max_new_tokens=16):
                    pass  # streamed: the client-observed TTFT histogram gets a sample


def instantiate(expr: str) -> str:
    # A 1 m window: the run lasts seconds, and rate() needs two samples inside the window.
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
        .replace('"$tenant"', '".*"')
        .replace('"$replica"', '".*"')
    )


def test_every_dashboard_query_returns_data(stack: dict[str, Any]) -> None:
    drive_traffic(stack["grpc"])
    prom = stack["prom"]
    exprs = [
        (f"{f.name} / {p['title']}", t["expr"])
        for f in sorted(DASH.glob("saga-*.json"))
        for p in json.loads(f.read_text())["panels"]
        for t in p["targets"]
    ]
    assert len(exprs) > 20
    pending = {name: instantiate(e) for name, e in exprs if not any(m in e for m in EVENT_ONLY)}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if query(prom, pending[name]):
                del pending[name]
        if pending:
            time.sleep(1)
    assert not pending, f"no data for: {json.dumps(pending, indent=1)}"

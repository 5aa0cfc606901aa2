"""A real Prometheus scrapes a running `saga serve` (with emulated SGLang replicas and SDK
traffic) and every dashboard query is evaluated against it through the Prometheus HTTP API.

Every query must return data, including those of events a quiet run never provokes:

- admission rejections: the replica runs one request at a time and admission is configured to
  reject (`overload_queue_per_replica: 0`, `max_deferred_per_tenant: 0`): a new session that
  arrives while a call waits in the engine's queue is refused (the client sees
  RESOURCE_EXHAUSTED); a burst of concurrent sessions provokes it;
- KV pins ("kept", pinned sessions): with no AEG the engine asks its log-normal priors
  (`scheduler/priors.py`). After a call the next one is predicted with p = 0.6 x P(gap <= p90
  TTL ~100 s) ~ 0.54, then at `ToolStart("file_op")` with 0.97 x 0.9 within a ~0.2 s TTL; a
  ~3.6k-token context saves 0.3 s of recompute (12k tokens/s), so the expected saving clears
  `retention.min_benefit_s` (0.05 s) and the session's KV is pinned across the tool gap. (The
  short prompts the run used before, < 1k tokens, were released as "not_worth".)
"""

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[3]
DASH = ROOT / "deploy" / "helm" / "saga" / "dashboards"
PROMETHEUS = shutil.which("prometheus")
# ~3.6k prompt tokens as the emulator counts them (6 a line): enough recompute for a pin to pay.
LONG_CONTEXT = "def handler(request):\n    return process(request.body)\n" * 600


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
                    # One request at a time: a burst of sessions queues, so admission rejects.
                    "--max-running-requests",
                    "1",
                    "--enable-session-radix-cache",  # as SAGA's operator starts SGLang
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
            "  tenants: [{name: acme, weight: 1.0, slo_s: 3600, attainment_target: 0.99, ttft_s: 5}]\n"
            f"  replicas: {{static: ['http://127.0.0.1:{replica_port}']}}\n"
            "  state: {backend: memory}\n"
            # Reject a new session as soon as a call waits in the engine's queue.
            "  engine: {fairness: {overload_queue_per_replica: 0, max_deferred_per_tenant: 0}}\n"
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


def agent_task(client: Any, i: int) -> None:
    with client.session(agent="scrape-agent") as s:
        s.generate(f"task {i}: read the repository\n{LONG_CONTEXT}", max_new_tokens=16)
        with s.tool("file_op"):  # the engine pins the session's KV across this gap
            pass
        for _chunk in s.stream(f"task {i}: now fix the bug", max_new_tokens=16):
            pass  # streamed: the client-observed TTFT histogram gets a sample


def burst(client: Any, first: int, n: int) -> int:
    """Run ``n`` sessions at once; returns how many admission control rejected."""
    from saga.client.errors import RejectedError

    def one(i: int) -> bool:
        try:
            with client.session(agent="scrape-agent") as s:
                s.generate(f"burst {i}: summarise the logs", max_new_tokens=64)
        except RejectedError:
            return True
        return False

    with ThreadPoolExecutor(max_workers=n) as pool:
        return sum(pool.map(one, range(first, first + n)))


def drive_traffic(target: str) -> None:
    from saga.client import SagaClient

    with SagaClient(target, timeout_s=60) as client:
        for i in range(4):
            agent_task(client, i)
        rejected, tries = 0, 0
        while not rejected and tries < 10:
            rejected += burst(client, 8 * tries, 8)
            tries += 1
        assert rejected, "no session was rejected by admission control"
        agent_task(client, 4)  # the service keeps serving after rejections


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
    pending = {name: instantiate(e) for name, e in exprs}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if query(prom, pending[name]):
                del pending[name]
        if pending:
            time.sleep(1)
    assert not pending, f"no data for: {json.dumps(pending, indent=1)}"

"""Two ``saga serve`` processes sharing a real Redis keep every session on one replica.

A real ``redis-server`` (started here, free port), two scheduler subprocesses with
``spec.state.backend: redis`` in front of the same two emulated SGLang replicas (in this
process, real HTTP). Sessions are started on process A or B in turn and their calls then
alternate between the processes, two sessions at a time so that both replicas get sessions.
Every call of a session must land on the replica its first call was placed on: the process
that did not place it reads the binding from Redis and hands the bound replica to its engine
(``WorkflowHints.home_replica`` / ``CallSubmitted.home_replica``). The replicas' own request
counters must agree with the replicas the calls report.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from saga.client.aio import AsyncSagaClient, AsyncSession
from saga.client.errors import RejectedError
from saga.emulator.core import ReplicaConfig
from saga.emulator.server import RunningReplica, start_replica
from saga.service.state.redis_server import RedisServer, RedisServerMissing

from .conftest import TIME_SCALE, config_text

pytestmark = pytest.mark.integration

SESSIONS = 16
CALLS = 6  # per session, alternating A, B, A, ...
# Sessions running at once: low enough that no engine has a load reason to move a session
# (each process knows only the prefixes it dispatched itself, so under load an adopting
# process may legitimately judge another replica cheaper; see docs/service.md, "State").
CONCURRENCY = 2
READY_S = 30.0


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        server = RedisServer().start()
    except RedisServerMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


class ServeProcess:
    """``saga serve --config`` as a child process; ports read from its start-up line."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        env = dict(os.environ, PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saga.cli", "serve", "--config", str(config), "--log-level", "WARNING"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env=env,
        )
        self.grpc_port = 0
        self.metrics_port = 0

    async def wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pat = re.compile(r"gRPC on port (\d+).*metrics on port (\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"saga serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            m = pat.search(self.log.read_text())
            if m:
                self.grpc_port, self.metrics_port = int(m.group(1)), int(m.group(2))
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"saga serve did not start in {timeout_s} s:\n{self.log.read_text()}")

    async def wait_replicas_healthy(self, ids: list[str], timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                async with http.get(url) as resp:
                    text = await resp.text()
                if all(f'saga_replica_healthy{{replica="{r}"}} 1.0' in text for r in ids):
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"replicas {ids} not healthy in {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()


async def shut_down(
    clients: list[AsyncSagaClient], procs: list[ServeProcess], replicas: list[RunningReplica]
) -> None:
    """Close the clients, stop the ``saga serve`` processes, then the replicas."""
    for c in clients:
        await c.close()
    for p in procs:
        p.stop()
    for rep in replicas:
        await rep.runner.cleanup()


async def test_sessions_keep_one_replica_across_two_processes(tmp_path: Path, redis_url: str) -> None:
    replicas: list[RunningReplica] = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True), replica_id=f"r{i}", time_scale=TIME_SCALE
        )
        for i in range(2)
    ]
    urls = [f"r{i}={r.url}" for i, r in enumerate(replicas)]
    state = f"  state:\n    backend: redis\n    redis_url: {redis_url}\n"
    cfg = tmp_path / "saga.yaml"
    cfg.write_text(config_text(urls) + state)
    procs = [ServeProcess(cfg, tmp_path / f"serve-{n}.log") for n in "ab"]
    clients: list[AsyncSagaClient] = []
    try:
        for p in procs:
            await p.wait_started(READY_S)
        for p in procs:
            await p.wait_replicas_healthy(["r0", "r1"], READY_S)
        clients = [AsyncSagaClient(f"127.0.0.1:{p.grpc_port}", timeout_s=30) for p in procs]

        gate = asyncio.Semaphore(CONCURRENCY)

        async def one_session(k: int) -> list[str]:
            async with gate:
                return await run_session(k)

        async def run_session(k: int) -> list[str]:
            first = clients[k % 2]
            s = await first.start_session(agent="coder")
            # The same session seen through each process (A starts it for even k, B for odd).
            views = [AsyncSession(c, s.session_id, "", "coder") for c in (first, clients[1 - k % 2])]
            served = []
            context = f"session {k}: " + "repository context " * 40
            for i in range(CALLS):
                out = await views[i % 2].generate(context + f"step {i}", max_new_tokens=8)
                served.append(out.replica_id)
                context += out.text
            await views[1].end()
            return served

        results = await asyncio.gather(*(one_session(k) for k in range(SESSIONS)))
        for k, served in enumerate(results):
            assert len(set(served)) == 1, f"session {k} was served by {served}"
        # The replicas' own counters agree with where the calls say they ran.
        reported = Counter(r for served in results for r in served)
        counted = {f"r{i}": rep.runtime.generation_requests for i, rep in enumerate(replicas)}
        assert counted == {r: reported.get(r, 0) for r in counted}
        assert sum(counted.values()) == SESSIONS * CALLS
    finally:
        await shut_down(clients, procs, replicas)


async def test_a_tenants_session_quota_holds_across_two_processes(tmp_path: Path, redis_url: str) -> None:
    """``default`` may hold 2 open sessions in all: process B refuses the third that A's two
    would exceed, and admits it once one of them ends (through B)."""
    replicas = [
        await start_replica(
            ReplicaConfig(enable_session_radix_cache=True), replica_id="r0", time_scale=TIME_SCALE
        )
    ]
    text = config_text([f"r0={replicas[0].url}"]).replace(
        "    - {name: default}", "    - {name: default, max_active_sessions: 2}"
    )
    cfg = tmp_path / "saga.yaml"
    cfg.write_text(text + f"  state:\n    backend: redis\n    redis_url: {redis_url}\n")
    procs = [ServeProcess(cfg, tmp_path / f"serve-{n}.log") for n in "ab"]
    clients: list[AsyncSagaClient] = []
    try:
        for p in procs:
            await p.wait_started(READY_S)
        clients = [AsyncSagaClient(f"127.0.0.1:{p.grpc_port}", timeout_s=30) for p in procs]
        a, b = clients
        first = await a.start_session(agent="coder")
        await a.start_session(agent="coder")
        with pytest.raises(RejectedError, match="2 open sessions, its quota is 2") as ei:
            await b.start_session(agent="coder")
        assert ei.value.retry_after_s == 5.0
        await AsyncSession(b, first.session_id, "", "coder").end()  # b adopts it and ends it
        await b.start_session(agent="coder")  # b's check writes the end first, in one step
        with pytest.raises(RejectedError):
            await a.start_session(agent="coder")
    finally:
        await shut_down(clients, procs, replicas)

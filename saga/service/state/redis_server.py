"""Start a throw-away ``redis-server`` on a free loopback port (tests, benchmarks, demos).

``redis-server --port P --save '' --appendonly no`` (no persistence), readiness polled with
PING until ``ready_timeout_s`` (10 s), stopped with SIGTERM then SIGKILL. Raises
:class:`RedisServerMissing` when the binary is not on PATH, so callers can skip clearly.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import redis


class RedisServerMissing(RuntimeError):
    """``redis-server`` is not installed (``apt-get install -y redis-server``)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server child process. ``url`` is valid between :meth:`start` and :meth:`stop`."""

    def __init__(self, *, port: int | None = None, ready_timeout_s: float = 10.0) -> None:
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing("redis-server is not on PATH (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return self
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"redis-server not ready on port {self.port} in {self.ready_timeout_s} s"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Child processes of the live benchmark, their readiness, and the CPU guard.

:class:`Proc` starts one command (stdout/stderr to a log file in the run folder), knows its
pid and real command line (read back from ``/proc/<pid>/cmdline``, so the report shows what
actually ran) and stops it with SIGTERM, then SIGKILL after ``stop_timeout_s``.
:func:`wait_http` polls a URL until it answers 200 within a bounded timeout (never a fixed
sleep) and fails early when the process died.

CPU guard (:class:`CpuSampler`): every ``period_s`` it reads ``utime + stime`` of every
watched pid from ``/proc/<pid>/stat`` (all threads of the process) and records the CPU used
in that interval, in cores. A run is **invalid** when, over any window of ``window_s`` wall
seconds, one process used more than ``per_process_limit`` cores (0.9: it saturated its core,
so the run measured the machine, not the scheduler), or all processes together used more than
``machine_limit`` x the machine's cores (0.9: the machine itself was saturated, so processes
were waiting for a core). The whole machine's busy time (``/proc/stat``, every user's
processes, pseudo-role ``@machine``) counts against the same machine limit: a run disturbed by
other work on the machine is invalid too. Both limits and the window are constructor arguments.
:meth:`CpuSampler.dump` writes the raw traces with those settings (``logs/<workload>-<system>-
cpu.json.gz`` in a run folder) and :func:`reverify` recomputes a verdict from such a file, so a
run's validity can be re-checked after the guard itself is corrected.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchProcessError(RuntimeError):
    """A benchmark child process failed to start, exited early or never became ready."""


class CpuTraceError(ValueError):
    """A CPU trace file (``CpuSampler.dump``) that cannot be read: names the file and field."""


CPU_TRACE_VERSION = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_cmdline(pid: int) -> list[str]:
    """The process's real argv from ``/proc`` (empty when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def cpu_seconds(pid: int) -> float | None:
    """``utime + stime`` of ``pid`` in seconds (all its threads), None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces: split after its closing parenthesis.
    rest = text[text.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def pid_listens_on(pid: int, port: int) -> bool:
    """True when ``pid`` owns a TCP socket listening on ``port`` (``/proc/net/tcp{,6}`` + fds).

    Proves which process really served a front-end port (the report's peer check)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


MACHINE = "@machine"  # pseudo-role: the whole machine's busy CPU from /proc/stat


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy (everything but idle and iowait) since boot."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    v = [int(x) for x in first[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


class Proc:
    """One child process with a role name (``replica-0``, ``sglang-router``, ``saga``)."""

    def __init__(self, role: str, argv: Sequence[str], log_path: Path, *, stop_timeout_s: float = 10.0):
        self.role = role
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.popen = subprocess.Popen(
                self.argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as e:
            self._log.close()
            raise BenchProcessError(f"{role}: cannot start {self.argv[0]}: {e}") from None
        self.cmdline = read_cmdline(self.popen.pid) or self.argv

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=self.stop_timeout_s)
        self._log.close()


async def wait_http(
    http: aiohttp.ClientSession,
    url: str,
    proc: Proc | None,
    *,
    timeout_s: float,
    method: str = "GET",
    json_body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll ``url`` until it answers 200; raise :class:`BenchProcessError` on timeout or exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: object = None
    delay = 0.05
    while True:
        if proc is not None and not proc.alive():
            raise BenchProcessError(
                f"{proc.role} exited with {proc.popen.returncode} before {url} was ready:\n{proc.log_tail()}"
            )
        try:
            async with http.request(
                method, url, json=json_body, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
            ) as r:
                await r.read()
                last = r.status
                if r.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError) as e:
            last = e
        if loop.time() > deadline:
            role = proc.role if proc is not None else url
            raise BenchProcessError(f"{role}: {url} not ready in {timeout_s:g} s (last: {last!r})")
        await asyncio.sleep(delay)
        delay = min(0.5, delay * 1.5)


# ----------------------------------------------------------------------------- CPU guard


@dataclass(slots=True)
class CpuTrace:
    """CPU used by one process: ``cores[i]`` over the interval ending at ``t_s[i]`` (wall)."""

    role: str
    pid: int
    t_s: list[float] = field(default_factory=list)
    cores: list[float] = field(default_factory=list)
    # When the baseline reading was taken: the first interval is (start_s, t_s[0]]. Without it
    # the first interval is assumed as long as the second.
    start_s: float | None = None


@dataclass(frozen=True, slots=True)
class CpuVerdict:
    valid: bool
    reasons: tuple[str, ...]
    peak_by_role: Mapping[str, float]  # highest window mean per role, cores
    mean_by_role: Mapping[str, float]  # whole-run mean per role, cores
    machine_peak: float  # highest window mean of all processes together, cores
    machine_cores: int
    window_s: float


class CpuSampler:
    """Samples the CPU use of watched pids; see the module docstring for the verdict."""

    def __init__(
        self,
        *,
        period_s: float = 0.5,
        window_s: float = 5.0,
        per_process_limit: float = 0.9,
        machine_limit: float = 0.9,
        machine_cores: int | None = None,
    ) -> None:
        self.period_s = period_s
        self.window_s = window_s
        self.per_process_limit = per_process_limit
        self.machine_limit = machine_limit
        self.machine_cores = machine_cores or os.cpu_count() or 1
        self.traces: dict[str, CpuTrace] = {}
        self._last: dict[str, tuple[float, float]] = {}

    def watch(self, role: str, pid: int) -> None:
        tr = self.traces[role] = CpuTrace(role, pid)
        c = cpu_seconds(pid)
        if c is not None:
            tr.start_s = time.monotonic()
            self._last[role] = (tr.start_s, c)

    def watch_machine(self) -> None:
        """Also sample the whole machine (other users' processes count against validity)."""
        tr = self.traces[MACHINE] = CpuTrace(MACHINE, 0)
        c = machine_busy_seconds()
        if c is not None:
            tr.start_s = time.monotonic()
            self._last[MACHINE] = (tr.start_s, c)

    def sample(self) -> None:
        for role, tr in self.traces.items():
            c = machine_busy_seconds() if role == MACHINE else cpu_seconds(tr.pid)
            now = time.monotonic()  # per reading: the reads of many processes take time
            prev = self._last.get(role)
            if c is None:
                continue
            if prev is None and tr.start_s is None:
                tr.start_s = now  # first reading of a process seen late: it is the baseline
            if prev is not None and now > prev[0]:
                tr.t_s.append(now)
                tr.cores.append(max(0.0, (c - prev[1]) / (now - prev[0])))
            self._last[role] = (now, c)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period_s)
        self.sample()

    def dump(self, path: Path) -> None:
        """Write the raw traces and the guard's settings (gzipped JSON, :func:`reverify`)."""
        doc = {
            "version": CPU_TRACE_VERSION,
            "window_s": self.window_s,
            "per_process_limit": self.per_process_limit,
            "machine_limit": self.machine_limit,
            "machine_cores": self.machine_cores,
            "traces": [
                {"role": t.role, "pid": t.pid, "start_s": t.start_s, "t_s": t.t_s, "cores": t.cores}
                for t in self.traces.values()
            ],
        }
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(doc, f)

    def verdict(self) -> CpuVerdict:
        return cpu_verdict(
            list(self.traces.values()),
            window_s=self.window_s,
            per_process_limit=self.per_process_limit,
            machine_limit=self.machine_limit,
            machine_cores=self.machine_cores,
        )


def _windows(
    t: Sequence[float], v: Sequence[float], window_s: float, start_s: float | None = None
) -> list[float]:
    """Means of ``v`` over consecutive windows of ``window_s`` (time-weighted by interval).

    ``v[i]`` is a rate over ``(t[i-1], t[i]]``; the first interval starts at ``start_s`` (the
    baseline reading). Weighting a rate by a longer interval than it was measured over would
    let one noisy reading over a few milliseconds (CPU time has 10 ms ticks) dominate a window.
    """
    if not t:
        return []
    out: list[float] = []
    start = t[0]
    acc = dur = 0.0
    if start_s is not None and start_s < t[0]:
        prev = start_s
    else:
        prev = t[0] - (t[1] - t[0] if len(t) > 1 else window_s)
    for ti, vi in zip(t, v, strict=True):
        dt = max(1e-9, ti - prev)
        acc += vi * dt
        dur += dt
        prev = ti
        if ti - start >= window_s:
            out.append(acc / dur)
            start, acc, dur = ti, 0.0, 0.0
    if dur > 0 and (not out or dur >= window_s / 2):
        out.append(acc / dur)
    return out


def cpu_verdict(
    traces: Sequence[CpuTrace],
    *,
    window_s: float,
    per_process_limit: float,
    machine_limit: float,
    machine_cores: int,
) -> CpuVerdict:
    """Pure verdict over sampled traces (see the module docstring)."""
    reasons: list[str] = []
    peak: dict[str, float] = {}
    mean: dict[str, float] = {}
    machine = next((tr for tr in traces if tr.role == MACHINE), None)
    traces = [tr for tr in traces if tr.role != MACHINE]
    for tr in traces:
        w = _windows(tr.t_s, tr.cores, window_s, tr.start_s)
        peak[tr.role] = max(w, default=0.0)
        mean[tr.role] = sum(tr.cores) / len(tr.cores) if tr.cores else 0.0
        if peak[tr.role] > per_process_limit:
            reasons.append(
                f"{tr.role} (pid {tr.pid}) used {peak[tr.role]:.2f} cores over a {window_s:g} s window "
                f"(limit {per_process_limit:g})"
            )
    # Machine total: sum the processes sweep by sweep. Every live process is read in each sweep,
    # but processes are watched from different moments, so align their samples from the end
    # (the last n sweeps are common to all of them), not from their first samples.
    n = min((len(tr.cores) for tr in traces if tr.cores), default=0)
    machine_peak = 0.0
    if n:
        ref = next(tr for tr in traces if tr.cores)
        tails = [tr.cores[len(tr.cores) - n :] for tr in traces if tr.cores]
        total = [sum(c[i] for c in tails) for i in range(n)]
        k = len(ref.t_s) - n  # the common sweeps' first interval starts at the reading before
        ref_start = ref.t_s[k - 1] if k > 0 else ref.start_s
        machine_peak = max(_windows(ref.t_s[k:], total, window_s, ref_start), default=0.0)
        if machine_peak > machine_limit * machine_cores:
            reasons.append(
                f"all processes together used {machine_peak:.2f} of {machine_cores} cores over a "
                f"{window_s:g} s window (limit {machine_limit:g} x {machine_cores})"
            )
    if machine is not None and machine.cores:
        whole = max(_windows(machine.t_s, machine.cores, window_s, machine.start_s), default=0.0)
        peak[MACHINE] = whole
        if whole > machine_limit * machine_cores and not any("all processes" in r for r in reasons):
            reasons.append(
                f"the machine (all users' processes, /proc/stat) was busy {whole:.2f} of {machine_cores} "
                f"cores over a {window_s:g} s window (limit {machine_limit:g} x {machine_cores})"
            )
        machine_peak = max(machine_peak, whole)
    return CpuVerdict(
        valid=not reasons,
        reasons=tuple(reasons),
        peak_by_role=peak,
        mean_by_role=mean,
        machine_peak=machine_peak,
        machine_cores=machine_cores,
        window_s=window_s,
    )


def reverify(path: Path) -> CpuVerdict:
    """The guard's verdict recomputed from a :meth:`CpuSampler.dump` file, with its settings."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CpuTraceError(f"{path}: not a gzipped JSON CPU trace file: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != CPU_TRACE_VERSION:
        raise CpuTraceError(f"{path}: field 'version' must be {CPU_TRACE_VERSION}")

    def num(v: object, field: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise CpuTraceError(f"{path}: field {field} must be a finite number >= 0, got {v!r}")
        return float(v)

    keys = ("window_s", "per_process_limit", "machine_limit", "machine_cores")
    settings = {k: num(doc.get(k), repr(k)) for k in keys}
    raw = doc.get("traces")
    if not isinstance(raw, list):
        raise CpuTraceError(f"{path}: field 'traces' must be a list")
    traces = []
    for i, t in enumerate(raw):
        where = f"traces[{i}]."
        if not isinstance(t, dict) or not isinstance(t.get("role"), str):
            raise CpuTraceError(f"{path}: {where}role must be a string")
        ts, cores = t.get("t_s"), t.get("cores")
        if not isinstance(ts, list) or not isinstance(cores, list) or len(ts) != len(cores):
            raise CpuTraceError(f"{path}: {where}t_s and {where}cores must be lists of one length")
        start = None if t.get("start_s") is None else num(t["start_s"], where + "start_s")
        traces.append(
            CpuTrace(
                t["role"],
                int(num(t.get("pid"), where + "pid")),
                [num(x, where + "t_s[]") for x in ts],
                [num(x, where + "cores[]") for x in cores],
                start_s=start,
            )
        )
    return cpu_verdict(
        traces,
        window_s=settings["window_s"],
        per_process_limit=settings["per_process_limit"],
        machine_limit=settings["machine_limit"],
        machine_cores=int(settings["machine_cores"]),
    )

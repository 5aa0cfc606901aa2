"""Session sources: where a workload's sessions come from (traces or a generator).

A :class:`SessionSource` hands out sessions one by one (``take()``), every one with a
workload-unique id and block-hash namespace, and a calibration ``pool()`` whose mean demand
sets the arrival rate. Sources are deterministic given their seed.

- :class:`SyntheticSource`: session ``i`` of a generator (``swe_bench`` / ``webarena``).
  The pool is the first ``pool_size`` sessions of a separate calibration seed.
- :class:`ClaudeCodeSource`: the WEKA Claude Code traces
  (``../shared/traces/weka_cc_traces.dev.jsonl.xz``, callanjfox/kv-cache-tester, Apache-2.0)
  read by ``saga.graphs.ingest.weka.read_weka_traces``, with the shared prefix applied and
  the gaps compressed (:mod:`saga.scheduler.workloads.transform`). Sessions are taken in a
  seeded random order without replacement (subsampling); past the pool size the order is
  drawn again and each further pass gets copies ``#1``, ``#2``, ... (own ids and hashes).
  ``min_calls`` drops sessions with fewer LLM calls. The pool is the whole filtered trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from saga.graphs.trace import SessionTrace
from saga.scheduler.workloads.model import WorkloadError
from saga.scheduler.workloads.transform import GapPolicy, apply_shared_prefix, compress_gaps, copy_session

WEKA_FILE = "weka_cc_traces.dev.jsonl.xz"


def traces_dir() -> Path | None:
    """``$SAGA_TRACES_DIR``, else the ``shared/traces`` folder beside the repository, else None."""
    env = os.environ.get("SAGA_TRACES_DIR")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for p in Path(__file__).resolve().parents:
        cand = p.parent / "shared" / "traces"
        if cand.is_dir():
            return cand
    return None


def default_weka_path() -> Path | None:
    d = traces_dir()
    return d / WEKA_FILE if d is not None and (d / WEKA_FILE).is_file() else None


class SessionSource(Protocol):
    name: str

    def take(self) -> SessionTrace:
        """The next session (unique id and hash namespace within this source)."""
        ...

    def pool(self) -> list[SessionTrace]:
        """Sessions whose mean demand calibrates the arrival rate."""
        ...


class SyntheticSource:
    def __init__(
        self, name: str, make: Callable[[int, int], SessionTrace], seed: int, pool_size: int = 256
    ) -> None:
        if pool_size < 1:
            raise WorkloadError(f"pool_size must be >= 1, got {pool_size}")
        self.name = name
        self._make = make
        self._seed = seed
        self._next = 0
        self._pool_size = pool_size

    def take(self) -> SessionTrace:
        s = self._make(self._seed, self._next)
        self._next += 1
        return s

    def pool(self) -> list[SessionTrace]:
        calib_seed = (self._seed * 7919 + 104729) % (2**31)
        return [self._make(calib_seed, i) for i in range(self._pool_size)]


_WEKA_CACHE: dict[tuple[str, GapPolicy, bool, int], list[SessionTrace]] = {}


def load_claude_code_pool(
    path: str | Path, gaps: GapPolicy, shared_prefix: bool = True, min_calls: int = 1
) -> list[SessionTrace]:
    """The transformed Claude Code sessions of ``path``, sorted by id (cached per process)."""
    key = (str(path), gaps, shared_prefix, min_calls)
    if key in _WEKA_CACHE:
        return _WEKA_CACHE[key]
    try:
        from saga.graphs.ingest.weka import read_weka_traces
    except ImportError as e:  # pragma: no cover - the ingester ships with the project
        raise WorkloadError(f"the Claude Code trace reader is not available: {e}") from None
    if not Path(path).is_file():
        raise WorkloadError(f"{path}: Claude Code trace file not found")
    res = read_weka_traces(path, skip_bad=True)
    pool = []
    for s in sorted(res.sessions, key=lambda x: x.session_id):
        if len(s.calls) < min_calls:
            continue
        if shared_prefix:
            s = apply_shared_prefix(s)
        pool.append(compress_gaps(s, gaps))
    if not pool:
        raise WorkloadError(f"{path}: no usable session (min_calls={min_calls}, skipped {res.skipped})")
    _WEKA_CACHE.clear()  # keep one pool in memory: the traces take gigabytes
    _WEKA_CACHE[key] = pool
    return pool


class ClaudeCodeSource:
    def __init__(
        self,
        seed: int,
        *,
        path: str | Path | None = None,
        gaps: GapPolicy = GapPolicy(),
        shared_prefix: bool = True,
        min_calls: int = 1,
        sessions: list[SessionTrace] | None = None,
    ) -> None:
        """``sessions`` replaces the trace file (tests, or a pre-loaded pool)."""
        self.name = "claude_code"
        if sessions is not None:
            prepared = [apply_shared_prefix(s) if shared_prefix else s for s in sessions]
            self._pool = [compress_gaps(s, gaps) for s in prepared if len(s.calls) >= min_calls]
            if not self._pool:
                raise WorkloadError("no usable Claude Code session given")
        else:
            p = path if path is not None else default_weka_path()
            if p is None:
                raise WorkloadError(
                    f"{WEKA_FILE} not found: set SAGA_TRACES_DIR or pass path= "
                    "(see ../shared/traces/README.md)"
                )
            self._pool = load_claude_code_pool(p, gaps, shared_prefix, min_calls)
        self._rng = np.random.default_rng([seed, 0xC1A0])
        self._order: list[int] = []
        self._pass = -1

    def take(self) -> SessionTrace:
        if not self._order:
            self._pass += 1
            self._order = [int(i) for i in self._rng.permutation(len(self._pool))][::-1]
        s = self._pool[self._order.pop()]
        return s if self._pass == 0 else copy_session(s, self._pass)

    def pool(self) -> list[SessionTrace]:
        return list(self._pool)

"""The SDK side of the event log: live sessions written as ``saga.graphs.ingest.eventlog`` lines.

The record builders (schema v1) belong to the graphs package; this writer only does the
file I/O and one piece of bookkeeping: an LLM call's ``stop`` reason is known only by what
the agent does next (a tool call → ``tool_use``; the end of the session → ``end_turn``;
another call → ``""``), so the last call of each session is held back until then.

Times are ``time.monotonic()`` seconds (one clock per log, as the schema requires).
Writes are appended line by line under a lock (sessions of several threads share a file).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, TextIO

from saga.graphs.ingest import eventlog as ev


class EventLogWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: TextIO | None = self.path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, Any]] = {}

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def _write(self, rec: dict[str, Any]) -> None:
        with self._lock:
            if self._f is not None:
                self._f.write(ev.encode(rec))

    def _flush_call(self, session: str, stop: str) -> None:
        rec = self._held.pop(session, None)
        if rec is not None:
            rec["stop"] = stop
            self._write(rec)

    def session_start(self, session: str, *, agent_type: str, tenant: str, parent: str | None = None) -> None:
        self._write(
            ev.session_start(session, self.now(), agent_type=agent_type, tenant=tenant, parent=parent)
        )

    def llm_call(
        self,
        session: str,
        start: float,
        *,
        prompt_tokens: int,
        output_tokens: int,
        cached_tokens: int | None,
        ttft_s: float | None = None,
    ) -> None:
        self._flush_call(session, "")
        self._held[session] = ev.llm_call(
            session,
            start,
            duration_s=max(0.0, self.now() - start),
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            ttft_s=ttft_s,
        )

    def tool_call(self, session: str, name: str, start: float, status: str) -> None:
        self._flush_call(session, "tool_use")
        self._write(ev.tool_call(session, start, name=name, end=self.now(), status=status))

    def session_end(self, session: str, status: str = "ok") -> None:
        self._flush_call(session, "end_turn")
        self._write(ev.session_end(session, self.now(), status=status))

    def close(self) -> None:
        with self._lock:
            for session in list(self._held):
                rec = self._held.pop(session)
                if self._f is not None:
                    self._f.write(ev.encode(rec))
            if self._f is not None:
                self._f.close()
                self._f = None

"""KV across tool gaps: the SGLang sessions the engine keeps open on replicas.

The engine names an SGLang session on every ``Dispatch`` of a session it retains
(``engine_session``); :class:`KvKeeper` opens it on that replica (``/open_session``) before
the first such call and keeps it open until the engine's ``Release`` (``/close_session``).
``Pin`` only bounds how long it stays open across a tool gap (the engine releases it by the
pin's deadline); the open carries that bound as the replica-side timeout, at least 1 s.

One open per (replica, session) is in flight at a time (``_opening``); a close of the same id
that is still running is awaited before a new open, because a replica refuses a second open
of an id it still holds. Failures to open are logged and the call runs without a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from saga.clock import Clock
from saga.scheduler.api import Dispatch, Pin, Release
from saga.service.backend.api import BackendError
from saga.service.core_types import ClientLookup, LiveSession, to_wall
from saga.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)

Spawn = Callable[[Awaitable[Any], str], "asyncio.Task[Any]"]
# Called after a Pin with the session and the pin's end as Unix epoch seconds.
OnPinned = Callable[[LiveSession, float], None]


class KvKeeper:
    """Opens and closes SGLang sessions on replicas as the engine's actions say."""

    def __init__(
        self,
        clients: ClientLookup,
        clock: Clock,
        metrics: ServiceMetrics,
        sessions: dict[str, LiveSession],
        spawn: Spawn,
        on_pinned: OnPinned,
    ) -> None:
        self._client = clients
        self._clock = clock
        self._metrics = metrics
        self._sessions = sessions  # the core's live table (shared, not copied)
        self._spawn = spawn
        self._on_pinned = on_pinned
        self._opening: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._pinned: set[tuple[str, str]] = set()
        self._closing: dict[tuple[str, str], asyncio.Task[Any]] = {}

    def ensure_open(
        self, replica_id: str, session_id: str, timeout_s: float | None
    ) -> asyncio.Task[str | None]:
        key = (replica_id, session_id)
        task = self._opening.get(key)
        if task is None:
            task = self._spawn(self._open(replica_id, session_id, timeout_s), f"open-{session_id}")
            self._opening[key] = task
        return task

    def on_pin(self, pin: Pin) -> None:
        key = (pin.replica_id, pin.session_id)
        if key not in self._pinned:
            self._pinned.add(key)
            self._metrics.kv_pinned.labels(pin.replica_id).inc()
        timeout = max(1.0, to_wall(self._clock, pin.until - self._clock.now()))
        self.ensure_open(pin.replica_id, pin.session_id, timeout)
        s = self._sessions.get(pin.session_id)
        if s is not None:
            s.pinned_on = pin.replica_id
            self._on_pinned(s, time.time() + timeout)

    async def _open(self, replica_id: str, session_id: str, timeout_s: float | None) -> str | None:
        closing = self._closing.get((replica_id, session_id))
        if closing is not None:  # a close of the same id is in flight: the replica refuses a
            with contextlib.suppress(Exception):  # second open of an id still open
                await asyncio.shield(closing)
        client = self._client(replica_id)
        if client is None:
            return None
        try:
            engine_session = await client.open_session(
                session_id, capacity_of_str_len=1 << 20, timeout_s=timeout_s
            )
        except BackendError as exc:
            log.warning("open_session %s on %s failed: %s", session_id, replica_id, exc)
            return None
        s = self._sessions.get(session_id)
        if s is not None:
            s.engine_session = engine_session
        return engine_session

    def on_release(self, rel: Release) -> None:
        key = (rel.replica_id, rel.session_id)
        if key in self._pinned:
            self._pinned.discard(key)
            self._metrics.kv_pinned.labels(rel.replica_id).dec()
        s = self._sessions.get(rel.session_id)
        if s is not None and s.pinned_on == rel.replica_id:
            s.pinned_on = None
        opening = self._opening.pop(key, None)
        if opening is None:
            return  # never opened there (or already released)
        if s is not None:
            s.engine_session = None
        task = self._spawn(self._close(rel, opening), f"release-{rel.session_id}")
        self._closing[key] = task
        task.add_done_callback(
            lambda t: self._closing.pop(key, None) if self._closing.get(key) is t else None
        )

    async def _close(self, rel: Release, opening: asyncio.Task[str | None]) -> None:
        try:
            engine_session = await opening
        except (asyncio.CancelledError, BackendError):
            return
        client = self._client(rel.replica_id)
        if engine_session is None or client is None:
            return
        try:
            await client.close_session(engine_session)
        except BackendError as exc:
            log.info("close_session %s on %s: %s", engine_session, rel.replica_id, exc)

    async def engine_session_for(self, d: Dispatch) -> str | None:
        """The SGLang session to send with ``d``, opened on that replica first if needed;
        None when the open failed (the call then runs without one)."""
        if d.engine_session is None:
            return None
        opening = self.ensure_open(d.replica_id, d.engine_session, None)
        try:
            return await asyncio.shield(opening)
        except (asyncio.CancelledError, BackendError):
            return None

"""Runs a pure :class:`ReplicaModel` in real time on an asyncio loop.

The runtime owns the model, a :class:`MonotonicClock` (optionally sped up by ``time_scale``),
the fault knobs and the metrics. ``submit`` queues a request and returns an ``asyncio.Queue``
that receives the request's events; a single loop timer wakes the model at its next event time
(converted to wall time through the clock), advances it and hands the events out. No thread, no
polling: with nothing in flight, no timer is armed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from saga.clock import MonotonicClock
from saga.emulator.core import Event, Finished, FirstToken, KVEvent, ReplicaConfig, ReplicaModel, Request
from saga.emulator.faults import FaultConfig
from saga.emulator.metrics import ReplicaMetrics


class KvEventSink(Protocol):
    """Where a runtime's KV events go (:class:`saga.emulator.kv_publisher.KvEventPublisher`)."""

    def publish(self, events: Sequence[KVEvent]) -> None: ...


class InjectedFailure(Exception):
    """A fault knob made this request fail (HTTP 500)."""


class ReplicaCrashed(Exception):
    """The replica crashed (fault knob ``crash_after_requests``)."""


class ReplicaRuntime:
    """One emulated replica: model + clock + faults + metrics (see the module docstring)."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_id: str = "replica-0",
        *,
        time_scale: float = 1.0,
        faults: FaultConfig | None = None,
        stream_interval_s: float = 0.02,
        kv_events: KvEventSink | None = None,
    ) -> None:
        """``stream_interval_s``: longest wall time between two streamed chunks of a decoding
        request (decode segments are cut at this length so tokens stream as they appear).
        ``kv_events``: receives the model's KV events each time the model advances (the
        ``--kv-events-config`` publisher); None: the model records none."""
        self.config = config
        self.replica_id = replica_id
        self.clock = MonotonicClock(time_scale)
        self.time_scale = time_scale
        self.model = ReplicaModel(
            config,
            replica_id,
            emit_progress=True,
            decode_horizon_s=stream_interval_s * time_scale,
            record_kv_events=kv_events is not None,
        )
        self.kv_events = kv_events
        self.metrics = ReplicaMetrics(self.model)
        self.faults = faults or FaultConfig()
        self.crashed = False
        self.generation_requests = 0
        self._streams: dict[str, asyncio.Queue[Event]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._on_crash: list[Any] = []

    # ------------------------------------------------------------------ faults

    def on_crash(self, callback: Any) -> None:
        """Register a callable run once when the replica crashes (the server stops listening)."""
        self._on_crash.append(callback)

    async def before_generation(self) -> None:
        """Apply the fault knobs to one generation request (raise to fail it)."""
        if self.crashed:
            raise ReplicaCrashed(self.replica_id)
        f = self.faults
        if f.added_latency_s > 0:
            await asyncio.sleep(f.added_latency_s)
        self.generation_requests += 1
        if f.crash_after_requests is not None and self.generation_requests > f.crash_after_requests:
            self.crash()
            raise ReplicaCrashed(self.replica_id)
        if f.should_fail():
            raise InjectedFailure("injected failure (fault knob failure_rate)")

    def crash(self) -> None:
        if self.crashed:
            return
        self.crashed = True
        now = self.clock.now()
        self.model.abort_all(now)
        self._pump()
        for cb in self._on_crash:
            cb()

    # ------------------------------------------------------------------ requests

    def submit(self, req: Request) -> asyncio.Queue[Event]:
        """Queue ``req`` now; raises the model's typed errors on bad input."""
        now = self.clock.now()
        self.model.submit(req, now)
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._streams[req.rid] = q
        self._pump()
        return q

    def abort(self, rid: str) -> bool:
        ok = self.model.abort(rid, self.clock.now())
        self._pump()
        return ok

    def abort_all(self) -> int:
        n = self.model.abort_all(self.clock.now())
        self._pump()
        return n

    def flush_cache(self) -> bool:
        """``/flush_cache``: drop the prefix cache (refused while requests run)."""
        ok = self.model.flush_cache()
        self._publish_kv()
        return ok

    def _publish_kv(self) -> None:
        if self.kv_events is not None:
            events = self.model.drain_kv_events()
            if events:
                self.kv_events.publish(events)

    def _pump(self) -> None:
        """Advance the model to now, hand out its events, re-arm the wake-up timer."""
        now = self.clock.now()
        events = self.model.advance(now)
        self._publish_kv()
        for ev in events:
            if isinstance(ev, FirstToken):
                self.metrics.ttft.observe(ev.time - ev.arrival_time)
            q = self._streams.get(ev.rid)
            if isinstance(ev, Finished):
                self.metrics.e2e.observe(ev.time - ev.arrival_time)
                self._streams.pop(ev.rid, None)
            if q is not None:
                q.put_nowait(ev)
        t = self.model.next_event_time()
        if t == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = t
        if t is not None:
            delay = max(0.0, self.clock.to_wall(t - now))
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

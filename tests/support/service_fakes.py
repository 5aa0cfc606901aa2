"""Fakes shared by the service-core test suites (importable as ``service_fakes``: pytest's
``pythonpath`` and mypy's ``mypy_path`` include ``tests/support``).

``DispatchEngine`` dispatches every call on ``r0`` and records the events it saw;
``StubClient`` is a replica client with only what the service core calls before forwarding
(``engine_fields``, ``health``).
"""

from __future__ import annotations

from typing import Any

from saga.scheduler.api import Action, CallSubmitted, Dispatch, Event


class DispatchEngine:
    """Dispatches every call on r0; records the events it saw."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        if isinstance(event, CallSubmitted):
            return [Dispatch(event.call_id, "r0", reason="test")]
        return []

    def tick(self) -> list[Action]:
        return []

    def next_deadline(self) -> float | None:
        return None

    @property
    def lane_replicas(self) -> frozenset[str]:
        return frozenset()


class StubClient:
    replica_id = "r0"

    def engine_fields(self, payload: Any, **kw: Any) -> dict[str, Any]:
        return dict(payload)

    async def health(self, **_: Any) -> bool:
        return True

"""First come, first served: no admission control, held calls leave in arrival order."""

from __future__ import annotations

from saga.scheduler.policy import ADMIT, Admission, ClusterPressure, QueuedCall


class Fcfs:
    name = "fcfs"

    def admit(self, call: QueuedCall, pressure: ClusterPressure, now: float) -> Admission:
        return ADMIT

    def queue_key(self, call: QueuedCall, now: float) -> float:
        return call.submitted_at

    def engine_priority(self, call: QueuedCall, now: float) -> int:
        return 0

    def on_call_done(self, tenant: str, service_s: float, now: float) -> None:
        return None

    def on_session_done(self, tenant: str, completion_s: float, expected_s: float, now: float) -> None:
        return None

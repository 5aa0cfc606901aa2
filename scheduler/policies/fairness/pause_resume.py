"""ThunderAgent-style pause/resume: paused programs resume smallest-first.

A program whose next call cannot run (its backend is over capacity) is *paused*: the call is
held by the engine and its KV may be released ("largest" release order in the retention
settings of the ``thunder`` system). Held calls resume smallest context first, which packs
the most programs into the freed memory (best fit). No admission control.
"""

from __future__ import annotations

from saga.scheduler.policy import ADMIT, Admission, ClusterPressure, QueuedCall


class PauseResume:
    name = "pause_resume"

    def admit(self, call: QueuedCall, pressure: ClusterPressure, now: float) -> Admission:
        return ADMIT

    def queue_key(self, call: QueuedCall, now: float) -> float:
        return float(call.context_tokens)

    def engine_priority(self, call: QueuedCall, now: float) -> int:
        return 0

    def on_call_done(self, tenant: str, service_s: float, now: float) -> None:
        return None

    def on_session_done(self, tenant: str, completion_s: float, expected_s: float, now: float) -> None:
        return None

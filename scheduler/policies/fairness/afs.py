"""Agent Fair Share: fairness in task completion time, with SLO deadlines and admission control.

Ordering. Every held call carries its session's completion deadline (the client's hint, or
start + ``slo_factor`` x expected completion time) and the session's expected remaining
work. Its *slack* is ``deadline - now - remaining``: the seconds the task can still afford to
wait. Calls leave the engine's queues least-slack first, scaled by the tenant weight ``w``
(``slack / w`` when positive, ``slack x w`` when late), so a heavier tenant's task gets
proportionally more of the contended capacity and late tasks of any tenant go first.

Bounded deviation. Per tenant the policy tracks the EWMA of normalised completion time
(completion / expected, the *slowdown*) divided by the weight. A tenant whose value is better
than the worst tenant's by more than ``max_deviation`` yields (its calls get ``YIELD_S`` added
to their key) until the gap closes: no tenant runs ahead of another by more than the bound.

Admission. While the cluster's engine-held calls per healthy replica exceed
``overload_queue_per_replica``, a *new* session's first call (never a running task's next
call: tasks are admitted whole) is deferred with reason "overloaded"; a tenant holding more
live sessions than its weighted share x (1 + max_deviation) is deferred with reason
"tenant over fair share". When a tenant already has ``max_deferred_per_tenant`` deferred
sessions the call is rejected (OVERLOADED or TENANT_QUOTA) with ``retry_after_s``.
"""

from __future__ import annotations

from saga.scheduler.api import RejectReason
from saga.scheduler.policy import ADMIT, Admission, ClusterPressure, QueuedCall
from saga.scheduler.settings import FairnessSettings

YIELD_S = 10_000.0  # key offset of a tenant ahead by more than the deviation bound, seconds
NO_DEADLINE_S = 1e6  # slack of a call whose session has no deadline, seconds
SLOWDOWN_ALPHA = 0.1  # EWMA weight of one finished session's slowdown


class AgentFairShare:
    name = "afs"

    def __init__(self, settings: FairnessSettings | None = None) -> None:
        self.settings = settings or FairnessSettings()
        self._slowdown: dict[str, float] = {}

    def weight(self, tenant: str) -> float:
        return self.settings.weights.get(tenant, 1.0)

    def slack(self, call: QueuedCall, now: float) -> float:
        if call.deadline is None:
            return NO_DEADLINE_S
        return call.deadline - now - call.remaining_s

    def _ahead(self, tenant: str) -> bool:
        if len(self._slowdown) < 2 or tenant not in self._slowdown:
            return False
        worst = max(self._slowdown.values())
        return worst - self._slowdown[tenant] > self.settings.max_deviation

    def queue_key(self, call: QueuedCall, now: float) -> float:
        if not self.settings.enabled:
            return call.submitted_at
        w = self.weight(call.tenant)
        s = self.slack(call, now)
        key = s / w if s >= 0 else s * w
        if self._ahead(call.tenant):
            key += YIELD_S
        return key

    def engine_priority(self, call: QueuedCall, now: float) -> int:
        if not self.settings.enabled:
            return 0
        return 1 if self.slack(call, now) < 0 else 0

    def admit(self, call: QueuedCall, pressure: ClusterPressure, now: float) -> Admission:
        st = self.settings
        if not st.admission_enabled:
            return ADMIT
        overloaded = pressure.queued > st.overload_queue_per_replica * max(1, pressure.replicas)
        if not overloaded:
            return ADMIT
        over_share = False
        if pressure.live_sessions > 0:
            share = self.weight(call.tenant) / max(self.weight(call.tenant), self._total_weight())
            over_share = pressure.live_sessions_of_tenant > share * pressure.live_sessions * (
                1 + st.max_deviation
            )
        full = pressure.deferred_of_tenant >= st.max_deferred_per_tenant
        if over_share:
            if full:
                return Admission(
                    "reject",
                    f"tenant {call.tenant!r} holds more than its fair share and has "
                    f"{pressure.deferred_of_tenant} deferred sessions",
                    RejectReason.TENANT_QUOTA,
                    st.retry_after_s,
                )
            return Admission("defer", "tenant over fair share")
        if full:
            return Admission(
                "reject",
                f"cluster overloaded ({pressure.queued} calls queued on {pressure.replicas} replicas)",
                RejectReason.OVERLOADED,
                st.retry_after_s,
            )
        return Admission("defer", "overloaded")

    def _total_weight(self) -> float:
        known = set(self.settings.weights) | set(self._slowdown)
        return sum(self.weight(t) for t in known) if known else 1.0

    def on_call_done(self, tenant: str, service_s: float, now: float) -> None:
        return None

    def on_session_done(self, tenant: str, completion_s: float, expected_s: float, now: float) -> None:
        if expected_s <= 0:
            return
        v = completion_s / expected_s / self.weight(tenant)
        old = self._slowdown.get(tenant)
        self._slowdown[tenant] = v if old is None else (1 - SLOWDOWN_ALPHA) * old + SLOWDOWN_ALPHA * v

"""SLO lanes: a few replicas kept for the tight-deadline class, sized from its work share.

Why. Under session affinity every replica ends up decoding a mix of sessions. A decode
iteration reads the KV of every sequence in the batch, so a short interactive session that
shares a replica with long-context batch sessions decodes at their pace: in a multi-tenant
cluster at 80% load its completion time sits near 1.45-1.5x its physical limit, while the
batch tenants' deadlines (2-3x) are loose. Fair share orders queued calls, but a call in a
batch decodes at the batch's speed whatever its priority.

What. A tenant whose deadline factor is at most ``max_factor`` is *tight*
(``LaneSettings``). When tight calls are a small share ``s`` of the work, the engine keeps
``n`` of the ``N`` healthy replicas for tight calls alone and keeps the other calls off them:

    n = ceil(s x N / relative_load)     the lane runs at most relative_load x the average load
    n <= floor((s + max_reserved) x N)  the others lose at most max_reserved of the capacity
    1 <= n < N and n >= s x N           else there is no lane

A lane the reserve bound caps (its tight calls would run above ``relative_load``) is not formed
(``allow_capped`` off; an existing lane goes once it would be capped even at 0.8 x the share):
kept to a crowded lane, tight calls did worse than spread over the whole cluster by the
placement's deadline-urgency weighting (``CostModel.urgency_weighting``; docs/scheduler.md).

``s`` is measured, not configured: each completed call adds its modelled replica work
(``work_s``: prefill of the uncached prompt plus its decode steps, each reading its own
context, with the engine's ``CostModel``; independent of where the call ran and how loaded that
replica was) to an exponentially decayed sum per class (``half_life_s``); no lane forms before
``min_work_s`` of work is seen. A workload with one class (``s`` 0 or 1) never gets a lane,
and neither does a cluster too small for one replica to fit ``max_reserved``.

When. A lane costs the other classes capacity, so it exists only while it is needed: from the
moment a tight task ends after its deadline until ``hold_s`` (an hour) passes without another
miss (``hold_s`` 0: whenever the share allows one). A cluster whose tight tenants meet their
deadlines pays nothing; one under stress keeps its lane, since with the lane misses are rare.

Membership is sticky: a shrinking lane drops the replicas that joined last, and shrinks only
when the lane would still be too large with a 25% larger share (``SHRINK_MARGIN``), so a share
near a step does not move replicas in and out; a growing lane takes the healthy replicas with
the fewest sessions homed, calls in flight and calls queued (the fewest sessions to move). A
lane never refuses a call: when no allowed replica can hold it, every replica may.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from saga.scheduler.settings import CostModel, LaneSettings
from saga.scheduler.state import ReplicaState

SHRINK_MARGIN = 1.25  # a lane shrinks only if it would still be too large for this x the share


class SloLanes:
    """The lane's size and members (pure; the engine feeds it completed calls and replicas)."""

    def __init__(self, settings: LaneSettings, cost: CostModel) -> None:
        self.settings = settings
        self.cost = cost
        self._tight_w = 0.0  # decayed modelled work of tight calls, seconds
        self._all_w = 0.0  # ... of all calls
        self._at: float | None = None  # clock time of the last decay
        self._members: list[str] = []  # lane replicas, in order of joining
        self._member_set: frozenset[str] = frozenset()
        self._seen: Sequence[ReplicaState] | None = None  # eligible list the members were fitted to
        self._last_miss: float | None = None  # clock time a tight task last missed its deadline

    def work_s(self, prompt_tokens: int, cached_tokens: int, output_tokens: int) -> float:
        """Modelled replica-seconds one call occupies, wherever it ran."""
        c = self.cost
        prefill = max(0, prompt_tokens - cached_tokens) / c.prefill_tokens_per_s
        per_token = c.decode_s_per_seq + c.kv_read_s_per_token * (prompt_tokens + output_tokens / 2)
        decode = output_tokens * per_token
        return prefill + decode

    def observe(self, tight: bool, work_s: float, now: float) -> None:
        """A call of the tight class (or not) completed, having needed ``work_s`` of work."""
        if self._at is not None and now > self._at:
            f = 0.5 ** ((now - self._at) / self.settings.half_life_s)
            self._tight_w *= f
            self._all_w *= f
        self._at = now if self._at is None else max(self._at, now)
        self._all_w += work_s
        if tight:
            self._tight_w += work_s

    def note_miss(self, now: float) -> None:
        """A task of the tight class ended after its deadline."""
        self._last_miss = now if self._last_miss is None else max(self._last_miss, now)

    def needed(self, now: float) -> bool:
        """A tight task missed its deadline within the last ``hold_s`` (always, with 0)."""
        hold = self.settings.hold_s
        return hold == 0 or (self._last_miss is not None and now - self._last_miss <= hold)

    def share(self) -> float | None:
        """Tight share of the recent work (None until ``min_work_s`` of work was seen)."""
        if self._all_w <= 0 or self._all_w < self.settings.min_work_s:
            return None
        return self._tight_w / self._all_w

    def target(self, n: int, current: int) -> int:
        """Lane size for ``n`` healthy replicas, the lane having ``current`` now (0: no lane)."""
        s = self.share()
        st = self.settings
        if s is None or not 0.0 < s < 1.0 or n < 2:
            return 0
        want = self._wanted(s, n)
        if 0 < want < current and self._wanted(s * SHRINK_MARGIN, n) >= current:
            want = current  # within the margin: keep the lane as it is
        cap = self._cap(s, n)
        if want > cap and not st.allow_capped:
            low = s / SHRINK_MARGIN  # an existing lane goes only if capped even at 0.8 x the share
            if current == 0 or self._wanted(low, n) > self._cap(low, n):
                return 0  # the lane would run above relative_load
        want = min(want, cap)
        if want < 1 or want >= n or want < s * n:
            return 0
        return want

    def _wanted(self, s: float, n: int) -> int:
        """Replicas that keep a share ``s`` of ``n`` replicas' work at relative_load."""
        return math.ceil(s * n / self.settings.relative_load)

    def _cap(self, s: float, n: int) -> int:
        """Most replicas the reserve bound allows a lane for share ``s`` of ``n`` replicas."""
        return math.floor((s + self.settings.max_reserved) * n)

    def members(self, eligible: Sequence[ReplicaState], now: float) -> frozenset[str]:
        """The lane's replicas among ``eligible`` (the engine's healthy replicas, sorted by id)."""
        if not self.settings.enabled:
            return frozenset()
        if eligible is not self._seen:  # replicas changed: drop members no longer healthy
            healthy = {r.replica_id for r in eligible}
            self._members = [m for m in self._members if m in healthy]
            self._member_set = frozenset(self._members)
            self._seen = eligible
        k = self.target(len(eligible), len(self._members)) if self.needed(now) else 0
        if k == len(self._members):
            return self._member_set
        del self._members[k:]
        if len(self._members) < k:
            have = set(self._members)
            cands = sorted(
                (r for r in eligible if r.replica_id not in have),
                key=lambda r: (len(r.homed) + len(r.inflight) + len(r.queue), r.replica_id),
            )
            self._members += [r.replica_id for r in cands[: k - len(self._members)]]
        self._member_set = frozenset(self._members)
        return self._member_set

    @property
    def current(self) -> frozenset[str]:
        """The members as the last decision left them (no update: a reading for samples)."""
        return self._member_set

    def restrict(
        self, replicas: list[ReplicaState], tight: bool, eligible: Sequence[ReplicaState], now: float
    ) -> list[ReplicaState]:
        """The replicas of ``replicas`` a call of this class may use (all when none may)."""
        lane = self.members(eligible, now)
        if not lane:
            return replicas
        allowed = [r for r in replicas if (r.replica_id in lane) == tight]
        return allowed or replicas

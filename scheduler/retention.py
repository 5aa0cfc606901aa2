"""KV retention across tool gaps: which sessions to pin, for how long, what to release first.

At a tool boundary (a call completed with ``tool_use``, or ``ToolStarted`` naming the tool)
the engine asks the predictor for the distribution of the gap until the session's next call.
In "predictive" mode the pin's TTL is the ``ttl_quantile`` quantile of that gap, shortened
under memory pressure by ``(1 - 0.5 m)`` with ``m = clamp((committed/kv_total - start) /
(1 - start), 0, 1)`` and bounded by ``max_ttl_s``. The session is pinned only if the expected
saving ``p_continue x P(gap <= TTL) x recompute_seconds(context)`` exceeds ``min_benefit_s``.
"fixed" mode pins for ``max_ttl_s`` (ThunderAgent-like: keep acting programs until pressure).

Pinned KV is bounded: pins on a replica never exceed ``max_pinned_fraction`` of its KV. When a
new pin or a call does not fit, pins are released in ``release_order``:

- "score" (default): expected seconds until reuse x tokens / P(reuse within the TTL), highest
  first: the session whose KV is needed furthest in the future per byte goes first, an
  online approximation of Bélády's rule that also weighs size;
- "largest" (ThunderAgent pauses the largest program), "oldest" (LRU).

At expiry a session still in its gap may be re-pinned up to ``max_extensions`` times when the
predictor, conditioned on the time already spent, still expects a call soon enough; otherwise
the pin is released by its deadline (``Release(reason="expired")``), never later: the engine
reports the earliest pin deadline through ``next_deadline()``.
"""

from __future__ import annotations

import heapq
import math

from saga.graphs.api import QUANTILE_LEVELS, NextCallPrediction, Predictor, SessionPosition
from saga.scheduler.settings import CostModel, RetentionSettings
from saga.scheduler.state import PinState, ReplicaState, SessionState, sample_hashes


def memory_pressure(r: ReplicaState, start: float) -> float:
    used = r.committed.total / r.kv_total
    return min(1.0, max(0.0, (used - start) / max(1e-9, 1.0 - start)))


def position_of(s: SessionState, is_subagent: bool) -> SessionPosition:
    return SessionPosition(
        agent_type=s.agent_type,
        steps_done=s.steps_done,
        context_tokens=s.context_tokens,
        current_tool=s.current_tool,
        last_stop=s.last_stop,
        is_subagent=is_subagent,
    )


def choose_ttl(
    settings: RetentionSettings,
    cost: CostModel,
    pred: NextCallPrediction,
    context_tokens: int,
    pressure: float,
) -> float | None:
    """TTL in seconds to pin for, or None when pinning does not pay."""
    if not settings.enabled or settings.mode == "off" or context_tokens <= 0:
        return None
    if settings.mode == "fixed":
        return settings.max_ttl_s
    if pred.p_continue <= 0.0:
        return None
    q = pred.gap_quantiles_s
    level = min(QUANTILE_LEVELS, key=lambda lv: abs(lv - settings.ttl_quantile))
    ttl = q[QUANTILE_LEVELS.index(level)] * (1.0 - 0.5 * pressure)
    ttl = min(settings.max_ttl_s, max(ttl, 0.05))
    saved_s = context_tokens / cost.prefill_tokens_per_s
    benefit = pred.prob_next_within(ttl) * saved_s
    if benefit < settings.min_benefit_s:
        return None
    return ttl


def release_score(order: str, s: SessionState, pred: NextCallPrediction | None, now: float) -> float:
    """Higher = release first."""
    tokens = max(1, s.context_tokens)
    if order == "largest":
        return float(tokens)
    if order == "oldest":
        return -(s.pin.since if s.pin else now)  # pinned earliest = released first
    if pred is None:
        return float(tokens)
    p = max(1e-3, pred.prob_next_within(pred.gap_quantiles_s[-1]))
    return pred.median_gap_s * tokens / p


class PinBook:
    """Pins and their deadlines (a lazy heap); the engine owns sessions and replicas."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def add(
        self, s: SessionState, r: ReplicaState, until: float, now: float, granularity: int, score: float = 0.0
    ) -> None:
        """Pin (or re-pin) ``s`` on ``r`` until ``until``; ``score``: its release priority."""
        if s.pin is None:
            s.pin = PinState(r.replica_id, until, now, tokens=s.context_tokens, score=score)
            r.pinned[s.session_id] = None
            r.pinned_tokens += s.context_tokens
        else:
            r.pinned_tokens += s.context_tokens - s.pin.tokens
            s.pin.tokens = s.context_tokens
            s.pin.until = until
            s.pin.score = score
        if s.active_call is None:
            _commit_context(s, r, granularity)
        self._seq += 1
        heapq.heappush(self._heap, (until, self._seq, s.session_id))

    def drop(self, s: SessionState, r: ReplicaState | None) -> None:
        if s.pin is None:
            return
        if r is not None:
            r.pinned.pop(s.session_id, None)
            r.pinned_tokens -= s.pin.tokens
            if s.active_call is None:
                r.committed.remove(s.session_id)
        s.pin = None

    def next_deadline(self, sessions: dict[str, SessionState]) -> float | None:
        h = self._heap
        while h:
            until, _, sid = h[0]
            s = sessions.get(sid)
            if s is not None and s.pin is not None and s.pin.until == until:
                return until
            heapq.heappop(h)
        return None

    def due(self, sessions: dict[str, SessionState], now: float) -> list[SessionState]:
        out: list[SessionState] = []
        h = self._heap
        while h and h[0][0] <= now:
            until, _, sid = heapq.heappop(h)
            s = sessions.get(sid)
            if s is not None and s.pin is not None and s.pin.until == until and all(x is not s for x in out):
                out.append(s)
        return out


def _commit_context(s: SessionState, r: ReplicaState, granularity: int) -> None:
    hashes, unit = sample_hashes(s.context_hashes, s.block_size, granularity)
    r.committed.put(s.session_id, hashes, unit, s.context_tokens)


def predict(predictor: Predictor, s: SessionState, now: float) -> NextCallPrediction:
    elapsed = max(0.0, now - s.tool_started_at) if s.current_tool is not None else 0.0
    pred = predictor.next_call(position_of(s, s.parent is not None), elapsed)
    if not pred.gap_quantiles_s or any(math.isnan(x) for x in pred.gap_quantiles_s):
        return NextCallPrediction(0.0, (0.0,) * 8, 0.0, 0.0)
    return pred

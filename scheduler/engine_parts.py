"""Replica events, work stealing, KV retention, the batch cap's hooks, the policies' inputs:
the second half of :class:`Engine`.

Split from ``engine.py`` only to keep files short; ``engine.py``'s docstring describes the
whole engine. :class:`EngineParts` holds no state of its own: ``Engine`` initialises every
attribute declared here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

from saga.clock import Clock
from saga.graphs.api import Predictor
from saga.scheduler import retention as ret
from saga.scheduler.api import (
    Action,
    InvalidInput,
    Pin,
    Release,
    ReplicaAdded,
    ReplicaCache,
    ReplicaHealth,
    ReplicaLoad,
    ReplicaRemoved,
    Steal,
    UnknownReplica,
)
from saga.scheduler.batchcap import CapModel, srpt_key
from saga.scheduler.lanes import SloLanes
from saga.scheduler.policies.fairness.afs import AgentFairShare
from saga.scheduler.policy import (
    ClusterPressure,
    FairnessPolicy,
    PlacementPolicy,
    PlacementRequest,
    QueuedCall,
)
from saga.scheduler.priors import PriorPredictor
from saga.scheduler.settings import EngineSettings
from saga.scheduler.state import CallState, ReplicaState, SessionState
from saga.scheduler.stealing import best_steal

STEAL_MISSES = 4  # thieves without a worthwhile steal before a pass gives up
STEAL_VICTIMS = 8  # most-queued replicas a thief examines
MIN_SLACK = 0.1  # deadline factor - 1 below which urgency stops growing (factor 1: no slack at all)


class EngineParts:
    settings: EngineSettings
    clock: Clock
    placement: PlacementPolicy
    fairness: FairnessPolicy
    prior: PriorPredictor
    predictor: Predictor
    replicas: dict[str, ReplicaState]
    sessions: dict[str, SessionState]
    calls: dict[str, CallState]
    _pending: list[str]
    _pins: ret.PinBook
    _lanes: SloLanes
    _queued_total: int
    _eligible: list[ReplicaState] | None
    _gran: int
    _retaining: bool
    _live_by_tenant: Counter[str]
    _deferred_by_tenant: Counter[str]

    def set_tenant_policies(self, weights: Mapping[str, float], slo_factors: Mapping[str, float]) -> None:
        """Use these fair-share ``weights`` and per-tenant deadline factors from the next
        decision on (tenant policy hot reload). Both replace the settings' maps (validated as
        at construction; :class:`InvalidInput` leaves the engine unchanged) and, for Agent Fair
        Share, its own copy. Deadlines already set keep their value; sessions started from
        now on get the new factor."""
        f = dataclasses.replace(self.settings.fairness, weights=dict(weights), slo_factors=dict(slo_factors))
        new = dataclasses.replace(self.settings, fairness=f)
        new.validate()
        self.settings = new
        if isinstance(self.fairness, AgentFairShare):
            self.fairness.settings = dataclasses.replace(self.fairness.settings, weights=dict(weights))

    def _is_tight(self, tenant: str) -> bool:
        """The tenant's deadline factor puts its calls in the SLO lane's class (lanes.py)."""
        f, ln = self.settings.fairness, self.settings.lanes
        return ln.enabled and f.slo_factors.get(tenant, f.slo_factor) <= ln.max_factor

    def _urgency(self, tenant: str) -> float:
        """(deadline factor - 1) ** -power of the tenant (at least MIN_SLACK of slack), or 1 with
        ``cost.urgency_weighting`` off (``settings.CostModel``)."""
        c, f = self.settings.cost, self.settings.fairness
        if not c.urgency_weighting:
            return 1.0
        return float(max(MIN_SLACK, f.slo_factors.get(tenant, f.slo_factor) - 1.0) ** -c.urgency_power)

    @property
    def lane_replicas(self) -> frozenset[str]:
        """Replicas the SLO lane keeps for the tight class now (empty: no lane)."""
        return self._lanes.members(self._eligible_replicas(), self.clock.now())

    @property
    def lane_replicas_last(self) -> frozenset[str]:
        """The SLO lane as the last decision used it, without updating it (``lane_replicas``
        brings it to now, which can move members: samplers that must not perturb use this)."""
        return self._lanes.current

    # implemented by Engine
    def _route(self, call: CallState) -> list[Action]:
        raise NotImplementedError

    def _dispatch(self, call: CallState, r: ReplicaState, reason: str) -> list[Action]:
        raise NotImplementedError

    def _fits(self, r: ReplicaState, call: CallState) -> bool:
        raise NotImplementedError

    def _finish(self, call: CallState) -> ReplicaState | None:
        raise NotImplementedError

    def _drain(self, r: ReplicaState, reason: str = "queue") -> list[Action]:
        raise NotImplementedError

    def _retry_pending(self, limit: int | None) -> list[Action]:
        raise NotImplementedError

    def _after_free(self, r: ReplicaState) -> list[Action]:
        raise NotImplementedError

    # ------------------------------------------------------------------ stealing

    def _steal_pass(self, limit: int) -> list[Action]:
        """Up to ``limit`` steals; gives up after ``STEAL_MISSES`` thieves found nothing worth it."""
        acts: list[Action] = []
        n = misses = 0
        for thief in self._eligible_replicas():
            if n >= limit or misses >= STEAL_MISSES or self._queued_total == 0:
                break
            if thief.queue or not thief.has_slot():
                continue
            got = self._steal_into(thief)
            if got:
                acts += got
                n += 1
            else:
                misses += 1
        return acts

    def _steal_into(self, thief: ReplicaState) -> list[Action]:
        victims = sorted((v for v in self.replicas.values() if v.queue), key=lambda v: -len(v.queue))
        victims = victims[:STEAL_VICTIMS]
        spare = self._spare_kv(thief)

        def lendable(c: CallState) -> float:  # a queued session homed on the thief gets its own context back
            s = self.sessions.get(c.session_id or "")
            own = s.context_tokens if s is not None and s.home == thief.replica_id and s.pin is None else 0
            return spare + own

        lane = self.lane_replicas

        def fits(r: ReplicaState, c: CallState) -> bool:  # a thief takes only calls of its own lane
            return (not lane or (r.replica_id in lane) == c.tight) and self._fits(r, c)

        st = self.settings
        plan = best_steal(thief, victims, self.calls, st.cost, st.stealing, fits, lendable)
        if plan is None:
            return []
        victim = self.replicas[plan.victim]
        victim.queue.remove(plan.call_id)
        self._queued_total -= 1
        call = self.calls[plan.call_id]
        sid = call.session_id or ""
        acts: list[Action] = [Steal(sid, call.call_id, plan.victim, plan.thief, plan.cost_s)]
        return acts + self._dispatch(call, thief, "steal")

    def _spare_kv(self, r: ReplicaState) -> float:
        """KV tokens ``r`` can lend a stolen call without evicting a live session's context: room
        under the watermark beside its committed KV (calls in flight, pins) and the contexts of its
        live homed sessions idle without a pin (cached, unprotected, wanted by their next call).
        Idle contexts are counted per session, a prefix two of them share twice: the rule errs
        towards not stealing."""
        idle = 0
        for sid in r.homed:
            s = self.sessions.get(sid)
            if s is not None and s.pin is None and s.active_call is None:
                idle += s.context_tokens
        return self.settings.gating.kv_watermark * r.kv_total - r.committed.total - idle

    def _set_home(self, s: SessionState, r: ReplicaState | None) -> None:
        """Make ``r`` the session's home (None: no home), keeping the replicas' ``homed`` in step."""
        old = self.replicas.get(s.home) if s.home is not None else None
        if old is not None:
            old.homed.pop(s.session_id, None)
        s.home = r.replica_id if r is not None else None
        if r is not None:
            r.homed[s.session_id] = None

    # ------------------------------------------------------------------ retention

    def _retain(self, s: SessionState, r: ReplicaState | None) -> list[Action]:
        rs = self.settings.retention
        if r is None or not r.healthy or not self._retaining or not r.keeps_sessions:
            return self._release(s, "not_retained")
        now = self.clock.now()
        pred = ret.predict(self.predictor, s, now)
        ttl = ret.choose_ttl(
            rs, self.settings.cost, pred, s.context_tokens, ret.memory_pressure(r, rs.pressure_start)
        )
        if ttl is None:
            return self._release(s, "not_worth")
        acts: list[Action] = []
        if s.open_on not in (None, r.replica_id) or (s.pin is not None and s.pin.replica_id != r.replica_id):
            acts += self._release(s, "moved")
        own = s.pin.tokens if s.pin is not None else 0
        cap = rs.max_pinned_fraction * r.kv_total
        mine = ret.release_score(rs.release_order, s, pred, now)
        if r.pinned_tokens - own + s.context_tokens > cap:
            for other in self._release_order(r, exclude=s.session_id):
                if r.pinned_tokens - own + s.context_tokens <= cap:
                    break
                if other.pin is None or other.pin.score <= mine:
                    break
                acts += self._release(other, "memory_pressure")
            if r.pinned_tokens - own + s.context_tokens > cap:
                return acts + self._release(s, "memory_pressure")
        until = now + ttl
        self._pins.add(s, r, until, now, self._gran, mine)
        s.open_on = r.replica_id
        acts.append(Pin(s.session_id, r.replica_id, until))
        return acts

    def _release_order(self, r: ReplicaState, exclude: str) -> list[SessionState]:
        """Sessions pinned on ``r``, the one to release first first (scores taken at pin time)."""
        cands = [self.sessions[x] for x in r.pinned if x != exclude and x in self.sessions]
        return sorted(cands, key=lambda o: -(o.pin.score if o.pin is not None else 0.0))

    def _make_room(self, r: ReplicaState, call: CallState) -> list[Action]:
        if not self.settings.retention.enabled or not r.pinned:
            return []
        acts: list[Action] = []
        for other in self._release_order(r, exclude=call.session_id or ""):
            if self._fits(r, call):
                break
            acts += self._release(other, "memory_pressure")
        return acts

    def _expire(self, s: SessionState, r: ReplicaState | None, now: float) -> list[Action]:
        rs = self.settings.retention
        assert s.pin is not None
        if (
            r is not None
            and rs.mode == "predictive"
            and s.active_call is None
            and s.pin.extensions < rs.max_extensions
        ):
            pred = ret.predict(self.predictor, s, now)
            ttl = ret.choose_ttl(
                rs, self.settings.cost, pred, s.context_tokens, ret.memory_pressure(r, rs.pressure_start)
            )
            if ttl is not None:
                s.pin.extensions += 1
                until = now + ttl
                score = ret.release_score(rs.release_order, s, pred, now)
                self._pins.add(s, r, until, now, self._gran, score)
                return [Pin(s.session_id, r.replica_id, until)]
        return self._release(s, "expired")

    def _release(self, s: SessionState, reason: str) -> list[Action]:
        """Close the session's engine session (and drop its pin, if any)."""
        rid = s.open_on or (s.pin.replica_id if s.pin is not None else None)
        if rid is None:
            return []
        if s.pin is not None:
            self._pins.drop(s, self.replicas.get(s.pin.replica_id))
        s.open_on = None
        return [Release(s.session_id, rid, reason)]

    # ------------------------------------------------------------------ decode-batch cap

    def _srpt_key(self, qc: QueuedCall, now: float) -> float:
        """Order of held calls under the batch cap (``batchcap.srpt_key``): lowest first."""
        bc = self.settings.batch_cap
        w = self.settings.fairness.weights.get(qc.tenant, 1.0)
        return srpt_key(qc, now, w, bc.aging, bc.max_hold_s, bc.deadline_aware)

    def _batch_cap_params(self) -> CapModel | None:
        bc, c = self.settings.batch_cap, self.settings.cost
        if not (bc.enabled and self.settings.gating.enabled):
            return None
        return CapModel(
            c.iteration_overhead_s,
            c.decode_s_per_seq,
            c.kv_read_s_per_token,
            bc.max_throughput_loss,
            bc.latency_rule,
            max(1, bc.min_batch),
        )

    # ------------------------------------------------------------------ replicas

    # ---- what the policies are given

    def _refresh_remaining(self, s: SessionState) -> float:
        """The predictor's expected work left from ``s``'s position (its next call included):
        sets ``remaining_s`` and ``remaining_calls`` (calls after the next); returns the time."""
        rem = self.predictor.remaining(ret.position_of(s, s.parent is not None))
        s.remaining_s = rem.expected_time_s
        s.remaining_calls = max(0.0, rem.expected_calls - 1.0)
        return rem.expected_time_s

    def _request(self, call: CallState) -> PlacementRequest:
        s = self.sessions.get(call.session_id) if call.session_id else None
        group: tuple[str, ...] = ()
        home = None
        if s is not None:
            home = s.home
            if s.parent is not None and s.parent in self.sessions:
                par = self.sessions[s.parent]
                g = {par.home} | {self.sessions[c].home for c in par.children if c in self.sessions}
                group = tuple(sorted(x for x in g if x is not None))
        return PlacementRequest(
            call_id=call.call_id,
            session_id=call.session_id,
            tenant=call.tenant,
            agent_type=s.agent_type if s else "",
            prompt_tokens=call.prompt.num_tokens,
            max_new_tokens=call.max_new_tokens,
            block_hashes=call.prompt.block_hashes,
            block_size=call.prompt.block_size,
            home=home,
            pinned=s is not None and s.pin is not None and s.pin.replica_id == home,
            group=group,
            first_call=s is not None and s.steps_done == 0,
            routing_key=call.session_id or call.call_id,
            now=call.submitted_at,
            remaining_calls=s.remaining_calls if s else 0.0,
            urgency=call.urgency,
        )

    def _qc(self, call: CallState) -> QueuedCall:
        s = self.sessions.get(call.session_id) if call.session_id else None
        return QueuedCall(
            call_id=call.call_id,
            session_id=call.session_id,
            tenant=call.tenant,
            submitted_at=call.submitted_at,
            session_start=s.started_at if s else call.submitted_at,
            deadline=s.deadline if s else None,
            context_tokens=call.prompt.num_tokens + call.max_new_tokens,
            remaining_s=s.remaining_s if s else 0.0,
            steps_done=s.steps_done if s else 0,
        )

    def _pressure(self, tenant: str) -> ClusterPressure:
        return ClusterPressure(
            replicas=len(self._eligible_replicas()),
            queued=self._queued_total,
            deferred_sessions=len(self._pending),
            deferred_of_tenant=self._deferred_by_tenant[tenant],
            live_sessions_of_tenant=self._live_by_tenant[tenant],
            live_sessions=len(self.sessions),
        )

    def _replica(self, rid: str) -> ReplicaState:
        r = self.replicas.get(rid)
        if r is None:
            raise UnknownReplica(f"unknown replica {rid!r}")
        return r

    def _eligible_replicas(self) -> list[ReplicaState]:
        if self._eligible is None:
            self._eligible = sorted(
                (r for r in self.replicas.values() if r.healthy), key=lambda r: r.replica_id
            )
        return self._eligible

    def _on_replica_added(self, e: ReplicaAdded) -> list[Action]:
        if not e.replica_id:
            raise InvalidInput("ReplicaAdded.replica_id is empty")
        if e.replica_id in self.replicas:
            raise InvalidInput(f"replica {e.replica_id!r} already added")
        if e.kv_total_tokens <= 0 or e.max_running_requests <= 0 or e.page_size <= 0:
            raise InvalidInput(f"replica {e.replica_id!r}: capacities must be > 0")
        self.replicas[e.replica_id] = ReplicaState(
            e.replica_id,
            e.kv_total_tokens,
            e.max_running_requests,
            e.page_size,
            slot_slack=self.settings.gating.slot_slack,
            kv_watermark=self.settings.gating.kv_watermark,
            call_s=self.settings.cost.initial_call_s,
            batch_cap=self._batch_cap_params(),
            keeps_sessions=e.keeps_sessions,
        )
        self._eligible = None
        acts = self._retry_pending(None) if self._pending else []
        return acts + self._after_free(self.replicas[e.replica_id])

    def _evacuate(self, r: ReplicaState, reason: str, inflight_too: bool) -> list[Action]:
        acts: list[Action] = []
        for sess in list(self.sessions.values()):
            if sess.open_on == r.replica_id or (sess.pin is not None and sess.pin.replica_id == r.replica_id):
                acts += self._release(sess, reason)
        moved = list(r.queue)
        self._queued_total -= len(r.queue)
        r.queue.clear()
        if inflight_too:
            for cid in list(r.inflight):
                self._finish(self.calls[cid])
                moved.append(cid)
        if inflight_too:
            for sid in list(r.homed):
                if sid in self.sessions:
                    self._set_home(self.sessions[sid], None)
        for cid in moved:
            c = self.calls[cid]
            c.replica = None
            c.inflight = False
            acts += self._route(c)
        return acts

    def _on_replica_removed(self, e: ReplicaRemoved) -> list[Action]:
        r = self._replica(e.replica_id)
        r.healthy = False
        self._eligible = None
        acts = self._evacuate(r, "replica_removed", inflight_too=True)
        del self.replicas[e.replica_id]
        self.placement.on_replica_removed(e.replica_id)
        return acts

    def _on_replica_health(self, e: ReplicaHealth) -> list[Action]:
        r = self._replica(e.replica_id)
        if r.healthy == e.healthy:
            return []
        r.healthy = e.healthy
        self._eligible = None
        if not e.healthy:
            return self._evacuate(r, "replica_unhealthy", inflight_too=False)
        acts = self._retry_pending(None) if self._pending else []
        return acts + self._after_free(r)

    def _on_replica_load(self, e: ReplicaLoad) -> list[Action]:
        r = self._replica(e.replica_id)
        if min(e.running, e.waiting, e.kv_used_tokens, e.kv_total_tokens) < 0:
            raise InvalidInput(f"ReplicaLoad for {e.replica_id!r} has negative values")
        r.reported_running, r.reported_waiting, r.reported_kv_used = e.running, e.waiting, e.kv_used_tokens
        if e.kv_total_tokens > 0:
            r.kv_total = e.kv_total_tokens
        return []

    def _on_replica_cache(self, e: ReplicaCache) -> list[Action]:
        r = self._replica(e.replica_id)
        cached = r.cached
        if not r.exact_cache or e.cleared:
            r.exact_cache = True
            cached.clear()
        for h in e.removed:
            cached.pop(h, None)
        for h in e.stored:
            cached[h] = None
        return []

"""The SAGA scheduling engine: events in, actions out, on an injected clock, no I/O.

Implements :class:`saga.scheduler.api.EngineProtocol`. The service (live) and the simulator
(virtual time) feed it events and carry out the returned actions. Per call:

1. **admission** (a session's first call only; tasks are admitted whole): the fairness policy
   admits, defers (held in the engine until it admits) or rejects with a reason;
2. **placement**: healthy replicas whose KV can hold the call are *filtered*, then narrowed to
   the call's SLO lane when one exists (switchable, ``lanes.py``: a few replicas kept for the
   tight-deadline tenants, sized from their measured work share); the placement policy
   *scores and picks* one (``policy.PlacementPolicy.select``);
3. **gating** (switchable): the call is dispatched at once if the replica has a free running
   slot and its committed KV (in-flight contexts + pinned sessions, shared prefixes counted
   once, ``state.SharedTokens``) stays below the watermark after adding it, releasing pins
   there under memory pressure if needed (``retention.py``); otherwise it waits in the
   replica's engine-held queue (``Defer``), which drains in fairness order as calls finish;
   with the decode-batch cap on (``batchcap.py``, off by default) a replica also runs at most
   its cap and its held calls drain shortest remaining work first;
4. **work stealing** (switchable, ``stealing.py``): a replica with a free slot and nothing to
   run takes a queued call from another replica when the modelled queueing delay saved
   exceeds the prefix it must recompute, and the call fits in memory no live session homed
   on the thief needs (``Steal`` then ``Dispatch``);
5. **retention** (switchable, ``retention.py``): at each tool boundary the session's KV is
   pinned on its replica for a TTL from the predictor and memory pressure (``Pin``), and
   released by its deadline, when the session moves or ends, or under pressure (``Release``).

Semantics the executor relies on:

- ``Steal`` is reported for a call the engine held (never dispatched); the ``Dispatch`` that
  follows it in the same list is what sends it. ``Pin`` for an already pinned session
  updates its deadline.
- Calls in flight on a removed replica are placed again (a new ``Dispatch``); results from the
  removed replica for them must be dropped.
- A rejected call is forgotten (the client retries with a new call id).

Bad input raises the typed errors of ``api.py`` (unknown session/call/replica, a call after
its session ended, negative tokens, duplicate ids, a tenant using another tenant's session).
Without a ``Predictor`` the engine uses ``priors.PriorPredictor`` (BRIEF §2 priors).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from saga.clock import Clock
from saga.graphs.api import Predictor
from saga.scheduler import retention as ret
from saga.scheduler.api import (
    Action,
    CallCompleted,
    CallFailed,
    CallSubmitted,
    Defer,
    Dispatch,
    Event,
    FirstToken,
    InvalidInput,
    Reject,
    RejectReason,
    ReplicaAdded,
    ReplicaCache,
    ReplicaHealth,
    ReplicaLoad,
    ReplicaRemoved,
    SessionEnd,
    SessionEnded,
    SessionStart,
    TenantMismatch,
    ToolEnded,
    ToolStarted,
    UnknownCall,
    UnknownReplica,
    UnknownSession,
)
from saga.scheduler.engine_parts import EngineParts
from saga.scheduler.lanes import SloLanes
from saga.scheduler.policies.fairness.afs import AgentFairShare
from saga.scheduler.policies.placement.saga import SagaPlacement
from saga.scheduler.policy import (
    FairnessPolicy,
    PlacementPolicy,
    QueuedCall,
)
from saga.scheduler.priors import PriorPredictor
from saga.scheduler.settings import EngineSettings
from saga.scheduler.state import CallState, ReplicaState, SessionState, sample_hashes

MAX_ATTEMPTS = 3  # dispatches of one call before a retryable failure becomes final
PENDING_RETRY_PER_EVENT = 8  # deferred calls re-examined after each completion
DRAIN_WINDOW = 64  # held calls of one replica ranked by the fairness policy at each dispatch


class Engine(EngineParts):
    """The pure scheduling engine (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        settings: EngineSettings | None = None,
        placement: PlacementPolicy | None = None,
        fairness: FairnessPolicy | None = None,
        predictor: Predictor | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.settings.validate()
        s = self.settings
        self.clock = clock
        self.placement: PlacementPolicy = placement or SagaPlacement(s.affinity, s.batching, s.cost)
        self.fairness: FairnessPolicy = fairness or AgentFairShare(s.fairness)
        self.prior = PriorPredictor(call_s=s.cost.initial_call_s)
        self.predictor: Predictor = predictor or self.prior
        self.replicas: dict[str, ReplicaState] = {}
        self.sessions: dict[str, SessionState] = {}
        self.calls: dict[str, CallState] = {}
        self._ended: set[str] = set()
        self._eligible: list[ReplicaState] | None = None
        self._pending: list[str] = []  # calls held with no replica (admission / none eligible)
        self._pins = ret.PinBook()
        self._lanes = SloLanes(s.lanes, s.cost)
        self._queued_total = 0
        self._next_steal: float | None = None
        self._next_retry: float | None = None
        self._live_by_tenant: Counter[str] = Counter()
        self._deferred_by_tenant: Counter[str] = Counter()
        self._gran = s.prefix_granularity_tokens
        self._retaining = s.retention.enabled and s.retention.mode != "off"
        # order of the engine-held queues: shortest remaining work when the batch cap is on
        # (batchcap.py, EngineParts._srpt_key), else the fairness policy's
        srpt = s.batch_cap.enabled and s.gating.enabled and s.batch_cap.order == "srpt"
        self._queue_key: Callable[[QueuedCall, float], float] = (
            self._srpt_key if srpt else self.fairness.queue_key
        )
        self._handlers: dict[type, Callable[[Any], list[Action]]] = {
            SessionStart: self._on_session_start,
            SessionEnd: self._on_session_end,
            CallSubmitted: self._on_call_submitted,
            FirstToken: self._on_first_token,
            CallCompleted: self._on_call_completed,
            CallFailed: self._on_call_failed,
            ToolStarted: self._on_tool_started,
            ToolEnded: self._on_tool_ended,
            ReplicaLoad: self._on_replica_load,
            ReplicaCache: self._on_replica_cache,
            ReplicaAdded: self._on_replica_added,
            ReplicaRemoved: self._on_replica_removed,
            ReplicaHealth: self._on_replica_health,
        }

    # ------------------------------------------------------------------ protocol

    def set_predictor(self, predictor: Predictor | None) -> None:
        """Use ``predictor`` from the next decision on (None: the built-in prior). Sessions keep
        their state; later retention and cost estimates ask the new predictor (graph hot reload)."""
        self.predictor = predictor or self.prior

    def handle(self, event: Event) -> list[Action]:
        h = self._handlers.get(type(event))
        if h is None:
            raise InvalidInput(f"not an engine event: {type(event).__name__}")
        return h(event)

    def tick(self) -> list[Action]:
        now = self.clock.now()
        acts: list[Action] = []
        touched: dict[str, ReplicaState] = {}
        for s in self._pins.due(self.sessions, now):
            if s.pin is None:  # released by an earlier expiry in this same pass
                continue
            r = self.replicas.get(s.pin.replica_id)
            acts += self._expire(s, r, now)
            if r is not None:
                touched[r.replica_id] = r
        for r in touched.values():
            acts += self._drain(r)
        st = self.settings.stealing
        if st.enabled and self._queued_total > 0 and (self._next_steal is None or now >= self._next_steal):
            acts += self._steal_pass(st.max_per_epoch)
            self._next_steal = now + st.epoch_s
        if self._pending and (self._next_retry is None or now >= self._next_retry):
            acts += self._retry_pending(None)
            self._next_retry = now + self.settings.fairness.retry_after_s if self._pending else None
        return acts

    def next_deadline(self) -> float | None:
        cands = []
        pin = self._pins.next_deadline(self.sessions)
        if pin is not None:
            cands.append(pin)
        if self.settings.stealing.enabled and self._queued_total > 0:
            cands.append(self._next_steal if self._next_steal is not None else self.clock.now())
        if self._pending:
            cands.append(self._next_retry if self._next_retry is not None else self.clock.now())
        return min(cands) if cands else None

    # ------------------------------------------------------------------ read-only views

    @property
    def queued_calls(self) -> int:
        return self._queued_total + len(self._pending)

    def check_invariants(self) -> list[str]:
        """Violations of the engine's capacity invariants (empty when all hold)."""
        out = []
        wm = self.settings.gating.kv_watermark if self.settings.gating.enabled else None
        for r in self.replicas.values():
            if self.settings.gating.enabled and len(r.inflight) > r.max_running + r.slot_slack:
                out.append(f"{r.replica_id}: {len(r.inflight)} in flight > {r.max_running} slots")
            if wm is not None and r.committed.total > r.kv_total and len(r.inflight) > 1:
                out.append(f"{r.replica_id}: committed {r.committed.total} > kv {r.kv_total}")
            cap = self.settings.retention.max_pinned_fraction * r.kv_total
            if r.pinned_tokens > cap + 1e-6:
                out.append(f"{r.replica_id}: pinned {r.pinned_tokens} > {cap:.0f}")
            urgency = sum(self.calls[c].urgency for c in r.inflight if c in self.calls)
            if abs(r.inflight_urgency - urgency) > 1e-6 * max(1.0, urgency):
                out.append(
                    f"{r.replica_id}: in-flight urgency {r.inflight_urgency} != {urgency} of its calls"
                )
            stray = [x for x in r.homed if x not in self.sessions or self.sessions[x].home != r.replica_id]
            if stray:
                out.append(f"{r.replica_id}: homed lists {stray[:3]} whose home is elsewhere")
        lane = self.lane_replicas  # as the next decision uses it
        healthy = {r.replica_id for r in self._eligible_replicas()}
        if lane and not (lane < healthy):
            out.append(
                f"lane {sorted(lane)} is not a proper subset of the healthy replicas {sorted(healthy)}"
            )
        for s in self.sessions.values():
            h = self.replicas.get(s.home) if s.home is not None else None
            if h is not None and s.session_id not in h.homed:
                out.append(f"{s.session_id}: home {s.home} does not list it")
        return out

    # ------------------------------------------------------------------ sessions

    def _session(self, sid: str) -> SessionState:
        s = self.sessions.get(sid)
        if s is None:
            if sid in self._ended:
                raise SessionEnded(f"session {sid!r} has ended")
            raise UnknownSession(f"unknown session {sid!r}")
        return s

    def _on_session_start(self, e: SessionStart) -> list[Action]:
        if not e.session_id:
            raise InvalidInput("SessionStart.session_id is empty")
        if not e.tenant:
            raise InvalidInput("SessionStart.tenant is empty")
        if e.session_id in self.sessions or e.session_id in self._ended:
            raise InvalidInput(f"session {e.session_id!r} already started")
        h = e.hints
        if h.deadline_s is not None and not h.deadline_s > 0:
            raise InvalidInput(f"SessionStart.hints.deadline_s must be > 0, got {h.deadline_s}")
        if h.expected_calls is not None and h.expected_calls < 0:
            raise InvalidInput("SessionStart.hints.expected_calls is negative")
        now = self.clock.now()
        s = SessionState(e.session_id, e.tenant, e.agent_type, h, now)
        if h.parent_session_id is not None and h.parent_session_id in self.sessions:
            s.parent = h.parent_session_id
            self.sessions[s.parent].children.add(s.session_id)
        self._adopt_home(s, h.home_replica)
        s.expected_s = self._refresh_remaining(s)
        if h.deadline_s is not None:
            s.deadline = now + h.deadline_s
        else:
            f = self.settings.fairness
            s.deadline = now + f.slo_factors.get(s.tenant, f.slo_factor) * s.expected_s
        if s.parent is not None:
            s.admitted = True  # a sub-agent belongs to an admitted task
        self.sessions[s.session_id] = s
        self._live_by_tenant[s.tenant] += 1
        return []

    def _adopt_home(self, s: SessionState, replica_id: str | None) -> None:
        """Another scheduler process bound ``s`` to ``replica_id`` (shared state store): make it
        the session's home when this engine knows that replica and it is healthy. This engine never
        saw the session's prefix there, so the next call's prompt is noted as cached on the home
        (:meth:`_note_adopted_prefix`): placement then weighs the KV the other process left there
        instead of judging another replica cheaper under load and moving the session."""
        r = self.replicas.get(replica_id) if replica_id is not None else None
        if r is not None and r.healthy:
            self._set_home(s, r)
            s.home_adopted = True

    def _note_adopted_prefix(self, s: SessionState, block_hashes: Sequence[int]) -> None:
        """The approximate cache view of an adopted home learns the session's prompt blocks (a
        replica with an exact view from KV events already knows them: ``note_prompt`` skips)."""
        s.home_adopted = False
        r = self.replicas.get(s.home) if s.home is not None else None
        if r is not None:
            r.note_prompt(block_hashes)

    def _on_session_end(self, e: SessionEnd) -> list[Action]:
        s = self._session(e.session_id)
        now = self.clock.now()
        acts = self._release(s, "session_end")
        self._ended.add(s.session_id)
        self._set_home(s, None)
        del self.sessions[s.session_id]
        self._live_by_tenant[s.tenant] -= 1
        if s.parent is None and s.deadline is not None and now > s.deadline and self._is_tight(s.tenant):
            self._lanes.note_miss(now)
        if s.parent is not None and s.parent in self.sessions:
            self.sessions[s.parent].children.discard(s.session_id)
        self.fairness.on_session_done(s.tenant, now - s.started_at, s.expected_s, now)
        return acts

    def _on_tool_started(self, e: ToolStarted) -> list[Action]:
        s = self._session(e.session_id)
        s.current_tool = e.tool or None
        s.tool_started_at = self.clock.now()
        if s.active_call is not None or s.pin is None:
            return []  # only a live pin can be re-decided: a released KV is not re-attached
        s.pin.extensions = 0
        return self._retain(s, self.replicas.get(s.pin.replica_id))

    def _on_tool_ended(self, e: ToolEnded) -> list[Action]:
        s = self._session(e.session_id)
        if s.current_tool is not None:
            self.prior.observe_gap(s.current_tool, s.last_stop, self.clock.now() - s.tool_started_at)
        s.current_tool = None
        return []

    # ------------------------------------------------------------------ calls

    def _on_call_submitted(self, e: CallSubmitted) -> list[Action]:
        if not e.call_id:
            raise InvalidInput("CallSubmitted.call_id is empty")
        if e.call_id in self.calls:
            raise InvalidInput(f"duplicate call id {e.call_id!r}")
        p = e.prompt
        if p.num_tokens < 0:
            raise InvalidInput(f"call {e.call_id!r}: prompt.num_tokens is negative ({p.num_tokens})")
        if e.max_new_tokens < 0:
            raise InvalidInput(f"call {e.call_id!r}: max_new_tokens is negative ({e.max_new_tokens})")
        if p.block_size < 0 or (p.block_hashes and p.block_size == 0):
            raise InvalidInput(f"call {e.call_id!r}: block_hashes need a block_size > 0")
        tenant = e.tenant
        s: SessionState | None = None
        if e.session_id is not None:
            s = self._session(e.session_id)
            if e.tenant not in ("default", s.tenant):
                raise TenantMismatch(f"tenant {e.tenant!r} used session {s.session_id!r} of {s.tenant!r}")
            tenant = s.tenant
            self._adopt_home(s, e.home_replica)
            if s.home_adopted:
                self._note_adopted_prefix(s, p.block_hashes)
        call = CallState(e.call_id, e.session_id, tenant, p, e.max_new_tokens, e.priority, self.clock.now())
        call.sampled, call.unit = sample_hashes(p.block_hashes, p.block_size, self._gran)
        call.tight = self._is_tight(tenant)
        call.urgency = self._urgency(tenant)
        self.calls[call.call_id] = call
        if s is not None and not s.admitted:
            verdict = self.fairness.admit(self._qc(call), self._pressure(tenant), call.submitted_at)
            if verdict.verdict == "reject":
                del self.calls[call.call_id]
                rr = verdict.reject_reason or RejectReason.OVERLOADED
                return [Reject(call.call_id, rr, verdict.retry_after_s, verdict.reason)]
            if verdict.verdict == "defer":
                return [self._hold(call, verdict.reason)]
            s.admitted = True
        return self._route(call)

    def _hold(self, call: CallState, reason: str) -> Defer:
        self._pending.append(call.call_id)
        self._deferred_by_tenant[call.tenant] += 1
        if self._next_retry is None:
            self._next_retry = self.clock.now() + self.settings.fairness.retry_after_s
        return Defer(call.call_id, reason)

    def _route(self, call: CallState) -> list[Action]:
        elig = self._eligible_replicas()
        need = call.prompt.num_tokens + call.max_new_tokens
        if not elig:
            del self.calls[call.call_id]
            ra = self.settings.fairness.retry_after_s
            return [Reject(call.call_id, RejectReason.NO_REPLICA, ra, "no healthy replica")]
        fit = [r for r in elig if r.kv_total >= need]
        if not fit:
            del self.calls[call.call_id]
            top = max(r.kv_total for r in elig)
            msg = f"prompt + max_new_tokens = {need} tokens > largest replica KV {top}"
            return [Reject(call.call_id, RejectReason.PROMPT_TOO_LONG, 0.0, msg)]
        fit = self._lanes.restrict(fit, call.tight, elig, self.clock.now())
        req = self._request(call)
        rid = self.placement.select(req, fit)
        if rid is None:
            return [self._hold(call, "no replica accepts the call now")]
        if rid not in self.replicas:
            raise UnknownReplica(f"placement policy {self.placement.name!r} chose unknown replica {rid!r}")
        self.placement.on_dispatch(req, rid)
        reason = getattr(self.placement, "last_reason", "") or self.placement.name
        r = self.replicas[rid]
        if not self.settings.gating.enabled:
            return self._dispatch(call, r, reason)
        r.queue.append(call.call_id)
        self._queued_total += 1
        call.replica = rid
        acts = self._drain(r, reason)
        if not call.inflight:
            acts.append(Defer(call.call_id, f"replica {rid} is full"))
            if self.settings.stealing.enabled:
                acts += self._steal_pass(1)
        return acts

    def _fits(self, r: ReplicaState, call: CallState) -> bool:
        if not r.has_slot():
            return False
        p = call.prompt
        hashes, unit = call.sampled, call.unit
        need = p.num_tokens + call.max_new_tokens
        extra = r.committed.extra_for(hashes, unit, need)
        if call.session_id is not None and call.session_id in r.committed:
            extra = max(0, extra - (r.committed.tokens_of(call.session_id) - len(hashes) * unit))
        return r.committed.total + extra <= self.settings.gating.kv_watermark * r.kv_total

    def _drain(self, r: ReplicaState, reason: str = "queue") -> list[Action]:
        acts: list[Action] = []
        while r.queue and r.has_slot():
            q = r.queue
            i = 0
            if len(q) > 1:  # fairness order over the head of the queue (bounded work per dispatch)
                now = self.clock.now()
                key = self._queue_key
                keys = [key(self._qc(self.calls[c]), now) for c in q[:DRAIN_WINDOW]]
                i = keys.index(min(keys))
            call = self.calls[q[i]]
            if not self._fits(r, call):
                acts += self._make_room(r, call)
                if not self._fits(r, call) and r.inflight:
                    break  # progress: something in flight will finish and free KV
            q.pop(i)
            self._queued_total -= 1
            acts += self._dispatch(call, r, reason)
        return acts

    def _dispatch(self, call: CallState, r: ReplicaState, reason: str) -> list[Action]:
        acts: list[Action] = []
        now = self.clock.now()
        s = self.sessions.get(call.session_id) if call.session_id else None
        engine_session = None
        if s is not None:
            if s.open_on is not None and s.open_on != r.replica_id:
                acts += self._release(s, "moved")
            if s.pin is not None:  # the pin turns into the call's own reference (no action)
                self._pins.drop(s, r)
            if self._retaining:
                s.open_on = r.replica_id
                engine_session = s.session_id
        p = call.prompt
        hashes, unit = call.sampled, call.unit
        r.committed.put(call.call_id, hashes, unit, p.num_tokens + call.max_new_tokens)
        r.inflight[call.call_id] = None
        r.inflight_tokens += p.num_tokens + call.max_new_tokens
        r.inflight_urgency += call.urgency
        r.note_prompt(p.block_hashes)
        call.replica = r.replica_id
        call.inflight = True
        call.dispatched_at = now
        call.attempts += 1
        if s is not None:
            if s.home is not None and s.home != r.replica_id and reason == "steal":
                s.steals += 1
            self._set_home(s, r)
            s.active_call = call.call_id
        prio = self.fairness.engine_priority(self._qc(call), now)
        if call.priority is not None:
            prio = max(prio, call.priority)
        acts.append(Dispatch(call.call_id, r.replica_id, prio, engine_session, reason))
        return acts

    def _inflight_call(self, call_id: str) -> CallState:
        call = self.calls.get(call_id)
        if call is None:
            raise UnknownCall(f"unknown call {call_id!r}")
        if not call.inflight:
            raise InvalidInput(f"call {call_id!r} was not dispatched yet")
        return call

    def _finish(self, call: CallState) -> ReplicaState | None:
        r = self.replicas.get(call.replica) if call.replica else None
        if r is not None and call.call_id in r.inflight:
            del r.inflight[call.call_id]
            r.inflight_tokens -= call.prompt.num_tokens + call.max_new_tokens
            r.inflight_urgency = r.inflight_urgency - call.urgency if r.inflight else 0.0
            r.committed.remove(call.call_id)
        call.inflight = False
        return r

    def _on_first_token(self, e: FirstToken) -> list[Action]:
        self._inflight_call(e.call_id).first_token_at = self.clock.now()
        return []

    def _on_call_completed(self, e: CallCompleted) -> list[Action]:
        call = self._inflight_call(e.call_id)
        u = e.usage
        if min(u.prompt_tokens, u.cached_tokens, u.output_tokens) < 0:
            raise InvalidInput(f"call {e.call_id!r}: usage has negative token counts")
        now = self.clock.now()
        r = self._finish(call)
        del self.calls[call.call_id]
        dur = now - (call.dispatched_at if call.dispatched_at is not None else now)
        if r is not None:
            a = self.settings.cost.call_s_alpha
            r.call_s = (1 - a) * r.call_s + a * dur
        acts: list[Action] = []
        s = self.sessions.get(call.session_id) if call.session_id else None
        if s is not None:
            if s.active_call == call.call_id:
                s.active_call = None
            s.context_tokens = u.prompt_tokens + u.output_tokens
            s.context_hashes = call.prompt.block_hashes
            s.block_size = call.prompt.block_size
            s.steps_done += 1
            s.last_stop = e.stop
            s.current_tool = None
            self._refresh_remaining(s)
            if s.pin is not None:
                s.pin.extensions = 0
            acts += self._retain(s, r)
        self.fairness.on_call_done(call.tenant, dur, now)
        work = self._lanes.work_s(u.prompt_tokens, u.cached_tokens, u.output_tokens)
        self._lanes.observe(call.tight, work, now)
        if r is not None:
            acts += self._after_free(r)
        if self._pending:
            acts += self._retry_pending(PENDING_RETRY_PER_EVENT)
        return acts

    def _on_call_failed(self, e: CallFailed) -> list[Action]:
        call = self._inflight_call(e.call_id)
        r = self._finish(call)
        acts: list[Action] = []
        s = self.sessions.get(call.session_id) if call.session_id else None
        if e.retryable and call.attempts < MAX_ATTEMPTS:
            call.replica = None
            acts += self._route(call)
        else:
            del self.calls[call.call_id]
            if s is not None and s.active_call == call.call_id:
                s.active_call = None
            if e.retryable:  # retries exhausted: tell the client rather than drop it silently
                msg = f"call failed {call.attempts} times, last: {e.reason}"
                acts.append(Reject(call.call_id, RejectReason.NO_REPLICA, 0.0, msg))
        if r is not None:
            acts += self._after_free(r)
        return acts

    def _after_free(self, r: ReplicaState) -> list[Action]:
        acts = self._drain(r)
        if self.settings.stealing.enabled and self._queued_total > 0 and not r.queue and r.healthy:
            while r.has_slot() and self._queued_total > 0:
                got = self._steal_into(r)
                if not got:
                    break
                acts += got
        return acts

    def _retry_pending(self, limit: int | None) -> list[Action]:
        acts: list[Action] = []
        todo = list(self._pending) if limit is None else self._pending[:limit]
        if limit is None:
            now = self.clock.now()
            todo.sort(key=lambda c: self.fairness.queue_key(self._qc(self.calls[c]), now))
        for cid in todo:
            call = self.calls[cid]
            s = self.sessions.get(call.session_id) if call.session_id else None
            if s is not None and not s.admitted:
                v = self.fairness.admit(self._qc(call), self._pressure(call.tenant), self.clock.now())
                if v.verdict == "defer":
                    continue
                self._pending.remove(cid)
                self._deferred_by_tenant[call.tenant] -= 1
                if v.verdict == "reject":
                    del self.calls[cid]
                    rr = v.reject_reason or RejectReason.OVERLOADED
                    acts.append(Reject(cid, rr, v.retry_after_s, v.reason))
                    continue
                s.admitted = True
            else:
                self._pending.remove(cid)
                self._deferred_by_tenant[call.tenant] -= 1
            acts += self._route(call)
        return acts

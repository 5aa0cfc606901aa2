"""Discrete-event cluster simulator: the engine + N replica models on one virtual clock.

Everything runs on a :class:`~saga.clock.VirtualClock`: the *same* engine the live service
runs (``saga.scheduler.engine.Engine``) and ``N`` pure replica models
(``saga.emulator.core.ReplicaModel``). The loop repeatedly takes the earliest of

- a workload event (a session arrives, a tool gap ends and the next call is sent, a
  rejected call is retried, a sample of the cluster is due) from one heap,
- a replica's next internal event (end of a prefill iteration / decode segment; pushed
  into the same heap after every interaction with that replica, stale entries skipped),
- the engine's own ``next_deadline()`` (pin expiry, steal epoch, admission retry),

advances the clock to it and feeds the outcome through. Samples (every ``sample_period_s``)
are re-armed only while another event or engine deadline is pending: when sessions are open
and nothing else can happen the run stops with ``SimError("deadlock ...")`` naming the
waiting calls, instead of sampling an idle cluster forever (series growing without bound).

Engine actions are carried out on the models: ``Dispatch`` submits the request (opening
the engine session on that replica when the dispatch names one), ``Pin`` keeps the session
open, ``Release`` closes it,
``Steal``/``Defer`` are counted, ``Reject`` makes the client retry after ``retry_after_s``.
A call the replica model refuses (``InvalidRequest``, SGLang's 400: e.g. a prompt past the
context length) goes back as ``CallFailed`` and fails its session; the run goes on.
Replica output goes back as ``FirstToken``/``CallCompleted``/``ReplicaLoad`` and, for
systems that use them, ``ReplicaCache`` KV events.

Sessions are closed loop (``replay.py``): each call waits for the previous answer, then
its recorded tool gap; sub-agents fork and the parent joins them, the same replay rules as
``saga.scheduler.workloads.demand.replay_end_s``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from saga.clock import VirtualClock
from saga.emulator.core import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Finished,
    InvalidRequest,
    ReplicaConfig,
    ReplicaModel,
    Request,
)
from saga.emulator.core import FirstToken as ModelFirstToken
from saga.graphs.api import Predictor
from saga.graphs.trace import SessionTrace
from saga.scheduler import api
from saga.scheduler.engine import Engine
from saga.scheduler.report.model import RunResult, Series, SessionOutcome
from saga.scheduler.sim.replay import CallPlan, SessionRun
from saga.scheduler.sim.systems import SystemSpec
from saga.scheduler.workloads.model import Workload

ARRIVE, SUBMIT, RETRY, SAMPLE, REPLICA = range(5)
MAX_RETRIES = 40  # rejected submissions of one call before its session gives up


class SimError(RuntimeError):
    pass


class Simulator:
    """One run: ``system`` on ``workload`` with ``replicas`` replica models."""

    def __init__(
        self,
        workload: Workload,
        system: SystemSpec,
        replicas: int,
        config: ReplicaConfig,
        *,
        seed: int = 0,
        load: float = 0.0,
        predictor: Predictor | None = None,
        limits: Mapping[str, float] | None = None,
        horizon_s: float | None = None,
        sample_period_s: float = 30.0,
        progress: Callable[[int], object] | None = None,
    ) -> None:
        if not 1 <= replicas <= 4096:
            raise SimError(f"replicas must be in 1..4096, got {replicas}")
        self.workload = workload
        self.system = system
        self.n_replicas = replicas
        self.config = config
        self.seed = seed
        self.load = load
        self.limits = limits or {}
        self.horizon_s = horizon_s
        self.sample_period_s = sample_period_s
        self.progress = progress
        self.clock = VirtualClock()
        t = config.timing
        cost = replace(
            system.settings.cost,
            prefill_tokens_per_s=1.0 / max(t.prefill_s_per_token, 1e-12),
            iteration_overhead_s=t.fixed_overhead_s,
            decode_s_per_seq=t.decode_s_per_seq,
            kv_read_s_per_token=t.kv_read_s_per_token,
        )
        # the workload's tenants are the engine's tenant policies, as spec.tenants is live
        # (weights for fair share, deadline factors for fair share's slack and the SLO lanes)
        f = system.settings.fairness
        fairness = replace(
            f,
            weights={**{t: sp.weight for t, sp in workload.tenants.items()}, **f.weights},
            slo_factors={**{t: sp.slo_factor for t, sp in workload.tenants.items()}, **f.slo_factors},
        )
        settings = replace(system.settings, cost=cost, fairness=fairness)
        self.engine = Engine(
            self.clock,
            settings,
            placement=system.placement(settings, seed),
            fairness=system.fairness(settings),
            predictor=predictor if system.use_predictor else None,
        )
        self.models: dict[str, ReplicaModel] = {}
        for i in range(replicas):
            rid = f"r{i:03d}"
            self.models[rid] = ReplicaModel(config, rid, record_kv_events=system.exact_cache)
            self.engine.handle(
                api.ReplicaAdded(
                    rid, config.kv_capacity_tokens, config.max_running_requests, config.page_size
                )
            )
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._model_next: dict[str, float | None] = dict.fromkeys(self.models)
        self._calls: dict[str, CallPlan] = {}  # call id -> plan (submitted, not finished)
        self._runs: list[SessionRun] = []
        self._open_top = 0
        self._done_top = 0
        self._steals = 0
        self.kv_series: dict[str, tuple[list[float], list[float]]] = {r: ([], []) for r in self.models}
        self.hit_series: tuple[list[float], list[float]] = ([], [])
        self.lane_series: tuple[list[float], list[float]] = ([], [])  # SLO lane size, replicas
        self.pin_violations = 0
        self.refused_calls = 0  # dispatched calls a replica refused (the session failed)
        self._pins: dict[str, float] = {}

    # ------------------------------------------------------------------ heap helpers

    def _push(self, t: float, kind: int, data: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, data))

    def _touch(self, rid: str) -> None:
        nt = self.models[rid].next_event_time()
        if nt is not None and nt != self._model_next[rid]:
            self._model_next[rid] = nt
            self._push(nt, REPLICA, rid)
        elif nt is None:
            self._model_next[rid] = None

    # ------------------------------------------------------------------ run

    def run(self) -> RunResult:
        wall0 = time.perf_counter()
        ps = self.config.page_size
        for s in self.workload.sessions:
            if s.block_size and s.block_size != ps:
                raise SimError(f"session {s.session_id}: block size {s.block_size} != replica page size {ps}")
            self._push(s.start_s, ARRIVE, (s, None))
        if self.sample_period_s > 0:
            self._push(self.workload.sessions[0].start_s, SAMPLE, None)
        self._open_top = len(self.workload.sessions)
        eng = self.engine
        clock = self.clock
        heap = self._heap
        horizon = self.horizon_s if self.horizon_s is not None else math.inf
        while self._done_top < self._open_top:
            dl = eng.next_deadline()
            t_heap = heap[0][0] if heap else math.inf
            if dl is not None and dl <= t_heap:
                if dl > horizon:
                    break
                clock.advance_to(max(dl, clock.now()))
                self._apply(eng.tick())
                continue
            if not heap:
                raise SimError(self._deadlock_message())
            t, _, kind, data = heapq.heappop(heap)
            if t > horizon:
                break
            clock.advance_to(max(t, clock.now()))
            if kind == REPLICA:
                if self._model_next.get(data) != t:
                    continue
                self._model_next[data] = None
                self._replica_events(data, t)
            elif kind == SUBMIT:
                self._submit(data)
            elif kind == ARRIVE:
                self._arrive(*data)
            elif kind == RETRY:
                self._submit(data)
            elif kind == SAMPLE:
                self._sample()
                # Only while something else can still happen: a lone SAMPLE re-arming itself
                # would hide a stuck call (a livelock appending to the series without bound).
                if self._done_top < self._open_top and (heap or eng.next_deadline() is not None):
                    self._push(t + self.sample_period_s, SAMPLE, None)
        return self._result(time.perf_counter() - wall0)

    def _deadlock_message(self) -> str:
        stuck = ", ".join(
            f"{cid} on {p.replica or 'no replica'}" for cid, p in itertools.islice(self._calls.items(), 5)
        )
        return (
            f"deadlock at t={self.clock.now():.3f}: {self._open_top - self._done_top} sessions open, "
            f"nothing left to happen; calls waiting: {stuck or 'none'}"
        )

    # ------------------------------------------------------------------ sessions

    def _arrive(self, trace: SessionTrace, parent: SessionRun | None) -> None:
        now = self.clock.now()
        deadline = None
        if parent is None:
            lim = self.limits.get(trace.session_id)
            spec = self.workload.tenants.get(trace.tenant)
            if lim is not None and spec is not None:
                deadline = spec.slo_factor * lim
        run = SessionRun(trace, now, parent, deadline)
        self._runs.append(run)
        hints = api.WorkflowHints(
            expected_calls=len(trace.calls),
            deadline_s=deadline,
            parent_session_id=parent.trace.session_id if parent else None,
        )
        self._apply(
            self.engine.handle(api.SessionStart(trace.session_id, trace.tenant, trace.agent_type, hints))
        )
        self._advance_run(run, run.begin(now))

    def _advance_run(self, run: SessionRun, step: tuple[str, Any]) -> None:
        """Carry out what the session does next: send a call, fork sub-agents, or end."""
        kind, what = step
        sid = run.trace.session_id
        if kind == "call":
            at, plan = what
            if plan.index > 0 and not run.current_tool_open:
                run.current_tool_open = run.tool_before(plan.index)
                self._apply(self.engine.handle(api.ToolStarted(sid, run.current_tool_open)))
            self._push(at, SUBMIT, plan)
        elif kind == "fork":
            if not run.current_tool_open:
                run.current_tool_open = "agent"
                self._apply(self.engine.handle(api.ToolStarted(sid, "agent")))
            for at, sub in what:
                self._push(at, ARRIVE, (sub, run))
        elif kind == "end":
            self._end_run(run, self.clock.now())

    def _submit(self, plan: CallPlan) -> None:
        run = plan.run
        sid = run.trace.session_id
        if run.current_tool_open:
            self._apply(self.engine.handle(api.ToolEnded(sid, run.current_tool_open)))
            run.current_tool_open = ""
        c = run.trace.calls[plan.index]
        plan.attempt += 1
        cid = f"{sid}#{plan.index}" + (f"r{plan.attempt - 1}" if plan.attempt > 1 else "")
        plan.call_id = cid
        plan.submitted_at = self.clock.now()
        self._calls[cid] = plan
        ps = self.config.page_size
        n = max(1, c.prompt_tokens)
        hashes = _keys(c.block_hashes, n // ps) if run.trace.block_size else ()
        prompt = api.Prompt(n, hashes, ps if hashes else 0)
        self._apply(
            self.engine.handle(api.CallSubmitted(cid, sid, prompt, c.output_tokens, tenant=run.trace.tenant))
        )

    def _end_run(self, run: SessionRun, now: float) -> None:
        run.end_s = now
        self._apply(self.engine.handle(api.SessionEnd(run.trace.session_id)))
        self._pins.pop(run.trace.session_id, None)
        if run.parent is not None:
            self._advance_run(run.parent, run.parent.join(run, now))
        else:
            self._done_top += 1
            if self.progress is not None:
                self.progress(1)

    # ------------------------------------------------------------------ actions

    def _apply(self, acts: list[api.Action]) -> None:
        now = self.clock.now()
        for a in acts:
            if isinstance(a, api.Dispatch):
                self._dispatch(a, now)
            elif isinstance(a, api.Pin):
                m = self.models[a.replica_id]
                if not m.has_session(a.session_id):
                    m.open_session(a.session_id, now)
                self._pins[a.session_id] = a.until
            elif isinstance(a, api.Release):
                m = self.models[a.replica_id]
                if m.has_session(a.session_id):
                    m.close_session(a.session_id, now)
                until = self._pins.pop(a.session_id, None)
                if until is not None and now > until + 1e-6:
                    self.pin_violations += 1
                self._touch(a.replica_id)
            elif isinstance(a, api.Steal):
                self._steals += 1
                plan = self._calls.get(a.call_id)
                if plan is not None:
                    plan.run.steals += 1
            elif isinstance(a, api.Defer):
                plan = self._calls.get(a.call_id)
                if plan is not None and not plan.deferred:
                    plan.deferred = True
                    plan.run.deferred += 1
            elif isinstance(a, api.Reject):
                self._rejected(a, now)

    def _dispatch(self, a: api.Dispatch, now: float) -> None:
        plan = self._calls[a.call_id]
        run = plan.run
        c = run.trace.calls[plan.index]
        m = self.models[a.replica_id]
        sid = a.engine_session
        if sid is not None:
            self._pins.pop(sid, None)  # the call takes the pin over
            if not m.has_session(sid):
                m.open_session(sid, now)
        ps = self.config.page_size
        n = max(1, c.prompt_tokens)
        keys = _keys(c.block_hashes, n // ps) if run.trace.block_size else ()
        req = Request.from_page_keys(a.call_id, keys, n, c.output_tokens, session_id=sid, priority=a.priority)
        try:
            m.submit(req, now)
        except InvalidRequest as exc:  # the replica refuses it (SGLang's 400): the call fails
            self._refused(plan, a.replica_id, str(exc), now)
            return
        plan.replica = a.replica_id
        self._touch(a.replica_id)

    def _refused(self, plan: CallPlan, rid: str, reason: str, now: float) -> None:
        """A replica refused a dispatched call (e.g. a prompt past its context length, which the
        engine's KV-fit check does not see): the engine hears ``CallFailed``, the session fails
        (as a client given a 400 would), the run goes on."""
        self._calls.pop(plan.call_id, None)
        plan.run.rejected += 1
        self.refused_calls += 1
        self._apply(self.engine.handle(api.CallFailed(plan.call_id, f"{rid}: {reason}", retryable=False)))
        if plan.run.end_s is None:
            plan.run.failed = True
            self._end_run(plan.run, now)

    def _rejected(self, a: api.Reject, now: float) -> None:
        plan = self._calls.pop(a.call_id, None)
        if plan is None:
            return
        plan.run.rejected += 1
        if a.reason == api.RejectReason.PROMPT_TOO_LONG or plan.attempt >= MAX_RETRIES:
            plan.run.failed = True
            self._end_run(plan.run, now)
            return
        self._push(now + max(1.0, a.retry_after_s), RETRY, plan)

    # ------------------------------------------------------------------ replicas

    def _replica_events(self, rid: str, t: float) -> None:
        m = self.models[rid]
        events = m.advance(t)
        eng = self.engine
        if self.system.exact_cache:
            kv = m.drain_kv_events()
            if kv:
                stored: list[int] = []
                removed: list[int] = []
                cleared = False
                for k in kv:
                    if isinstance(k, BlockStored):
                        stored.extend(k.block_hashes)
                    elif isinstance(k, BlockRemoved):
                        removed.extend(k.block_hashes)
                    elif isinstance(k, AllBlocksCleared):
                        cleared = True
                eng.handle(api.ReplicaCache(rid, tuple(stored), tuple(removed), cleared))
        finished = False
        for ev in events:
            if isinstance(ev, ModelFirstToken):
                plan = self._calls.get(ev.rid)
                if plan is not None:
                    plan.ttft_s = ev.time - plan.submitted_at
                    self._apply(eng.handle(api.FirstToken(ev.rid)))
            elif isinstance(ev, Finished):
                finished = True
                self._finished(ev)
        if finished:
            ld = m.load()
            eng.handle(api.ReplicaLoad(rid, ld.num_running, ld.num_waiting, ld.used_tokens, ld.total_tokens))
        self._touch(rid)

    def _finished(self, ev: Finished) -> None:
        plan = self._calls.pop(ev.rid)
        run = plan.run
        c = run.trace.calls[plan.index]
        usage = api.Usage(ev.prompt_tokens, ev.cached_tokens, ev.completion_tokens)
        self._apply(self.engine.handle(api.CallCompleted(ev.rid, usage, c.stop)))
        run.record_call(plan, ev.prompt_tokens, ev.cached_tokens, ev.completion_tokens)
        self._advance_run(run, run.after_call(plan.index, self.clock.now()))

    def _sample(self) -> None:
        now = self.clock.now()
        prompt = cached = 0
        for rid, m in self.models.items():
            ld = m.load()
            ts, vs = self.kv_series[rid]
            ts.append(now)
            vs.append(min(1.0, ld.cached_tokens_in_pool / ld.total_tokens))
            cn = m.counters()
            prompt += cn.prompt_tokens
            cached += cn.cached_tokens
        self.hit_series[0].append(now)
        self.hit_series[1].append(cached / prompt if prompt else 0.0)
        self.lane_series[0].append(now)
        self.lane_series[1].append(float(len(self.engine.lane_replicas_last)))

    # ------------------------------------------------------------------ result

    def _result(self, wall_s: float) -> RunResult:
        outcomes = []
        end_all = self.clock.now()
        starts = [s.start_s for s in self.workload.sessions]
        for run in self._runs:
            outcomes.append(run.outcome(end_all))
        ends = [o.end_s for o in outcomes]
        duration = max(1e-9, max(ends, default=0.0) - min(starts))
        return RunResult(
            system=self.system.name,
            workload=self.workload.name,
            seed=self.seed,
            replicas=self.n_replicas,
            load=self.load if self.load > 0 else 1.0,
            outcomes=tuple(outcomes),
            duration_s=duration,
            kv_util={r: Series(tuple(ts), tuple(vs)) for r, (ts, vs) in self.kv_series.items()},
            cache_hit_rate=Series(tuple(self.hit_series[0]), tuple(self.hit_series[1])),
            lane_replicas=Series(tuple(self.lane_series[0]), tuple(self.lane_series[1])),
            steals=self._steals,
            wall_s=wall_s,
            meta={
                "replica_config": _jsonable(asdict(self.config)),
                "system": self.system.description,
                "pin_deadline_violations": self.pin_violations,
                "calls_refused_by_replicas": self.refused_calls,
                "sessions_not_completed": sum(1 for o in outcomes if not o.completed),
            },
        )


def _keys(hashes: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """The prompt's full-page keys (no copy when they already fit)."""
    return hashes if len(hashes) <= limit else hashes[:limit]


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, list | tuple):
        return [_jsonable(v) for v in d]
    return d


__all__ = ["SessionOutcome", "SimError", "Simulator"]

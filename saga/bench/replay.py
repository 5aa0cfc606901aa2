"""Closed-loop agent replay over real HTTP, and the replicas' own ``/metrics`` over time.

Replay (:class:`Replayer`): every top-level session starts at its workload arrival
(``start_s / time_scale`` wall seconds after the run start) and issues its LLM calls in order
as streamed ``POST /v1/chat/completions`` (the call's prompt, see :mod:`saga.bench.prompts`,
as an agent's messages with the trace's tool calls, see :mod:`saga.bench.conversation`: a call
followed by a tool forces that tool, and the next call echoes the answered tool call and a
tool result; ``max_tokens`` = the call's recorded output tokens), waiting for each answer,
then sleeping the recorded gap to its next call (tool or human time) divided by
``time_scale``. Sub-agents fork after the call that spawned them (at their recorded offset)
and the parent joins them, with the same rules as ``saga.scheduler.workloads.demand``'s
``replay_end_s`` (the physical limit and the simulator replay the same way). Every request
carries the same headers whatever the system: ``x-session-id`` and ``x-smg-routing-key`` (the
session id), ``x-saga-agent-type``, and ``Authorization: Bearer <tenant key>``; systems read
the ones they understand. A rejected call (429/503) is retried after ``Retry-After`` (at most
``max_retries`` times); any other failure ends the session as not completed.

Client-side measurements per session (model seconds = wall x time_scale): start, end, TTFT of
each call (first content or tool-call chunk), prompt / cached / output tokens from the streamed ``usage``
(the replica's own count), and recomputed tokens: uncached prompt tokens beyond what an
infinite cache would have had to prefill (``demand.new_prefill_tokens``).

Replica sampler (:class:`ReplicaSampler`): scrapes every replica's ``/metrics`` every
``period_s`` wall seconds: ``sglang:token_usage`` (KV used fraction per replica) and the
cumulative ``sglang:prompt_tokens`` / ``sglang:cached_tokens`` / ``sglang:evicted_tokens`` /
``sglang:num_requests`` counters; the cluster hit rate over time is the hit rate of each
sampling interval (delta cached / delta prompt over all replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from saga.bench.conversation import (
    AnsweredCall,
    answered_call,
    fallback_call,
    merge_tool_deltas,
    request_fields,
    tool_plan,
)
from saga.bench.prompts import PromptBuilder
from saga.graphs.trace import SessionTrace
from saga.scheduler.report import Series, SessionOutcome, slo_met_for
from saga.scheduler.workloads.demand import new_prefill_tokens


class CallFailed(RuntimeError):
    pass


_WIRE_BAD = re.compile(r"[^A-Za-z0-9._:-]")


def wire_session_id(sid: str) -> str:
    """The session id as sent in headers: ``[A-Za-z0-9._:-]{1,128}`` (SAGA's rule; workload ids
    such as ``heavy-0/swe-1-0`` contain ``/``). ``/`` becomes ``:``, any other character ``_``;
    ids longer than 128 are cut and suffixed with a CRC so they stay unique."""
    out = _WIRE_BAD.sub(lambda m: ":" if m.group() == "/" else "_", sid) or "_"
    if len(out) > 128:
        out = f"{out[:119]}-{zlib.crc32(sid.encode()):08x}"
    return out


@dataclass(slots=True)
class _Acc:
    sid: str
    tenant: str
    agent_type: str
    is_sub: bool
    start_s: float = 0.0
    end_s: float = 0.0
    calls: int = 0
    ttft: list[float] = field(default_factory=list)
    prompt: int = 0
    cached: int = 0
    output: int = 0
    recomputed: int = 0
    rejected: int = 0
    completed: bool = True
    error: str = ""


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    url: str  # base URL of the system under test (SAGA, the router)
    time_scale: float  # model seconds per wall second (the emulator's factor)
    api_keys: Mapping[str, str]  # tenant -> API key
    model: str = "default"
    max_retries: int = 20  # retries of a rejected call (429/503) before the session gives up
    request_timeout_s: float = 600.0  # wall seconds one call may take


class Replayer:
    def __init__(
        self,
        cfg: ReplayConfig,
        http: aiohttp.ClientSession,
        *,
        deadlines: Mapping[str, float] | None = None,
        on_call: Callable[[], None] | None = None,
        on_session: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.http = http
        self.prompts = PromptBuilder()
        self.deadlines = deadlines or {}
        self.on_call = on_call
        self.on_session = on_session
        self._t0 = 0.0
        self._accs: list[_Acc] = []
        self.calls_sent = 0
        self.errors: list[str] = []

    def model_now(self) -> float:
        return (time.monotonic() - self._t0) * self.cfg.time_scale

    async def run(self, sessions: Sequence[SessionTrace]) -> list[SessionOutcome]:
        """Replay ``sessions`` (top-level, sorted by ``start_s``); return one outcome per session."""
        self._t0 = time.monotonic()
        origin = sessions[0].start_s if sessions else 0.0
        tasks = [asyncio.create_task(self._top(s, s.start_s - origin)) for s in sessions]
        await asyncio.gather(*tasks)
        return [self._outcome(a) for a in self._accs]

    def _outcome(self, a: _Acc) -> SessionOutcome:
        dl = None if a.is_sub else self.deadlines.get(a.sid)
        return SessionOutcome(
            session_id=a.sid,
            tenant=a.tenant,
            agent_type=a.agent_type,
            start_s=a.start_s,
            end_s=max(a.end_s, a.start_s),
            calls=a.calls,
            ttft_s=tuple(a.ttft),
            prompt_tokens=a.prompt,
            cached_tokens=min(a.cached, a.prompt),
            output_tokens=a.output,
            recomputed_tokens=min(a.recomputed, a.prompt),
            deadline_s=dl,
            slo_met=slo_met_for(a.end_s - a.start_s, dl, a.completed),
            rejected=a.rejected,
            is_subagent=a.is_sub,
            completed=a.completed,
        )

    async def _top(self, s: SessionTrace, at_model_s: float) -> None:
        delay = at_model_s / self.cfg.time_scale - (time.monotonic() - self._t0)
        if delay > 0:
            await asyncio.sleep(delay)
        await self._session(s, s.tenant, False, ())
        if self.on_session is not None:
            self.on_session()

    async def _sleep_model(self, model_s: float) -> None:
        if model_s > 0:
            await asyncio.sleep(model_s / self.cfg.time_scale)

    async def _session(self, s: SessionTrace, tenant: str, is_sub: bool, inherited: Sequence[int]) -> bool:
        acc = _Acc(s.session_id, tenant, s.agent_type, is_sub, start_s=self.model_now())
        self._accs.append(acc)
        news = new_prefill_tokens(s, inherited)
        subs_after: dict[int, list[int]] = {}
        for j, sub in enumerate(s.subagents):
            subs_after.setdefault(sub.after_call, []).append(j)
        seen: set[int] = set(inherited)
        plan = tool_plan(s)
        previous: AnsweredCall | None = None
        ok = True

        async def run_subs(k: int, orig_at: float, next_orig: float | None) -> bool:
            blocks = list(seen)
            jobs = []
            for j in subs_after.get(k, ()):
                sub = s.subagents[j]
                offset = max(0.0, sub.start_s - orig_at)
                post = (
                    0.0 if next_orig is None else max(0.0, next_orig - (sub.start_s + sub.session.duration_s))
                )
                jobs.append(self._sub(sub.session, tenant, offset, post, blocks))
            results = await asyncio.gather(*jobs)
            return all(results)

        if -1 in subs_after:
            ok = await run_subs(-1, 0.0, s.calls[0].start_s)
        for i, c in enumerate(s.calls):
            if not ok:
                break
            try:
                answered = await self._call(
                    s, i, acc, news[i], request_fields(self.prompts, s, i, plan, previous)
                )
            except CallFailed as e:
                acc.completed = False
                acc.error = str(e)
                self.errors.append(f"{s.session_id} call {i}: {e}")
                ok = False
                break
            seen.update(c.block_hashes)
            forced = plan[i]
            previous = None if forced is None else (answered or fallback_call(s, i, forced))
            nxt = s.calls[i + 1] if i + 1 < len(s.calls) else None
            if i in subs_after:
                ok = await run_subs(i, c.end_s, None if nxt is None else nxt.start_s)
                continue
            if nxt is not None:
                gap = nxt.start_s - c.end_s
                await self._sleep_model(gap if gap >= 0 else 0.0)
        acc.end_s = self.model_now()
        if not ok:
            acc.completed = False
        return ok

    async def _sub(self, s: SessionTrace, tenant: str, offset: float, post: float, blocks: list[int]) -> bool:
        await self._sleep_model(offset)
        ok = await self._session(s, tenant, True, blocks)
        await self._sleep_model(post)
        return ok

    def _headers(self, s: SessionTrace, tenant: str) -> dict[str, str]:
        sid = wire_session_id(s.session_id)
        h = {
            "x-session-id": sid,
            "x-smg-routing-key": sid,
            "x-saga-agent-type": s.agent_type or "agent",
        }
        key = self.cfg.api_keys.get(tenant)
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    async def _call(
        self, s: SessionTrace, i: int, acc: _Acc, new_tokens: int, fields: dict[str, Any]
    ) -> AnsweredCall | None:
        """Run call ``i`` (``fields``: its messages and tool fields); return the tool call the
        answer asked for, if any."""
        call = s.calls[i]
        body = {
            "model": self.cfg.model,
            **fields,
            "max_tokens": max(1, call.output_tokens),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = self._headers(s, acc.tenant)
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        for _attempt in range(self.cfg.max_retries + 1):
            t0 = time.monotonic()
            ttft: float | None = None
            usage: dict[str, Any] | None = None
            tool_deltas: dict[int, dict[str, str]] = {}
            self.calls_sent += 1
            try:
                async with self.http.post(
                    self.cfg.url + "/v1/chat/completions", json=body, headers=headers, timeout=timeout
                ) as r:
                    if r.status in (429, 503):
                        acc.rejected += 1
                        retry = float(r.headers.get("Retry-After", "1") or 1)
                        await r.read()
                        await asyncio.sleep(min(retry, 5.0) / max(1.0, self.cfg.time_scale))
                        continue
                    if r.status != 200:
                        raise CallFailed(f"HTTP {r.status}: {(await r.text())[:300]}")
                    async for line in r.content:
                        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                            continue
                        obj = json.loads(line[6:])
                        if "error" in obj:
                            raise CallFailed(f"stream error: {obj['error']}")
                        for ch in obj.get("choices") or ():
                            delta = ch.get("delta") or {}
                            if delta.get("tool_calls"):
                                merge_tool_deltas(tool_deltas, delta["tool_calls"])
                            if ttft is None and (delta.get("content") or delta.get("tool_calls")):
                                ttft = time.monotonic() - t0
                        if obj.get("usage"):
                            usage = obj["usage"]
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                raise CallFailed(f"{type(e).__name__}: {e}") from None
            if usage is None:
                raise CallFailed("stream ended without usage")
            prompt = int(usage.get("prompt_tokens") or 0)
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            acc.calls += 1
            acc.prompt += prompt
            acc.cached += cached
            acc.output += int(usage.get("completion_tokens") or 0)
            acc.recomputed += max(0, (prompt - cached) - new_tokens)
            acc.ttft.append((ttft if ttft is not None else time.monotonic() - t0) * self.cfg.time_scale)
            if self.on_call is not None:
                self.on_call()
            return answered_call(tool_deltas)
        raise CallFailed(f"rejected {self.cfg.max_retries + 1} times")


# ----------------------------------------------------------------------------- replica metrics

COUNTERS = ("sglang:prompt_tokens", "sglang:cached_tokens", "sglang:evicted_tokens", "sglang:num_requests")


def parse_metrics(text: str) -> dict[str, float]:
    """Sum of each sample name over its label sets (``_total`` suffix dropped)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            name = smp.name.removesuffix("_total")
            out[name] = out.get(name, 0.0) + smp.value
    return out


@dataclass(slots=True)
class ReplicaSampler:
    urls: Mapping[str, str]  # replica id -> base URL
    time_scale: float
    period_s: float = 1.0
    t0: float = 0.0
    kv: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    hit: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    first: dict[str, dict[str, float]] = field(default_factory=dict)
    last: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: int = 0

    async def scrape(self, http: aiohttp.ClientSession) -> None:
        t = (time.monotonic() - self.t0) * self.time_scale
        prev_p = sum(m.get("sglang:prompt_tokens", 0.0) for m in self.last.values())
        prev_c = sum(m.get("sglang:cached_tokens", 0.0) for m in self.last.values())
        for rid, url in self.urls.items():
            try:
                async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    m = parse_metrics(await r.text())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.failures += 1
                continue
            self.first.setdefault(rid, m)
            self.last[rid] = m
            ts, vs = self.kv.setdefault(rid, ([], []))
            ts.append(t)
            vs.append(min(1.0, max(0.0, m.get("sglang:token_usage", 0.0))))
        p = sum(m.get("sglang:prompt_tokens", 0.0) for m in self.last.values())
        c = sum(m.get("sglang:cached_tokens", 0.0) for m in self.last.values())
        if p > prev_p:
            self.hit[0].append(t)
            self.hit[1].append(min(1.0, max(0.0, (c - prev_c) / (p - prev_p))))

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        self.t0 = self.t0 or time.monotonic()
        while not stop.is_set():
            await self.scrape(http)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period_s)
        await self.scrape(http)

    def kv_series(self) -> dict[str, Series]:
        return {rid: Series(tuple(t), tuple(v)) for rid, (t, v) in self.kv.items()}

    def hit_series(self) -> Series:
        return Series(tuple(self.hit[0]), tuple(self.hit[1]))

    def totals(self) -> dict[str, float]:
        """Counter deltas over the run, summed over replicas, plus the run's hit rate."""
        out = {
            k: sum(self.last[r].get(k, 0.0) - self.first.get(r, {}).get(k, 0.0) for r in self.last)
            for k in COUNTERS
        }
        p = out["sglang:prompt_tokens"]
        out["hit_rate"] = out["sglang:cached_tokens"] / p if p else 0.0
        return out

    def served_by_replica(self) -> dict[str, float]:
        return {r: self.last[r].get("sglang:num_requests", 0.0) for r in self.last}

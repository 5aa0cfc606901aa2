"""The replica model: continuous batching over a paged prefix cache, advanced by events.

What it models (SGLang 0.5's scheduler, simplified; ``docs/emulator.md`` lists the differences):

- **Admission.** Requests wait in a queue, FCFS or by priority. At each scheduling point the
  head is admitted while the running set has room (``max_running_requests``) and the KV pool can
  hold its uncached prompt plus all its output tokens (``max_new_tokens``), after evicting
  unreferenced cache entries. The head blocks the queue when it does not fit.
- **Prefix cache.** On admission the prompt's longest cached prefix of full pages (at most
  ``prompt - 1`` tokens: the last token is always computed) is matched and locked. When the
  prompt is prefilled, its full pages enter the cache (so concurrent requests sharing it hit);
  when a request with known token ids finishes, its output pages do too, up to and including
  the last generated token (see :meth:`ReplicaModel._insert_output`).
- **Sessions.** With ``enable_session_radix_cache``, a top-level ``session_id`` references the
  path of the session's latest finished request, evicted only after unreferenced entries;
  without it, such a request is an ordinary one.
- **Iterations.** Prefill has priority: an iteration is a prefill batch when any admitted
  request still needs prompt tokens computed (one chunk of ``chunked_prefill_size`` tokens at
  most per iteration, shared by the in-progress chunked request first, then new admissions);
  otherwise it is a decode step of every prefilled request. An iteration costs
  ``fixed + prefill_s_per_token * chunk tokens + decode_s_per_seq * batch
  + kv_read_s_per_token * KV tokens attended``.
- **Events, not ticks.** A run of decode steps with an unchanged batch is one *segment*: its
  ``N`` iterations, up to the next completion, take
  ``N * (fixed + d*B + r*K0) + r*B*N*(N-1)/2`` (the KV read grows by ``B`` tokens per step),
  computed in one step. An arrival cuts the segment at the first iteration boundary after it
  (the arrival can join there), an abort likewise. ``decode_horizon_s`` optionally caps a
  segment's length so a real-time shell can stream tokens as they appear.

Time is whatever the caller passes as ``now`` (seconds, monotone): wall time scaled by a
``MonotonicClock`` in the HTTP server, virtual time in the simulator and the tests. Events are
stamped with the model time they happen at, which may be earlier than the ``now`` that
``advance`` was called with.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator

from saga.emulator.core.config import ReplicaConfig
from saga.emulator.core.errors import (
    DuplicateRequest,
    DuplicateSession,
    ExceedsCapacity,
    InvalidRequest,
    PromptTooLong,
    UnknownSession,
)
from saga.emulator.core.radix import RadixCache, RadixNode
from saga.emulator.core.replica_state import DECODE as _DECODE
from saga.emulator.core.replica_state import DONE as _DONE
from saga.emulator.core.replica_state import PREFILL as _PREFILL
from saga.emulator.core.replica_state import WAITING as _WAITING
from saga.emulator.core.replica_state import Counters
from saga.emulator.core.replica_state import ReqState as _Req
from saga.emulator.core.replica_state import Segment as _Segment
from saga.emulator.core.replica_state import SessionState as _Session
from saga.emulator.core.request import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    Event,
    Finished,
    FirstToken,
    KVEvent,
    Load,
    Request,
    TokensGenerated,
    chain_page_keys,
    output_token_ids,
)


class ReplicaModel:
    """One emulated SGLang replica (see the module docstring)."""

    def __init__(
        self,
        config: ReplicaConfig,
        replica_id: str = "replica-0",
        *,
        emit_progress: bool = False,
        decode_horizon_s: float | None = None,
        record_kv_events: bool = True,
    ) -> None:
        """``emit_progress``: also emit :class:`TokensGenerated` at every decode segment end.
        ``decode_horizon_s``: longest decode segment in model seconds (``None``: up to the next
        completion or arrival). ``record_kv_events``: keep KV events for
        :meth:`drain_kv_events` (drain them regularly, or pass ``False``)."""
        if decode_horizon_s is not None and decode_horizon_s <= 0:
            raise ValueError(f"decode_horizon_s must be > 0, got {decode_horizon_s}")
        self.config = config
        self.replica_id = replica_id
        self._ps = config.page_size
        t = config.timing
        self._fixed = t.fixed_overhead_s
        self._p = t.prefill_s_per_token
        self._d = t.decode_s_per_seq
        self._r = t.kv_read_s_per_token
        self._emit_progress = emit_progress
        self._horizon = decode_horizon_s
        self._record_kv = record_kv_events
        self._kv_events: list[KVEvent] = []
        self._ins: tuple[int, tuple[int, ...] | None] = (0, None)  # keys being inserted, their tokens
        self._cache = RadixCache(
            on_stored=self._kv_stored if record_kv_events else None,
            on_removed=self._kv_removed,
        )
        self._seq = itertools.count()
        self._reqs: dict[str, _Req] = {}
        self._waiting: list[tuple[int, int, _Req]] = []
        self._n_waiting = 0
        self._n_running = 0
        self._chunked: _Req | None = None
        self._decoding: dict[str, _Req] = {}
        self._finish_heap: list[tuple[int, int, _Req]] = []
        self._iters = 0
        self._dec_prompt_sum = 0
        self._dec_tail_sum = 0
        self._dec_start_sum = 0
        self._prefill_private = 0
        self._reserved = 0
        self._sessions: dict[str, _Session] = {}
        self._events: list[Event] = []
        self._seg: _Segment | None = None
        self._t = 0.0
        self._c_requests = 0
        self._c_aborted = 0
        self._c_prompt = 0
        self._c_cached = 0
        self._c_completion = 0
        self._c_evicted_pages = 0
        self._prio_sign = 1 if config.schedule_low_priority_values_first else -1
        self._radix_sessions = config.enable_session_radix_cache
        self._pending_aborts = 0

    # ================================================================== public API

    def submit(self, req: Request, now: float) -> None:
        """Queue ``req`` at ``now``. Raises an :class:`InvalidRequest` subclass on bad input."""
        self._run_until(now)
        self._validate(req)
        if self._radix_native(req) and req.session_id not in self._sessions:
            assert req.session_id is not None
            self._sessions[req.session_id] = _Session(req.session_id, now)  # radix-native: begins on use
        r = _Req(req, next(self._seq), now)
        self._reqs[req.rid] = r
        prio = 0
        if self.config.enable_priority_scheduling and req.priority is not None:
            prio = self._prio_sign * req.priority
        heapq.heappush(self._waiting, (prio, r.seq, r))
        self._n_waiting += 1
        seg = self._seg
        if seg is None:
            self._t = max(self._t, now)
            self._plan()
        elif seg.decode and self._n_running < self.config.max_running_requests:
            self._cut_segment(now)

    def abort(self, rid: str, now: float) -> bool:
        """Abort ``rid``; its :class:`Finished` event (reason ``abort``) follows at once if it
        was waiting, else at the end of the iteration it is part of. False if unknown."""
        self._run_until(now)
        r = self._reqs.get(rid)
        if r is None or r.abort_requested:
            return False
        seg = self._seg
        if r.state == _WAITING:
            r.abort_requested = True  # lazily dropped from the waiting heap
            self._n_waiting -= 1
            self._finish(r, now, "abort")
        elif seg is not None and (
            (seg.decode and r.state == _DECODE) or (not seg.decode and any(c[0] is r for c in seg.chunks))
        ):
            r.abort_requested = True
            self._pending_aborts += 1
            if seg.decode:
                self._cut_segment(now)
        else:
            if r is self._chunked:
                self._chunked = None
            self._finish(r, now, "abort")
            if self._seg is None:
                self._t = max(self._t, now)
                self._plan()
        return True

    def abort_all(self, now: float) -> int:
        """Abort every waiting and running request; returns how many."""
        return sum(self.abort(rid, now) for rid in list(self._reqs))

    def open_session(self, session_id: str, now: float) -> None:
        if session_id in self._sessions:
            raise DuplicateSession(f"session {session_id!r} is already open")
        self._sessions[session_id] = _Session(session_id, now)

    def close_session(self, session_id: str, now: float) -> None:
        """Close the session and drop its reference on its cached entries."""
        s = self._sessions.pop(session_id, None)
        if s is None:
            raise UnknownSession(f"session {session_id!r} is not open")
        self._cache.set_session_node(s, None)

    def has_session(self, session_id: str) -> bool:
        return session_id in self._sessions

    def flush_cache(self) -> bool:
        """Drop the whole prefix cache; refused (False) while requests wait or run, as SGLang."""
        if self._reqs:
            return False
        for s in self._sessions.values():
            s.node = None
        self._cache.reset()
        if self._record_kv:
            self._kv_events.append(AllBlocksCleared())
        return True

    def next_event_time(self) -> float | None:
        """Model time of the next event (end of the iteration or segment in flight)."""
        return self._seg.end if self._seg is not None else None

    def advance(self, now: float) -> list[Event]:
        """Run the model up to ``now``; returns every event that happened since the last call."""
        self._run_until(now)
        events = self._events
        self._events = []
        return events

    def load(self) -> Load:
        ps = self._ps
        b = len(self._decoding)
        decode_private = self._dec_tail_sum + b * (1 + self._iters) - self._dec_start_sum
        used = self._cache.locked_pages * ps + self._prefill_private + decode_private
        total = self.config.kv_capacity_tokens
        return Load(
            num_running=self._n_running,
            num_waiting=self._n_waiting,
            used_tokens=used,
            total_tokens=total,
            token_usage=used / total,
            cached_tokens_in_pool=self._cache.total_pages * ps,
            cache_hit_rate=self._c_cached / self._c_prompt if self._c_prompt else 0.0,
            open_sessions=len(self._sessions),
        )

    def counters(self) -> Counters:
        return Counters(
            requests=self._c_requests,
            aborted_requests=self._c_aborted,
            prompt_tokens=self._c_prompt,
            cached_tokens=self._c_cached,
            completion_tokens=self._c_completion,
            evicted_tokens=self._c_evicted_pages * self._ps,
        )

    def drain_kv_events(self) -> list[KVEvent]:
        events = self._kv_events
        self._kv_events = []
        return events

    def cached_prefix_tokens(self, page_keys: tuple[int, ...] | list[int], num_tokens: int) -> int:
        """Tokens of a prompt the cache would serve now (a probe; changes no LRU order)."""
        limit = min(len(page_keys), (num_tokens - 1) // self._ps)
        return self._cache.peek(page_keys, limit) * self._ps

    def active_rids(self) -> Iterator[str]:
        return iter(list(self._reqs))

    # ================================================================== validation

    def _validate(self, req: Request) -> None:
        cfg = self.config
        if not req.rid:
            raise InvalidRequest("rid must be a non-empty string")
        if req.rid in self._reqs:
            raise DuplicateRequest(f"request {req.rid!r} is already in the replica")
        if req.num_tokens < 1:
            raise InvalidRequest("the prompt must have at least one token")
        if req.max_new_tokens < 0:
            raise InvalidRequest(f"max_new_tokens must be >= 0, got {req.max_new_tokens}")
        if len(req.page_keys) > req.num_tokens // self._ps:
            raise InvalidRequest(
                f"{len(req.page_keys)} page keys for {req.num_tokens} tokens at page size {self._ps}"
            )
        if req.num_tokens >= cfg.context_length:
            raise PromptTooLong(
                f"The input ({req.num_tokens} tokens) is longer than the model's context length "
                f"({cfg.context_length} tokens)."
            )
        if req.num_tokens + req.max_new_tokens > cfg.context_length:
            raise PromptTooLong(
                f"Requested token count exceeds the model's maximum context length of "
                f"{cfg.context_length} tokens. You requested a total of "
                f"{req.num_tokens + req.max_new_tokens} tokens: {req.num_tokens} tokens from the input "
                f"and {req.max_new_tokens} tokens for the completion."
            )
        if req.num_tokens >= cfg.max_req_input_len:  # SGLang's scheduler: validate_input_length
            raise PromptTooLong(
                f"Input length ({req.num_tokens} tokens) exceeds the maximum allowed length "
                f"({cfg.max_req_input_len} tokens). Use a shorter input or enable --allow-auto-truncate."
            )
        if req.num_tokens + req.max_new_tokens > cfg.kv_capacity_tokens:
            raise ExceedsCapacity(
                f"prompt ({req.num_tokens}) plus max_new_tokens ({req.max_new_tokens}) exceed the KV pool "
                f"({cfg.kv_capacity_tokens} tokens)"
            )
        if req.legacy_session and req.session_id not in self._sessions:
            raise UnknownSession(f"session {req.session_id!r} is not open")

    # ================================================================== engine loop

    def _run_until(self, now: float) -> None:
        seg = self._seg
        while seg is not None and seg.end <= now:
            self._t = seg.end
            self._seg = None
            if seg.decode:
                self._commit_decode(seg)
            else:
                self._commit_prefill(seg)
            self._plan()
            seg = self._seg

    def _plan(self) -> None:
        """Choose the next iteration (or decode segment) starting at ``self._t``."""
        chunks = self._build_prefill()
        t0 = self._t
        if chunks:
            n_new = 0
            attended = 0
            for r, take in chunks:
                n_new += take
                attended += r.cached + r.done_prefill
            dur = self._fixed + self._p * n_new + self._r * attended
            self._seg = _Segment(False, t0, t0 + dur, chunks)
            return
        b = len(self._decoding)
        if b == 0:
            return
        heap = self._finish_heap
        while heap[0][2].state != _DECODE:
            heapq.heappop(heap)
        n = heap[0][0] - self._iters
        k0 = self._dec_prompt_sum + b * (1 + self._iters) - self._dec_start_sum
        c = self._fixed + self._d * b + self._r * k0
        a = self._r * b / 2.0
        if self._horizon is not None:
            n = max(1, min(n, self._iters_within(c, a, self._horizon, n)))
        self._seg = _Segment(True, t0, t0 + n * c + a * n * (n - 1), n_iters=n, c=c, a=a)

    @staticmethod
    def _iters_within(c: float, a: float, span: float, n_max: int) -> int:
        """Most iterations whose total time ``n*c + a*n*(n-1)`` is <= span."""
        if a <= 0:
            return int(span // c) if c > 0 else n_max
        b = c - a
        n = int((-b + math.sqrt(b * b + 4 * a * span)) / (2 * a))
        while n > 0 and n * c + a * n * (n - 1) > span:
            n -= 1
        return n

    def _cut_segment(self, now: float) -> None:
        """End the decode segment in flight at its first iteration boundary at or after now."""
        seg = self._seg
        assert seg is not None
        assert seg.decode
        span = now - seg.start
        done = self._iters_within(seg.c, seg.a, span, seg.n_iters)
        n = done if done * seg.c + seg.a * done * (done - 1) >= span else done + 1
        n = max(1, min(n, seg.n_iters))
        if n < seg.n_iters:
            seg.n_iters = n
            seg.end = seg.start + n * seg.c + seg.a * n * (n - 1)

    def _build_prefill(self) -> list[tuple[_Req, int]]:
        budget = self.config.chunked_prefill_size
        chunks: list[tuple[_Req, int]] = []
        r = self._chunked
        if r is not None:
            take = min(r.req.num_tokens - r.cached - r.done_prefill, budget)
            chunks.append((r, take))
            budget -= take
            if take < r.req.num_tokens - r.cached - r.done_prefill:
                return chunks
            self._chunked = None
        waiting = self._waiting
        max_running = self.config.max_running_requests
        while budget > 0 and waiting and self._n_running < max_running:
            r = waiting[0][2]
            if r.abort_requested:
                heapq.heappop(waiting)
                continue
            if not self._admit(r):
                break
            heapq.heappop(waiting)
            need = r.req.num_tokens - r.cached
            take = min(need, budget)
            chunks.append((r, take))
            budget -= take
            if take < need:
                self._chunked = r
                break
        return chunks

    def _admit(self, r: _Req) -> bool:
        req = r.req
        ps = self._ps
        cache = self._cache
        limit = min(len(req.page_keys), (req.num_tokens - 1) // ps)
        free = self.config.kv_capacity_tokens - cache.total_pages * ps - self._reserved
        if req.num_tokens - limit * ps + req.max_new_tokens > free + cache.evictable_pages * ps:
            return False  # cannot fit even with the best possible cache hit: skip the match
        node, pages = cache.match(req.page_keys, limit, self._t)
        cached = pages * ps
        need = req.num_tokens - cached + req.max_new_tokens
        cache.lock(node)
        if need > free:
            freed = cache.evict(-(-(need - free) // ps))
            free += freed * ps
            if need > free:
                cache.unlock(node)
                return False
        r.node = node
        r.cached = cached
        r.reserved = need
        self._reserved += need
        r.state = _PREFILL
        self._n_waiting -= 1
        self._n_running += 1
        self._c_prompt += req.num_tokens
        self._c_cached += cached
        return True

    # ================================================================== commits

    def _commit_prefill(self, seg: _Segment) -> None:
        t = seg.end
        ps = self._ps
        cache = self._cache
        for r, take in seg.chunks:
            if r.abort_requested:
                if r is self._chunked:
                    self._chunked = None
                self._finish(r, t, "abort")
                continue
            r.done_prefill += take
            self._prefill_private += take
            req = r.req
            if r.cached + r.done_prefill < req.num_tokens:
                continue
            # Prompt complete: its full pages enter the cache and the first token exists.
            self._prefill_private -= r.done_prefill
            keys = req.page_keys
            self._ins = (len(keys), req.token_ids)
            node, _new = cache.insert(keys, t)
            cache.lock(node)
            assert r.node is not None
            cache.unlock(r.node)
            r.node = node
            r.full_pages = len(keys)
            moved = len(keys) * ps - r.cached
            r.reserved -= moved
            self._reserved -= moved
            r.first_token_time = t
            if req.max_new_tokens >= 1:
                self._events.append(FirstToken(req.rid, t, req.num_tokens, r.cached, r.arrival))
            if req.max_new_tokens <= 1:
                self._finish(r, t, "length")
                continue
            r.state = _DECODE
            r.start_iter = self._iters
            r.finish_iter = self._iters + req.max_new_tokens - 1
            self._decoding[req.rid] = r
            self._dec_prompt_sum += req.num_tokens
            self._dec_tail_sum += req.num_tokens - r.full_pages * ps
            self._dec_start_sum += r.start_iter
            heapq.heappush(self._finish_heap, (r.finish_iter, r.seq, r))

    def _commit_decode(self, seg: _Segment) -> None:
        t = seg.end
        self._iters += seg.n_iters
        iters = self._iters
        heap = self._finish_heap
        while heap and heap[0][0] <= iters:
            r = heapq.heappop(heap)[2]
            if r.state == _DECODE and not r.abort_requested:
                self._finish(r, t, "length")
        if self._emit_progress or self._pending_aborts:
            for r in list(self._decoding.values()):
                if r.abort_requested:
                    self._finish(r, t, "abort")
                elif self._emit_progress:
                    self._events.append(TokensGenerated(r.req.rid, t, 1 + iters - r.start_iter))

    def _finish(self, r: _Req, t: float, reason: str) -> None:
        req = r.req
        cache = self._cache
        completion = 0
        if r.state == _DECODE:
            completion = min(1 + self._iters - r.start_iter, req.max_new_tokens)
            del self._decoding[req.rid]
            self._dec_prompt_sum -= req.num_tokens
            self._dec_tail_sum -= req.num_tokens - r.full_pages * self._ps
            self._dec_start_sum -= r.start_iter
        elif r.state == _PREFILL:
            if r.first_token_time is not None:
                completion = req.max_new_tokens  # 0 or 1: finished right at prefill end
            else:
                self._prefill_private -= r.done_prefill
        if r.state in (_PREFILL, _DECODE):
            self._n_running -= 1
            self._reserved -= r.reserved
            r.reserved = 0
            node = r.node
            assert node is not None
            end_node = node
            if reason == "length" and req.token_ids is not None and completion >= 1:
                end_node = self._insert_output(r, completion, t)
            if reason == "length" and self._radix_native(req):
                assert req.session_id is not None
                s = self._sessions.get(req.session_id)
                if s is not None:
                    cache.set_session_node(s, end_node)
            cache.unlock(node)
            r.node = None
        if r.abort_requested and r.state != _WAITING:
            self._pending_aborts -= 1
        r.state = _DONE
        del self._reqs[req.rid]
        self._c_requests += 1
        self._c_completion += completion
        if reason == "abort":
            self._c_aborted += 1
        self._events.append(
            Finished(req.rid, t, req.num_tokens, r.cached, completion, reason, r.arrival, r.first_token_time)
        )

    def _radix_native(self, req: Request) -> bool:
        """The request's session references its cache entries (top-level ``session_id`` with
        ``--enable-session-radix-cache``)."""
        return self._radix_sessions and req.session_id is not None and not req.legacy_session

    def _insert_output(self, r: _Req, completion: int, t: float) -> RadixNode:
        """Cache the output's full pages, chained after the prompt, **all** generated tokens
        included: SGLang caches ``kv_committed_len`` tokens, and under its default overlap
        scheduler the next decode step (which writes the last token's KV) is prepared before
        the finish is seen, so the whole output is cached (observed on SGLang 0.5.17: a
        session's next turn hit prompt + every output token)."""
        req = r.req
        assert req.token_ids is not None
        ps = self._ps
        start = r.full_pages * ps
        seq = list(req.token_ids[start:])
        seq.extend(output_token_ids(req.seed, completion))
        parent = req.page_keys[r.full_pages - 1] if r.full_pages else 0
        more = chain_page_keys(seq, ps, parent=parent)
        if not more:
            assert r.node is not None
            return r.node
        if self._record_kv:  # prompt ids + output ids, for BlockStored.token_ids
            self._ins = (
                len(req.page_keys) + len(more),
                req.token_ids + tuple(seq[len(req.token_ids) - start :]),
            )
        node, _new = self._cache.insert(list(req.page_keys) + more, t)
        return node

    # ================================================================== KV events

    def _kv_stored(self, keys: list[int], parent: int | None) -> None:
        # The new keys are the tail of the key list being inserted (self._ins: its length and
        # the token ids behind it, set before every insert), so their tokens are known.
        n, tokens = self._ins
        ids = None if tokens is None else tuple(tokens[(n - len(keys)) * self._ps : n * self._ps])
        self._kv_events.append(BlockStored(tuple(keys), parent, self._ps, ids))

    def _kv_removed(self, keys: list[int]) -> None:
        self._c_evicted_pages += len(keys)
        if self._record_kv:
            self._kv_events.append(BlockRemoved(tuple(keys)))

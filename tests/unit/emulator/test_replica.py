"""Replica model in virtual time: timing arithmetic, caching, capacity, priority, errors."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from saga.emulator.core import (
    AllBlocksCleared,
    BlockStored,
    DuplicateRequest,
    Event,
    ExceedsCapacity,
    Finished,
    FirstToken,
    InvalidRequest,
    PromptTooLong,
    ReplicaConfig,
    ReplicaModel,
    Request,
    TimingParams,
    TokensGenerated,
    UnknownSession,
)

pytestmark = pytest.mark.unit
E = TypeVar("E", bound=Event)

T = TimingParams(
    fixed_overhead_s=0.01, prefill_s_per_token=0.001, decode_s_per_seq=0.002, kv_read_s_per_token=1e-5
)


def cfg(**kw: Any) -> ReplicaConfig:
    base: dict[str, Any] = {
        "page_size": 4,
        "kv_capacity_tokens": 10_000,
        "timing": T,
        "context_length": 4096,
    }
    base.update(kw)
    return ReplicaConfig(**base)


def run(model: ReplicaModel, until: float = 1e9) -> list[Event]:
    out: list[Event] = []
    while (t := model.next_event_time()) is not None and t <= until:
        out.extend(model.advance(t))
    return out


def by_type(events: list[Event], kind: type[E]) -> dict[str, E]:
    return {e.rid: e for e in events if isinstance(e, kind)}


def req(rid: str, ids: list[int], new: int, ps: int = 4, **kw: Any) -> Request:
    return Request.from_tokens(rid, ids, new, ps, **kw)


def test_ttft_and_decode_follow_the_iteration_formula() -> None:
    m = ReplicaModel(cfg())
    m.submit(req("a", list(range(100)), 3), 0.0)
    ev = run(m)
    ft = by_type(ev, FirstToken)["a"]
    assert ft.time == pytest.approx(0.01 + 0.001 * 100)  # one prefill iteration, nothing cached
    fin = by_type(ev, Finished)["a"]
    # two decode steps of one sequence, context 101 then 102 tokens

    def d(k: int) -> float:
        return 0.01 + 0.002 + 1e-5 * k

    assert fin.time == pytest.approx(ft.time + d(101) + d(102))
    assert (fin.completion_tokens, fin.finish_reason) == (3, "length")


def test_more_cached_prefix_gives_lower_ttft() -> None:
    base = list(range(400))
    ttfts = []
    for shared in (0, 100, 200, 396):
        m = ReplicaModel(cfg())
        m.submit(req("warm", base[:shared] + [9999] * (400 - shared), 1), 0.0)
        run(m)
        m.submit(req("probe", base, 1), 10.0)
        ev = run(m)
        ft = by_type(ev, FirstToken)["probe"]
        assert isinstance(ft, FirstToken)
        expected_cached = min(shared // 4 * 4, 396)
        assert ft.cached_tokens == expected_cached
        assert ft.time - 10.0 == pytest.approx(
            0.01 + 0.001 * (400 - expected_cached) + 1e-5 * expected_cached
        )
        ttfts.append(ft.time - 10.0)
    assert ttfts == sorted(ttfts, reverse=True)
    assert ttfts[-1] < ttfts[0] / 5


def test_last_prompt_token_is_never_cached() -> None:
    m = ReplicaModel(cfg())
    ids = list(range(16))
    m.submit(req("a", ids, 1), 0.0)
    run(m)
    m.submit(req("b", ids, 1), 1.0)
    ft = by_type(run(m), FirstToken)["b"]
    assert isinstance(ft, FirstToken)
    assert ft.cached_tokens == 12  # 16 tokens, pages of 4, last token recomputed -> 3 pages


@pytest.mark.parametrize("session", [None, "s"])
def test_generated_tokens_are_cached_for_the_next_turn(session: str | None) -> None:
    """All output tokens, the last one included (SGLang's overlap scheduler has computed its KV
    when the finish is seen; observed on 0.5.17), whether or not the call is in a session."""
    m = ReplicaModel(cfg(enable_session_radix_cache=True))
    prompt = list(range(20))
    m.submit(req("t1", prompt, 8, session_id=session), 0.0)
    run(m)
    from saga.emulator.core import output_token_ids

    seed = Request.from_tokens("x", prompt, 8, 4).seed
    turn2 = prompt + output_token_ids(seed, 8) + [5, 6, 7, 8, 9]
    m.submit(req("t2", turn2, 1, session_id=session), 5.0)
    ft = by_type(run(m), FirstToken)["t2"]
    assert isinstance(ft, FirstToken)
    assert ft.cached_tokens == 28  # prompt 20 + all 8 outputs: 7 full pages of 4


def test_chunked_prefill_takes_several_iterations() -> None:
    m = ReplicaModel(cfg(chunked_prefill_size=64))
    m.submit(req("long", list(range(200)), 1), 0.0)
    ft = by_type(run(m), FirstToken)["long"]
    # chunks 64, 64, 64, 8; each later chunk attends to the tokens computed before it
    expected = sum(0.01 + 0.001 * c + 1e-5 * done for c, done in ((64, 0), (64, 64), (64, 128), (8, 192)))
    assert ft.time == pytest.approx(expected)


def test_running_set_is_bounded_by_max_running_requests() -> None:
    m = ReplicaModel(cfg(max_running_requests=2))
    for i in range(5):
        m.submit(req(f"r{i}", [i] * 8, 50), 0.0)
    m.advance(0.05)
    load = m.load()
    assert (load.num_running, load.num_waiting) == (2, 3)
    ev = run(m)
    assert len(by_type(ev, Finished)) == 5


def test_kv_capacity_blocks_admission_until_memory_frees() -> None:
    m = ReplicaModel(cfg(kv_capacity_tokens=200))
    m.submit(req("big", list(range(100)), 60), 0.0)  # reserves 160 tokens
    m.submit(req("next", list(range(1000, 1100)), 60), 0.0)  # needs 160 more: must wait
    m.advance(0.2)
    assert m.load().num_waiting == 1
    assert m.load().used_tokens <= 200
    ev = run(m)
    fin = by_type(ev, Finished)
    ft = by_type(ev, FirstToken)
    assert ft["next"].time > fin["big"].time  # admitted only after "big" released its KV


def test_request_larger_than_the_pool_or_context_is_rejected() -> None:
    m = ReplicaModel(cfg(kv_capacity_tokens=100))
    with pytest.raises(ExceedsCapacity):
        m.submit(req("x", list(range(90)), 20), 0.0)
    m2 = ReplicaModel(cfg(context_length=50))
    with pytest.raises(PromptTooLong):
        m2.submit(req("y", list(range(50)), 1), 0.0)
    with pytest.raises(PromptTooLong):
        m2.submit(req("z", list(range(40)), 20), 0.0)


def test_prompt_of_max_req_input_len_or_more_is_refused_as_sglang_does() -> None:
    """SGLang's scheduler refuses ``len(input_ids) >= max_req_input_len``, ``min(context - 1,
    pool - 1) - 5``, even where prompt plus max_new_tokens fit the context and the pool."""
    assert cfg(context_length=50).max_req_input_len == 44
    assert cfg(context_length=4096, kv_capacity_tokens=100).max_req_input_len == 94
    m = ReplicaModel(cfg(context_length=50))
    with pytest.raises(PromptTooLong, match=r"Input length \(44 tokens\) exceeds the maximum allowed length"):
        m.submit(req("x", list(range(44)), 1), 0.0)
    m.submit(req("y", list(range(43)), 1), 0.0)
    assert by_type(run(m), Finished)["y"]
    pool = ReplicaModel(cfg(kv_capacity_tokens=100))
    with pytest.raises(PromptTooLong, match=r"\(94 tokens\)"):
        pool.submit(req("z", list(range(94)), 0), 0.0)
    with pytest.raises(ValueError, match=">= 7"):
        cfg(context_length=6)


def test_bad_requests_raise_typed_errors() -> None:
    m = ReplicaModel(cfg(enable_session_radix_cache=True))
    m.submit(req("a", [1, 2, 3], 100), 0.0)
    with pytest.raises(DuplicateRequest):
        m.submit(req("a", [1, 2, 3], 1), 0.0)
    with pytest.raises(UnknownSession):  # a legacy (session_params) session must be open
        m.submit(req("b", [1, 2, 3], 1, session_id="nope", legacy_session=True), 0.0)
    m.submit(req("b2", [1, 2, 3], 1, session_id="implicit"), 0.0)  # radix-native: begins on use
    assert m.has_session("implicit")
    with pytest.raises(InvalidRequest):
        m.submit(Request.from_page_keys("c", [1, 2, 3], 4, 1), 0.0)  # 3 pages cannot fit 4 tokens


def test_priority_scheduling_orders_the_waiting_queue() -> None:
    m = ReplicaModel(cfg(max_running_requests=1, enable_priority_scheduling=True))
    m.submit(req("first", [1] * 8, 20), 0.0)  # occupies the only slot
    m.submit(req("low", [2] * 8, 1, priority=1), 0.001)
    m.submit(req("high", [3] * 8, 1, priority=10), 0.002)
    m.submit(req("mid", [4] * 8, 1, priority=5), 0.003)
    ft = by_type(run(m), FirstToken)
    order = sorted(("low", "high", "mid"), key=lambda r: ft[r].time)
    assert order == ["high", "mid", "low"]
    fcfs = ReplicaModel(cfg(max_running_requests=1))
    fcfs.submit(req("first", [1] * 8, 20), 0.0)
    fcfs.submit(req("low", [2] * 8, 1, priority=1), 0.001)
    fcfs.submit(req("high", [3] * 8, 1, priority=10), 0.002)
    ft2 = by_type(run(fcfs), FirstToken)
    assert ft2["low"].time < ft2["high"].time


def test_low_values_first_option() -> None:
    m = ReplicaModel(
        cfg(max_running_requests=1, enable_priority_scheduling=True, schedule_low_priority_values_first=True)
    )
    m.submit(req("first", [1] * 8, 20), 0.0)
    m.submit(req("p9", [2] * 8, 1, priority=9), 0.001)
    m.submit(req("p0", [3] * 8, 1, priority=0), 0.002)
    ft = by_type(run(m), FirstToken)
    assert ft["p0"].time < ft["p9"].time


def test_coalesced_segments_give_the_same_times_as_step_by_step() -> None:
    """Arrivals that cut decode segments, and a streaming horizon, change nothing in the times."""

    def scenario(horizon: float | None, progress: bool) -> dict[str, tuple[float, int]]:
        m = ReplicaModel(cfg(), decode_horizon_s=horizon, emit_progress=progress)
        arrivals = [(0.0, "a", 40, 200), (0.013, "b", 64, 50), (0.3, "c", 32, 120), (0.31, "d", 300, 5)]
        out: list[Event] = []
        for t, rid, n, new in arrivals:
            out += m.advance(t)
            m.submit(req(rid, [hash((rid, i)) % 1000 for i in range(n)], new), t)
        out += run(m)
        return {e.rid: (round(e.time, 9), e.completion_tokens) for e in out if isinstance(e, Finished)}

    coalesced = scenario(None, False)
    assert coalesced == scenario(0.005, True)
    assert {k: v[1] for k, v in coalesced.items()} == {"a": 200, "b": 50, "c": 120, "d": 5}


def test_progress_events_are_cumulative() -> None:
    m = ReplicaModel(cfg(), decode_horizon_s=0.03, emit_progress=True)
    m.submit(req("a", [1] * 8, 20), 0.0)
    ev = run(m)
    counts = [e.completion_tokens for e in ev if isinstance(e, TokensGenerated)]
    assert counts == sorted(counts)
    assert len(counts) >= 3
    assert counts[-1] <= 20


def test_abort_waiting_and_running() -> None:
    m = ReplicaModel(cfg(max_running_requests=1))
    m.submit(req("run", [1] * 8, 500), 0.0)
    m.submit(req("wait", [2] * 8, 5), 0.0)
    m.advance(0.1)
    assert m.abort("wait", 0.1)
    assert not m.abort("nope", 0.1)
    assert m.abort("run", 0.2)
    ev = m.advance(0.3)
    fin = by_type(ev, Finished)
    assert fin["wait"].finish_reason == "abort"
    assert fin["run"].finish_reason == "abort"
    assert 0 < fin["run"].completion_tokens < 500
    assert m.load().num_running == 0
    assert m.load().used_tokens == 0
    assert m.next_event_time() is None


def _fill_pool(m: ReplicaModel, name: str, token: int, t0: float) -> None:
    """Unrelated traffic that needs the whole 400-token pool over time (one request a second)."""
    for i in range(6):
        m.submit(req(f"{name}{i}", [token + i] * 150, 2), t0 + i)
        run(m)


def test_sessions_protect_their_prefix_under_pressure() -> None:
    m = ReplicaModel(cfg(kv_capacity_tokens=400, enable_session_radix_cache=True))
    m.open_session("s", 0.0)
    agent = list(range(100))
    m.submit(req("turn1", agent, 2, session_id="s"), 0.0)
    run(m)
    _fill_pool(m, "noise", 10_000, 1.0)
    m.submit(req("turn2", [*agent, 7, 7, 7, 7], 1, session_id="s"), 20.0)
    ft = by_type(run(m), FirstToken)["turn2"]
    assert isinstance(ft, FirstToken)
    assert ft.cached_tokens >= 100
    # after closing, the same pressure evicts it
    m.close_session("s", 21.0)
    _fill_pool(m, "more", 20_000, 22.0)
    m.submit(req("turn3", [*agent, 7, 7, 7, 7], 1), 40.0)
    ft3 = by_type(run(m), FirstToken)["turn3"]
    assert isinstance(ft3, FirstToken)
    assert ft3.cached_tokens == 0
    with pytest.raises(UnknownSession):
        m.close_session("s", 41.0)


def test_without_the_session_radix_cache_a_sessions_prefix_is_ordinary_cache() -> None:
    """SGLang's default (no ``--enable-session-radix-cache``): a top-level ``session_id`` begins
    no session and references nothing, so the same pressure evicts the prefix."""
    m = ReplicaModel(cfg(kv_capacity_tokens=400))
    agent = list(range(100))
    m.submit(req("turn1", agent, 2, session_id="s"), 0.0)
    run(m)
    assert not m.has_session("s")
    assert m.load().open_sessions == 0
    _fill_pool(m, "noise", 10_000, 1.0)
    m.submit(req("turn2", [*agent, 7, 7, 7, 7], 1, session_id="s"), 20.0)
    ft = by_type(run(m), FirstToken)["turn2"]
    assert isinstance(ft, FirstToken)
    assert ft.cached_tokens == 0


def test_kv_events_counters_and_flush() -> None:
    m = ReplicaModel(cfg())
    m.submit(req("a", list(range(16)), 1), 0.0)
    run(m)
    kv = m.drain_kv_events()
    assert any(isinstance(e, BlockStored) for e in kv)
    c = m.counters()
    assert (c.requests, c.prompt_tokens, c.cached_tokens, c.completion_tokens) == (1, 16, 0, 1)
    m.submit(req("b", list(range(100)), 50), 1.0)
    assert not m.flush_cache()  # refused while busy, like SGLang
    run(m)
    assert m.flush_cache()
    assert m.drain_kv_events()[-1] == AllBlocksCleared()
    assert m.load().cached_tokens_in_pool == 0


def test_page_key_requests_share_prefixes() -> None:
    m = ReplicaModel(cfg(page_size=64), record_kv_events=False)
    m.submit(Request.from_page_keys("a", [11, 12, 13, 14], 4 * 64 + 10, 5), 0.0)
    run(m)
    m.submit(Request.from_page_keys("b", [11, 12, 13, 99], 4 * 64 + 3, 5), 1.0)
    ft = by_type(run(m), FirstToken)["b"]
    assert isinstance(ft, FirstToken)
    assert ft.cached_tokens == 3 * 64

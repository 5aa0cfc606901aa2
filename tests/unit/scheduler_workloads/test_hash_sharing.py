"""Generated and copied sessions keep one int object per distinct block hash (memory), with the
values the hash rules define."""

from __future__ import annotations

import pytest

from saga.scheduler.workloads.synthetic import SweBenchParams, _chain, swe_bench_session
from saga.scheduler.workloads.transform import copy_session, shared_chain, stable_hash

pytestmark = pytest.mark.unit


def test_swe_bench_calls_extend_one_stream() -> None:
    s = swe_bench_session(7, 3, SweBenchParams())
    bs = s.block_size
    shared = SweBenchParams().system_tokens // bs
    grew = 0
    for a, b in zip(s.calls, s.calls[1:], strict=False):
        if b.block_hashes[: len(a.block_hashes)] != a.block_hashes:
            continue  # a context reset starts a new stream
        grew += 1
        assert all(x is y for x, y in zip(a.block_hashes, b.block_hashes, strict=False))
    assert grew > 0
    c = s.calls[0]
    assert c.block_hashes[:shared] == shared_chain(s.agent_type, shared)
    # the values are the chain's, as when each call computed its own
    last = s.calls[1].block_hashes[shared:]  # a reset comes only past 128k tokens
    assert len(last) > 0
    assert last == _chain(stable_hash(f"{s.session_id}:0"), shared, shared + len(last))


def test_a_copy_shares_its_new_hashes_across_calls() -> None:
    s = swe_bench_session(7, 3, SweBenchParams())
    c = copy_session(s, 2)
    assert c.session_id.endswith("#2")
    a, b = c.calls[0].block_hashes, c.calls[1].block_hashes
    assert a == b[: len(a)]
    assert all(x is y for x, y in zip(a, b, strict=False))
    keep = s.shared_prefix_tokens // s.block_size
    assert a[:keep] == s.calls[0].block_hashes[:keep]  # the shared chain is kept
    assert set(a[keep:]).isdisjoint(s.calls[0].block_hashes[keep:])  # own namespace

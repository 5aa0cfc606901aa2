"""Quota.share: one process's share of a tenant's quotas while a shared ledger decides locally."""

from __future__ import annotations

import pytest

from saga.service.state.memory_quotas import LocalQuotaLedger
from saga.service.state.quota_api import NO_QUOTA, Claim, Quota

pytestmark = pytest.mark.unit


def test_one_process_or_fewer_keeps_the_whole_quota() -> None:
    q = Quota(max_active_sessions=4, max_calls_per_second=2.5, max_kv_tokens=1000)
    assert q.share(1) is q
    assert q.share(0) is q  # n is at least 1: the process itself
    assert q.share(-3) is q


def test_counts_are_floored_the_rate_divided_exactly() -> None:
    q = Quota(max_active_sessions=4, max_calls_per_second=10.0, max_kv_tokens=1000)
    assert q.share(2) == Quota(max_active_sessions=2, max_calls_per_second=5.0, max_kv_tokens=500)
    assert q.share(3) == Quota(max_active_sessions=1, max_calls_per_second=10.0 / 3, max_kv_tokens=333)
    for n in range(1, 9):  # the shares never sum above the quota while it is at least n
        s = Quota(max_active_sessions=8, max_kv_tokens=1001).share(n)
        assert n * s.max_active_sessions <= 8
        assert n * s.max_kv_tokens <= 1001


def test_a_share_is_at_least_one_and_unlimited_stays_unlimited() -> None:
    q = Quota(max_active_sessions=2, max_calls_per_second=0.5, max_kv_tokens=3)
    assert q.share(5) == Quota(max_active_sessions=1, max_calls_per_second=0.1, max_kv_tokens=1)
    assert NO_QUOTA.share(4) == NO_QUOTA  # 0 is none, never a share of 0
    assert not NO_QUOTA.share(4).limited
    assert Quota(max_kv_tokens=100).share(4) == Quota(max_kv_tokens=25)


def test_a_local_bucket_at_a_share_of_the_rate_holds_its_share_of_the_burst() -> None:
    led, q = LocalQuotaLedger(), Quota(max_calls_per_second=6.0).share(3)
    assert [led.claim_now("acme", Claim(call=True), q, 0.0).admitted for _ in range(3)] == [True, True, False]
    v = led.claim_now("acme", Claim(call=True), q, 0.0)
    assert v.refused_by == "calls"
    assert v.retry_after_s == pytest.approx(0.5)  # 2 calls/s
    slow = Quota(max_calls_per_second=1.0).share(4)  # below one call per second: a bucket of 1
    assert led.claim_now("slow", Claim(call=True), slow, 0.0).admitted
    assert led.claim_now("slow", Claim(call=True), slow, 0.0).retry_after_s == pytest.approx(4.0)

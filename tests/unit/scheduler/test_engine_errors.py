"""Bad input to the engine raises the typed errors of ``scheduler/api.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from saga.scheduler.api import (
    CallCompleted,
    CallSubmitted,
    FirstToken,
    InvalidInput,
    Prompt,
    Reject,
    ReplicaAdded,
    ReplicaLoad,
    SessionEnd,
    SessionEnded,
    SessionStart,
    TenantMismatch,
    ToolStarted,
    UnknownCall,
    UnknownReplica,
    UnknownSession,
    Usage,
)
from saga.scheduler.engine import Engine
from saga.scheduler.settings import EngineSettings, RetentionSettings

pytestmark = pytest.mark.unit


def _call(
    cid: str, sid: str | None, tokens: int = 100, new: int = 10, tenant: str = "default"
) -> CallSubmitted:
    return CallSubmitted(cid, sid, Prompt(tokens), new, tenant=tenant)


def test_unknown_session(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    with pytest.raises(UnknownSession, match="nope"):
        e.handle(_call("c1", "nope"))
    with pytest.raises(UnknownSession):
        e.handle(ToolStarted("nope", "bash"))
    with pytest.raises(UnknownSession):
        e.handle(SessionEnd("nope"))


def test_call_after_session_end(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    e.handle(SessionStart("s", "t", "a"))
    e.handle(SessionEnd("s"))
    with pytest.raises(SessionEnded, match="ended"):
        e.handle(_call("c1", "s"))
    with pytest.raises(SessionEnded):
        e.handle(SessionEnd("s"))
    with pytest.raises(InvalidInput):
        e.handle(SessionStart("s", "t", "a"))


def test_negative_tokens(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    e.handle(SessionStart("s", "t", "a"))
    with pytest.raises(InvalidInput, match="negative"):
        e.handle(_call("c1", "s", tokens=-1))
    with pytest.raises(InvalidInput, match="negative"):
        e.handle(_call("c2", "s", new=-5))
    acts = e.handle(_call("c3", "s"))
    assert acts
    with pytest.raises(InvalidInput, match="negative"):
        e.handle(CallCompleted("c3", Usage(-1, 0, 0)))


def test_unknown_call_and_replica(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    with pytest.raises(UnknownCall):
        e.handle(CallCompleted("x", Usage(1, 0, 1)))
    with pytest.raises(UnknownCall):
        e.handle(FirstToken("x"))
    with pytest.raises(UnknownReplica):
        e.handle(ReplicaLoad("rx", 0, 0, 0, 10))
    with pytest.raises(InvalidInput):
        e.handle(ReplicaAdded("r0", 10, 1))
    with pytest.raises(InvalidInput):
        e.handle(ReplicaAdded("r9", 0, 1))


def test_duplicates_and_empty_ids(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    e.handle(SessionStart("s", "t", "a"))
    e.handle(_call("c1", "s"))
    with pytest.raises(InvalidInput, match="duplicate"):
        e.handle(_call("c1", "s"))
    with pytest.raises(InvalidInput):
        e.handle(_call("", "s"))
    with pytest.raises(InvalidInput):
        e.handle(SessionStart("", "t", "a"))
    with pytest.raises(InvalidInput, match="block_size"):
        e.handle(CallSubmitted("c9", "s", Prompt(100, (1, 2), 0), 1))


def test_tenant_mismatch(make_engine: Callable[..., Engine]) -> None:
    e = make_engine()
    e.handle(SessionStart("s", "alice", "a"))
    with pytest.raises(TenantMismatch):
        e.handle(_call("c1", "s", tenant="bob"))


def test_bad_settings_name_the_field(make_engine: Callable[..., Engine]) -> None:
    with pytest.raises(InvalidInput, match=r"retention\.mode"):
        make_engine(settings=EngineSettings(retention=RetentionSettings(mode="forever")))
    with pytest.raises(InvalidInput, match="max_ttl_s"):
        make_engine(settings=EngineSettings(retention=RetentionSettings(max_ttl_s=-1)))


def test_prompt_too_long_and_no_replica_are_rejections(make_engine: Callable[..., Engine]) -> None:
    e = make_engine(kv=1000)
    (a,) = e.handle(_call("c1", None, tokens=5000))
    assert type(a) is Reject
    assert a.reason == "prompt_too_long"
    e2 = make_engine(replicas=0)
    (b,) = e2.handle(_call("c1", None))
    assert type(b) is Reject
    assert b.reason == "no_replica"

from __future__ import annotations

import pytest

from saga.client import AsyncSagaClient

from .conftest import Stack

pytestmark = pytest.mark.integration


async def test_sdk_session_roundtrip(stack: Stack) -> None:
    async with AsyncSagaClient(stack.grpc_target) as c, c.session(agent="swe") as s:
        out = await s.generate("hello world " * 20, max_new_tokens=8)
        assert out.usage.completion_tokens > 0
        assert out.replica_id in ("r0", "r1")
        async with s.tool("pytest"):
            pass
        chunks = [ch async for ch in s.stream("hello world " * 20 + "more", max_new_tokens=8)]
        assert chunks[-1].usage is not None
        assert "".join(ch.text for ch in chunks)

"""SAGA's KV event wire format against SGLang's own code (``srt/disaggregation/kv_events.py``).

SGLang's publisher module needs only ``msgspec``, ``pyzmq``, ``pydantic`` and ``psutil`` (with
its ``utils/network.py``), so its real code runs here without a GPU (taken from the sample
image's release, ``conftest.py``):

Every test runs for each pinned release (``conftest.py``: the oldest supported, whose events are
arrays, and the sample image's, whose events are maps):

- what the emulator publishes (``saga.kv_events.encode_batch``, in that release's shape) decodes
  with SGLang's msgspec types, event for event;
- what SGLang's types encode decodes with SAGA's reader (``decode_batch``), ours and theirs
  agreeing on every field;
- SGLang's ``ZmqEventPublisher``, as attention DP rank 0 and 1, binds the ports + rank that
  SAGA subscribes to, and a batch lost on the way is replayed from its replay endpoint into
  SAGA's view without clearing it (``scripts/check_sglang_kv_events.py``).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from saga.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, WireEvent, decode_batch, encode_batch

from .conftest import wire_of

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sgl(sglang_src: Path) -> ModuleType:
    """SGLang's KV event module, imported from the extracted sources; the stub ``sglang``
    packages are taken out of ``sys.modules`` again so no other test sees them."""
    sys.path.insert(0, str(sglang_src))
    try:
        mod = importlib.import_module("sglang.srt.disaggregation.kv_events")
    finally:
        sys.path.remove(str(sglang_src))
        for name in [n for n in sys.modules if n == "sglang" or n.startswith("sglang.")]:
            del sys.modules[name]
    return mod


def test_emulator_batches_decode_with_sglang_types(sgl: Any, sglang_release: tuple[str, Any]) -> None:
    import msgspec

    events: list[WireEvent] = [
        BlockStored(block_hashes=(11, 12), parent_block_hash=None, token_ids=tuple(range(32)), block_size=16),
        BlockStored(block_hashes=(13,), parent_block_hash=12, token_ids=tuple(range(32, 48)), block_size=16),
        BlockRemoved(block_hashes=(13,)),
        AllBlocksCleared(),
    ]
    payload = encode_batch(12.5, events, wire=wire_of(sglang_release[0]))
    theirs = msgspec.msgpack.Decoder(sgl.KVEventBatch).decode(payload)
    assert theirs.ts == 12.5
    kinds = [type(e).__name__ for e in theirs.events]
    assert kinds == ["BlockStored", "BlockStored", "BlockRemoved", "AllBlocksCleared"]
    first, second = theirs.events[0], theirs.events[1]
    assert list(first.block_hashes) == [11, 12]
    assert first.parent_block_hash is None
    assert list(first.token_ids) == list(range(32))
    assert first.block_size == 16
    assert first.lora_id is None
    assert second.parent_block_hash == 12
    assert list(theirs.events[2].block_hashes) == [13]


def test_sglang_batches_decode_with_saga_reader(sgl: Any) -> None:
    import msgspec

    batch = sgl.KVEventBatch(
        ts=3.25,
        events=[
            sgl.BlockStored(
                block_hashes=[-7, 8],
                parent_block_hash=5,
                token_ids=list(range(8)),
                block_size=4,
                lora_id=None,
            ),
            sgl.BlockRemoved(block_hashes=[8]),
            sgl.AllBlocksCleared(),
        ],
    )
    ours = decode_batch(msgspec.msgpack.Encoder().encode(batch))
    assert ours.ts == 3.25
    assert ours.events == (
        BlockStored(block_hashes=(-7, 8), parent_block_hash=5, token_ids=tuple(range(8)), block_size=4),
        BlockRemoved(block_hashes=(8,)),
        AllBlocksCleared(),
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_sglang_publisher_ports_and_replay_reach_saga_view(sglang_src: Path, rank: int) -> None:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "check_sglang_kv_events.py"),
        "--sglang-src",
        str(sglang_src),
        "--python",
        sys.executable,
        "--rank",
        str(rank),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout.splitlines()[-1]

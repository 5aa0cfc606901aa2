"""What the engine is told about a prompt: its length in tokens and its prefix-block hashes.

The scheduler holds no tokenizer (it would cost milliseconds per call and tie SAGA to one
model). Token ids given by the client are used as they are: ``num_tokens`` is their count and
block ``i``'s hash covers ids ``[0, (i+1)·block_size)``. A text prompt is measured in
characters: ``num_tokens = ceil(len(text) / chars_per_token)`` and block ``i`` covers
characters ``[0, (i+1)·block_size·chars_per_token)``. The character blocks do not line up
with the replica's real token pages, but two prompts that share a prefix share the same
leading block hashes, which is what prefix-aware placement needs.

Hashes are cumulative (``h_i = H(h_{i-1} || block_i)``) 63-bit BLAKE2b digests, stable across
processes (several scheduler processes must agree on them). At most ``max_blocks`` blocks are
hashed per prompt, bounding the cost (a 128k-token prompt at block 16 is 8192 blocks, ~2 ms;
with the default 4096 the tail of very long prompts is not hashed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b

from saga.scheduler.api import Prompt


def _chain(prev: int, data: bytes) -> int:
    h = blake2b(prev.to_bytes(8, "little") + data, digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def text_prompt(text: str, *, chars_per_token: float, block_size: int, max_blocks: int) -> Prompt:
    n = math.ceil(len(text) / chars_per_token) if text else 0
    step = max(1, int(block_size * chars_per_token))
    hashes: list[int] = []
    h = 0
    data = text.encode("utf-8", "surrogatepass")
    # Work on characters (not bytes) so equal text gives equal blocks whatever the encoding.
    full = min(len(text) // step, max_blocks)
    if full and len(data) == len(text):  # ASCII: byte offsets are character offsets
        for i in range(full):
            h = _chain(h, data[i * step : (i + 1) * step])
            hashes.append(h)
    else:
        for i in range(full):
            h = _chain(h, text[i * step : (i + 1) * step].encode("utf-8", "surrogatepass"))
            hashes.append(h)
    return Prompt(num_tokens=n, block_hashes=tuple(hashes), block_size=block_size if hashes else 0)


def ids_block_hash(prev: int, block: Sequence[int]) -> int:
    """Hash of the token-id block after the prefix hashed ``prev`` (0: the empty prefix). The
    KV event view (:mod:`saga.service.kv_view`) re-hashes a replica's published token ids with
    it, so its hashes equal :func:`ids_prompt`'s. Ids must be in ``[0, 2**32)``."""
    return _chain(prev, b"".join(int(t).to_bytes(4, "little") for t in block))


def ids_prompt(ids: Sequence[int], *, block_size: int, max_blocks: int) -> Prompt:
    hashes: list[int] = []
    h = 0
    full = min(len(ids) // block_size, max_blocks)
    for i in range(full):
        h = ids_block_hash(h, ids[i * block_size : (i + 1) * block_size])
        hashes.append(h)
    return Prompt(num_tokens=len(ids), block_hashes=tuple(hashes), block_size=block_size if hashes else 0)


def messages_text(messages: object) -> str:
    """The text of an OpenAI ``messages`` list, for length estimation and prefix hashing.

    Roles and contents are concatenated in order (tool calls' arguments included), so two
    requests of one conversation share a prefix exactly as their chat templates would.
    """
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        parts.append(f"<{m.get('role', '')}>")
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for c in content:
                if isinstance(c, dict) and isinstance(c.get("text"), str):
                    parts.append(c["text"])
        for tc in m.get("tool_calls") or ():
            if isinstance(tc, dict):
                fn = tc.get("function") or {}
                if isinstance(fn, dict):
                    parts.append(f"{fn.get('name', '')}({fn.get('arguments', '')})")
    return "\n".join(parts)

"""Prompts that reproduce a workload's prefix structure on a real tokenizer (pure).

Every LLM call of a trace carries cumulative prefix-block hashes (``LLMCall.block_hashes``,
``block_size`` tokens each). The benchmark turns each block hash into ``block_size`` token ids
derived only from that hash (a SplitMix64 stream seeded by the hash), so **equal block hashes
give equal token prefixes** and the replicas' radix caches hit exactly as in the trace. Tokens
past the last full block (the prompt's tail) are derived from ``(session id, call index)``:
unique to the call. A session without hashes gets an append-only prompt derived from its id
(call ``i+1`` extends call ``i``), the assumption the workload's demand model makes too.

Text encoding: id ``t`` is written as the word ``" w<t>"``, which the emulator's tokenizer maps
back to ``t`` (``saga.emulator.core.tokenizer``). Ids are drawn from ``[10000, 32000)`` so every
token is exactly :data:`CHARS_PER_TOKEN` (7) characters; SAGA's character-based length
estimate (``spec.tokens.chars_per_token``) is set to the same value, so it measures prompts
exactly. On real SGLang (``bench/gpu``) the same text is tokenized by the model's tokenizer:
lengths differ, prefix equality is preserved.
"""

from __future__ import annotations

import zlib

import numpy as np

from saga.graphs.trace import SessionTrace

ID_LO = 10_000
ID_HI = 32_000  # the emulator's vocabulary size; ids stay below it
CHARS_PER_TOKEN = 7  # len(" w12345")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(seed: int, n: int) -> np.ndarray:
    """``n`` SplitMix64 outputs of the stream seeded by ``seed`` (vectorised, wrapping)."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x & _MASK64


def token_ids(seed: int, n: int) -> list[int]:
    """``n`` token ids in ``[ID_LO, ID_HI)`` derived only from ``seed``."""
    if n <= 0:
        return []
    ids: list[int] = (ID_LO + (_splitmix(seed, n) % np.uint64(ID_HI - ID_LO))).astype(np.int64).tolist()
    return ids


def ids_text(ids: list[int]) -> str:
    return "".join(f" w{t}" for t in ids)


def _str_seed(text: str) -> int:
    return (zlib.crc32(text.encode()) << 32) | zlib.crc32(text[::-1].encode())


class PromptBuilder:
    """Builds call prompts; caches the text of each block hash (prompts repeat their prefix)."""

    def __init__(self, max_cached_blocks: int = 200_000) -> None:
        self._blocks: dict[tuple[int, int], str] = {}
        self._max = max_cached_blocks

    def block_text(self, h: int, block_size: int) -> str:
        key = (h, block_size)
        text = self._blocks.get(key)
        if text is None:
            text = ids_text(token_ids(h, block_size))
            if len(self._blocks) >= self._max:
                self._blocks.clear()
            self._blocks[key] = text
        return text

    def call_text(self, session: SessionTrace, index: int) -> str:
        """The prompt text of ``session.calls[index]`` (``prompt_tokens`` tokens, min 1)."""
        head, tail = self.call_parts(session, index)
        return head + tail

    def call_parts(self, session: SessionTrace, index: int) -> tuple[str, str]:
        """:meth:`call_text` split into ``(head, tail)``: ``head`` is what other calls may share
        (the full blocks; the whole text of a session without hashes, whose next call extends
        it), ``tail`` the call-unique rest (empty without hashes)."""
        call = session.calls[index]
        n = max(1, call.prompt_tokens)
        bs = session.block_size
        if bs > 0 and call.block_hashes:
            full = min(len(call.block_hashes), n // bs)
            head = "".join(self.block_text(h, bs) for h in call.block_hashes[:full])
            tail_n = n - full * bs
            tail = ids_text(token_ids(_str_seed(f"{session.session_id}#{index}"), tail_n))
            return head, tail
        # No hashes: an append-only context derived from the session id.
        return ids_text(token_ids(_str_seed(session.session_id), n)), ""


def prompt_token_ids(text: str) -> list[int]:
    """Inverse of :func:`ids_text` (tests, and the GPU script's sanity check)."""
    return [int(w) for w in text.split(" w") if w]

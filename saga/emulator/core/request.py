"""Requests in, events out: the value types of the replica model.

A prompt reaches the model either as token ids or as pre-hashed **page keys**: one key per full
page, each key identifying the whole prefix up to the end of its page (a chained hash, like
SGLang's and vLLM's block hashes and the traces' cumulative ``hash_ids``). The model relies on
that chaining: two prompts share their first ``k`` pages exactly when their ``k``-th keys are
equal. :func:`chain_page_keys` turns token ids into such keys.

Generated tokens are a deterministic function of the request's seed (:func:`output_token_ids`),
so the HTTP shell and the model agree on them and a replay gives the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VOCAB_SIZE = 32_000
"""Token ids are in ``[0, VOCAB_SIZE)`` (Llama-2-sized vocabulary; only used for output ids)."""

_MASK64 = (1 << 64) - 1


def chain_page_keys(token_ids: Sequence[int], page_size: int, parent: int = 0, start: int = 0) -> list[int]:
    """Chained keys of the full pages of ``token_ids[start:]``.

    ``parent`` is the key of the page before ``start`` (0 for the empty prefix). Key ``i`` is
    ``hash((key i-1, tokens of page i))``: Python's hash of a tuple of ints is not salted, so the
    keys are equal across processes and runs.
    """
    keys: list[int] = []
    n_full = (len(token_ids) - start) // page_size
    key = parent
    for p in range(n_full):
        lo = start + p * page_size
        key = hash((key, tuple(token_ids[lo : lo + page_size])))
        keys.append(key)
    return keys


def output_token_ids(seed: int, count: int, start: int = 0) -> list[int]:
    """The ``count`` generated token ids from position ``start`` for a request seeded ``seed``.

    A splitmix64 step per position: deterministic, independent of batch composition and cheap.
    """
    out: list[int] = []
    for i in range(start, start + count):
        z = (seed * 0x9E3779B97F4A7C15 + (i + 1) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
        out.append(z % VOCAB_SIZE)
    return out


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request.

    Build it with :meth:`from_tokens` (the model can then also cache the generated tokens) or
    :meth:`from_page_keys` (pre-hashed prompts, e.g. trace block hashes; only the prompt's pages
    are cached, since the output's page keys are unknown).
    """

    rid: str
    num_tokens: int
    """Prompt length in tokens."""
    page_keys: tuple[int, ...]
    """Chained key of each full prompt page (``num_tokens // page_size`` of them or fewer)."""
    max_new_tokens: int
    """Tokens to generate (the emulator always generates exactly this many: finish reason
    ``length``)."""
    token_ids: tuple[int, ...] | None = None
    """Prompt token ids when known (``from_tokens``)."""
    session_id: str | None = None
    """Session this request belongs to. A radix-native session (SGLang's top-level
    ``session_id`` on a replica with ``--enable-session-radix-cache``) begins on first use and
    references the request's cached entries, which are then evicted last until the session
    closes; without the flag the replica ignores a top-level id."""
    legacy_session: bool = False
    """The session came as ``session_params.id``: SGLang's continual-prompt session, which must
    have been opened and whose entries are not referenced (only the top-level id is radix-native)."""
    priority: int | None = None
    """Scheduling priority (used when the replica enables priority scheduling)."""
    seed: int = 0
    """Seed of the deterministic output tokens."""

    @classmethod
    def from_tokens(
        cls,
        rid: str,
        token_ids: Sequence[int],
        max_new_tokens: int,
        page_size: int,
        *,
        session_id: str | None = None,
        legacy_session: bool = False,
        priority: int | None = None,
        seed: int | None = None,
    ) -> Request:
        ids = tuple(token_ids)
        keys = tuple(chain_page_keys(ids, page_size))
        if seed is None:
            seed = hash(ids) & 0x7FFFFFFF
        return cls(
            rid=rid,
            num_tokens=len(ids),
            page_keys=keys,
            max_new_tokens=max_new_tokens,
            token_ids=ids,
            session_id=session_id,
            legacy_session=legacy_session,
            priority=priority,
            seed=seed,
        )

    @classmethod
    def from_page_keys(
        cls,
        rid: str,
        page_keys: Sequence[int],
        num_tokens: int,
        max_new_tokens: int,
        *,
        session_id: str | None = None,
        legacy_session: bool = False,
        priority: int | None = None,
        seed: int = 0,
    ) -> Request:
        return cls(
            rid=rid,
            num_tokens=num_tokens,
            page_keys=tuple(page_keys),
            max_new_tokens=max_new_tokens,
            session_id=session_id,
            legacy_session=legacy_session,
            priority=priority,
            seed=seed,
        )


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The prompt is prefilled and the first output token exists (time to first token)."""

    rid: str
    time: float
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens served from the prefix cache (page-aligned, at most ``prompt_tokens - 1``)."""
    arrival_time: float


@dataclass(frozen=True, slots=True)
class TokensGenerated:
    """Progress of a decoding request at the end of a (coalesced) decode segment. Emitted only
    when the model was built with ``emit_progress=True`` (the HTTP shell streams from it)."""

    rid: str
    time: float
    completion_tokens: int
    """Output tokens generated so far (cumulative)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The request left the replica."""

    rid: str
    time: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: str
    """``"length"`` (generated ``max_new_tokens``) or ``"abort"``."""
    arrival_time: float
    first_token_time: float | None


Event = FirstToken | TokensGenerated | Finished


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Pages entered the prefix cache (like SGLang's KV event ``BlockStored``)."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    block_size: int
    token_ids: tuple[int, ...] | None = None
    """The token ids of the stored pages (``len(block_hashes) × block_size`` of them), as SGLang
    publishes them; None for pre-hashed requests (:meth:`Request.from_page_keys`)."""


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Pages left the prefix cache (eviction)."""

    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole prefix cache was flushed."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class Load:
    """A replica's load now (the fields of SGLang's ``/v1/loads``)."""

    num_running: int
    num_waiting: int
    used_tokens: int
    """KV tokens held by running requests (cached prefixes they lock plus their own tokens);
    unreferenced cache entries are free to evict and not counted, like SGLang's token usage."""
    total_tokens: int
    token_usage: float
    """``used_tokens / total_tokens``."""
    cached_tokens_in_pool: int
    """Tokens in the prefix cache (locked or not)."""
    cache_hit_rate: float
    """Cumulative cached / prompt tokens over finished prefills."""
    open_sessions: int

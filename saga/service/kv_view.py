"""One replica's cache as SAGA's prefix-block hashes, rebuilt from its KV events (pure).

The engine's cache view of a replica holds SAGA's cumulative block hashes (``spec.tokens``:
:func:`saga.service.tokens.ids_prompt`, ``block_size`` tokens per block). A replica publishes
*its own* hashes of *its own* pages (SGLang: one ``BlockStored`` per radix page, with the
page's token ids and the previous page's hash; the emulator: one per radix node). The two never
agree by construction (other hash function, other block size), so :class:`ReplicaKvView` maps
them through the token ids every ``BlockStored`` carries:

- For every replica block it keeps SAGA's chain state after that block: the hash of the last
  complete SAGA block of the prefix and the prefix's tokens beyond it (fewer than
  ``block_size``), plus the SAGA hashes the block completed. A stored block's state is its
  parent's state (``parent_block_hash``; none: the empty prefix) extended by its tokens; each
  ``block_size`` tokens completed gives the next SAGA hash (``ids_block_hash``, exactly what
  :func:`ids_prompt` computes for a prompt with those token ids).
- ``BlockStored`` → the SAGA hashes it completed are cached (reference-counted, so a block
  stored twice counts once); ``BlockRemoved`` → they are not any more (a radix cache evicts
  leaves first, so the SAGA blocks ending in a removed page are exactly those no longer fully
  cached); ``AllBlocksCleared`` → nothing is.
- A block whose parent is unknown (stored before this process listened, or lost in a gap)
  cannot be mapped: it is counted (``unmapped``) and skipped, and so are its descendants until
  the prefix is stored again.

:meth:`apply` turns one batch into one ``ReplicaCache`` event (cleared, removed, stored: the
engine applies them in that order, and the two sets are disjoint). :meth:`reset` is what a
sequence gap does: every cached hash becomes unknown (``cleared``) but the chain states stay,
because a chained replica hash always names the same prefix, so later blocks that extend
known prefixes still map. :meth:`snapshot` re-sends the whole view (a replica the engine
(re)learned about).

Memory: one entry per replica block tracked, at most ``max_tracked_blocks`` (oldest dropped
first; a dropped block's SAGA hashes are un-cached, erring towards "not cached").

Limit: mapping needs SGLang's chained hashes (releases whose radix cache computes
``hash_value`` per page); earlier 0.5 releases hashed each page alone and sent no parent, so
their events cannot be placed in a prefix. Text prompts are hashed by characters (no tokenizer
in SAGA, :mod:`saga.service.tokens`) and never match a replica's token blocks: with KV events
on, a replica's view is exact for token-id prompts only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from saga.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch, KvEventDecodeError
from saga.scheduler.api import ReplicaCache
from saga.service.tokens import ids_block_hash

_ID_LIMIT = 1 << 32


@dataclass(slots=True)
class _Block:
    saga_hash: int  # SAGA hash of the last complete SAGA block of the prefix (0: none yet)
    tail: tuple[int, ...]  # tokens of the prefix after that block (< block_size)
    completed: tuple[int, ...]  # SAGA hashes completed inside this replica block
    epoch: int  # counted in the cached set iff equal to the view's epoch


@dataclass(slots=True)
class ApplyStats:
    stored_blocks: int = 0
    removed_blocks: int = 0
    unmapped_blocks: int = 0  # stored blocks whose parent was unknown
    unknown_removed: int = 0  # removed blocks never seen stored


@dataclass(slots=True)
class ReplicaKvView:
    """See the module docstring."""

    replica_id: str
    block_size: int
    max_tracked_blocks: int = 1_000_000
    _blocks: dict[int, _Block] = field(default_factory=dict)
    _cached: dict[int, int] = field(default_factory=dict)  # SAGA hash -> references
    _epoch: int = 0

    @property
    def cached_hashes(self) -> frozenset[int]:
        return frozenset(self._cached)

    @property
    def tracked_blocks(self) -> int:
        return len(self._blocks)

    def reset(self) -> ReplicaCache:
        """Nothing is known to be cached any more (gap, restart); chain states are kept."""
        self._cached.clear()
        self._epoch += 1
        return ReplicaCache(self.replica_id, cleared=True)

    def snapshot(self) -> ReplicaCache:
        return ReplicaCache(self.replica_id, stored=tuple(self._cached), cleared=True)

    def apply(self, batch: KvEventBatch, stats: ApplyStats | None = None) -> ReplicaCache:
        """One batch → one engine event. Raises :class:`KvEventDecodeError` for token ids
        outside ``[0, 2**32)`` (the view is then partly updated: the caller resets it)."""
        st = stats if stats is not None else ApplyStats()
        stored: dict[int, None] = {}
        removed: dict[int, None] = {}
        cleared = False
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                self._store(ev, stored, removed, st)
            elif isinstance(ev, BlockRemoved):
                for rh in ev.block_hashes:
                    b = self._blocks.pop(rh, None)
                    if b is None:
                        st.unknown_removed += 1
                        continue
                    st.removed_blocks += 1
                    self._uncount(b, stored, removed)
            elif isinstance(ev, AllBlocksCleared):
                self._blocks.clear()
                self._cached.clear()
                stored.clear()
                removed.clear()
                cleared = True
        return ReplicaCache(self.replica_id, tuple(stored), tuple(removed), cleared)

    def _store(
        self, ev: BlockStored, stored: dict[int, None], removed: dict[int, None], st: ApplyStats
    ) -> None:
        bs = self.block_size
        saga_hash: int
        tail: tuple[int, ...]
        if ev.parent_block_hash is None:
            saga_hash, tail = 0, ()
        else:
            parent = self._blocks.get(ev.parent_block_hash)
            if parent is None:
                st.unmapped_blocks += len(ev.block_hashes)
                return
            saga_hash, tail = parent.saga_hash, parent.tail
        size = ev.block_size
        for i, rh in enumerate(ev.block_hashes):
            page = ev.token_ids[i * size : (i + 1) * size]
            if any(t < 0 or t >= _ID_LIMIT for t in page):
                raise KvEventDecodeError(f"replica {self.replica_id}: token id outside [0, 2**32)")
            toks = tail + page
            done: list[int] = []
            k = 0
            while len(toks) - k >= bs:
                saga_hash = ids_block_hash(saga_hash, toks[k : k + bs])
                done.append(saga_hash)
                k += bs
            tail = toks[k:]
            old = self._blocks.pop(rh, None)
            if old is not None:
                self._uncount(old, stored, removed)
            b = _Block(saga_hash, tail, tuple(done), self._epoch)
            self._blocks[rh] = b
            st.stored_blocks += 1
            for h in b.completed:
                n = self._cached.get(h, 0)
                self._cached[h] = n + 1
                removed.pop(h, None)
                stored[h] = None
        while len(self._blocks) > self.max_tracked_blocks:
            oldest = next(iter(self._blocks))
            self._uncount(self._blocks.pop(oldest), stored, removed)

    def _uncount(self, b: _Block, stored: dict[int, None], removed: dict[int, None]) -> None:
        if b.epoch != self._epoch:
            return
        for h in b.completed:
            n = self._cached.get(h, 0) - 1
            if n > 0:
                self._cached[h] = n
                continue
            self._cached.pop(h, None)
            stored.pop(h, None)
            removed[h] = None

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

**Data-parallel attention ranks.** With ``--enable-dp-attention`` every attention DP rank of
an SGLang replica has its own scheduler, radix cache and publisher (its own sequence numbers,
block hashes and ``AllBlocksCleared``); the replica caches what *any* rank caches. One view
serves all ranks of a replica: each rank (``rank`` argument, 0 without DP attention) keeps its
own blocks, chain states, reference counts and epoch, and the view holds the union (a SAGA
hash is cached while at least one rank holds it). ``BlockRemoved``, ``AllBlocksCleared`` and a
rank's :meth:`reset` therefore remove only the hashes no other rank holds. With one rank the
results are exactly those of a view without ranks (a reset or a clear is one ``cleared``
event); with several, a rank's reset or clear becomes the ``removed`` hashes only it held, so
the other ranks' blocks stay known.

Memory: one entry per replica block tracked, at most ``max_tracked_blocks`` over all ranks
(oldest of the storing rank dropped first; a dropped block's SAGA hashes are un-cached, erring
towards "not cached").

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
    epoch: int  # counted in the rank's cached set iff equal to the rank's epoch


@dataclass(slots=True)
class _Rank:
    """One attention DP rank's blocks (its own hash space) and reference counts."""

    blocks: dict[int, _Block] = field(default_factory=dict)
    cached: dict[int, int] = field(default_factory=dict)  # SAGA hash -> references in this rank
    epoch: int = 0


@dataclass(slots=True)
class ApplyStats:
    stored_blocks: int = 0
    removed_blocks: int = 0
    unmapped_blocks: int = 0  # stored blocks whose parent was unknown
    unknown_removed: int = 0  # removed blocks never seen stored


@dataclass(slots=True)
class _Delta:
    """Net change of the union during one batch: the engine applies removed, then stored."""

    stored: dict[int, None] = field(default_factory=dict)
    removed: dict[int, None] = field(default_factory=dict)


@dataclass(slots=True)
class ReplicaKvView:
    """See the module docstring."""

    replica_id: str
    block_size: int
    max_tracked_blocks: int = 1_000_000
    _ranks: dict[int, _Rank] = field(default_factory=dict)
    _union: dict[int, int] = field(default_factory=dict)  # SAGA hash -> ranks holding it

    @property
    def cached_hashes(self) -> frozenset[int]:
        return frozenset(self._union)

    @property
    def tracked_blocks(self) -> int:
        return sum(len(r.blocks) for r in self._ranks.values())

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks heard from (or reset) so far."""
        return tuple(sorted(self._ranks))

    def rank_hashes(self, rank: int) -> frozenset[int]:
        """What ``rank`` alone holds (tests, debugging)."""
        r = self._ranks.get(rank)
        return frozenset(r.cached) if r is not None else frozenset()

    def _rank(self, rank: int) -> _Rank:
        r = self._ranks.get(rank)
        if r is None:
            r = self._ranks[rank] = _Rank()
        return r

    def reset(self, rank: int = 0) -> ReplicaCache:
        """Nothing ``rank`` held is known to be cached any more (gap, restart); chain states
        are kept. One ``cleared`` event when no other rank holds anything, else the hashes
        only this rank held, as ``removed``."""
        r = self._rank(rank)
        r.epoch += 1
        if self._alone(rank):
            r.cached.clear()
            self._union.clear()
            return ReplicaCache(self.replica_id, cleared=True)
        d = _Delta()
        self._drop_all(r, d)
        return ReplicaCache(self.replica_id, removed=tuple(d.removed))

    def snapshot(self) -> ReplicaCache:
        return ReplicaCache(self.replica_id, stored=tuple(self._union), cleared=True)

    def apply(self, batch: KvEventBatch, stats: ApplyStats | None = None, rank: int = 0) -> ReplicaCache:
        """One batch of ``rank`` → one engine event. Raises :class:`KvEventDecodeError` for
        token ids outside ``[0, 2**32)`` (the view is then partly updated: the caller resets
        the rank)."""
        st = stats if stats is not None else ApplyStats()
        r = self._rank(rank)
        d = _Delta()
        cleared = False
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                self._store(r, ev, d, st)
            elif isinstance(ev, BlockRemoved):
                for rh in ev.block_hashes:
                    b = r.blocks.pop(rh, None)
                    if b is None:
                        st.unknown_removed += 1
                        continue
                    st.removed_blocks += 1
                    self._uncount(r, b, d)
            elif isinstance(ev, AllBlocksCleared):
                if self._alone(rank):
                    r.blocks.clear()
                    r.cached.clear()
                    self._union.clear()
                    d = _Delta()
                    cleared = True
                else:
                    self._drop_all(r, d)
                    r.blocks.clear()
        return ReplicaCache(self.replica_id, tuple(d.stored), tuple(d.removed), cleared)

    def _alone(self, rank: int) -> bool:
        """No rank but ``rank`` holds anything."""
        return all(not o.cached for k, o in self._ranks.items() if k != rank)

    def _drop_all(self, r: _Rank, d: _Delta) -> None:
        """Every hash ``r`` holds stops counting for it (the union loses those only it held)."""
        for h in r.cached:
            self._union_dec(h, d)
        r.cached.clear()

    def _store(self, r: _Rank, ev: BlockStored, d: _Delta, st: ApplyStats) -> None:
        bs = self.block_size
        saga_hash: int
        tail: tuple[int, ...]
        if ev.parent_block_hash is None:
            saga_hash, tail = 0, ()
        else:
            parent = r.blocks.get(ev.parent_block_hash)
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
            old = r.blocks.pop(rh, None)
            if old is not None:
                self._uncount(r, old, d)
            b = _Block(saga_hash, tail, tuple(done), r.epoch)
            r.blocks[rh] = b
            st.stored_blocks += 1
            for h in b.completed:
                n = r.cached.get(h, 0)
                r.cached[h] = n + 1
                if n == 0:
                    self._union[h] = self._union.get(h, 0) + 1
                d.removed.pop(h, None)
                d.stored[h] = None
        while r.blocks and self.tracked_blocks > self.max_tracked_blocks:
            oldest = next(iter(r.blocks))
            self._uncount(r, r.blocks.pop(oldest), d)

    def _uncount(self, r: _Rank, b: _Block, d: _Delta) -> None:
        if b.epoch != r.epoch:
            return
        for h in b.completed:
            n = r.cached.get(h, 0) - 1
            if n > 0:
                r.cached[h] = n
                continue
            r.cached.pop(h, None)
            self._union_dec(h, d)

    def _union_dec(self, h: int, d: _Delta) -> None:
        n = self._union.get(h, 0) - 1
        if n > 0:
            self._union[h] = n
            return
        self._union.pop(h, None)
        d.stored.pop(h, None)
        d.removed[h] = None

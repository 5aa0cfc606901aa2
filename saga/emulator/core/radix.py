"""Radix tree over chained page keys, with reference counts and two-tier LRU eviction.

Structure. Each node holds a run of page keys (a compressed edge, like SGLang's RadixCache) and
its children by their first key. Because keys are chained (key ``i`` identifies the whole prefix
up to page ``i``), the common length of a node's run and a query is found by binary search: if
the keys at position ``j`` agree, all earlier ones do. Matching a prompt therefore costs
O(nodes on the path x log run length) dictionary/list operations, not O(pages).

References. ``lock_ref`` counts running requests that use a node (and, through their path,
every ancestor); a locked node is never evicted. ``session_ref`` counts open sessions whose
latest request ends at or below the node. Session-referenced nodes stay evictable but only
after every unreferenced one (SGLang's session radix cache semantics: "evicted last").

Eviction. Unlocked leaves sit in a heap ordered by (tier, last access), tier 1 for
session-referenced leaves. Entries are invalidated lazily: a popped entry is used only if the
node is still alive, still an unlocked leaf, and its tier and access time still match; the heap
is rebuilt when stale entries outnumber live nodes. Whole nodes are evicted (as SGLang does), so
one eviction can free a little more than asked. Evicting a leaf can expose its parent as a new
leaf, which is pushed in turn.

Every count here is in **pages**; the replica model multiplies by the page size.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Protocol


class SessionHolder(Protocol):
    """Anything that pins one node for a session (the replica's session record)."""

    node: RadixNode | None


class RadixNode:
    __slots__ = ("children", "holders", "keys", "last_access", "lock_ref", "parent", "session_ref")

    def __init__(self, keys: list[int], parent: RadixNode | None, now: float) -> None:
        self.keys = keys
        self.parent = parent
        self.children: dict[int, RadixNode] = {}
        self.lock_ref = 0
        self.session_ref = 0
        self.last_access = now
        self.holders: list[SessionHolder] | None = None

    @property
    def last_key(self) -> int | None:
        return self.keys[-1] if self.keys else None


StoredCallback = Callable[[list[int], "int | None"], None]
RemovedCallback = Callable[[list[int]], None]


def _common_length(run: list[int], keys: Sequence[int], start: int, end: int) -> int:
    """Pages of ``run`` equal to ``keys[start:end]``; ``run[0] == keys[start]`` is known."""
    n = min(len(run), end - start)
    if run[n - 1] == keys[start + n - 1]:
        return n
    lo, hi = 0, n - 1  # run[lo] matches, run[hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run[mid] == keys[start + mid]:
            lo = mid
        else:
            hi = mid
    return lo + 1


class RadixCache:
    """Prefix cache of one replica (see the module docstring)."""

    def __init__(
        self,
        on_stored: StoredCallback | None = None,
        on_removed: RemovedCallback | None = None,
    ) -> None:
        self._on_stored = on_stored
        self._on_removed = on_removed
        self._seq = itertools.count()
        self.reset()

    def reset(self) -> None:
        self.root = RadixNode([], None, 0.0)
        self.root.lock_ref = 1  # never evicted
        self.total_pages = 0
        self.locked_pages = 0
        self.node_count = 0
        self._heap: list[tuple[int, float, int, RadixNode]] = []

    # ------------------------------------------------------------------ lookup / insert

    def peek(self, keys: Sequence[int], max_pages: int) -> int:
        """Pages of ``keys[:max_pages]`` cached now; changes nothing."""
        node = self.root
        i = 0
        limit = min(max_pages, len(keys))
        while i < limit:
            child = node.children.get(keys[i])
            if child is None:
                break
            m = _common_length(child.keys, keys, i, limit)
            i += m
            if m < len(child.keys):
                break
            node = child
        return i

    def match(self, keys: Sequence[int], max_pages: int, now: float) -> tuple[RadixNode, int]:
        """Longest cached prefix of ``keys[:max_pages]``: its last node and its length in pages.

        Splits a node when the match ends inside it, so the returned node ends exactly at the
        matched prefix, and marks the path as accessed at ``now``.
        """
        node = self.root
        i = 0
        limit = min(max_pages, len(keys))
        while i < limit:
            child = node.children.get(keys[i])
            if child is None:
                break
            m = _common_length(child.keys, keys, i, limit)
            if m < len(child.keys):
                child = self._split(child, m)
            node = child
            i += m
        self._touch(node, now)
        return node, i

    def insert(self, keys: Sequence[int], now: float) -> tuple[RadixNode, int]:
        """Insert the prefix ``keys``; returns its last node and the number of new pages."""
        node = self.root
        i = 0
        n = len(keys)
        new_pages = 0
        while i < n:
            child = node.children.get(keys[i])
            if child is None:
                leaf = RadixNode(list(keys[i:]), node, now)
                node.children[keys[i]] = leaf
                new_pages = n - i
                self.total_pages += new_pages
                self.node_count += 1
                if self._on_stored is not None:
                    self._on_stored(leaf.keys, node.last_key)
                node = leaf
                break
            m = _common_length(child.keys, keys, i, n)
            if m < len(child.keys):
                child = self._split(child, m)
            node = child
            i += m
        self._touch(node, now)
        return node, new_pages

    def _split(self, node: RadixNode, at: int) -> RadixNode:
        """Cut ``node`` after ``at`` pages; returns the new upper node."""
        parent = node.parent
        assert parent is not None
        upper = RadixNode(node.keys[:at], parent, node.last_access)
        upper.lock_ref = node.lock_ref
        upper.session_ref = node.session_ref
        node.keys = node.keys[at:]
        node.parent = upper
        upper.children[node.keys[0]] = node
        parent.children[upper.keys[0]] = upper
        self.node_count += 1
        return upper

    def _touch(self, node: RadixNode | None, now: float) -> None:
        leaf = node
        while node is not None:
            node.last_access = now
            node = node.parent
        if leaf is not None:
            self._push_if_evictable(leaf)

    # ------------------------------------------------------------------ references

    def lock(self, node: RadixNode) -> None:
        n: RadixNode | None = node
        while n is not None:
            if n.lock_ref == 0:
                self.locked_pages += len(n.keys)
            n.lock_ref += 1
            n = n.parent

    def unlock(self, node: RadixNode) -> None:
        n: RadixNode | None = node
        while n is not None:
            n.lock_ref -= 1
            if n.lock_ref == 0:
                self.locked_pages -= len(n.keys)
                self._push_if_evictable(n)
            n = n.parent

    def set_session_node(self, holder: SessionHolder, node: RadixNode | None) -> None:
        """Move ``holder``'s session reference to the path ending at ``node`` (None: drop it)."""
        old = holder.node
        if old is not None:
            if old.holders is not None:
                old.holders.remove(holder)
            self.add_session_ref(old, -1)
        holder.node = node
        if node is not None:
            if node.holders is None:
                node.holders = []
            node.holders.append(holder)
            self.add_session_ref(node, 1)

    def add_session_ref(self, node: RadixNode, delta: int) -> None:
        n: RadixNode | None = node
        while n is not None:
            n.session_ref += delta
            self._push_if_evictable(n)
            n = n.parent

    # ------------------------------------------------------------------ eviction

    @property
    def evictable_pages(self) -> int:
        return self.total_pages - self.locked_pages

    def _push_if_evictable(self, node: RadixNode) -> None:
        if node.lock_ref == 0 and not node.children:
            tier = 1 if node.session_ref > 0 else 0
            heapq.heappush(self._heap, (tier, node.last_access, next(self._seq), node))
            if len(self._heap) > 4 * self.node_count + 1024:
                self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        heap: list[tuple[int, float, int, RadixNode]] = []
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif n.lock_ref == 0:
                heap.append((1 if n.session_ref > 0 else 0, n.last_access, next(self._seq), n))
        heapq.heapify(heap)
        # In place: evict() holds the list while its pushes may trigger this rebuild.
        self._heap[:] = heap

    def evict(self, pages: int) -> int:
        """Evict least-recently-used unlocked leaves (unreferenced tier first) until at least
        ``pages`` pages are freed or nothing is evictable; returns the pages freed."""
        freed = 0
        heap = self._heap
        while freed < pages and heap:
            tier, access, _, node = heapq.heappop(heap)
            if (
                node.lock_ref != 0
                or node.children
                or node.parent is None
                or node.last_access != access
                or tier != (1 if node.session_ref > 0 else 0)
            ):
                continue
            parent = node.parent
            if parent.children.get(node.keys[0]) is not node:
                continue  # already removed (stale duplicate entry)
            del parent.children[node.keys[0]]
            node.parent = None
            if node.holders:
                # Sessions pinned here keep their reference on the surviving prefix.
                for h in node.holders:
                    h.node = parent
                if parent.holders is None:
                    parent.holders = []
                parent.holders.extend(node.holders)
                node.holders = None
            freed += len(node.keys)
            self.total_pages -= len(node.keys)
            self.node_count -= 1
            if self._on_removed is not None:
                self._on_removed(node.keys)
            if parent is not self.root:
                self._push_if_evictable(parent)
        return freed

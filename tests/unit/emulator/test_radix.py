"""Radix cache over chained page keys: matching, splitting, references and eviction order."""

from __future__ import annotations

import pytest

from saga.emulator.core import RadixCache, chain_page_keys
from saga.emulator.core.radix import RadixNode

pytestmark = pytest.mark.unit


class _Holder:
    def __init__(self) -> None:
        self.node: RadixNode | None = None


def keys(prefix: list[int], page: int = 4) -> list[int]:
    return chain_page_keys(prefix, page)


def test_longest_prefix_match_and_split() -> None:
    cache = RadixCache()
    a = keys(list(range(40)))  # 10 pages
    cache.insert(a, now=0.0)
    b = keys(list(range(24)) + [99] * 16)  # shares 6 pages
    node, pages = cache.match(b, len(b), now=1.0)
    assert pages == 6
    assert node.keys[-1] == a[5]  # the node was split exactly at the match
    assert cache.total_pages == 10
    _, new = cache.insert(b, now=1.0)
    assert new == 4
    assert cache.total_pages == 14
    assert cache.peek(a, len(a)) == 10
    assert cache.peek(b, 3) == 3


def test_lru_evicts_least_recent_leaf_first_and_respects_locks() -> None:
    cache = RadixCache()
    shared = list(range(8))
    x = keys(shared + [1] * 8)
    y = keys(shared + [2] * 8)
    z = keys(shared + [3] * 8)
    for i, k in enumerate((x, y, z)):
        cache.insert(k, now=float(i))
    cache.match(x, len(x), now=10.0)  # x becomes the most recent
    node_z, _ = cache.match(z, len(z), now=11.0)
    cache.lock(node_z)  # z is in use by a running request
    freed = cache.evict(1)
    assert freed == 2  # whole leaf: y's two private pages
    assert cache.peek(y, len(y)) == 2  # only the shared pages remain of y
    assert cache.peek(x, len(x)) == 4
    freed = cache.evict(100)  # everything unlocked goes; z and its path stay
    assert cache.peek(z, len(z)) == 4
    assert cache.peek(x, len(x)) == 2
    assert cache.total_pages == cache.locked_pages == 4
    cache.unlock(node_z)
    assert cache.evict(100) == 4
    assert cache.total_pages == 0


def test_session_referenced_entries_are_evicted_last_and_release_on_close() -> None:
    cache = RadixCache()
    sess = keys(list(range(16)))
    other = keys([7] * 16)
    node, _ = cache.insert(sess, now=0.0)  # older than `other`
    cache.insert(other, now=5.0)
    holder = _Holder()
    cache.set_session_node(holder, node)
    cache.evict(1)
    assert cache.peek(sess, len(sess)) == 4, "the session's entries must outlive unreferenced ones"
    assert cache.peek(other, len(other)) == 0
    cache.evict(1)  # only session entries are left: they are evictable, last
    assert cache.total_pages == 0
    # The holder followed the eviction to the surviving prefix (the root): releasing is safe.
    cache.set_session_node(holder, None)
    assert cache.root.session_ref == 0


def test_closing_a_session_makes_its_entries_ordinary_lru() -> None:
    cache = RadixCache()
    sess = keys(list(range(16)))
    other = keys([7] * 16)
    node, _ = cache.insert(sess, now=0.0)
    cache.insert(other, now=5.0)
    holder = _Holder()
    cache.set_session_node(holder, node)
    cache.set_session_node(holder, None)
    cache.evict(1)
    assert cache.peek(sess, len(sess)) == 0  # oldest goes first again
    assert cache.peek(other, len(other)) == 4


def test_stored_and_removed_callbacks() -> None:
    stored: list[tuple[list[int], int | None]] = []
    removed: list[list[int]] = []
    cache = RadixCache(
        on_stored=lambda k, p: stored.append((list(k), p)), on_removed=lambda k: removed.append(list(k))
    )
    a = keys(list(range(8)))
    b = keys(list(range(4)) + [9] * 4)
    cache.insert(a, 0.0)
    cache.insert(b, 1.0)
    assert stored == [(a, None), ([b[1]], a[0])]
    cache.evict(10)
    assert sorted(map(len, removed)) == [1, 1, 1]


def test_eviction_survives_a_heap_rebuild_in_the_middle() -> None:
    # Regression: evicting a leaf can make its parent a leaf, whose push may rebuild the heap
    # (too many stale entries); evict() kept popping the old list, so nodes pushed after the
    # rebuild were never seen and it stopped early. An idle replica then refused a request
    # it had room for and waited forever (the swe_bench x 64 simulator deadlock).
    cache = RadixCache()
    cache.insert(keys([1] * 8 + [2] * 8 + [3] * 8), now=0.0)  # G, P, c1 (2 pages each)
    cache.insert(keys([1] * 8 + [2] * 8 + [4] * 8), now=0.0)  # c2 under P
    cache.insert(keys([1] * 8 + [5] * 8), now=0.0)  # z under G
    s = keys([7] * 8)
    cache.insert(s, now=0.0)
    # Stale entries for S, all younger than the rest: just under the rebuild threshold, so
    # that P's push during the eviction triggers it.
    for i in range(1, 1042):
        cache.match(s, len(s), now=float(i))
    assert cache.total_pages == 12
    assert cache.evict(100) == 12
    assert cache.total_pages == 0

"""Per-source document bookkeeping shared by the hot reloaders.

The graph reloader (:mod:`saga.service.graphs_reload`) and the tenant policy reloader
(:mod:`saga.service.tenants_reload`) both poll sources of JSON documents and keep, for each
source (a file path, or ``store:<agent type>`` for the state store), the last document that
loaded and the digest of the last content that failed. :class:`SourceDocs` holds that book;
each reloader keeps only its parsing, merging and applying.

Folder walk (:meth:`SourceDocs.scan_folder`), the mechanism for a mounted ConfigMap: every file
below the folder (recursively, links followed, directories and files in sorted order) whose
name ends with one of the given suffixes is read whole; names starting with ``..`` are skipped
(Kubernetes' ``..data`` and timestamped folders of a ConfigMap volume, which would otherwise
show every key twice). Each file's SHA-256 digest is compared with the book: kubelet updates a
mounted ConfigMap by an atomic symlink swap, so a poll sees the old or the new content, never
a mix, and content already loaded (or already rejected) is neither parsed nor reported again.
A file that cannot be read is a failure with the digest ``unreadable:<errno>`` (so it is
reported once per cause), unless it vanished between listing and reading: then it is simply
not seen, and the next poll decides.

Failures: :meth:`SourceDocs.failed` records the reason in the ``errors`` dict it was given
(the reloader's ``state.errors``) and calls the reloader's ``on_rejected(source, reason,
kept)`` hook (its log line and metric), ``kept`` telling whether the source still has a good
document in force. A source keeps its last good document until new content loads; sources a
poll no longer sees are forgotten (:meth:`SourceDocs.keep_only`).

Loop (:func:`poll_forever`): each reloader's ``run`` sleeps its ``poll_interval_s``, polls, and
logs (never raises) a failed poll, so a reload bug cannot take the scheduler down. No tunables
of its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


async def poll_forever(
    poll: Callable[[], Awaitable[object]],
    interval_s: float,
    sleep: Callable[[float], Awaitable[None]],
    log: logging.Logger,
    failure: str,
) -> None:
    """Sleep ``interval_s`` then ``poll()``, forever; an exception from a poll is logged with
    ``log.exception(failure)`` and the loop goes on."""
    while True:
        await sleep(interval_s)
        try:
            await poll()
        except Exception:  # a reload bug must not take the scheduler down
            log.exception(failure)


@dataclass(slots=True)
class Loaded(Generic[T]):
    """A source's last good document and the digest of its content."""

    digest: str
    doc: T


class SourceDocs(Generic[T]):
    """The last good document (``good``) and last failed digest (``bad``) of each source."""

    def __init__(self, errors: dict[str, str], on_rejected: Callable[[str, str, bool], None]) -> None:
        self.good: dict[str, Loaded[T]] = {}  # source → last document that loaded
        self.bad: dict[str, str] = {}  # source → digest of the content that failed (report once)
        self.errors = errors  # source → last error (until it loads); the reloader's state.errors
        self._on_rejected = on_rejected

    def known(self, source: str, digest: str) -> bool:
        """True when this content of ``source`` was loaded or rejected already."""
        good = self.good.get(source)
        return (good is not None and good.digest == digest) or self.bad.get(source) == digest

    def loaded(self, source: str, digest: str, doc: T) -> None:
        self.good[source] = Loaded(digest, doc)
        self.bad.pop(source, None)
        self.errors.pop(source, None)

    def failed(self, source: str, digest: str, reason: str) -> None:
        self.bad[source] = digest
        self.errors[source] = reason
        self._on_rejected(source, reason, source in self.good)

    def keep_only(self, seen: set[str]) -> None:
        """Forget every source a poll did not see (deleted files, types gone from the store)."""
        for gone in set(self.good) - seen:
            del self.good[gone]
        for gone in set(self.bad) - seen:
            del self.bad[gone]
            self.errors.pop(gone, None)

    def digests(self) -> tuple[tuple[str, str], ...]:
        """The sorted ``(source, digest)`` pairs of the good documents: what a reloader applied
        is this key, so an unchanged key means nothing to apply."""
        return tuple(sorted((src, ld.digest) for src, ld in self.good.items()))

    def scan_folder(
        self,
        root: Path,
        suffixes: tuple[str, ...],
        parse: Callable[[Path, bytes], T],
        rejects: tuple[type[Exception], ...],
    ) -> set[str]:
        """Walk ``root`` once (see the module docstring); returns the sources seen.

        ``parse`` turns a file's bytes into its document and raises one of ``rejects`` for a
        bad one (recorded with :meth:`failed`, ``str(exc)`` as the reason); other exceptions
        propagate (a reloader bug, not a bad document). A missing ``root`` has no sources.
        """
        seen: set[str] = set()
        if not root.is_dir():
            return seen
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".."))
            for name in sorted(filenames):
                if name.startswith("..") or not name.endswith(suffixes):
                    continue
                path = Path(dirpath) / name
                source = str(path)
                try:
                    raw = path.read_bytes()
                except OSError as exc:  # vanished between listing and reading: next poll
                    if path.exists():
                        seen.add(source)
                        self.failed(source, f"unreadable:{exc.errno}", f"cannot read: {exc}")
                    continue
                seen.add(source)
                digest = hashlib.sha256(raw).hexdigest()
                if self.known(source, digest):
                    continue
                try:
                    doc = parse(path, raw)
                except rejects as exc:
                    self.failed(source, digest, str(exc))
                    continue
                self.loaded(source, digest, doc)
        return seen

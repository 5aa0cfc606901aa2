"""Trace ingestion: every supported format into :mod:`saga.graphs.trace` session traces.

Formats (one module each):

- ``weka``: the Claude Code sessions of ``../shared/traces/weka_cc_traces*.jsonl.xz``
  (:func:`saga.graphs.ingest.weka.read_weka_traces`);
- ``mooncake``: the Mooncake FAST'25 request traces, with conversations reconstructed by prefix
  chaining (:func:`saga.graphs.ingest.mooncake.read_mooncake`);
- ``otel``: OTLP JSON span exports following the OpenTelemetry GenAI semantic conventions
  (:func:`saga.graphs.ingest.otel.read_otlp_json`);
- ``eventlog``: SAGA's own versioned JSON-lines event log (:mod:`saga.graphs.ingest.eventlog`).

:func:`read_traces` reads many files, detecting each one's format from its first record
(``detect_format``). Every reader raises :class:`~saga.graphs.trace.TraceError` (file, line,
field) on corrupt input, or with ``skip_bad=True`` skips the bad record and counts it in
:attr:`IngestResult.skipped` (the first errors are kept in :attr:`IngestResult.errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from saga.graphs.ingest._common import IngestResult, open_text
from saga.graphs.ingest.eventlog import read_eventlog
from saga.graphs.ingest.mooncake import read_mooncake
from saga.graphs.ingest.otel import read_otlp_json
from saga.graphs.ingest.weka import read_weka_traces
from saga.graphs.trace import TraceError

__all__ = [
    "FORMATS",
    "IngestResult",
    "TraceError",
    "detect_format",
    "read_eventlog",
    "read_mooncake",
    "read_otlp_json",
    "read_traces",
    "read_weka_traces",
]

Reader = Callable[..., IngestResult]
FORMATS: dict[str, Reader] = {
    "weka": read_weka_traces,
    "mooncake": read_mooncake,
    "otel": read_otlp_json,
    "eventlog": read_eventlog,
}
_PEEK_CHARS = 1 << 16  # enough to see the first record's keys even when hash lists are long


def detect_format(path: str | Path) -> str:
    """The format of ``path`` (a key of :data:`FORMATS`), from the keys of its first record."""
    with open_text(path) as f:
        try:
            head = f.read(_PEEK_CHARS)
        except (EOFError, OSError, UnicodeDecodeError) as e:
            raise TraceError(f"unreadable data: {e}", file=str(path), line=1) from e
    text = head.lstrip()
    if not text:
        raise TraceError("empty file", file=str(path))
    if '"resourceSpans"' in head:
        return "otel"
    first = text.split("\n", 1)[0]
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        if "requests" in obj and "id" in obj:
            return "weka"
        if "hash_ids" in obj and "input_length" in obj:
            return "mooncake"
        if "v" in obj and "type" in obj and "session" in obj:
            return "eventlog"
    elif '"requests"' in first[:4096] and '"hash_id_scope"' in first[:4096]:
        return "weka"  # a long first line cut by the peek
    elif '"input_length"' in first and '"hash_ids"' in first:
        return "mooncake"
    raise TraceError(
        "unknown trace format (expected WEKA Claude Code, Mooncake, OTLP JSON or a SAGA event log)",
        file=str(path),
        line=1,
    )


def read_traces(
    paths: Iterable[str | Path],
    skip_bad: bool = False,
    *,
    fmt: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> IngestResult:
    """Read every file in ``paths`` (format given by ``fmt`` or detected per file) into one result."""
    total = IngestResult()
    for p in paths:
        name = fmt or detect_format(p)
        if name not in FORMATS:
            raise ValueError(f"unknown format {name!r}; choose from {sorted(FORMATS)}")
        total.extend(FORMATS[name](p, skip_bad=skip_bad))
        if progress is not None:
            progress(str(p))
    return total

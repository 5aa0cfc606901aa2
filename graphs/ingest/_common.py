"""Shared helpers of the trace ingesters: file opening, JSON-lines iteration, typed field access.

Every reader goes through :func:`open_text` (plain, ``.xz``, ``.gz`` and ``.bz2`` files) and
reports bad input as :class:`~saga.graphs.trace.TraceError` naming the file, the 1-based line
and the field. With ``skip_bad`` a reader records the error in an :class:`IngestResult` instead
of raising, and counts the records it skipped: nothing is dropped silently.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from saga.graphs.trace import SessionTrace, TraceError

# Errors kept verbatim in an IngestResult; beyond this only the count grows (a corrupt file of
# millions of lines must not hold millions of exception objects).
MAX_KEPT_ERRORS = 100


@dataclass(slots=True)
class IngestResult:
    """What a reader produced: the sessions, how many records it skipped, and why."""

    sessions: list[SessionTrace] = field(default_factory=list)
    skipped: int = 0  # records (lines, sessions or spans) skipped under ``skip_bad``
    errors: list[TraceError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS of them

    def record_error(self, err: TraceError, *, skip_bad: bool) -> None:
        """Raise ``err`` unless ``skip_bad``; then count it and keep it (up to the cap)."""
        if not skip_bad:
            raise err
        self.skipped += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(err)

    def extend(self, other: IngestResult) -> None:
        self.sessions.extend(other.sessions)
        self.skipped += other.skipped
        room = MAX_KEPT_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(other.errors[:room])


def open_text(path: str | Path) -> IO[str]:
    """Open ``path`` for reading text, decompressing ``.xz``/``.gz``/``.bz2`` by suffix."""
    p = Path(path)
    try:
        if p.suffix == ".xz":
            return lzma.open(p, "rt", encoding="utf-8")
        if p.suffix == ".gz":
            return gzip.open(p, "rt", encoding="utf-8")
        if p.suffix == ".bz2":
            return bz2.open(p, "rt", encoding="utf-8")
        return p.open("r", encoding="utf-8")
    except OSError as e:
        raise TraceError(f"cannot open: {e}", file=str(p)) from e


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any | TraceError]]:
    """Yield ``(line_number, parsed JSON or TraceError)`` for each non-blank line.

    Decode errors are yielded (not raised) so the caller decides whether to skip them; a
    truncated compressed stream is reported as an error on the line after the last good one.
    """
    name = str(path)
    n = 0
    with open_text(path) as f:
        try:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    yield n, json.loads(raw)
                except json.JSONDecodeError as e:
                    yield n, TraceError(f"bad JSON: {e.msg} (column {e.colno})", file=name, line=n)
        except (EOFError, lzma.LZMAError, OSError, UnicodeDecodeError) as e:
            yield n + 1, TraceError(f"unreadable data: {e}", file=name, line=n + 1)


class Fields:
    """Typed access to one JSON object's fields, raising :class:`TraceError` with the location."""

    __slots__ = ("file", "line", "obj", "prefix")

    def __init__(self, obj: Any, *, file: str, line: int | None, prefix: str = "") -> None:
        if not isinstance(obj, dict):
            raise TraceError(
                f"expected a JSON object, got {type(obj).__name__}",
                file=file,
                line=line,
                field_name=prefix or None,
            )
        self.obj: dict[str, Any] = obj
        self.file = file
        self.line = line
        self.prefix = prefix

    def error(self, key: str, message: str) -> TraceError:
        return TraceError(message, file=self.file, line=self.line, field_name=self.path(key))

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def has(self, key: str) -> bool:
        return key in self.obj and self.obj[key] is not None

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key not in self.obj or self.obj[key] is None:
            if required:
                raise self.error(key, "missing field")
            return default
        return self.obj[key]

    def raw(self, key: str, default: Any = None) -> Any:
        """The field's JSON value unchecked (``default`` when absent or null)."""
        return self._get(key, default, False)

    def number(self, key: str, default: float | None = None, *, min_value: float | None = 0.0) -> float:
        v = self._get(key, default, default is None)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"expected a number, got {v!r}")
        if v != v or v in (float("inf"), float("-inf")):
            raise self.error(key, f"expected a finite number, got {v!r}")
        if min_value is not None and v < min_value:
            raise self.error(key, f"must be >= {min_value}, got {v!r}")
        return float(v)

    def integer(self, key: str, default: int | None = None, *, min_value: int | None = 0) -> int:
        v = self._get(key, default, default is None)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {v!r}")
        if min_value is not None and v < min_value:
            raise self.error(key, f"must be >= {min_value}, got {v!r}")
        return v

    def string(self, key: str, default: str | None = None) -> str:
        v = self._get(key, default, default is None)
        if not isinstance(v, str):
            raise self.error(key, f"expected a string, got {v!r}")
        return v

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        v = self._get(key, default, default is None)
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self.error(key, "expected a list of integers")
        return v

    def obj_list(self, key: str) -> list[Any]:
        v = self._get(key, None, True)
        if not isinstance(v, list):
            raise self.error(key, "expected a list")
        return v

    def sub(self, obj: Any, key: str) -> Fields:
        return Fields(obj, file=self.file, line=self.line, prefix=self.path(key))

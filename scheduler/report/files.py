"""Result files on disk: per-session detail as gzipped JSON, summaries as plain JSON.

A run's per-session and per-call detail (one ``RunResult`` per system, the physical limit of
every session) is megabytes of JSON, so the writers (``saga simulate``, ``saga bench e2e``)
store it as ``<stem>.json.gz``; the files a person opens (``report.md``, ``report.json``,
``run.json``, ``bench.json``) stay plain. The gzip stream is deterministic: no file name and
mtime 0 in its header, fixed compression level, so the same content gives the same bytes on
every rerun (with the same zlib). ``zcat FILE.json.gz`` or :func:`read_json_text` gives back
the JSON text.

Readers take either form: folders written before detail files were compressed hold plain
``<stem>.json``. Every reader goes through :func:`read_json_text` (or :func:`load_json`,
:func:`load_results`), which decides by the file name: ``*.gz`` is gunzipped, anything else
read as it is.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saga.scheduler.report.model import ReportError, RunResult

JSON = ".json"
JSON_GZ = ".json.gz"
GZIP_LEVEL = 9


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as a gzip stream with a fixed header (no file name, mtime 0, OS 255)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def write_json_gz(path: str | Path, text: str) -> Path:
    """Write JSON ``text`` gzip-compressed to ``path`` (which must end in ``.json.gz``).

    A plain ``<stem>.json`` beside it (the same file from an earlier run, before detail files
    were compressed) is removed, so a rerun into an old folder leaves one form of each file.
    """
    p = Path(path)
    if not p.name.endswith(JSON_GZ):
        raise ValueError(f"{p}: a compressed result file must end in {JSON_GZ}")
    p.write_bytes(gzip_bytes(text.encode("utf-8")))
    p.with_name(p.name[: -len(".gz")]).unlink(missing_ok=True)
    return p


def read_json_text(path: str | Path) -> str:
    """The JSON text of a ``.json`` or ``.json.gz`` file; :class:`ReportError` names the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ReportError(f"{p}: cannot read: {e.strerror or e}") from None
    if p.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ReportError(f"{p}: not a valid gzip file: {e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"{p}: not UTF-8 text: {e}") from None


def load_json(path: str | Path) -> Any:
    """The parsed JSON document of a ``.json`` or ``.json.gz`` file."""
    try:
        return json.loads(read_json_text(path))
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not JSON: {e}") from None


def stem_of(path: str | Path) -> str:
    """``saga`` for ``saga.json`` and ``saga.json.gz``; the name unchanged otherwise."""
    name = Path(path).name
    for suffix in (JSON_GZ, JSON):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def json_files(folder: str | Path) -> list[Path]:
    """Every ``*.json`` and ``*.json.gz`` file directly in ``folder``, sorted by path.

    A stem present in both forms is ambiguous (which one is current?) and raises
    :class:`ReportError`.
    """
    d = Path(folder)
    paths = sorted([*d.glob("*" + JSON), *d.glob("*" + JSON_GZ)], key=str)
    seen: dict[str, Path] = {}
    for p in paths:
        if not p.is_file():
            continue
        other = seen.setdefault(stem_of(p), p)
        if other != p:
            raise ReportError(f"{d}: both {other.name} and {p.name}; remove the stale one")
    return [p for p in paths if p.is_file()]


def find_json(folder: str | Path, stem: str) -> Path | None:
    """``folder/<stem>.json.gz`` or ``folder/<stem>.json``, whichever exists (both: an error)."""
    found = [p for p in json_files(folder) if stem_of(p) == stem]
    return found[0] if found else None


def load_results(paths: Sequence[str | Path]) -> list[RunResult]:
    """Read ``RunResult`` files, ``.json`` or ``.json.gz`` (used by the CLI and benchmarks)."""
    return [RunResult.from_json(read_json_text(p), source=str(p)) for p in paths]


# files of a ``saga simulate`` folder that are not one system's RunResult
NOT_RESULTS = ("limits", "run", "report")


def folder_results(folder: str | Path) -> list[RunResult]:
    """Every system's ``RunResult`` in a ``saga simulate`` (or ``saga bench e2e``) folder: all
    its detail files but ``limits``, ``run`` and ``report``."""
    return load_results([p for p in json_files(folder) if stem_of(p) not in NOT_RESULTS])


def load_limits(path: str | Path) -> dict[str, float]:
    """A physical-limits file: a JSON object of session id -> seconds; anything else is a
    :class:`ReportError` naming the file (and the session whose value is not a number)."""
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: expected a JSON object")
    out: dict[str, float] = {}
    for k, v in raw.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ReportError(f"{path}: limit of {k!r} is not a number: {v!r}") from None
    return out


def write_result(result: RunResult, path: str | Path) -> Path:
    """Write one ``RunResult`` as ``.json.gz`` (see :func:`write_json_gz`)."""
    return write_json_gz(path, result.to_json())

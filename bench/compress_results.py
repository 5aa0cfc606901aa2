"""Compress the per-session detail files of older result folders to ``.json.gz``.

``saga simulate`` and ``saga bench e2e`` write their ``RunResult`` files and ``limits`` as
deterministic gzipped JSON (``saga.scheduler.report.files``); folders written before that hold
plain ``.json``. This converts, in every folder given (recursively), each plain ``*.json`` that
is a ``RunResult`` and each ``limits.json`` to ``<stem>.json.gz`` with the writers' own
function, checks that decompressing gives back the original bytes, and only then removes the
plain file. Summaries (``report.json``, ``run.json``, ``bench.json``, ...) are left as they are.

    python bench/compress_results.py bench/results [--dry-run]

Prints one line per converted file (bytes before -> after) and a total.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

from saga.scheduler.report import ReportError, RunResult, write_json_gz

LIMITS = "limits.json"


def is_detail(path: Path) -> bool:
    """A ``limits.json`` or a valid ``RunResult`` file."""
    if path.name == LIMITS:
        return True
    try:
        RunResult.from_json(path.read_text(encoding="utf-8"), source=str(path))
    except (ReportError, UnicodeDecodeError):
        return False
    return True


def compress(path: Path) -> Path:
    """Write ``path`` as ``<path>.gz``, check it decompresses to the same bytes, remove ``path``."""
    original = path.read_bytes()
    json.loads(original)  # refuse to pack a broken file
    target = path.with_name(path.name + ".gz")
    if target.exists():
        raise SystemExit(f"error: {target} exists already; remove one of {path.name} / {target.name}")
    # write_json_gz removes the plain file once the compressed one is written: the check
    # compares against the bytes read above and puts the plain file back on a mismatch.
    write_json_gz(target, original.decode("utf-8"))
    if gzip.decompress(target.read_bytes()) != original:
        path.write_bytes(original)
        target.unlink()
        raise SystemExit(f"error: {target} does not decompress to {path}'s bytes; restored {path}")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="list what would be converted")
    args = ap.parse_args(argv)
    before = after = 0
    for folder in args.folders:
        for path in sorted(folder.rglob("*.json")):
            if not path.is_file() or not is_detail(path):
                continue
            size = path.stat().st_size
            if args.dry_run:
                print(f"{path} ({size} B)")
                continue
            target = compress(path)
            before += size
            after += target.stat().st_size
            print(f"{path} -> {target.name}: {size} -> {target.stat().st_size} B")
    if not args.dry_run:
        print(f"total: {before} -> {after} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())

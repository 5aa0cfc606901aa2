"""``python -m saga.scheduler.report RESULT.json.gz ... --out DIR [--baseline SYSTEM] [--limits FILE]``.

Reads ``RunResult`` files (gzipped ``.json.gz`` as ``saga simulate`` writes them, or plain
``.json``), writes report.md, report.json and PNG plots into ``--out``.
``--limits``: a JSON object mapping session id -> physical limit in seconds (``limits.json.gz``
from ``saga simulate``, or plain ``.json``).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from saga.scheduler.report.files import load_limits, load_results
from saga.scheduler.report.metrics import build_report
from saga.scheduler.report.model import ReportError
from saga.scheduler.report.render import write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saga.scheduler.report", description=__doc__)
    ap.add_argument("results", nargs="+", help="RunResult files (.json.gz or .json)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--baseline", default=None, help="system the speedups are relative to")
    ap.add_argument(
        "--limits", default=None, help="JSON object (.json.gz or .json): session id -> physical limit (s)"
    )
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    try:
        limits = load_limits(args.limits) if args.limits else None
        results = load_results(args.results)
        report = build_report(results, baseline=args.baseline, limits=limits)
        command = "python -m saga.scheduler.report " + shlex.join(argv if argv is not None else sys.argv[1:])
        for p in write_report(report, results, args.out, command=command, plots=not args.no_plots):
            print(p)
    except (ReportError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

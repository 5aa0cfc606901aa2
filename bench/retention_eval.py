"""Retention benchmark: every policy at 5–50 % of W on the Claude Code and Mooncake traces.

Runs ``saga graphs eval`` on the public traces (``../shared/traces``) and writes
``bench/results/retention_<name>.{md,json,png}`` with the date, command and machine, plus a
check of the issue's goals (SAGA closes >= 2/3 of the LRU-to-oracle gap at 5 % and 10 %, is
never worse than LRU from 5 % to 50 %, and beats every other online policy at 5 % and 10 %).

    python bench/retention_eval.py [--traces ../shared/traces] [--only weka|mooncake]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAPACITIES = "0.05,0.1,0.25,0.5"
NOTE = (
    "Why the two-thirds goal is missed (where it is): SAGA ranks contexts by value density, "
    "P(next call) / median(time to next call), from held-out population samples (running: previous "
    "stop reason; in a gap: stop reason x output tokens x sub-agent; both conditioned on the elapsed "
    "time) mixed with the stream's own history, and only from what a server knows at that moment "
    "(nothing of a running call's response). The next call time of a stream is only weakly "
    "predictable from these online features, while the oracle knows it exactly. See "
    "docs/retention.md for the method, what was tried and the ablation."
)
SETS = {
    "weka": ["weka_cc_traces.dev.jsonl.xz"],
    "mooncake": ["mooncake_conversation_trace.jsonl"],
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores, {cpu}, Python {py}"


def goals(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["capacity"], r["policy"]): r for r in rows}
    out = []
    for cap in (0.05, 0.1):
        s = by.get((cap, "saga"))
        if s is None:
            continue
        gap = s["gap_closed"]
        ok = gap is not None and float(gap) >= 0.67
        pct = "n/a" if gap is None else f"{100 * float(gap):.1f}%"
        folds = " / ".join(
            "n/a" if g is None else f"{100 * float(g):.1f}%" for g in s.get("gap_closed_by_fold", [])
        )
        out.append(
            f"- {cap:.0%} of W: SAGA closes {pct} of the LRU→oracle gap (goal ≥ 67%; per held-out "
            f"fold {folds}): " + ("MET" if ok else "MISSED")
        )
        others = [r for (c, p), r in by.items() if c == cap and p not in ("saga", "oracle")]
        best = min(others, key=lambda r: r["recomputed_tokens"])
        beats = all(s["recomputed_tokens"] < r["recomputed_tokens"] for r in others)
        out.append(
            f"- {cap:.0%} of W: SAGA {'beats' if beats else 'does NOT beat'} every other online policy "
            f"(best other: {best['policy']}, {best['recomputed_tokens']:,} tokens "
            f"vs SAGA {s['recomputed_tokens']:,})"
        )
    worse = [
        r["capacity"]
        for (c, p), r in by.items()
        if p == "saga" and by[(c, "lru")]["recomputed_tokens"] < r["recomputed_tokens"]
    ]
    out.append("- never worse than LRU at 5–50% of W: " + ("MET" if not worse else f"MISSED at {worse}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    ap.add_argument("--only", choices=sorted(SETS), default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if not args.traces.is_dir():
        print(f"no trace folder at {args.traces}: nothing to run", file=sys.stderr)
        return 2
    for name, files in SETS.items():
        if args.only and name != args.only:
            continue
        paths = [str(args.traces / f) for f in files]
        stem = args.out / f"retention_{name}"
        cmd = [
            "saga",
            "graphs",
            "eval",
            *paths,
            "--capacity",
            CAPACITIES,
            "--json",
            f"{stem}.json",
            "--png",
            f"{stem}.png",
            "--seed",
            "0",
            "--sessions-alive",
            "40",
        ]
        shown = " ".join(c.replace(str(ROOT) + "/", "").replace(str(ROOT.parent), "..") for c in cmd)
        print(f"$ {shown}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        print(proc.stdout)
        doc = json.loads(Path(f"{stem}.json").read_text())
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        doc["bench"] = {"date": when, "command": shown, "machine": machine(), "wall_s": round(wall, 1)}
        Path(f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
        lines = [
            f"# Retention policies on `{', '.join(files)}`",
            "",
            f"- date: {when}",
            f"- command: `{shown}` (via `python bench/retention_eval.py --only {name}`)",
            f"- machine: {machine()}; wall time {wall:.0f} s",
            "- traces: `../shared/traces/` (credits in its README)",
            "",
            "```",
            proc.stdout.strip().splitlines()[0],
            "```",
            "",
            *proc.stdout.strip().splitlines()[1:],
            "",
            "## Goals (issue 3)",
            "",
            *goals(doc["rows"]),
            "",
            NOTE,
            "",
        ]
        Path(f"{stem}.md").write_text("\n".join(lines))
        print("\n".join(goals(doc["rows"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How good must a next-call prediction be? The informed bound against SAGA's own model.

Replays the Claude Code development traces (and Mooncake) at 5 % and 10 % of W, as
``bench/retention_eval.py`` does (seed 0, 40 sessions alive, 2 held-out folds), with:

- the anchors (oracle, tail-first LRU) and SAGA's online policy;
- the ``informed`` bound (:mod:`saga.graphs.retention.policies.informed`): Bélády told every
  stream's end exactly and its next call time up to a log-normal error of log-sd ``σ``, swept
  from 0 (the oracle) to ``∞`` (ends only, LRU among the rest), each ``σ`` averaged over
  ``--draws`` noise seeds;

and measures the error of SAGA's held-out model on the same quantity (the time from a call's
start to its stream's next call; ``gapmix.prediction_log_errors``): the standard deviation of
``ln(predicted / true)``, its robust counterpart ``1.4826 · MAD`` and its median (bias), both
when the call is sent and when its response is out. Writes
``bench/results/retention_information.{md,json}`` with date, command and machine.

    python bench/retention_information.py [--traces ../shared/traces] [--only weka|mooncake]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from retention_eval import SETS, machine  # noqa: E402

from saga.graphs.ingest import read_traces  # noqa: E402
from saga.graphs.retention.cache import replay  # noqa: E402
from saga.graphs.retention.gapmix import prediction_log_errors  # noqa: E402
from saga.graphs.retention.policies import (  # noqa: E402
    InformedBoundPolicy,
    LRUPolicy,
    OraclePolicy,
    SagaPolicy,
    SagaRetentionSettings,
)
from saga.graphs.retention.policies.saga import fold_models  # noqa: E402
from saga.graphs.retention.workload import ReplaySettings, build_workload  # noqa: E402

CAPACITIES = (0.05, 0.1)
SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, math.inf)


def spread(errs: list[float]) -> dict[str, float]:
    """sd, robust sd (1.4826 · MAD) and median of the log errors."""
    if not errs:
        return {"n": 0, "sd": math.nan, "robust_sd": math.nan, "median": math.nan}
    med = statistics.median(errs)
    mad = statistics.median(abs(e - med) for e in errs)
    return {"n": len(errs), "sd": statistics.pstdev(errs), "robust_sd": 1.4826 * mad, "median": med}


def needed_sigma(curve: list[tuple[float, float]], target: float) -> float | None:
    """Largest σ (linear interpolation on the finite part of the curve) still closing ``target``;
    ``inf`` when even the largest finite σ swept closes it, None when not even σ = 0 does."""
    pts = [(s, g) for s, g in curve if math.isfinite(s)]
    if not pts or pts[0][1] < target:
        return None
    if pts[-1][1] >= target:
        return math.inf
    best = None
    for (s0, g0), (s1, g1) in itertools.pairwise(pts):
        if g0 >= target > g1:
            best = s0 + (s1 - s0) * (g0 - target) / (g0 - g1)
    return best


def run_set(name: str, files: list[str], traces: Path, draws: int) -> dict[str, object]:
    sessions = read_traces([str(traces / f) for f in files]).sessions
    wl = build_workload(sessions, ReplaySettings(seed=0, sessions_alive=40.0, folds=2))
    out: dict[str, object] = {"traces": files, "requests": wl.n_requests, "W_pages": wl.working_set_pages}
    rows = []
    for cap in CAPACITIES:
        pages = max(1, round(cap * wl.working_set_pages))
        orc = replay(wl, pages, OraclePolicy()).recomputed_tokens
        lru = replay(wl, pages, LRUPolicy()).recomputed_tokens
        saga = replay(wl, pages, SagaPolicy(SagaRetentionSettings())).recomputed_tokens

        def closed(tok: float, lru: int = lru, orc: int = orc) -> float:
            return (lru - tok) / (lru - orc) if lru > orc else math.nan

        curve = []
        for sigma in SIGMAS:
            toks = [
                replay(wl, pages, InformedBoundPolicy(sigma, seed)).recomputed_tokens for seed in range(draws)
            ]
            gaps = [closed(x) for x in toks]
            curve.append((sigma, closed(statistics.fmean(toks)), min(gaps), max(gaps)))
            print(f"  {name} {cap:.0%} sigma={sigma}: {100 * curve[-1][1]:.1f}% of the gap", flush=True)
        rows.append(
            {
                "capacity": cap,
                "oracle_tokens": orc,
                "lru_tokens": lru,
                "saga_tokens": saga,
                "saga_gap_closed": closed(saga),
                "curve": [{"sigma": s, "gap_closed": g, "min": lo, "max": hi} for s, g, lo, hi in curve],
                "sigma_for_two_thirds": needed_sigma([(s, g) for s, g, _, _ in curve], 0.67),
                "sigma_matching_saga": needed_sigma([(s, g) for s, g, _, _ in curve], closed(saga)),
            }
        )
    d = SagaRetentionSettings()  # the model SAGA's policy ranks by, with its default settings
    models = fold_models(wl, d.out_bins, d.step_bins, d.min_samples)
    start: list[float] = []
    end: list[float] = []
    skipped = 0
    for k, model in enumerate(models):
        held = [s.trace for s in wl.streams if s.parent < 0 and s.fold == k]
        e = prediction_log_errors(model, held)
        start += e.at_start
        end += e.at_end
        skipped += e.skipped
    out["rows"] = rows
    out["saga_model_log_error"] = {"at_start": spread(start), "at_end": spread(end), "skipped": skipped}
    return out


def finite(x: object) -> object:
    """The document with every non-finite float written as a string ("inf", "nan"): strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x


def fmt_sigma(s: float | None) -> str:
    largest = max(x for x in SIGMAS if math.isfinite(x))
    return "–" if s is None else (f"> {largest:g}" if math.isinf(s) else f"{s:.2f}")


def markdown(name: str, res: dict[str, Any], when: str, cmd: str, wall: float, draws: int) -> list[str]:
    rows = res["rows"]
    assert isinstance(rows, list)
    err = res["saga_model_log_error"]
    assert isinstance(err, dict)
    caps = " | ".join(f"{r['capacity']:.0%} of W" for r in rows)
    head = f"| σ (log-sd of the next-call time) | {caps} |"
    lines = [
        f"## `{', '.join(res['traces'])}`",
        "",
        f"{res['requests']:,} requests, W = {res['W_pages']:,} pages. "
        "Gap closed = (LRU − policy)/(LRU − oracle);"
        f" the informed bound is the mean of {draws} noise draws (min–max in brackets).",
        "",
        head,
        "|---:|" + "---:|" * len(rows),
    ]
    for i, sigma in enumerate(SIGMAS):
        cells = []
        for r in rows:
            c = r["curve"][i]
            cells.append(f"{100 * c['gap_closed']:.1f}% ({100 * c['min']:.1f}–{100 * c['max']:.1f})")
        label = "∞ (ends known, LRU among the rest)" if math.isinf(sigma) else f"{sigma:g}"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    saga = " | ".join(f"**{100 * r['saga_gap_closed']:.1f}%**" for r in rows)
    lines.append(f"| **SAGA (online, held out)** | {saga} |")
    lines += [
        "",
        f"| | {caps} |",
        "|---|" + "---:|" * len(rows),
        "| largest σ closing two thirds | "
        + " | ".join(fmt_sigma(r["sigma_for_two_thirds"]) for r in rows)
        + " |",
        "| σ at which the bound closes what SAGA closes | "
        + " | ".join(fmt_sigma(r["sigma_matching_saga"]) for r in rows)
        + " |",
        "",
        "Error of SAGA's held-out model on the same quantity, ln(predicted / true) of the time from a call's"
        f" start to its stream's next call ({err['skipped']} calls without a ratio skipped):",
        "",
        "| predicted | calls | sd | robust sd (1.4826·MAD) | median (bias) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("at_start", "when the call is sent"), ("at_end", "when its response is out")):
        e = err[key]
        lines.append(f"| {label} | {e['n']:,} | {e['sd']:.2f} | {e['robust_sd']:.2f} | {e['median']:+.2f} |")
    lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=Path, default=ROOT.parent / "shared" / "traces")
    ap.add_argument("--only", choices=sorted(SETS), default=None)
    ap.add_argument("--draws", type=int, default=3, help="noise seeds per σ")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if not args.traces.is_dir():
        print(f"no trace folder at {args.traces}: nothing to run", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = {}
    for name, files in SETS.items():
        if args.only and name != args.only:
            continue
        results[name] = run_set(name, files, args.traces, args.draws)
    wall = time.monotonic() - t0
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/retention_information.py" + (f" --only {args.only}" if args.only else "")
    if args.draws != 3:
        cmd += f" --draws {args.draws}"
    stem = args.out / ("retention_information" + (f"_{args.only}" if args.only else ""))
    doc = {"date": when, "command": cmd, "machine": machine(), "wall_s": round(wall, 1), "sets": results}
    stem.with_suffix(".json").write_text(json.dumps(finite(doc), indent=2, allow_nan=False) + "\n")
    lines = [
        "# How good must a next-call prediction be? (retention, informed bound)",
        "",
        f"- date: {when}",
        f"- command: `{cmd}`",
        f"- machine: {machine()}; wall time {wall:.0f} s",
        "- traces: `../shared/traces/` (credits in its README); replay as `bench/retention_eval.py`"
        " (seed 0, 40 sessions alive, 2 held-out folds)",
        "- the informed bound reads the future (docs/retention.md § Information bound); SAGA does not",
        "",
    ]
    for name, res in results.items():
        lines += markdown(name, res, when, cmd, wall, args.draws)
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

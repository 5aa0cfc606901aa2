"""``saga graphs eval``: the retention evaluator's command line (a thin shell around evaluate()).

``saga graphs eval TRACES... --capacity 0.05,0.1,0.25,0.5 [--policies oracle,lru,...]
[--json out.json] [--png out.png] [--seed S] [--sessions-alive 40]`` reads the traces (format
detected per file), replays every policy at every capacity (fractions of W) with a progress
bar, prints the table and optionally writes the JSON results and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from saga.graphs.retention.evaluate import BOUNDS, POLICIES, EvalReport, evaluate
from saga.graphs.retention.gapmix import STEP_MODES
from saga.graphs.retention.policies import SagaRetentionSettings
from saga.graphs.retention.predictors import PredictorFactory
from saga.graphs.retention.workload import ARRIVALS, ReplaySettings
from saga.graphs.trace import SessionTrace


def _floats(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError("capacities must be fractions of W greater than 0")
    return vals


def _sigma(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (inf allowed), got {text}")
    return v


def _policies(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in POLICIES + BOUNDS]
    if bad or not names:
        known = ", ".join(POLICIES + BOUNDS)
        raise argparse.ArgumentTypeError(f"unknown policies {bad}; choose from {known}")
    return names


def register_eval(graph_subparsers: Any) -> None:
    """Add the ``eval`` subcommand to the ``saga graphs`` sub-parsers."""
    p = graph_subparsers.add_parser(
        "eval",
        help="replay traces through a KV cache and compare retention policies with the oracle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("traces", nargs="+", help="trace files (WEKA Claude Code, Mooncake, OTLP JSON, event log)")
    p.add_argument("--capacity", type=_floats, default=[0.05, 0.1, 0.25, 0.5], help="fractions of W")
    p.add_argument(
        "--policies",
        type=_policies,
        default=list(POLICIES),
        help=",".join(POLICIES) + " (default); the bound 'informed' on request",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--png", type=Path, default=None, help="write a plot of recompute vs capacity here")
    p.add_argument("--seed", type=int, default=0, help="seed of the Poisson session arrivals")
    p.add_argument("--sessions-alive", type=float, default=40.0, help="mean concurrent sessions (Poisson)")
    p.add_argument("--arrivals", choices=ARRIVALS, default="auto", help="session start times")
    p.add_argument("--folds", type=int, default=2, help="held-out folds for the predictors")
    p.add_argument("--ttl", type=float, default=60.0, help="TTL of the ttl policy (seconds)")
    p.add_argument(
        "--informed-sigma",
        type=_sigma,
        default=1.0,
        help="log-normal error (sd of ln predicted/true) of the 'informed' bound's next-call times",
    )
    p.add_argument(
        "--predictor",
        choices=("empirical", "aeg"),
        default="empirical",
        help="held-out predictor of the weighted and saga policies",
    )
    p.add_argument(
        "--saga-step-bins",
        choices=STEP_MODES,
        nargs="?",
        const="on",
        default="auto",
        help="SAGA's gap contexts also by call position (first, 2nd-3rd, later): off, on (the flag "
        "alone), or auto (default: per context, where cross-fitting on the training sessions says so)",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip corrupt trace records (counted)")
    p.set_defaults(handler=run_eval)


def _factory(name: str) -> PredictorFactory | None:
    if name == "aeg":
        from saga.graphs.aeg import build_graphs
        from saga.graphs.predict import AEGPredictor

        def make(train: list[SessionTrace]) -> Any:
            return AEGPredictor(build_graphs(train))

        return make
    return None


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from saga.graphs.ingest import read_traces

    t0 = time.monotonic()
    try:
        ingested = read_traces(args.traces, skip_bad=args.skip_bad)
    except (ValueError, OSError) as e:
        print(f"saga graphs eval: {e}", file=sys.stderr)
        return 2
    if ingested.skipped:
        print(f"skipped {ingested.skipped} bad records", file=sys.stderr)
    settings = ReplaySettings(
        arrivals=args.arrivals, sessions_alive=args.sessions_alive, seed=args.seed, folds=args.folds
    )
    runs = len(args.capacity) * len(dict.fromkeys(["oracle", "lru", *args.policies]))
    with tqdm(total=runs, desc="replays", unit="run", file=sys.stderr) as bar:

        def tick(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        try:
            report = evaluate(
                ingested.sessions,
                args.capacity,
                args.policies,
                replay_settings=settings,
                predictor_factory=_factory(args.predictor),
                ttl_s=args.ttl,
                saga=SagaRetentionSettings(step_bins=args.saga_step_bins),
                informed_sigma=args.informed_sigma,
                progress=tick,
            )
        except ValueError as e:
            print(f"saga graphs eval: {e}", file=sys.stderr)
            return 2
    report.settings["predictor"] = args.predictor
    print(
        f"{report.sessions} sessions, {report.requests} requests, W = {report.working_set_pages:,} pages "
        f"of {report.block_size} tokens; compulsory {report.compulsory_tokens:,} of "
        f"{report.requested_tokens:,} requested tokens; {time.monotonic() - t0:.0f} s"
    )
    print(report.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = report.to_json()
        doc["traces"] = [str(t) for t in args.traces]
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    if args.png:
        plot(report, args.png, title=", ".join(Path(t).name for t in args.traces))
    return 0


def plot(report: EvalReport, path: Path, *, title: str = "") -> None:
    """Recomputed tokens vs capacity, one line per policy (log y), written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r.policy for r in report.rows):
        rows = [r for r in report.rows if r.policy == name]
        ax.plot(
            [100 * r.capacity for r in rows],
            [r.recomputed_tokens for r in rows],
            marker="o",
            label=name,
            linestyle="--" if name == "oracle" else "-",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("KV cache capacity (% of peak working set W)")
    ax.set_ylabel("recomputed prefill tokens")
    ax.set_title(f"Retention policies: {title}" if title else "Retention policies")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

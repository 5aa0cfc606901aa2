"""Run a grid of (capacity, policy) replays on one workload and summarise it against the oracle.

``evaluate(sessions, capacities, policies)`` builds the workload once (timeline, segments, W),
the held-out predictors once, and replays every policy at every capacity (a fraction of W).
Per row it reports recomputed tokens, the ratio to the oracle at that capacity and the share of
the LRU-to-oracle gap the policy closes: ``(LRU − policy) / (LRU − oracle)`` (1 = as good as
the oracle, 0 = as LRU, negative = worse than LRU), also per held-out fold (the same formula on
the requests of that fold's sessions, whose predictions were trained on the other folds): a
policy tuned to one half of the sessions shows it as a gap between the folds. Pure: no I/O;
``progress`` is called after every replay so a shell can draw a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from saga.graphs.retention.cache import Policy, ReplayResult, replay
from saga.graphs.retention.gapmodel import EmpiricalGapPredictor
from saga.graphs.retention.policies import (
    InformedBoundPolicy,
    LRUPolicy,
    OraclePolicy,
    SagaPolicy,
    SagaRetentionSettings,
    TTLPolicy,
    WeightedScorePolicy,
)
from saga.graphs.retention.predictors import PredictionCache, PredictorFactory, held_out_predictors
from saga.graphs.retention.workload import ReplaySettings, Workload, build_workload
from saga.graphs.trace import SessionTrace

POLICIES = ("oracle", "lru", "ttl", "weighted", "saga")
# Bounds that read the future besides the oracle (not run unless asked for): ``informed`` is
# Bélády told each stream's end and its next call time up to a log-normal error (``informed_sigma``).
BOUNDS = ("informed",)
RESULT_VERSION = 1


@dataclass(frozen=True, slots=True)
class EvalRow:
    capacity: float  # fraction of W
    capacity_pages: int
    policy: str
    recomputed_tokens: int
    oracle_ratio: float  # recomputed / oracle's recomputed at this capacity
    gap_closed: float | None  # (LRU − policy) / (LRU − oracle); None when LRU == oracle
    hit_rate: float  # share of requested pages that were cached
    # per held-out fold: recomputed tokens of that fold's sessions, and their gap closed
    recomputed_by_fold: list[int] = field(default_factory=list)
    gap_closed_by_fold: list[float | None] = field(default_factory=list)


@dataclass(slots=True)
class EvalReport:
    rows: list[EvalRow]
    working_set_pages: int
    block_size: int
    sessions: int
    requests: int
    requested_tokens: int
    compulsory_tokens: int  # first use of every page: recomputed by every policy
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, capacity: float, policy: str) -> EvalRow:
        for r in self.rows:
            if r.capacity == capacity and r.policy == policy:
                return r
        raise KeyError((capacity, policy))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RESULT_VERSION,
            "working_set_pages": self.working_set_pages,
            "block_size": self.block_size,
            "sessions": self.sessions,
            "requests": self.requests,
            "requested_tokens": self.requested_tokens,
            "compulsory_tokens": self.compulsory_tokens,
            "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
        }

    def table(self) -> str:
        """A markdown table: capacity, policy, recomputed tokens, ratio to oracle, gap closed."""
        lines = [
            "| capacity (of W) | policy | recomputed tokens | ratio to oracle | LRU→oracle gap closed "
            "| per fold |",
            "|---:|---|---:|---:|---:|---:|",
        ]

        def pct(g: float | None) -> str:
            return "n/a" if g is None else f"{100 * g:.1f}%"

        for r in self.rows:
            folds = " / ".join(pct(g) for g in r.gap_closed_by_fold)
            lines.append(
                f"| {100 * r.capacity:g}% | {r.policy} | {r.recomputed_tokens:,} | "
                f"{r.oracle_ratio:.3f} | {pct(r.gap_closed)} | {folds} |"
            )
        return "\n".join(lines)


def _closed(lru: int, oracle: int, policy: int) -> float | None:
    return (lru - policy) / (lru - oracle) if lru > oracle else None


def make_policy(
    name: str,
    predictions: PredictionCache,
    *,
    ttl_s: float = 60.0,
    saga: SagaRetentionSettings | None = None,
    informed_sigma: float = 1.0,
    seed: int = 0,
) -> Policy:
    """A fresh policy by name (one of :data:`POLICIES` or :data:`BOUNDS`)."""
    if name == "oracle":
        return OraclePolicy()
    if name == "lru":
        return LRUPolicy()
    if name == "ttl":
        return TTLPolicy(ttl_s)
    if name == "weighted":
        return WeightedScorePolicy(predictions)
    if name == "saga":
        return SagaPolicy(saga)
    if name == "informed":
        return InformedBoundPolicy(informed_sigma, seed)
    raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES + BOUNDS)}")


def evaluate(
    sessions: list[SessionTrace] | Workload,
    capacities: Sequence[float],
    policies: Sequence[str] = POLICIES,
    *,
    replay_settings: ReplaySettings | None = None,
    predictor_factory: PredictorFactory | None = None,
    ttl_s: float = 60.0,
    saga: SagaRetentionSettings | None = None,
    informed_sigma: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Replay every policy at every capacity (fractions of W) and compare with the oracle."""
    for name in policies:
        if name not in POLICIES + BOUNDS:
            raise ValueError(f"unknown policy {name!r}; expected one of {', '.join(POLICIES + BOUNDS)}")
    for c in capacities:
        if c <= 0:
            raise ValueError(f"capacity fractions must be > 0, got {c}")
    wl = sessions if isinstance(sessions, Workload) else build_workload(sessions, replay_settings)
    factory = predictor_factory or (lambda train: EmpiricalGapPredictor(train))
    needs_pred = "weighted" in policies
    predictors = held_out_predictors(wl, factory) if needs_pred else []
    run = list(dict.fromkeys(["oracle", "lru", *policies]))  # oracle and LRU anchor the ratios
    rows: list[EvalRow] = []
    for cap in capacities:
        pages = max(1, round(cap * wl.working_set_pages))
        got: dict[str, ReplayResult] = {}
        for name in run:
            pol = make_policy(
                name,
                PredictionCache(wl, predictors),
                ttl_s=ttl_s,
                saga=saga,
                informed_sigma=informed_sigma,
                seed=wl.settings.seed,
            )
            got[name] = replay(wl, pages, pol)
            if progress:
                progress(f"{100 * cap:g}% {name}")
        oracle, lru = got["oracle"].recomputed_tokens, got["lru"].recomputed_tokens
        for name in policies:
            res = got[name]
            tok = res.recomputed_tokens
            by_fold = [p * wl.block_size for p in res.recomputed_by_fold]
            rows.append(
                EvalRow(
                    capacity=cap,
                    capacity_pages=pages,
                    policy=name,
                    recomputed_tokens=tok,
                    oracle_ratio=tok / oracle if oracle else 1.0,
                    gap_closed=_closed(lru, oracle, tok),
                    hit_rate=res.hit_rate,
                    recomputed_by_fold=by_fold,
                    gap_closed_by_fold=[
                        _closed(lo, orc, p)
                        for lo, orc, p in zip(
                            got["lru"].recomputed_by_fold,
                            got["oracle"].recomputed_by_fold,
                            res.recomputed_by_fold,
                            strict=True,
                        )
                    ],
                )
            )
    st = wl.settings
    return EvalReport(
        rows=rows,
        working_set_pages=wl.working_set_pages,
        block_size=wl.block_size,
        sessions=len(wl.sessions),
        requests=wl.n_requests,
        requested_tokens=wl.total_pages() * wl.block_size,
        compulsory_tokens=wl.compulsory_pages() * wl.block_size,
        settings={
            "arrivals": st.arrivals,
            "sessions_alive": st.sessions_alive,
            "seed": st.seed,
            "folds": st.folds,
            "ttl_s": ttl_s,
            **({"informed_sigma": informed_sigma} if "informed" in policies else {}),
            "saga": asdict(saga or SagaRetentionSettings()),
        },
    )

"""Calibration of a :class:`~saga.graphs.api.Predictor` on held-out sessions.

Split: a session goes to the test set when BLAKE2b(session id) mod 1000 < 1000·test_fraction,
so the split is stable across runs and machines and independent of file order. Sub-agents go
with their parent.

Events: every LLM call ``k`` of every test (sub-)session is a tool boundary. The predictor is
asked at gap start (elapsed 0) and again after ``e`` seconds of silence for each ``e`` in
``elapsed_s`` — only on boundaries still silent at ``e`` (the session ended, or its gap is
``>= e``), which is exactly when the scheduler would ask. The position it gets is what a live
scheduler knows: agent type, calls done, the stop reason, and the gap label when it is known at
the boundary (a named tool, or ``agent:<type>`` when a sub-agent was forked). The generic labels
``tool`` and ``human`` are withheld: the ingesters create those gap records only when a next call
exists, so passing them would leak the outcome.

Metrics:

- **continuation** (all events): Brier score of ``p_continue`` against "another call came",
  its skill against the base rate of the training set (1 − Brier/Brier_base), and a
  reliability table (10 bins of predicted probability: mean prediction vs observed frequency);
- **time to next call** (events that did continue): coverage of the central 50% interval
  [q25, q75] and 90% interval [q05, q95] of the *remaining* gap (nominal: 0.5 and 0.9), and
  the mean pinball (quantile) loss over the 8 ``QUANTILE_LEVELS`` — a proper scoring rule for
  quantile forecasts — both in seconds and on ``log10(1 + seconds)`` (the heavy tail dominates
  the first, the second weighs every scale alike).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from saga.graphs.aeg import step_gaps
from saga.graphs.api import QUANTILE_LEVELS, Predictor, SessionPosition
from saga.graphs.trace import TOOL_HUMAN, TOOL_UNKNOWN, SessionTrace

_SOURCE_DEFAULT_LABELS = frozenset({TOOL_UNKNOWN, TOOL_HUMAN})
_I05, _I25, _I75, _I95 = (QUANTILE_LEVELS.index(x) for x in (0.05, 0.25, 0.75, 0.95))


def is_test(session_id: str, test_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(session_id.encode("utf-8"), digest_size=8).digest(), "big")
    return h % 1000 < round(1000 * test_fraction)


def split(
    sessions: Iterable[SessionTrace], test_fraction: float = 0.25
) -> tuple[list[SessionTrace], list[SessionTrace]]:
    """(train, test) by session-id hash."""
    train: list[SessionTrace] = []
    test: list[SessionTrace] = []
    for s in sessions:
        (test if is_test(s.session_id, test_fraction) else train).append(s)
    return train, test


@dataclass(slots=True)
class _Acc:
    n: int = 0
    brier: float = 0.0
    brier_base: float = 0.0
    gaps: int = 0
    cover50: int = 0
    cover90: int = 0
    pinball_s: float = 0.0
    pinball_log: float = 0.0
    rel_pred: list[float] = field(default_factory=lambda: [0.0] * 10)
    rel_obs: list[float] = field(default_factory=lambda: [0.0] * 10)
    rel_n: list[int] = field(default_factory=lambda: [0] * 10)


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    """Metrics of one predictor at one elapsed time."""

    elapsed_s: float
    events: int
    brier: float
    brier_base_rate: float
    brier_skill: float
    gaps: int
    coverage_50: float
    coverage_90: float
    pinball_s: float
    pinball_log10: float
    reliability: tuple[tuple[float, float, int], ...]  # (mean predicted, observed, count) per bin


def evaluate(
    predictor: Predictor,
    test: Sequence[SessionTrace],
    *,
    base_rate: float,
    elapsed_s: Sequence[float] = (0.0, 10.0, 60.0, 300.0),
    erase_structure: bool = False,
) -> list[CalibrationRow]:
    """Calibration rows, one per elapsed time (see the module docstring).

    ``base_rate`` is the training set's fraction of calls that were followed by another call
    (the Brier reference). ``erase_structure`` hides agent type, stop reason and tool from the
    predictor (for a structure-free baseline fitted the same way).
    """
    accs = {e: _Acc() for e in elapsed_s}
    for top in test:
        for s in top.walk():
            gaps = step_gaps(s)
            n = len(s.calls)
            for k, c in enumerate(s.calls):
                cont = k < n - 1
                label, gap = gaps[k] if cont else (None, math.inf)
                if label in _SOURCE_DEFAULT_LABELS:
                    # "tool"/"human" are inferred by the ingesters from the *next* call's existence:
                    # passing them would leak the outcome, so the predictor gets "no tool known"
                    label = None
                if erase_structure:
                    pos = SessionPosition("*", k + 1, c.prompt_tokens + c.output_tokens, "tool", "")
                else:
                    pos = SessionPosition(
                        s.agent_type,
                        k + 1,
                        c.prompt_tokens + c.output_tokens,
                        label,
                        c.stop,
                        s.parent_id is not None,
                    )
                for e in elapsed_s:
                    if gap < e:
                        continue
                    _score(accs[e], predictor, pos, e, cont, gap, base_rate)
    return [_row(e, accs[e]) for e in elapsed_s]


def _score(
    a: _Acc, predictor: Predictor, pos: SessionPosition, e: float, cont: bool, gap: float, base_rate: float
) -> None:
    p = predictor.next_call(pos, e)
    y = 1.0 if cont else 0.0
    a.n += 1
    a.brier += (p.p_continue - y) ** 2
    a.brier_base += (base_rate - y) ** 2
    b = min(9, int(p.p_continue * 10))
    a.rel_pred[b] += p.p_continue
    a.rel_obs[b] += y
    a.rel_n[b] += 1
    if not cont:
        return
    r = gap - e
    q = p.gap_quantiles_s
    a.gaps += 1
    a.cover50 += q[_I25] <= r <= q[_I75]
    a.cover90 += q[_I05] <= r <= q[_I95]
    lr = math.log10(1 + r)
    for lvl, qv in zip(QUANTILE_LEVELS, q, strict=True):
        a.pinball_s += (lvl - (r < qv)) * (r - qv)
        lq = math.log10(1 + qv)
        a.pinball_log += (lvl - (lr < lq)) * (lr - lq)


def _row(e: float, a: _Acc) -> CalibrationRow:
    nq = max(1, a.gaps * len(QUANTILE_LEVELS))
    brier = a.brier / max(1, a.n)
    base = a.brier_base / max(1, a.n)
    return CalibrationRow(
        elapsed_s=e,
        events=a.n,
        brier=brier,
        brier_base_rate=base,
        brier_skill=1 - brier / base if base > 0 else 0.0,
        gaps=a.gaps,
        coverage_50=a.cover50 / max(1, a.gaps),
        coverage_90=a.cover90 / max(1, a.gaps),
        pinball_s=a.pinball_s / nq,
        pinball_log10=a.pinball_log / nq,
        reliability=tuple(
            (a.rel_pred[i] / a.rel_n[i], a.rel_obs[i] / a.rel_n[i], a.rel_n[i])
            for i in range(10)
            if a.rel_n[i]
        ),
    )


def continuation_base_rate(sessions: Iterable[SessionTrace]) -> float:
    """Fraction of calls (sub-agents included) followed by another call of the same session."""
    calls = cont = 0
    for top in sessions:
        for s in top.walk():
            calls += len(s.calls)
            cont += len(s.calls) - 1
    return cont / calls if calls else 0.5


def erase(s: SessionTrace) -> SessionTrace:
    """``s`` with agent type ``*``, stop reasons ``""`` and tools named ``tool`` (baseline training)."""
    from dataclasses import replace

    return replace(
        s,
        agent_type="*",
        calls=tuple(replace(c, stop="") for c in s.calls),
        tools=tuple(replace(t, name="tool") for t in s.tools),
        subagents=tuple(replace(x, session=erase(x.session)) for x in s.subagents),
    )

"""Run results and the comparison report (task completion time, SLOs, fairness, KV).

``model``: the result model (:class:`RunResult`, :class:`SessionOutcome`) the simulator and
the live benchmark produce. ``metrics``: the metrics computed from several results
(completion-time percentiles, geometric-mean speedups, SLO attainment, Jain index, ratio to
the physical limit, ...). ``render``: Markdown, JSON and PNG output.
"""

from saga.scheduler.report.model import (
    RESULT_MODEL_VERSION,
    ReportError,
    RunResult,
    Series,
    SessionOutcome,
    load_results,
    slo_met_for,
)

__all__ = [
    "RESULT_MODEL_VERSION",
    "ReportError",
    "RunResult",
    "Series",
    "SessionOutcome",
    "load_results",
    "slo_met_for",
]

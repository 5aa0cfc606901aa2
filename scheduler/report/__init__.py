"""Run results and the comparison report (task completion time, SLOs, fairness, KV).

``model``: the result model (:class:`RunResult`, :class:`SessionOutcome`) the simulator and
the live benchmark produce. ``metrics``: the metrics computed from several results
(completion-time percentiles, geometric-mean speedups, SLO attainment, Jain index, ratio to
the physical limit, ...). ``render``: Markdown, JSON and PNG output.
"""

from saga.scheduler.report.metrics import (
    ALL,
    GroupStats,
    Report,
    Scenario,
    ScenarioReport,
    build_report,
    geomean,
    jain,
    percentile,
)
from saga.scheduler.report.model import (
    RESULT_MODEL_VERSION,
    ReportError,
    RunResult,
    Series,
    SessionOutcome,
    load_results,
    slo_met_for,
)
from saga.scheduler.report.render import environment, render_markdown, report_json, write_report

__all__ = [
    "ALL",
    "RESULT_MODEL_VERSION",
    "GroupStats",
    "Report",
    "ReportError",
    "RunResult",
    "Scenario",
    "ScenarioReport",
    "Series",
    "SessionOutcome",
    "build_report",
    "environment",
    "geomean",
    "jain",
    "load_results",
    "percentile",
    "render_markdown",
    "report_json",
    "slo_met_for",
    "write_report",
]

"""Run results and the comparison report (task completion time, SLOs, fairness, KV).

``model``: the result model (:class:`RunResult`, :class:`SessionOutcome`) the simulator and
the live benchmark produce. ``metrics``: the metrics computed from several results
(completion-time percentiles, geometric-mean speedups, SLO attainment, Jain index, ratio to
the physical limit, ...). ``render``: Markdown, JSON and PNG output. ``files``: result files
on disk (per-session detail as deterministic gzipped ``.json.gz``; readers take ``.json`` too).
"""

from saga.scheduler.report.files import (
    find_json,
    folder_results,
    json_files,
    load_json,
    load_limits,
    load_results,
    read_json_text,
    stem_of,
    write_json_gz,
    write_result,
)
from saga.scheduler.report.metrics import (
    ALL,
    MEASURED_KEY,
    GroupStats,
    Report,
    Scenario,
    ScenarioReport,
    build_report,
    geomean,
    jain,
    measured,
    percentile,
)
from saga.scheduler.report.model import (
    RESULT_MODEL_VERSION,
    ReportError,
    RunResult,
    Series,
    SessionOutcome,
    slo_met_for,
)
from saga.scheduler.report.render import environment, render_markdown, report_json, write_report

__all__ = [
    "ALL",
    "MEASURED_KEY",
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
    "find_json",
    "folder_results",
    "geomean",
    "jain",
    "json_files",
    "load_json",
    "load_limits",
    "load_results",
    "measured",
    "percentile",
    "read_json_text",
    "render_markdown",
    "report_json",
    "slo_met_for",
    "stem_of",
    "write_json_gz",
    "write_report",
    "write_result",
]

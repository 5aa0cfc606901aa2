"""The result model of one simulated (or live) run: what the report renders.

A :class:`RunResult` is what one *system* (SAGA, a baseline, an ablation) produced on one
*workload* with one seed, replica count and load. It holds one :class:`SessionOutcome` per
session (sub-agent sessions included, flagged ``is_subagent``) and a few cluster-level time
series (KV utilisation per replica, the cluster's prefix-cache hit rate). The simulator
(``saga.scheduler.sim``) and the live benchmark (``saga.bench``) both produce it; the report
(``saga.scheduler.report``) compares several of them.

Units: times are seconds on the run's own timeline (the workload's clock: session ``start_s``
values come from the workload's arrivals); token counts are ints >= 0; fractions are in
[0, 1]. ``deadline_s`` is relative to the session's start, like
``saga.scheduler.api.WorkflowHints.deadline_s``.

JSON: :meth:`RunResult.to_json` / :meth:`RunResult.from_json` round-trip exactly (floats are
written by ``json`` with repr precision). Bad input raises :class:`ReportError` naming the
field (``outcomes[3].end_s``). Files on disk (``.json`` or gzipped ``.json.gz``): ``files.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RESULT_MODEL_VERSION = 1


class ReportError(ValueError):
    """Invalid or insufficient input to the result model or the report."""


def _err(where: str, message: str) -> ReportError:
    return ReportError(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """How one session (one agent task) fared in a run.

    ``completed`` is False when the session never finished (rejected by admission control,
    or still running when the run stopped); ``end_s`` is then when it gave up or the run
    ended, and it counts as an SLO miss. ``slo_met`` is None when the session had no deadline.
    """

    session_id: str
    tenant: str
    agent_type: str
    start_s: float  # arrival of the session (its first call's submission), run timeline
    end_s: float  # completion of its last call (or give-up time when not completed)
    calls: int  # LLM calls completed
    ttft_s: tuple[float, ...] = ()  # time to first token of each call, in call order
    prompt_tokens: int = 0  # sum over calls
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    output_tokens: int = 0
    recomputed_tokens: int = 0  # prompt tokens prefilled again that an earlier call had computed
    deadline_s: float | None = None  # completion-time SLO relative to start_s
    slo_met: bool | None = None  # None when no deadline
    steals: int = 0  # times a call of this session was stolen/migrated to another replica
    rejected: int = 0  # calls rejected by admission control
    deferred: int = 0  # calls deferred (queued in the scheduler) at least once
    is_subagent: bool = False
    completed: bool = True

    @property
    def completion_s(self) -> float:
        """Task completion time: end minus start, seconds."""
        return self.end_s - self.start_s

    def validate(self, where: str = "") -> None:
        w = where or self.session_id
        if not self.session_id:
            raise _err(w, "field 'session_id' is empty")
        for name in ("start_s", "end_s"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise _err(w, f"field {name!r} is not finite ({v})")
        if self.end_s < self.start_s:
            raise _err(w, f"field 'end_s' ({self.end_s}) is before 'start_s' ({self.start_s})")
        for name in (
            "calls",
            "prompt_tokens",
            "cached_tokens",
            "output_tokens",
            "recomputed_tokens",
            "steals",
            "rejected",
            "deferred",
        ):
            if getattr(self, name) < 0:
                raise _err(w, f"field {name!r} is negative")
        if self.cached_tokens > self.prompt_tokens:
            raise _err(w, "field 'cached_tokens' exceeds 'prompt_tokens'")
        if self.recomputed_tokens > self.prompt_tokens:
            raise _err(w, "field 'recomputed_tokens' exceeds 'prompt_tokens'")
        if any((not math.isfinite(t)) or t < 0 for t in self.ttft_s):
            raise _err(w, "field 'ttft_s' holds a negative or non-finite value")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise _err(w, f"field 'deadline_s' must be > 0, got {self.deadline_s}")
        if self.deadline_s is None and self.slo_met is not None:
            raise _err(w, "field 'slo_met' is set but 'deadline_s' is None")


def slo_met_for(completion_s: float, deadline_s: float | None, completed: bool = True) -> bool | None:
    """The ``slo_met`` value for a session: None without a deadline, else completed in time."""
    if deadline_s is None:
        return None
    return completed and completion_s <= deadline_s


@dataclass(frozen=True, slots=True)
class Series:
    """A sampled time series: ``values[i]`` observed at ``t_s[i]`` (non-decreasing)."""

    t_s: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def validate(self, where: str) -> None:
        if len(self.t_s) != len(self.values):
            raise _err(where, f"{len(self.t_s)} times but {len(self.values)} values")
        if any(b < a for a, b in zip(self.t_s, self.t_s[1:], strict=False)):
            raise _err(where, "times go backwards")
        if any(not math.isfinite(v) for v in self.values):
            raise _err(where, "non-finite value")

    def mean(self) -> float | None:
        """Plain mean of the samples (samples are taken at a fixed period), None when empty."""
        return sum(self.values) / len(self.values) if self.values else None


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one system produced on one workload (one seed, one cluster size, one load)."""

    system: str  # e.g. "saga", "cache_aware", "saga-no-stealing"
    workload: str  # workload name (``saga.scheduler.workloads.Workload.name``)
    seed: int
    replicas: int
    load: float  # target offered load as a fraction of cluster capacity (e.g. 0.8)
    outcomes: tuple[SessionOutcome, ...]
    duration_s: float  # run-timeline span measured (first arrival .. last completion)
    kv_util: Mapping[str, Series] = field(default_factory=dict)  # replica id -> KV used fraction
    cache_hit_rate: Series = field(default_factory=Series)  # cluster prefix-cache hit rate
    lane_replicas: Series = field(default_factory=Series)  # SLO lane size, replicas (simulator)
    steals: int = 0  # cluster total steals/migrations
    wall_s: float | None = None  # wall-clock seconds the run took (simulator speed)
    meta: Mapping[str, Any] = field(default_factory=dict)  # settings, versions, command (JSON-able)

    def validate(self) -> None:
        if not self.system:
            raise _err("system", "empty system name")
        if not self.workload:
            raise _err("workload", "empty workload name")
        if self.replicas < 1:
            raise _err("replicas", f"must be >= 1, got {self.replicas}")
        if not (math.isfinite(self.load) and self.load > 0):
            raise _err("load", f"must be > 0, got {self.load}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise _err("duration_s", f"must be > 0, got {self.duration_s}")
        if self.steals < 0:
            raise _err("steals", "negative")
        seen: set[str] = set()
        for i, o in enumerate(self.outcomes):
            o.validate(f"outcomes[{i}] ({o.session_id})")
            if o.session_id in seen:
                raise _err(f"outcomes[{i}]", f"duplicate session id {o.session_id!r}")
            seen.add(o.session_id)
        for rid, s in self.kv_util.items():
            s.validate(f"kv_util[{rid!r}]")
            if any(not 0.0 <= v <= 1.0 + 1e-9 for v in s.values):
                raise _err(f"kv_util[{rid!r}]", "value outside [0, 1]")
        self.cache_hit_rate.validate("cache_hit_rate")
        self.lane_replicas.validate("lane_replicas")
        if any(not 0 <= v <= self.replicas for v in self.lane_replicas.values):
            raise _err("lane_replicas", f"value outside [0, {self.replicas}]")

    # ----------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RESULT_MODEL_VERSION,
            "system": self.system,
            "workload": self.workload,
            "seed": self.seed,
            "replicas": self.replicas,
            "load": self.load,
            "duration_s": self.duration_s,
            "steals": self.steals,
            "wall_s": self.wall_s,
            "meta": dict(self.meta),
            "kv_util": {k: _series_to(v) for k, v in self.kv_util.items()},
            "cache_hit_rate": _series_to(self.cache_hit_rate),
            "lane_replicas": _series_to(self.lane_replicas),
            "outcomes": [_outcome_to(o) for o in self.outcomes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        if not isinstance(d, Mapping):
            raise _err("", f"expected an object, got {type(d).__name__}")
        version = d.get("version")
        if version != RESULT_MODEL_VERSION:
            raise _err("version", f"unsupported result model version {version!r}")
        try:
            outcomes_raw = d["outcomes"]
            if not isinstance(outcomes_raw, list):
                raise _err("outcomes", "expected a list")
            outcomes = tuple(_outcome_from(o, f"outcomes[{i}]") for i, o in enumerate(outcomes_raw))
            kv_raw = d.get("kv_util", {})
            if not isinstance(kv_raw, Mapping):
                raise _err("kv_util", "expected an object")
            r = cls(
                system=str(d["system"]),
                workload=str(d["workload"]),
                seed=int(d["seed"]),
                replicas=int(d["replicas"]),
                load=float(d["load"]),
                outcomes=outcomes,
                duration_s=float(d["duration_s"]),
                kv_util={str(k): _series_from(v, f"kv_util[{k!r}]") for k, v in kv_raw.items()},
                cache_hit_rate=_series_from(d.get("cache_hit_rate", {}), "cache_hit_rate"),
                lane_replicas=_series_from(d.get("lane_replicas", {}), "lane_replicas"),
                steals=int(d.get("steals", 0)),
                wall_s=None if d.get("wall_s") is None else float(d["wall_s"]),
                meta=dict(d.get("meta", {})),
            )
        except KeyError as e:
            raise _err("", f"missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, ReportError):
                raise
            raise _err("", f"bad value: {e}") from None
        r.validate()
        return r

    @classmethod
    def from_json(cls, text: str, *, source: str = "") -> RunResult:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise _err(source, f"not JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except ReportError as e:
            if source:
                raise _err(source, str(e)) from None
            raise


_OUTCOME_INT = (
    "calls",
    "prompt_tokens",
    "cached_tokens",
    "output_tokens",
    "recomputed_tokens",
    "steals",
    "rejected",
    "deferred",
)


def _outcome_to(o: SessionOutcome) -> dict[str, Any]:
    return {
        "session_id": o.session_id,
        "tenant": o.tenant,
        "agent_type": o.agent_type,
        "start_s": o.start_s,
        "end_s": o.end_s,
        "ttft_s": list(o.ttft_s),
        "deadline_s": o.deadline_s,
        "slo_met": o.slo_met,
        "is_subagent": o.is_subagent,
        "completed": o.completed,
        **{k: getattr(o, k) for k in _OUTCOME_INT},
    }


def _outcome_from(d: Any, where: str) -> SessionOutcome:
    if not isinstance(d, Mapping):
        raise _err(where, "expected an object")
    try:
        slo = d.get("slo_met")
        dl = d.get("deadline_s")
        return SessionOutcome(
            session_id=str(d["session_id"]),
            tenant=str(d["tenant"]),
            agent_type=str(d["agent_type"]),
            start_s=float(d["start_s"]),
            end_s=float(d["end_s"]),
            ttft_s=tuple(float(x) for x in d.get("ttft_s", ())),
            deadline_s=None if dl is None else float(dl),
            slo_met=None if slo is None else bool(slo),
            is_subagent=bool(d.get("is_subagent", False)),
            completed=bool(d.get("completed", True)),
            **{k: int(d.get(k, 0)) for k in _OUTCOME_INT},
        )
    except KeyError as e:
        raise _err(where, f"missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise _err(where, f"bad value: {e}") from None


def _series_to(s: Series) -> dict[str, list[float]]:
    return {"t_s": list(s.t_s), "values": list(s.values)}


def _series_from(d: Any, where: str) -> Series:
    if not isinstance(d, Mapping):
        raise _err(where, "expected an object")
    try:
        return Series(
            t_s=tuple(float(x) for x in d.get("t_s", ())),
            values=tuple(float(x) for x in d.get("values", ())),
        )
    except (TypeError, ValueError) as e:
        raise _err(where, f"bad value: {e}") from None

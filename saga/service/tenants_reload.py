"""Tenant policy hot reload: tenant weights and SLOs change without a restart.

Where policies come from (``spec.tenant_policies``, docs/config.md): a folder (``directory``)
of ``*.json`` files, each one tenant's policy document (the ``tenant.json`` the operator
renders for a ``TenantPolicy``). The Helm chart mounts the operator's **tenant bundle**
ConfigMap there (``<release>-tenants``, one key ``<tenant>.json`` per tenant, docs/operator.md
"Tenant policies"). Files are found recursively; names starting with ``..`` (a ConfigMap
volume's ``..data`` and timestamped folders) are skipped, other files are ignored. Each file
is read whole every ``poll_interval_s`` and compared by SHA-256: kubelet swaps a mounted
ConfigMap atomically, so a poll sees the old or the new content, and an unchanged file is not
parsed again. This is the graph reloader's mechanism (:mod:`saga.service.graphs_reload`): both
use :class:`saga.service.reload_sources.SourceDocs` for the walk and the per-file bookkeeping.

Document (units in the names; what ``saga.operator.reconcile.tenantpolicy.policy_document``
writes)::

    {"tenant": "acme", "weight": 2.0,
     "slo": {"completion_time_s": 600, "deadline_factor": 1.5, "attainment_target": 0.99,
             "ttft_s": null},
     "quotas": {"max_active_sessions": 0, "max_calls_per_second": 0, "max_kv_tokens": 0},
     "api_key": {"secret": "acme-key", "key": "api-key", "sha256_16": "..."}}

Validation (:func:`parse_policy`): the JSON must be an object with exactly these fields (an
unknown field is an error, as in the config file), ``tenant`` 1-63 characters of
``[A-Za-z0-9_.-]``, ``weight`` > 0, ``completion_time_s``/``ttft_s`` null or > 0,
``deadline_factor`` >= 1, ``attainment_target`` in (0, 1], quotas >= 0. Every problem is named
with its JSON path (``$.slo.deadline_factor: must be >= 1, got 0.5``).

Errors: a document that fails is logged at ERROR once per content with its file and every
problem, counted in ``saga_tenant_policy_reloads_total{outcome="rejected"}``, and shown in
``saga_tenant_policy_rejected_documents`` until it is fixed or removed; that file keeps its
last good policy (if it never had one it contributes nothing), so a bad publish never
replaces a policy in force.

Merge and apply: each tenant's policy comes from one document (two files naming one tenant:
the later path in sorted order wins, logged). When the set of good documents changes, the
merged policies (tenant → :class:`TenantPolicy`) are handed to ``apply`` (the service's
:meth:`~saga.service.app.Service.apply_tenant_policies`), counted as
``outcome="applied"``. No documents at all hands over ``{}``: the static ``spec.tenants``
alone are in force again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga.scheduler.engine import Engine
from saga.service.config import TenantPolicySettings, TenantSettings
from saga.service.metrics import ServiceMetrics
from saga.service.reload_sources import SourceDocs, poll_forever

log = logging.getLogger(__name__)

_TENANT = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_FIELDS = {"tenant", "weight", "slo", "quotas", "api_key"}
_SLO_FIELDS = {"completion_time_s", "deadline_factor", "attainment_target", "ttft_s"}
_QUOTA_FIELDS = {"max_active_sessions", "max_calls_per_second", "max_kv_tokens"}


class PolicyError(ValueError):
    """An invalid policy document. ``problems`` are ``(JSON path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """One tenant's policy as the scheduler uses it; every field is in force.

    ``weight``: fair-share weight (the engine's ``fairness.weights``). ``slo_s``: the task
    completion SLO in seconds for sessions without a deadline hint (0: none), i.e.
    ``slo.completion_time_s``. ``deadline_factor``: the engine's deadline factor for the
    tenant's sessions without an SLO (0 when the document gives none: the configured factor,
    ``spec.tenants[].deadline_factor`` or the engine's ``fairness.slo_factor``).
    ``attainment_target``: exported as ``saga_tenant_slo_attainment_target`` for the alert
    rule. ``ttft_s``: per-call TTFT objective counted in ``saga_ttft_slo_calls_total``.
    Quotas: admission limits of :mod:`saga.service.quotas` (0: unlimited).
    """

    tenant: str
    weight: float
    slo_s: float = 0.0
    deadline_factor: float = 0.0
    attainment_target: float = 0.99
    ttft_s: float | None = None
    max_active_sessions: int = 0
    max_calls_per_second: float = 0.0
    max_kv_tokens: int = 0


def _number(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    problems: list[tuple[str, str]],
    *,
    default: float | None,
    nullable: bool = False,
) -> float | None:
    if key not in obj:
        if default is None and not nullable:
            problems.append((f"{path}.{key}", "required"))
        return default
    v = obj[key]
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        problems.append((f"{path}.{key}", f"must be a number, got {v!r}"))
        return default
    return float(v)


def _int(obj: Mapping[str, Any], key: str, path: str, problems: list[tuple[str, str]]) -> int:
    v = obj.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int):
        problems.append((f"{path}.{key}", f"must be an integer, got {v!r}"))
        return 0
    if v < 0:
        problems.append((f"{path}.{key}", f"must be >= 0, got {v}"))
    return v


def _section(
    doc: Mapping[str, Any], key: str, allowed: set[str], problems: list[tuple[str, str]]
) -> Mapping[str, Any]:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        problems.append((f"$.{key}", f"must be an object, got {v!r}"))
        return {}
    for k in sorted(set(v) - allowed):
        problems.append((f"$.{key}.{k}", "unknown field"))
    return v


def parse_policy(text: str | bytes) -> TenantPolicy:
    """Parse and validate one policy document; raises :class:`PolicyError` with every problem."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError([("$", f"not JSON: {exc}")]) from None
    if not isinstance(doc, dict):
        raise PolicyError([("$", f"must be a JSON object, got {type(doc).__name__}")])
    p: list[tuple[str, str]] = [(f"$.{k}", "unknown field") for k in sorted(set(doc) - _FIELDS)]
    tenant = doc.get("tenant")
    if not isinstance(tenant, str) or len(tenant) > 63 or not _TENANT.match(tenant):
        p.append(("$.tenant", f"must be 1-63 characters of [A-Za-z0-9_.-], got {tenant!r}"))
    weight = _number(doc, "weight", "$", p, default=None)
    if weight is not None and weight <= 0:
        p.append(("$.weight", f"must be > 0, got {weight}"))
    slo = _section(doc, "slo", _SLO_FIELDS, p)
    completion = _number(slo, "completion_time_s", "$.slo", p, default=None, nullable=True)
    if completion is not None and completion <= 0:
        p.append(("$.slo.completion_time_s", f"must be > 0 or null, got {completion}"))
    factor = _number(slo, "deadline_factor", "$.slo", p, default=None, nullable=True)
    if factor is not None and factor < 1:
        p.append(("$.slo.deadline_factor", f"must be >= 1, got {factor}"))
    target = _number(slo, "attainment_target", "$.slo", p, default=0.99)
    if target is not None and not 0 < target <= 1:
        p.append(("$.slo.attainment_target", f"must be in (0, 1], got {target}"))
    ttft = _number(slo, "ttft_s", "$.slo", p, default=None, nullable=True)
    if ttft is not None and ttft <= 0:
        p.append(("$.slo.ttft_s", f"must be > 0 or null, got {ttft}"))
    quotas = _section(doc, "quotas", _QUOTA_FIELDS, p)
    max_sessions = _int(quotas, "max_active_sessions", "$.quotas", p)
    max_kv = _int(quotas, "max_kv_tokens", "$.quotas", p)
    cps = _number(quotas, "max_calls_per_second", "$.quotas", p, default=0.0)
    if cps is not None and cps < 0:
        p.append(("$.quotas.max_calls_per_second", f"must be >= 0, got {cps}"))
    if "api_key" in doc and not isinstance(doc["api_key"], dict):
        p.append(("$.api_key", "must be an object"))
    if p:
        raise PolicyError(p)
    assert isinstance(tenant, str)
    assert weight is not None
    return TenantPolicy(
        tenant=tenant,
        weight=weight,
        slo_s=completion or 0.0,
        deadline_factor=factor or 0.0,
        attainment_target=target if target is not None else 0.99,
        ttft_s=ttft,
        max_active_sessions=max_sessions,
        max_calls_per_second=cps or 0.0,
        max_kv_tokens=max_kv,
    )


@dataclass(slots=True)
class TenantReloadState:
    """What the reloader has applied (read by tests and operators' debugging)."""

    generation: int = 0  # policy sets applied so far
    sources: dict[str, str] = field(default_factory=dict)  # file → digest of the applied doc
    policies: dict[str, TenantPolicy] = field(default_factory=dict)  # tenant → policy in force
    errors: dict[str, str] = field(default_factory=dict)  # file → last error (until it loads)


class TenantPolicyReloader:
    """Polls the policy folder and applies the merged policies when they change."""

    def __init__(
        self,
        settings: TenantPolicySettings,
        apply: Callable[[dict[str, TenantPolicy]], None],
        *,
        metrics: ServiceMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._apply = apply
        self._metrics = metrics
        self._sleep = sleep
        self._applied: tuple[tuple[str, str], ...] | None = None
        self.state = TenantReloadState()
        self._docs: SourceDocs[TenantPolicy] = SourceDocs(self.state.errors, self._rejected)

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` forever (a task of the service, started after its
        first :meth:`poll`); one failed poll never stops the loop."""
        await poll_forever(
            self.poll, self.settings.poll_interval_s, self._sleep, log, "tenant policy reload failed"
        )

    async def poll(self) -> bool:
        """Read the folder once; True when a new policy set was applied."""
        seen: set[str] = set()
        if self.settings.directory is not None:
            seen = await asyncio.to_thread(
                self._docs.scan_folder,
                Path(self.settings.directory),
                (".json",),
                lambda _path, raw: parse_policy(raw),
                (PolicyError,),
            )
        self._docs.keep_only(seen)
        if self._metrics is not None:
            self._metrics.tenant_policy_rejected(len(self._docs.bad))
        key = self._docs.digests()
        if key == self._applied:
            return False
        merged = self._merge()
        self._apply(merged)
        self._applied = key
        self.state.generation += 1
        self.state.sources = dict(key)
        self.state.policies = merged
        if self._metrics is not None:
            self._metrics.tenant_policy_reload("applied")
        log.info(
            "tenant policies applied (generation %d): %s",
            self.state.generation,
            ", ".join(f"{t} weight {p.weight:g} slo {p.slo_s:g}s" for t, p in sorted(merged.items()))
            or "none (spec.tenants only)",
        )
        return True

    def _rejected(self, source: str, reason: str, kept: bool) -> None:
        if self._metrics is not None:
            self._metrics.tenant_policy_reload("rejected")
        what = "its previous policy stays in force" if kept else "ignored"
        log.error("tenant policy %s rejected (%s): %s", source, what, reason)

    def _merge(self) -> dict[str, TenantPolicy]:
        merged: dict[str, TenantPolicy] = {}
        owner: dict[str, str] = {}
        for source, loaded in sorted(self._docs.good.items()):
            policy = loaded.doc
            if policy.tenant in owner:
                log.warning(
                    "tenant %r in %s and %s; using %s", policy.tenant, owner[policy.tenant], source, source
                )
            owner[policy.tenant] = source
            merged[policy.tenant] = policy
        return merged


# --------------------------------------------------------------------------- applying


def effective_tenants(
    base: list[TenantSettings], policies: Mapping[str, TenantPolicy]
) -> list[TenantSettings]:
    """``spec.tenants`` with the policies applied: a policy replaces every field of the tenant
    of its name (added when ``spec.tenants`` lacks it); tenants without one keep their
    configured values."""
    out = [t if t.name not in policies else _settings(policies[t.name]) for t in base]
    known = {t.name for t in base}
    out += [_settings(policies[name]) for name in sorted(set(policies) - known)]
    return out


def _settings(p: TenantPolicy) -> TenantSettings:
    return TenantSettings(
        name=p.tenant,
        weight=p.weight,
        slo_s=p.slo_s,
        deadline_factor=p.deadline_factor,
        attainment_target=p.attainment_target,
        ttft_s=p.ttft_s or 0.0,
        max_active_sessions=p.max_active_sessions,
        max_calls_per_second=p.max_calls_per_second,
        max_kv_tokens=p.max_kv_tokens,
    )


def set_engine_tenants(
    engine: object, weights: Mapping[str, float], slo_factors: Mapping[str, float]
) -> bool:
    """Make ``weights`` and ``slo_factors`` (per-tenant deadline factors) the engine's from
    its next decision on (:meth:`saga.scheduler.engine.Engine.set_tenant_policies`). False
    (nothing changed) for an engine that is not a :class:`saga.scheduler.engine.Engine`."""
    if not isinstance(engine, Engine):
        return False
    engine.set_tenant_policies(weights, slo_factors)
    return True

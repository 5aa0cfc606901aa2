"""The service's configuration document (``apiVersion: saga.dev/v1alpha1``, ``kind: SchedulerConfig``).

Loading has two phases, like Kubernetes-style config loaders:

1. **parse + default**: YAML is read and mapped onto the typed dataclasses below; a missing
   field takes its documented default, an unknown field or a value of the wrong type is an
   error naming its path (``spec.limits.max_new_tokens: expected an integer, got 'x'``).
2. **validate**: cross-field and semantic checks (URLs, ports, ranges, references between
   tenants and API keys), every problem reported with its path
   (``spec.replicas.static[2]: not a URL``). All problems are collected and raised together in
   one :class:`ConfigError`.

:data:`EMBEDDED_DEFAULT` is the configuration ``saga serve`` runs with when no file is given:
everything on loopback, in-memory state, anonymous calls accepted as tenant ``default``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

API_VERSION = "saga.dev/v1alpha1"
KIND = "SchedulerConfig"


class ConfigError(ValueError):
    """Invalid configuration. ``problems`` are ``(path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{p}: {m}" if p else m for p, m in problems]
        super().__init__(head + ("invalid config:\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0]))


# --------------------------------------------------------------------------- settings


_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A Service / EndpointSlice port name (a DNS label)."""


@dataclass(slots=True)
class ListenSettings:
    # host:port of the gRPC API (saga.v1). 50051 is gRPC's customary port.
    grpc: str = "127.0.0.1:50051"
    # host:port of the OpenAI-compatible HTTP endpoint. 8000 matches vLLM/SGLang's default so
    # an agent's base_url only changes host.
    http: str = "127.0.0.1:8000"
    # host:port of the Prometheus /metrics endpoint (docs/metrics.md). Empty: no metrics server.
    metrics: str = "127.0.0.1:9464"


@dataclass(slots=True)
class ApiKey:
    key: str = ""
    tenant: str = ""


@dataclass(slots=True)
class AuthSettings:
    # Tenant of calls that present no API key. None: every call needs a key. The embedded
    # default accepts anonymous calls as "default" so a local run needs no setup.
    anonymous_tenant: str | None = "default"
    api_keys: list[ApiKey] = field(default_factory=list)


@dataclass(slots=True)
class TenantSettings:
    name: str = ""
    # Fair-share weight (> 0); a tenant with weight 2 is owed twice the service of weight 1.
    weight: float = 1.0
    # Task-completion SLO in seconds for sessions without a deadline hint (0: none).
    slo_s: float = 0.0
    # The engine's deadline for this tenant's sessions without an SLO or hint: start +
    # deadline_factor x expected completion time (>= 1). 0: spec.engine's fairness.slo_factor.
    deadline_factor: float = 0.0
    # Fraction of tasks that should meet their SLO, in (0, 1]; exported as
    # saga_tenant_slo_attainment_target for the chart's alert rule. 0: the chart's default.
    attainment_target: float = 0.0
    # Time-to-first-token objective per call, seconds; calls are counted met/missed in
    # saga_ttft_slo_calls_total. 0: none.
    ttft_s: float = 0.0
    # Admission quotas (0: unlimited; saga.service.quotas): open sessions, calls per wall second
    # (token bucket, one second's burst), and KV tokens held by the tenant's open sessions'
    # contexts and calls in flight. Counted over every scheduler process with the Redis state
    # store (while Redis is unreachable, each process's own counts against 1/N of each quota, N
    # the live processes it last saw), per process otherwise.
    max_active_sessions: int = 0
    max_calls_per_second: float = 0.0
    max_kv_tokens: int = 0


@dataclass(slots=True)
class KubernetesDiscovery:
    namespace: str = "default"
    label_selector: str = ""
    # Name of the EndpointSlice port SGLang serves on (the Helm chart names it "http").
    port_name: str = "http"
    scheme: str = "http"


@dataclass(slots=True)
class KvEventSettings:
    # Replica id -> ZMQ endpoint where that replica's SGLang publishes KV cache events
    # (--kv-events-config's "endpoint" as this process reaches it, e.g. "tcp://10.0.0.7:5557":
    # rank 0's; with --enable-dp-attention, rank r of the dp_size its /server_info reports is
    # read on the port + r, and on the replay endpoint's + r). Every listed replica's view becomes exact
    # (docs/service.md "KV events"). Empty (the default): no events read; the engine keeps its
    # approximate views, since nothing can be assumed about how the replicas were launched.
    endpoints: dict[str, str] = field(default_factory=dict)
    # Replica id -> its replay endpoint (--kv-events-config's "replay_endpoint"); lost batches
    # are asked for there before the view is given up. Optional per replica.
    replay_endpoints: dict[str, str] = field(default_factory=dict)
    # TCP port every replica without an entry in endpoints publishes on (0: off). Each such
    # replica the pool announces (e.g. a pod found by spec.replicas.kubernetes) is subscribed
    # at tcp://<host of its base URL>:<port>, and unsubscribed when the pool removes it; no
    # replay endpoint. The operator's ReplicaPool pods publish on spec.kvEventsPort (5557 by
    # default; the Helm chart's scheduler.kvEvents.port). 0 by default for the same reason as
    # endpoints: nothing can be assumed about how discovered replicas were launched.
    discovered_port: int = 0
    # With discovered_port on: a discovered replica whose EndpointSlice has a port of this name
    # is read there instead (each pool's own spec.kvEventsPort; the operator names it
    # "kv-events"), so pools may publish on different ports. "" : always discovered_port.
    discovered_port_name: str = "kv-events"
    # With discovered_port on: a discovered replica whose EndpointSlice has a port of this name
    # serves replays there (--kv-events-config's "replay_endpoint"; the operator names a pool's
    # spec.kvEventsReplayPort "kv-replay"), so a sequence gap is repaired instead of clearing
    # the view. A slice without it: no replay. "": never. With DP attention, every rank r of a
    # replica (the count from its /server_info) is read on these ports + r.
    discovered_replay_port_name: str = "kv-replay"
    # ZMQ topic the replicas publish on (--kv-events-config's "topic"); SGLang's default "".
    # A SUB socket matches by prefix, so "" also receives the operator's "kv-events".
    topic: str = ""
    # Seconds to wait for a replay before clearing the view: a replay is a loopback-scale
    # exchange of at most buffer_steps small batches; 1 s bounds the stall of one subscriber.
    replay_timeout_s: float = 1.0
    # Replica blocks tracked per replica (memory bound: one small record each). 1M covers a replica of
    # 425,984 KV tokens at page size 1 with room for blocks whose removal was lost in a gap.
    max_tracked_blocks: int = 1_000_000


@dataclass(slots=True)
class ReplicaSettings:
    # Static replicas: SGLang base URLs, "http://host:port" or "name=http://host:port".
    static: list[str] = field(default_factory=list)
    # Discover replicas from Kubernetes EndpointSlices instead (or as well).
    kubernetes: KubernetesDiscovery | None = None
    # Seconds between /v1/loads polls: 0.5 s keeps load fresh to ~the engine's 100 ms steal
    # epoch scale without loading the replica's HTTP server.
    poll_interval_s: float = 0.5
    # Seconds a health probe may take before the replica counts as unhealthy.
    health_timeout_s: float = 2.0
    # Seconds a whole generate call may take at a replica (long agent outputs: minutes).
    request_timeout_s: float = 600.0
    # Seconds to connect to a replica; a dead replica fails fast so the call is retried.
    connect_timeout_s: float = 2.0
    # How a call names its SGLang engine session: "top_level" (a top-level session_id, what
    # SGLang's --enable-session-radix-cache references, 0.5.17 on) or "session_params"
    # (session_params.id, SGLang's older continual-prompt sessions: no KV kept; builds < 0.5.15).
    session_field: str = "top_level"
    # Names of environment variables (not the keys: those stay out of config files) holding the
    # key of SGLang's --api-key, sent on every request, and of its --admin-api-key, sent on
    # /abort_request, which SGLang then reserves to the admin key. "" = none.
    api_key_env: str = ""
    admin_api_key_env: str = ""
    # The replicas' KV cache events (SGLang --kv-events-config), read per replica.
    kv_events: KvEventSettings = field(default_factory=KvEventSettings)


@dataclass(slots=True)
class StateSettings:
    # "memory" (one process, the default) or "redis" (several scheduler processes share state).
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Key prefix in Redis, so several SAGA deployments can share one Redis.
    key_prefix: str = "saga:"


@dataclass(slots=True)
class LimitSettings:
    # Largest prompt accepted, in tokens (estimated from characters for text prompts). 0 (auto):
    # the longest prompt any ready replica accepts (SGLang's max_req_input_len - 1, from
    # /server_info), no check while none is ready; >= 1: this limit whatever the replicas take.
    max_prompt_tokens: int = 0
    # Largest max_new_tokens a call may ask for.
    max_new_tokens: int = 32768
    # Largest request body in bytes (gRPC message or HTTP body): 8 MiB fits 128k-token prompts.
    max_request_bytes: int = 8 * 1024 * 1024
    # Seconds a call may wait in SAGA's queue before it is rejected as overloaded.
    queue_timeout_s: float = 120.0
    # Times a call that sent no token is retried on another replica when its replica fails.
    max_attempts: int = 3
    # Open sessions at most per process (memory bound: ~1-2 KB each).
    max_sessions: int = 1_000_000
    # Seconds a session with no activity lives before SAGA ends it (0: forever).
    idle_session_timeout_s: float = 3600.0


@dataclass(slots=True)
class TokenSettings:
    # Characters per token to estimate a text prompt's length (no tokenizer in the scheduler);
    # ~4 for English text with Llama/Qwen tokenizers.
    chars_per_token: float = 4.0
    # Tokens per prefix block hash; SGLang's page size. 16 balances hash cost and precision.
    block_size: int = 16
    # Hash at most this many prefix blocks per prompt (bounds the per-call hashing cost).
    max_blocks: int = 4096


@dataclass(slots=True)
class OpenAISettings:
    # Model ids listed by /v1/models (requests are forwarded whatever model they name; the
    # replicas serve one model). "default" matches SGLang's served name when none is set.
    models: list[str] = field(default_factory=lambda: ["default"])
    # max_tokens assumed for scheduling when a request sets none (the replica applies its own).
    default_max_tokens: int = 1024
    # Agent type of sessions the OpenAI endpoint starts (overridden by x-saga-agent-type).
    default_agent_type: str = "openai"


@dataclass(slots=True)
class GraphSettings:
    # Folder of AEG documents (one GraphSet JSON per file, ``*.json`` or ``*.json.gz``, searched
    # recursively; Kubernetes' ``..data`` entries skipped): where the operator's graph bundle
    # ConfigMap is mounted (the Helm chart sets it). None: no folder is read. Files are compared
    # by content digest, so a ConfigMap's atomic symlink swap is picked up and an unchanged file
    # costs no rebuild.
    directory: str | None = None
    # Also read the state store's graph documents (StateStore.graph_versions/get_graph), one
    # GraphSet JSON per agent type, reloaded when a type's version changes. Off by default: the
    # embedded default has no publisher.
    from_store: bool = False
    # Seconds between polls of the folder and the store. 10 s: graphs change on the operator's
    # resync (60 s) and kubelet's ConfigMap sync (~60 s); a poll reads a few small files.
    poll_interval_s: float = 10.0


@dataclass(slots=True)
class TenantPolicySettings:
    # Folder of tenant policy documents (one JSON per tenant, ``*.json``, searched recursively;
    # Kubernetes' ``..data`` entries skipped): where the operator's tenant bundle ConfigMap is
    # mounted (the Helm chart sets it). None: none read, only spec.tenants apply. A policy
    # overrides the weight and SLO of the spec.tenants entry of the same name, or adds the
    # tenant; removing it restores the spec.tenants entry (docs/service.md "Tenant policies").
    directory: str | None = None
    # Seconds between polls of the folder. 10 s: policies change on the operator's resync (60 s)
    # and kubelet's ConfigMap sync (~60 s); a poll reads a few small files.
    poll_interval_s: float = 10.0


@dataclass(slots=True)
class ServiceSpec:
    listen: ListenSettings = field(default_factory=ListenSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    tenants: list[TenantSettings] = field(default_factory=lambda: [TenantSettings(name="default")])
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    state: StateSettings = field(default_factory=StateSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    graphs: GraphSettings = field(default_factory=GraphSettings)
    tenant_policies: TenantPolicySettings = field(default_factory=TenantPolicySettings)
    # Settings passed to the scheduler engine (see saga.scheduler's settings); free-form here,
    # checked by the engine when it is built.
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Metadata:
    name: str = "saga"


@dataclass(slots=True)
class SchedulerConfig:
    apiVersion: str = API_VERSION  # the document's own field name
    kind: str = KIND
    metadata: Metadata = field(default_factory=Metadata)
    spec: ServiceSpec = field(default_factory=ServiceSpec)

    def tenant(self, name: str) -> TenantSettings | None:
        return next((t for t in self.spec.tenants if t.name == name), None)


EMBEDDED_DEFAULT = """\
apiVersion: saga.dev/v1alpha1
kind: SchedulerConfig
metadata:
  name: embedded-default
spec:
  listen:
    grpc: 127.0.0.1:50051
    http: 127.0.0.1:8000
    metrics: 127.0.0.1:9464
  auth:
    anonymous_tenant: default
  tenants:
    - name: default
      weight: 1.0
  replicas:
    static: [http://127.0.0.1:30000]
  state:
    backend: memory
"""

# --------------------------------------------------------------------------- phase 1: parse + default


def parse(text: str, source: str = "") -> SchedulerConfig:
    """Phase 1: YAML text to typed settings with defaults. Raises :class:`ConfigError`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")], source) from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([("", f"expected a mapping at the top level, got {_tname(doc)}")], source)
    problems: list[tuple[str, str]] = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(("apiVersion", f"must be {API_VERSION!r}, got {doc.get('apiVersion')!r}"))
    if doc.get("kind") != KIND:
        problems.append(("kind", f"must be {KIND!r}, got {doc.get('kind')!r}"))
    if problems:
        raise ConfigError(problems, source)
    cfg = _build(SchedulerConfig, doc, "", problems)
    if problems:
        raise ConfigError(problems, source)
    assert isinstance(cfg, SchedulerConfig)
    return cfg


def _tname(v: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), type(v).__name__
    )


def _build(tp: Any, value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, path, problems)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {_tname(value)}"))
            return tp()
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in known:
                problems.append((sub, "unknown field"))
                continue
            kwargs[key] = _build(hints[key], v, sub, problems)
        return tp(**kwargs)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append((path, f"expected a list, got {_tname(value)}"))
            return []
        return [_build(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append((path, f"expected a mapping, got {_tname(value)}"))
            return {}
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append((path, f"expected true or false, got {value!r}"))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append((path, f"expected an integer, got {value!r}"))
            return 0
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append((path, f"expected a number, got {value!r}"))
            return 0.0
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append((path, f"expected a string, got {value!r}"))
            return ""
        return value
    return value  # Any


# --------------------------------------------------------------------------- phase 2: validate


def validate(cfg: SchedulerConfig, source: str = "") -> SchedulerConfig:
    """Phase 2: semantic checks. Raises :class:`ConfigError` listing every problem."""
    p: list[tuple[str, str]] = []
    s = cfg.spec
    for name in ("grpc", "http", "metrics"):
        addr = getattr(s.listen, name)
        if name == "metrics" and addr == "":
            continue
        if _host_port(addr) is None:
            p.append((f"spec.listen.{name}", f"not a host:port address: {addr!r}"))
    listen = [a for a in (s.listen.grpc, s.listen.http, s.listen.metrics) if a]
    ports = [hp[1] for hp in map(_host_port, listen) if hp is not None and hp[1] != 0]
    if len(ports) != len(set(ports)):
        p.append(("spec.listen", "grpc, http and metrics must use different ports"))
    names = [t.name for t in s.tenants]
    for i, t in enumerate(s.tenants):
        if not t.name:
            p.append((f"spec.tenants[{i}].name", "must not be empty"))
        elif names.index(t.name) != i:
            p.append((f"spec.tenants[{i}].name", f"duplicate tenant {t.name!r}"))
        if t.weight <= 0:
            p.append((f"spec.tenants[{i}].weight", f"must be > 0, got {t.weight}"))
        for name in ("slo_s", "ttft_s", "max_active_sessions", "max_calls_per_second", "max_kv_tokens"):
            if getattr(t, name) < 0:
                p.append((f"spec.tenants[{i}].{name}", f"must be >= 0, got {getattr(t, name)}"))
        where = f"spec.tenants[{i}]"
        if t.deadline_factor != 0 and not t.deadline_factor >= 1:
            p.append((f"{where}.deadline_factor", f"must be >= 1 or 0, got {t.deadline_factor}"))
        if not 0 <= t.attainment_target <= 1:
            p.append((f"{where}.attainment_target", f"must be in [0, 1], got {t.attainment_target}"))
    if s.auth.anonymous_tenant is not None and s.auth.anonymous_tenant not in names:
        p.append(("spec.auth.anonymous_tenant", f"tenant {s.auth.anonymous_tenant!r} is not in spec.tenants"))
    keys: set[str] = set()
    for i, k in enumerate(s.auth.api_keys):
        if len(k.key) < 8:
            p.append((f"spec.auth.api_keys[{i}].key", "must be at least 8 characters"))
        elif k.key in keys:
            p.append((f"spec.auth.api_keys[{i}].key", "duplicate key"))
        keys.add(k.key)
        if k.tenant not in names:
            p.append((f"spec.auth.api_keys[{i}].tenant", f"tenant {k.tenant!r} is not in spec.tenants"))
    r = s.replicas
    for i, entry in enumerate(r.static):
        # "URL" or "name=URL" (a stable replica id for metrics and bindings).
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:
            url = entry
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            p.append((f"spec.replicas.static[{i}]", f"not a URL: {entry!r}"))
        elif r.static.index(entry) != i:
            p.append((f"spec.replicas.static[{i}]", f"duplicate replica {entry!r}"))
    if not r.static and r.kubernetes is None:
        p.append(("spec.replicas", "give static URLs or kubernetes discovery"))
    if r.kubernetes is not None:
        if not r.kubernetes.label_selector:
            p.append(("spec.replicas.kubernetes.label_selector", "must not be empty"))
        if not r.kubernetes.port_name:
            p.append(("spec.replicas.kubernetes.port_name", "must not be empty"))
        if r.kubernetes.scheme not in ("http", "https"):
            p.append(("spec.replicas.kubernetes.scheme", "must be http or https"))
    for name in ("poll_interval_s", "health_timeout_s", "request_timeout_s", "connect_timeout_s"):
        if getattr(r, name) <= 0:
            p.append((f"spec.replicas.{name}", f"must be > 0, got {getattr(r, name)}"))
    for name in ("api_key_env", "admin_api_key_env"):
        var = getattr(r, name)
        if var and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            p.append((f"spec.replicas.{name}", f"must be an environment variable name, got {var!r}"))
    if r.session_field not in ("top_level", "session_params"):
        got = r.session_field
        p.append(("spec.replicas.session_field", f"must be top_level or session_params, got {got!r}"))
    kv = r.kv_events
    for name in ("endpoints", "replay_endpoints"):
        for rid, ep in getattr(kv, name).items():
            where = f"spec.replicas.kv_events.{name}.{rid}"
            if not isinstance(ep, str) or not ep.startswith(("tcp://", "ipc://", "inproc://")):
                p.append((where, f"not a ZMQ endpoint (tcp://, ipc:// or inproc://): {ep!r}"))
            elif ep.startswith("tcp://") and _host_port(ep.removeprefix("tcp://")) is None:
                p.append((where, f"not a tcp://host:port endpoint: {ep!r}"))
    for rid in kv.replay_endpoints:
        if rid not in kv.endpoints:
            p.append((f"spec.replicas.kv_events.replay_endpoints.{rid}", "replica has no entry in endpoints"))
    if not 0 <= kv.discovered_port <= 65535:
        p.append(
            (
                "spec.replicas.kv_events.discovered_port",
                f"must be 0 (off) or a TCP port in [1, 65535], got {kv.discovered_port}",
            )
        )
    for name in ("discovered_port_name", "discovered_replay_port_name"):
        value = getattr(kv, name)
        if value and not _PORT_NAME.fullmatch(value):
            p.append(
                (
                    f"spec.replicas.kv_events.{name}",
                    f"must be empty or a Kubernetes port name (a DNS label: lowercase letters, digits"
                    f" and '-', at most 63 characters), got {value!r}",
                )
            )
    if kv.discovered_port_name and kv.discovered_port_name == kv.discovered_replay_port_name:
        p.append(
            (
                "spec.replicas.kv_events.discovered_replay_port_name",
                f"must differ from discovered_port_name ({kv.discovered_port_name!r})",
            )
        )
    if not 0 < kv.replay_timeout_s <= 60:
        p.append(
            ("spec.replicas.kv_events.replay_timeout_s", f"must be in (0, 60], got {kv.replay_timeout_s}")
        )
    if kv.max_tracked_blocks < 1:
        p.append(("spec.replicas.kv_events.max_tracked_blocks", "must be >= 1"))
    if s.state.backend not in ("memory", "redis"):
        p.append(("spec.state.backend", f"must be 'memory' or 'redis', got {s.state.backend!r}"))
    elif s.state.backend == "redis" and urlparse(s.state.redis_url).scheme not in ("redis", "rediss", "unix"):
        p.append(("spec.state.redis_url", f"not a redis:// URL: {s.state.redis_url!r}"))
    lim = s.limits
    if (n := lim.max_prompt_tokens) < 0:
        p.append(("spec.limits.max_prompt_tokens", f"must be >= 0 (0 = the replicas' own limit), got {n}"))
    for name in ("max_new_tokens", "max_request_bytes", "max_attempts", "max_sessions"):
        if getattr(lim, name) < 1:
            p.append((f"spec.limits.{name}", f"must be >= 1, got {getattr(lim, name)}"))
    if lim.queue_timeout_s <= 0:
        p.append(("spec.limits.queue_timeout_s", f"must be > 0, got {lim.queue_timeout_s}"))
    if lim.idle_session_timeout_s < 0:
        p.append(("spec.limits.idle_session_timeout_s", "must be >= 0"))
    if s.tokens.chars_per_token <= 0:
        p.append(("spec.tokens.chars_per_token", "must be > 0"))
    if s.tokens.block_size < 1:
        p.append(("spec.tokens.block_size", "must be >= 1"))
    if s.tokens.max_blocks < 0:
        p.append(("spec.tokens.max_blocks", "must be >= 0"))
    if not s.openai.models or any(not m for m in s.openai.models):
        p.append(("spec.openai.models", "must list at least one non-empty model id"))
    if not 1 <= s.openai.default_max_tokens <= lim.max_new_tokens:
        p.append(("spec.openai.default_max_tokens", "must be in [1, spec.limits.max_new_tokens]"))
    g = s.graphs
    if g.directory is not None and not g.directory.strip():
        p.append(("spec.graphs.directory", "must be a folder path or null"))
    if not 0.01 <= g.poll_interval_s <= 86400:
        p.append(("spec.graphs.poll_interval_s", f"must be in [0.01, 86400], got {g.poll_interval_s}"))
    tp = s.tenant_policies
    if tp.directory is not None and not tp.directory.strip():
        p.append(("spec.tenant_policies.directory", "must be a folder path or null"))
    if not 0.01 <= tp.poll_interval_s <= 86400:
        p.append(
            ("spec.tenant_policies.poll_interval_s", f"must be in [0.01, 86400], got {tp.poll_interval_s}")
        )
    if p:
        raise ConfigError(p, source)
    return cfg


def _host_port(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def host_port(addr: str) -> tuple[str, int]:
    hp = _host_port(addr)
    if hp is None:
        raise ValueError(f"not a host:port address: {addr!r}")
    return hp


# --------------------------------------------------------------------------- entry points


def load_text(text: str, source: str = "") -> SchedulerConfig:
    return validate(parse(text, source), source)


def load_file(path: str | Path) -> SchedulerConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror}")], str(p)) from exc
    return load_text(text, str(p))


def embedded_default() -> SchedulerConfig:
    return load_text(EMBEDDED_DEFAULT, "<embedded default>")

"""Where replicas come from: a static list, or Kubernetes EndpointSlices.

:class:`StaticDiscovery` returns a fixed list (``saga serve`` with ``--replica URL``...; the
replica id is the URL unless named). :class:`EndpointSliceDiscovery` lists the
``discovery.k8s.io/v1`` EndpointSlices of a namespace that match a label selector (the
operator labels the SGLang replicas' Service, whose slices inherit
``kubernetes.io/service-name``) and returns one replica per **ready** endpoint address, on
the port named ``port_name``. Replica id: the endpoint's ``targetRef`` name (the pod name,
stable for the pod's life) or, without one, the address. Per the EndpointSlice API an
absent ``conditions.ready`` means ready; ``terminating`` endpoints are skipped.

The Kubernetes client is synchronous; each listing runs in a worker thread with a request
timeout (``request_timeout_s``, 5 s: the API server answers lists in milliseconds; longer
means it is unavailable, and the pool keeps its previous list). Credentials: the in-cluster
service account when running in a pod, else the local kubeconfig, unless an ``api_client``
is passed (tests pass one pointed at kmock). The label selector is also applied client-side
(equality, inequality and existence terms), so a server that ignores it cannot widen the set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

from saga.service.backend.api import ReplicaSpec


class StaticDiscovery:
    """A fixed list of replicas. ``urls`` entries are ``URL`` or ``name=URL``."""

    def __init__(self, urls: list[str]) -> None:
        specs: list[ReplicaSpec] = []
        seen: set[str] = set()
        for entry in urls:
            name, sep, url = entry.partition("=")
            if not sep or "://" in name:
                name, url = entry, entry
            url = url.rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"replica URL must start with http:// or https://, got {entry!r}")
            if name in seen:
                raise ValueError(f"duplicate replica {name!r} in the static list")
            seen.add(name)
            specs.append(ReplicaSpec(replica_id=name, base_url=url))
        self._specs = specs

    async def discover(self) -> list[ReplicaSpec]:
        return list(self._specs)

    async def close(self) -> None:
        return None


def parse_selector(selector: str) -> list[tuple[str, str, str | None]]:
    """``"app=sglang,tier!=x,gpu"`` → ``[(key, op, value)]`` with op ``=``, ``!=`` or ``exists``."""
    terms: list[tuple[str, str, str | None]] = []
    for raw in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in raw:
            k, v = raw.split("!=", 1)
            terms.append((k.strip(), "!=", v.strip()))
        elif "==" in raw or "=" in raw:
            k, v = raw.split("==", 1) if "==" in raw else raw.split("=", 1)
            terms.append((k.strip(), "=", v.strip()))
        elif " in " in raw or "(" in raw:
            raise ValueError(f"set-based label selector terms are not supported: {raw!r}")
        else:
            terms.append((raw.lstrip("!"), "absent" if raw.startswith("!") else "exists", None))
    return terms


def matches(labels: dict[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for key, op, value in terms:
        have = labels.get(key)
        if (
            (op == "=" and have != value)
            or (op == "!=" and have == value)
            or (op == "exists" and have is None)
            or (op == "absent" and have is not None)
        ):
            return False
    return True


def _host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address  # a hostname (FQDN address type)


def replicas_from_slices(
    slices: list[Any], *, port_name: str | None, scheme: str, selector: str = ""
) -> list[ReplicaSpec]:
    """Ready endpoints of ``slices`` (EndpointSlice JSON objects) as replicas, sorted by id."""
    terms = parse_selector(selector)
    out: dict[str, ReplicaSpec] = {}
    for sl in slices:
        if not isinstance(sl, dict):
            continue
        labels = (sl.get("metadata") or {}).get("labels") or {}
        if not matches(labels, terms):
            continue
        ports = [p for p in sl.get("ports") or [] if isinstance(p, dict) and isinstance(p.get("port"), int)]
        named = tuple(sorted((p["name"], p["port"]) for p in ports if isinstance(p.get("name"), str)))
        if port_name is not None:
            ports = [p for p in ports if p.get("name") == port_name]
        if len(ports) != 1:
            continue  # no (unambiguous) serving port in this slice
        port = ports[0]["port"]
        for ep in sl.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            cond = ep.get("conditions") or {}
            if cond.get("ready") is False or cond.get("terminating") is True:
                continue
            target = ep.get("targetRef") or {}
            name = target.get("name") if isinstance(target.get("name"), str) else ""
            addresses = [a for a in ep.get("addresses") or [] if isinstance(a, str) and a]
            for address in addresses:
                rid = address if not name else name if len(addresses) == 1 else f"{name}/{address}"
                out[rid] = ReplicaSpec(rid, f"{scheme}://{_host(address)}:{port}", named)
    return [out[k] for k in sorted(out)]


class EndpointSliceDiscovery:
    """Replicas from the EndpointSlices of ``namespace`` matching ``label_selector``."""

    def __init__(
        self,
        namespace: str,
        label_selector: str,
        *,
        port_name: str | None = "http",
        scheme: str = "http",
        request_timeout_s: float = 5.0,
        api_client: Any = None,
    ) -> None:
        if not namespace:
            raise ValueError("EndpointSliceDiscovery needs a namespace")
        parse_selector(label_selector)  # fail early on a bad selector
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0 seconds, got {request_timeout_s}")
        self.namespace = namespace
        self.label_selector = label_selector
        self.port_name = port_name
        self.scheme = scheme
        self.request_timeout_s = request_timeout_s
        self._api_client = api_client
        self._owns_client = api_client is None

    def _client(self) -> Any:
        if self._api_client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            self._api_client = client.ApiClient()
        return self._api_client

    def _list(self) -> list[dict[str, Any]]:
        from kubernetes import client

        api: Any = client.DiscoveryV1Api(self._client())
        resp = api.list_namespaced_endpoint_slice(
            self.namespace,
            label_selector=self.label_selector or None,
            _preload_content=False,
            _request_timeout=self.request_timeout_s,
        )
        try:
            body = json.loads(resp.data)
        finally:
            resp.release_conn()
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"EndpointSlice list has no items: {str(body)[:120]}")
        return items

    async def discover(self) -> list[ReplicaSpec]:
        slices = await asyncio.to_thread(self._list)
        return replicas_from_slices(
            slices, port_name=self.port_name, scheme=self.scheme, selector=self.label_selector
        )

    async def close(self) -> None:
        if self._owns_client and self._api_client is not None:
            self._api_client.close()
            self._api_client = None

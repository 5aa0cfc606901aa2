"""``saga operator``: run the kopf operator, or render a custom resource's desired objects.

- ``saga operator run [--server URL] [--namespace NS ...] [--redis-url URL]
  [--resync-interval S] [--retry-delay S]``: runs the operator. Without ``--server`` it
  uses the in-cluster ServiceAccount (what the Helm chart does); ``--server`` points it at
  any API server (``kubectl proxy``, or the kmock emulator in tests).
- ``saga operator render FILE``: prints the objects the operator would create for the
  ``ReplicaPool`` / ``TenantPolicy`` in FILE (YAML), or the validation error; no cluster needed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import yaml


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "operator", help="Kubernetes operator (ReplicaPool, AgentWorkflow, TenantPolicy)"
    )
    sub = p.add_subparsers(dest="operator_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--server", default="", help="API server URL (default: in-cluster ServiceAccount)")
    run.add_argument("--token", default="", help="bearer token for --server")
    run.add_argument("--insecure", action="store_true", help="skip TLS verification for --server")
    run.add_argument(
        "--namespace", action="append", default=[], help="watch only this namespace (repeatable)"
    )
    run.add_argument(
        "--redis-url", default="", help="default Redis for trace sources and the state store (graphs)"
    )
    run.add_argument(
        "--graph-bundle",
        default="saga-graphs",
        help="name of the graph bundle ConfigMap the scheduler mounts",
    )
    run.add_argument(
        "--graph-bundle-namespace",
        default="",
        help="namespace of the graph bundle (the scheduler's); empty: no bundle is kept",
    )
    run.add_argument(
        "--tenant-bundle",
        default="saga-tenants",
        help="name of the tenant policy bundle ConfigMap the scheduler mounts",
    )
    run.add_argument(
        "--tenant-bundle-namespace",
        default="",
        help="namespace of the tenant bundle (the scheduler's); empty: no bundle is kept",
    )
    run.add_argument("--resync-interval", type=float, default=60.0, help="seconds between re-reconciles")
    run.add_argument(
        "--retry-delay", type=float, default=30.0, help="seconds before retrying temporary errors"
    )
    run.add_argument(
        "--liveness", default=None, help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(handler=_run)
    render = sub.add_parser("render", help="print the objects a ReplicaPool/TenantPolicy YAML yields")
    render.add_argument("file")
    render.set_defaults(handler=_render)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    from saga.operator.handlers import OperatorSettings, run
    from saga.operator.kube import KubeConfig

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    kube = (
        KubeConfig.for_server(args.server, args.token or None, verify_tls=not args.insecure)
        if args.server
        else None
    )
    settings = OperatorSettings(
        resync_interval_s=args.resync_interval,
        retry_delay_s=args.retry_delay,
        redis_url=args.redis_url,
        graph_bundle_name=args.graph_bundle,
        graph_bundle_namespace=args.graph_bundle_namespace,
        tenant_bundle_name=args.tenant_bundle,
        tenant_bundle_namespace=args.tenant_bundle_namespace,
        kube=kube,
    )
    try:
        asyncio.run(run(settings, namespaces=tuple(args.namespace), liveness_endpoint=args.liveness))
    except KeyboardInterrupt:
        return 130
    return 0


def _render(args: argparse.Namespace) -> int:
    from saga.operator.reconcile import replicapool, tenantpolicy
    from saga.operator.reconcile.common import Invalid

    with open(args.file, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    rc = 0
    out: list[Any] = []
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("namespace", "default")
        doc["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
        kind = doc.get("kind")
        if kind == replicapool.KIND:
            want = replicapool.desired(doc)
            result: Any = want if isinstance(want, Invalid) else [want.workload, want.service]
        elif kind == tenantpolicy.KIND:
            res = tenantpolicy.reconcile(doc, {"data": {"api-key": "cmVuZGVy"}}, now="1970-01-01T00:00:00Z")
            result = res if isinstance(res, Invalid) else [res.configmap]
        else:
            print(
                f"{args.file}: cannot render kind {kind!r} offline (AgentWorkflow needs its traces)",
                file=sys.stderr,
            )
            rc = 1
            continue
        if isinstance(result, Invalid):
            print(f"{args.file}: {kind} {doc['metadata'].get('name')}: {result}", file=sys.stderr)
            rc = 1
        else:
            out.extend(result)
    if out:
        yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return rc

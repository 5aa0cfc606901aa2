"""Workloads as JSON lines, so the simulator and the live benchmark replay the same sessions.

Format (version 1): the first line is the header ``{"kind": "saga-workload", "version": 1,
"name", "seed", "description", "tenants": {name: {weight, slo_factor, slo_class,
load_class}}, "params": {...}}``; every following line is one top-level session (its
sub-agents nested inside), with the fields of ``saga.graphs.trace.SessionTrace``; LLM calls,
tools and sub-agents are objects with their dataclass field names. Reading validates the
workload and names the file and line of any error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from saga.graphs.trace import LLMCall, SessionTrace, SubAgent, ToolCall
from saga.scheduler.workloads.model import WORKLOAD_MODEL_VERSION, TenantSpec, Workload, WorkloadError

HEADER_KIND = "saga-workload"


def session_to_dict(s: SessionTrace) -> dict[str, Any]:
    return {
        "session_id": s.session_id,
        "agent_type": s.agent_type,
        "tenant": s.tenant,
        "start_s": s.start_s,
        "block_size": s.block_size,
        "parent_id": s.parent_id,
        "shared_prefix_tokens": s.shared_prefix_tokens,
        "source": s.source,
        "attributes": dict(s.attributes),
        "calls": [
            {**asdict(c), "block_hashes": list(c.block_hashes)}  # asdict keeps tuples; JSON wants lists
            for c in s.calls
        ],
        "tools": [asdict(t) for t in s.tools],
        "subagents": [
            {"after_call": x.after_call, "start_s": x.start_s, "session": session_to_dict(x.session)}
            for x in s.subagents
        ],
    }


def session_from_dict(d: Mapping[str, Any]) -> SessionTrace:
    """Inverse of :func:`session_to_dict`; raises KeyError / TypeError / ValueError on bad data."""
    calls = tuple(
        LLMCall(
            start_s=float(c["start_s"]),
            duration_s=float(c["duration_s"]),
            prompt_tokens=int(c["prompt_tokens"]),
            output_tokens=int(c["output_tokens"]),
            cached_tokens=None if c.get("cached_tokens") is None else int(c["cached_tokens"]),
            block_hashes=tuple(int(h) for h in c.get("block_hashes", ())),
            stop=str(c.get("stop", "")),
            model=str(c.get("model", "")),
            ttft_s=None if c.get("ttft_s") is None else float(c["ttft_s"]),
        )
        for c in d["calls"]
    )
    tools = tuple(
        ToolCall(
            name=str(t["name"]),
            start_s=float(t["start_s"]),
            end_s=float(t["end_s"]),
            after_call=int(t["after_call"]),
            status=str(t.get("status", "ok")),
        )
        for t in d.get("tools", ())
    )
    subs = tuple(
        SubAgent(
            after_call=int(x["after_call"]),
            start_s=float(x["start_s"]),
            session=session_from_dict(x["session"]),
        )
        for x in d.get("subagents", ())
    )
    return SessionTrace(
        session_id=str(d["session_id"]),
        agent_type=str(d["agent_type"]),
        calls=calls,
        tools=tools,
        subagents=subs,
        tenant=str(d.get("tenant", "default")),
        start_s=float(d.get("start_s", 0.0)),
        block_size=int(d.get("block_size", 0)),
        parent_id=None if d.get("parent_id") is None else str(d["parent_id"]),
        shared_prefix_tokens=int(d.get("shared_prefix_tokens", 0)),
        source=str(d.get("source", "")),
        attributes={str(k): str(v) for k, v in dict(d.get("attributes", {})).items()},
    )


def write_workload(w: Workload, out: IO[str]) -> None:
    header = {
        "kind": HEADER_KIND,
        "version": WORKLOAD_MODEL_VERSION,
        "name": w.name,
        "seed": w.seed,
        "description": w.description,
        "tenants": {k: asdict(v) for k, v in w.tenants.items()},
        "params": dict(w.params),
    }
    out.write(json.dumps(header, separators=(",", ":")) + "\n")
    for s in w.sessions:
        out.write(json.dumps(session_to_dict(s), separators=(",", ":")) + "\n")


def save_workload(w: Workload, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        write_workload(w, f)


def read_workload(inp: IO[str], *, source: str = "<stream>") -> Workload:
    header: dict[str, Any] | None = None
    sessions: list[SessionTrace] = []
    for lineno, line in enumerate(inp, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"{source}: line {lineno}: not JSON: {e.msg}") from None
        if header is None:
            if not isinstance(obj, dict) or obj.get("kind") != HEADER_KIND:
                raise WorkloadError(
                    f"{source}: line {lineno}: not a SAGA workload header (kind != {HEADER_KIND!r})"
                )
            if obj.get("version") != WORKLOAD_MODEL_VERSION:
                raise WorkloadError(
                    f"{source}: line {lineno}: unsupported workload version {obj.get('version')!r}"
                )
            header = obj
            continue
        try:
            sessions.append(session_from_dict(obj))
        except KeyError as e:
            raise WorkloadError(f"{source}: line {lineno}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise WorkloadError(f"{source}: line {lineno}: bad value: {e}") from None
    if header is None:
        raise WorkloadError(f"{source}: empty file")
    try:
        tenants = {
            str(k): TenantSpec(
                weight=float(v["weight"]),
                slo_factor=float(v["slo_factor"]),
                slo_class=str(v["slo_class"]),
                load_class=str(v.get("load_class", "")),
            )
            for k, v in dict(header["tenants"]).items()
        }
        w = Workload(
            name=str(header["name"]),
            sessions=tuple(sessions),
            tenants=tenants,
            seed=int(header["seed"]),
            description=str(header.get("description", "")),
            params=dict(header.get("params", {})),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise WorkloadError(f"{source}: line 1: bad header: {e}") from None
    try:
        w.validate()
    except WorkloadError as e:
        raise WorkloadError(f"{source}: {e}") from None
    return w


def load_workload(path: str | Path) -> Workload:
    try:
        with open(path, encoding="utf-8") as f:
            return read_workload(f, source=str(path))
    except OSError as e:
        raise WorkloadError(f"{path}: cannot read: {e.strerror or e}") from None

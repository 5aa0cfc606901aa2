"""What the sync and async clients share: request building and result records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from saga.service.pb import pb2

if TYPE_CHECKING:
    from saga.client.eventlog import EventLogWriter


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Generation:
    """A completed LLM call."""

    text: str
    output_ids: tuple[int, ...]
    finish_reason: str
    usage: Usage
    replica_id: str
    queued_s: float


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece of an LLM call; ``usage`` and ``finish_reason`` are set on the last."""

    text: str
    output_ids: tuple[int, ...]
    finish_reason: str
    usage: Usage | None
    replica_id: str


def usage(u: Any) -> Usage:
    return Usage(u.prompt_tokens, u.cached_tokens, u.completion_tokens)


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def start_request(
    tenant: str,
    agent: str,
    session_id: str | None,
    expected_calls: int | None,
    deadline_s: float | None,
    parent: str | None,
    priority: int | None,
) -> Any:
    hints = pb2.WorkflowHints(
        expected_calls=expected_calls or 0,
        deadline_s=deadline_s or 0.0,
        parent_session_id=parent or "",
    )
    if priority is not None:
        hints.priority = priority
    return pb2.StartSessionRequest(tenant=tenant, agent_type=agent, hints=hints, session_id=session_id or "")


def generate_request(
    session_id: str,
    prompt: str | Sequence[int],
    max_new_tokens: int,
    temperature: float | None,
    top_p: float | None,
    stop: Sequence[str] | None,
    request_id: str,
) -> Any:
    sampling = pb2.SamplingParams(max_new_tokens=max_new_tokens, stop=list(stop or ()))
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    req = pb2.GenerateRequest(session_id=session_id, sampling=sampling, request_id=request_id)
    if isinstance(prompt, str):
        req.text = prompt
    else:
        req.input_ids.ids.extend(int(t) for t in prompt)
    return req


def generation(resp: Any) -> Generation:
    return Generation(
        resp.text,
        tuple(resp.output_ids),
        resp.finish_reason,
        usage(resp.usage),
        resp.replica_id,
        resp.queued_s,
    )


def chunk(c: Any) -> Chunk:
    return Chunk(
        c.text,
        tuple(c.output_ids),
        c.finish_reason,
        usage(c.usage) if c.HasField("usage") else None,
        c.replica_id,
    )


def log_llm_call(
    eventlog: EventLogWriter | None,
    session_id: str,
    start: float,
    usage: Usage | None,
    ttft_s: float | None = None,
) -> None:
    """Record a finished call in the SDK's event log (no-op without a log, session or usage)."""
    if eventlog is None or not session_id or usage is None:
        return
    eventlog.llm_call(
        session_id,
        start,
        prompt_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        ttft_s=ttft_s,
    )

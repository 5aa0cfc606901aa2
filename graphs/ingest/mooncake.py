"""Reader for the Mooncake FAST'25 traces (``{"timestamp", "input_length", "output_length", "hash_ids"}``).

The traces carry no session or conversation id; ``hash_ids`` are *global* cumulative
512-token prefix-block ids (equal leading ids = reusable prefix). Two groupings are offered
(``grouping=``), and the choice is recorded in every session's ``attributes["grouping"]``:

``"chain"`` (default): conversations are reconstructed by **prefix chaining**. Request ``r``
continues the open conversation whose *last* request ``q`` satisfies all of:

1. every full block of ``q`` (all of ``q.hash_ids`` but the last, which is usually a partial
   block that the next turn rewrites) is a leading block of ``r`` — checked in O(1) per
   candidate because an id names its whole prefix: ``r.hash_ids[m-1] == q.hash_ids[m-1]``;
2. that last full block was first seen in ``q``'s own conversation (a prefix made only of
   content shared with other conversations, such as a common system prompt, is not evidence
   of the same conversation);
3. ``q`` has no continuation yet (conversations are chains; a second request extending the
   same ``q`` — a regenerated answer — starts a new conversation) and ``q`` is not later;
4. among the candidates, the longest matching prefix wins.

   Requests matching nothing start a new conversation. The gap between two turns becomes a
   :class:`ToolCall` named ``"human"`` (a person reading and typing), from the previous
   request's arrival (its duration is unknown, so 0) to the next arrival.

``"request"``: every request is a one-call session; hash ids stay global, so cross-request
prefix sharing is still visible to a cache replay, but there is no session structure.

Timestamps are milliseconds since the trace start; sessions get ``start_s`` on that timeline
and call times relative to their first request. Stop reasons are unknown (``""``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from saga.graphs.ingest._common import Fields, IngestResult, iter_json_lines
from saga.graphs.trace import TOOL_HUMAN, LLMCall, SessionTrace, ToolCall, TraceError, validate_session

BLOCK_SIZE = 512  # tokens per hash id in the Mooncake traces
GROUPINGS = ("chain", "request")


@dataclass(slots=True)
class _Req:
    t_s: float
    prompt: int
    output: int
    hashes: tuple[int, ...]
    source: str


@dataclass(slots=True)
class _Conv:
    reqs: list[_Req] = field(default_factory=list)


def read_mooncake(
    path: str | Path,
    *,
    skip_bad: bool = False,
    grouping: str = "chain",
    agent_type: str = "mooncake",
) -> IngestResult:
    """Read a Mooncake trace into sessions (see the module docstring for ``grouping``)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    name = str(path)
    result = IngestResult()
    reqs: list[_Req] = []
    last_t = float("-inf")
    for line_no, obj in iter_json_lines(path):
        try:
            if isinstance(obj, TraceError):
                raise obj
            f = Fields(obj, file=name, line=line_no)
            t = f.number("timestamp") / 1000.0
            if t < last_t:
                raise f.error("timestamp", f"time goes backwards ({t * 1000:g} ms < {last_t * 1000:g} ms)")
            prompt = f.integer("input_length")
            hashes = tuple(f.int_list("hash_ids", []))
            if len(hashes) * BLOCK_SIZE > prompt + BLOCK_SIZE:
                raise f.error(
                    "hash_ids", f"{len(hashes)} blocks of {BLOCK_SIZE} exceed input_length {prompt}"
                )
            req = _Req(t, prompt, f.integer("output_length"), hashes, f"{name}:{line_no}")
        except TraceError as e:
            result.record_error(e, skip_bad=skip_bad)
            continue
        last_t = t
        reqs.append(req)
    convs = [_Conv([r]) for r in reqs] if grouping == "request" else chain_requests(reqs)
    for i, conv in enumerate(convs):
        result.sessions.append(_to_session(conv, f"{Path(name).stem}/{i}", agent_type, grouping))
    return result


def chain_requests(reqs: list[_Req]) -> list[_Conv]:
    """Group requests (in arrival order) into conversations by prefix chaining."""
    convs: list[_Conv] = []
    owner: dict[int, int] = {}  # block id -> conversation that first showed it
    tails: dict[int, int] = {}  # key block id (last full block of a tail request) -> conversation
    for r in reqs:
        conv_idx = -1
        for k in range(len(r.hashes) - 1, -1, -1):  # longest candidate prefix first
            c = tails.get(r.hashes[k])
            if c is not None:
                conv_idx = c
                del tails[r.hashes[k]]
                break
        if conv_idx < 0:
            conv_idx = len(convs)
            convs.append(_Conv())
        else:
            prev = convs[conv_idx].reqs[-1].hashes
            # the conversation's old tail is consumed: any other key it had is stale
            if len(prev) >= 2:
                tails.pop(prev[-2], None)
        convs[conv_idx].reqs.append(r)
        for h in r.hashes:
            owner.setdefault(h, conv_idx)
        if len(r.hashes) >= 2:
            key = r.hashes[-2]  # the last full block
            if owner[key] == conv_idx:
                tails[key] = conv_idx
    return convs


def _to_session(conv: _Conv, session_id: str, agent_type: str, grouping: str) -> SessionTrace:
    t0 = conv.reqs[0].t_s
    calls = tuple(
        LLMCall(
            start_s=r.t_s - t0,
            duration_s=0.0,
            prompt_tokens=r.prompt,
            output_tokens=r.output,
            block_hashes=r.hashes,
        )
        for r in conv.reqs
    )
    tools = tuple(
        ToolCall(name=TOOL_HUMAN, start_s=calls[i].start_s, end_s=calls[i + 1].start_s, after_call=i)
        for i in range(len(calls) - 1)
    )
    s = SessionTrace(
        session_id=session_id,
        agent_type=agent_type,
        calls=calls,
        tools=tools,
        start_s=t0,
        block_size=BLOCK_SIZE,
        source=conv.reqs[0].source,
        attributes={"grouping": grouping},
    )
    validate_session(s)
    return s

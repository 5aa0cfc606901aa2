"""What an agent sends per LLM call: messages, tool definitions and ``tool_choice`` (pure).

A real agent framework lists its tools on every request and, after the model answered with a
tool call, sends the next request with the assistant's ``tool_calls`` message and a ``role:
tool`` message holding the tool's result. The replay does the same, so that tool boundaries
reach the system under test the way they do in production (SAGA's OpenAI endpoint opens a tool
gap on ``finish_reason: "tool_calls"`` and closes it on the session's next request):

- :func:`tool_plan`: per call, the tool the trace runs after it (a :class:`ToolCall` with that
  ``after_call`` that is not a human gap, else ``"tool"`` when the call's stop reason is
  ``tool_use``), or None; the session's last call never forces a tool.
- :func:`request_fields`: a session that runs any tool sends ``tools`` (one function per tool
  name it uses, sorted) on every call, with ``tool_choice`` forcing the planned function (and
  ``parallel_tool_calls: false``), or ``"none"`` when no tool follows (last call, human turn).
  Sessions without tools send neither.
- Messages: call ``i`` whose predecessor asked for a tool sends
  ``[user: head, assistant: tool_calls (as answered), tool: tail]``; any other call sends
  ``[user: head + tail]``. ``head``/``tail`` are the call's prompt text split where its
  call-unique tail starts (:meth:`PromptBuilder.call_parts`): the text shared with other calls
  stays at the front in the same place, so prefix caching behaves exactly as with one user
  message. The tool result carries the call's tail (the freshest context, what the trace's
  observation ends with).

Function names follow OpenAI's rule ``[A-Za-z0-9_-]{1,64}``: other characters become ``_``.
When an answer holds no tool call although one was forced (a backend without a tool-call
parser), :func:`fallback_call` stands in (deterministic, so every system gets the same
request).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from saga.bench.prompts import PromptBuilder
from saga.graphs.trace import STOP_TOOL_USE, TOOL_HUMAN, TOOL_UNKNOWN, SessionTrace

_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


def function_name(tool: str) -> str:
    """The trace's tool name as an OpenAI function name."""
    return (_NAME_BAD.sub("_", tool) or TOOL_UNKNOWN)[:64]


def tool_plan(s: SessionTrace) -> list[str | None]:
    """Per call of ``s``: the function the answer must call, or None (text answer)."""
    n = len(s.calls)
    plan: list[str | None] = [None] * n
    for t in s.tools:
        i = t.after_call
        if 0 <= i < n - 1 and plan[i] is None and t.name != TOOL_HUMAN:
            plan[i] = function_name(t.name)
    for i, c in enumerate(s.calls[:-1]):
        if plan[i] is None and c.stop == STOP_TOOL_USE and not any(t.after_call == i for t in s.tools):
            plan[i] = function_name(TOOL_UNKNOWN)
    return plan


INPUT_MAX_CHARS = 16
"""``maxLength`` of a tool's one string argument. On real SGLang a forced call is decoded under
the tool's JSON schema, and a model with random weights (``bench/gpu/``) closes an unbounded
string only by chance: with this bound every constrained answer is a complete call within about
60 tokens (``bench/gpu/check_tool_grammar.py``). The emulator does not constrain its answers."""


def tool_definitions(names: list[str]) -> list[dict[str, Any]]:
    """One function definition per name (the parameters the emulator's answers fill)."""
    return [
        {
            "type": "function",
            "function": {
                "name": n,
                "description": f"the trace's {n} tool",
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "maxLength": INPUT_MAX_CHARS}},
                    "required": ["input"],
                    "additionalProperties": False,
                },
            },
        }
        for n in names
    ]


@dataclass(frozen=True, slots=True)
class AnsweredCall:
    """The tool call an answer asked for (echoed in the next request)."""

    id: str
    name: str
    arguments: str

    def message(self) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": self.id,
                    "type": "function",
                    "function": {"name": self.name, "arguments": self.arguments},
                }
            ],
        }


def fallback_call(s: SessionTrace, index: int, name: str) -> AnsweredCall:
    """A stand-in when call ``index``'s answer held no tool call."""
    crc = zlib.crc32(f"{s.session_id}#{index}".encode())
    return AnsweredCall(f"call_{crc:08x}", name, "{}")


def answered_call(deltas: dict[int, dict[str, str]]) -> AnsweredCall | None:
    """The first tool call assembled from streamed ``tool_calls`` deltas (by index)."""
    if not deltas:
        return None
    d = deltas[min(deltas)]
    if not d.get("name"):
        return None
    return AnsweredCall(d.get("id") or "", d["name"], d.get("arguments", ""))


def merge_tool_deltas(acc: dict[int, dict[str, str]], tool_calls: Any) -> None:
    """Fold one chunk's ``delta.tool_calls`` into ``acc`` (OpenAI streaming: id and name in the
    first delta of an index, ``arguments`` fragments after)."""
    if not isinstance(tool_calls, list):
        return
    for tc in tool_calls:
        if not isinstance(tc, dict):
            continue
        idx = tc.get("index", 0)
        slot = acc.setdefault(idx if isinstance(idx, int) else 0, {})
        if isinstance(tc.get("id"), str) and tc["id"]:
            slot["id"] = tc["id"]
        fn = tc.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str) and fn["name"]:
                slot["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                slot["arguments"] = slot.get("arguments", "") + fn["arguments"]


def request_fields(
    prompts: PromptBuilder,
    s: SessionTrace,
    index: int,
    plan: list[str | None],
    previous: AnsweredCall | None,
) -> dict[str, Any]:
    """``messages`` (and ``tools``/``tool_choice`` when the session uses tools) of call ``index``;
    ``previous`` is the tool call the previous call's answer asked for, if it was asked to."""
    head, tail = prompts.call_parts(s, index)
    if previous is not None:
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": head},
            previous.message(),
            {"role": "tool", "tool_call_id": previous.id, "content": tail},
        ]
    else:
        messages = [{"role": "user", "content": head + tail}]
    out: dict[str, Any] = {"messages": messages}
    names = sorted({n for n in plan if n is not None})
    if names:
        out["tools"] = tool_definitions(names)
        forced = plan[index]
        if forced is None:
            out["tool_choice"] = "none"
        else:  # one call per answer, as the trace has it (SGLang then allows exactly one)
            out["tool_choice"] = {"type": "function", "function": {"name": forced}}
            out["parallel_tool_calls"] = False
    return out

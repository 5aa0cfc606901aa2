"""Tool calls on the emulator's ``/v1/chat/completions`` (no I/O): the deterministic case of
SGLang 0.5's OpenAI server with a tool-call parser.

SGLang (``python/sglang/srt/entrypoints/openai/serving_chat.py``) handles ``tools`` only when
the server runs with ``--tool-call-parser`` and ``tool_choice`` is not ``"none"``. For
``tool_choice: "required"`` or a named function (``{"type": "function", "function": {"name":
X}}``) it constrains decoding to a JSON array ``[{"name", "parameters"}]`` (a JSON-schema
grammar over the listed tools, or only X), answers ``tool_calls`` with
``arguments = json.dumps(parameters)``, ``content: null`` and ``finish_reason: "tool_calls"``
(the model's natural ``stop`` rewritten), and streams a first tool-call delta holding
``index``, ``id`` (``call_`` + 24 hex digits) and the function name, then ``arguments``
fragments, then a chunk with the finish reason. With ``"auto"`` a model *may* call a tool;
what it does depends on its weights, so the emulator answers text there (as for ``"none"``
or no ``tools``). Validation (``_validate_request``) answers 400 for ``required`` without
tools, a named function without tools, or a name missing from ``tools``.

The emulator's answer to a forced call: the function is X (named) or the first listed tool
(``required``); the generation itself is unchanged (same ``max_tokens`` output ids from the
same seed, same timing, ``usage.completion_tokens`` = generated tokens), and the ids are
rendered as :data:`ARGS_PREFIX` + the emulator's text of the ids + :data:`ARGS_SUFFIX`, i.e.
``{"input": " w12 w7 ..."}`` (valid JSON; the words tokenize back to the ids). There is no
end-of-sequence token, so a forced call always completes exactly at ``max_tokens`` (SGLang
would report ``length`` and no tool call if the JSON were cut short there). The tool-call id
is derived from the request's seed and the function name (SGLang draws a random uuid), so
equal requests get equal answers, as everywhere in the emulator.
"""

from __future__ import annotations

import hashlib
from typing import Any

from saga.emulator.protocol import BadRequest

ARGS_PREFIX = '{"input": "'
"""Start of a forced call's ``arguments``: the generated words follow."""
ARGS_SUFFIX = '"}'
"""End of a forced call's ``arguments``."""

_CHOICES = ("none", "auto", "required")


def _tool_names(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        raise BadRequest("field 'tools' must be a list of tool objects")
    names: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object")
        kind = tool.get("type", "function")
        if kind != "function":
            raise BadRequest(f"tools[{i}].type must be 'function', got {kind!r}")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise BadRequest(f"tools[{i}].function must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"tools[{i}].function.name must be a non-empty string")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON Schema object")
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            raise BadRequest(f"tools[{i}].function.description must be a string")
        names.append(name)
    return names


def forced_tool(body: dict[str, Any]) -> str | None:
    """The function a chat request forces (``tool_choice`` named or ``"required"``), else None.

    Raises :class:`BadRequest` (HTTP 400) for a malformed ``tools`` list or ``tool_choice``,
    and with SGLang's messages for ``required`` or a named function without tools and for a
    name that ``tools`` does not list.
    """
    raw_tools = body.get("tools")
    names = [] if raw_tools is None else _tool_names(raw_tools)
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return None
    if isinstance(choice, str):
        if choice != "required":
            raise BadRequest(
                f"tool_choice must be one of {list(_CHOICES)} or a function object, got {choice!r}"
            )
        if not names:
            raise BadRequest("Tools cannot be empty if tool choice is set to required.")
        return names[0]
    if not isinstance(choice, dict) or choice.get("type", "function") != "function":
        raise BadRequest("tool_choice must be a string or {'type': 'function', 'function': {'name': ...}}")
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("tool_choice.function.name must be a non-empty string")
    if not names:
        raise BadRequest("Tools cannot be empty if tool choice is set to a specific tool.")
    if name not in names:
        raise BadRequest(f"Tool '{name}' not found in tools list.")
    return name


def tool_call_id(seed: int, name: str) -> str:
    """``call_`` + 24 hex digits (SGLang's shape), a function of the request's seed and the name."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=12).hexdigest()
    return f"call_{digest}"


def tool_call(seed: int, name: str, arguments: str) -> dict[str, Any]:
    """One entry of a non-streamed message's ``tool_calls`` (SGLang's ``ToolCall``)."""
    return {
        "id": tool_call_id(seed, name),
        "index": 0,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def header_delta(seed: int, name: str) -> dict[str, Any]:
    """The first streamed tool-call delta: index, id, type and name, empty arguments."""
    return {
        "index": 0,
        "id": tool_call_id(seed, name),
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }


def arguments_delta(fragment: str) -> dict[str, Any]:
    """A later streamed tool-call delta: an ``arguments`` fragment of call 0."""
    return {"index": 0, "function": {"arguments": fragment}}

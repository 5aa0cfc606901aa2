"""Parsing and rendering of SGLang's HTTP request/response bodies (no I/O).

Two error body styles, as SGLang 0.5 uses them:

- request validation (malformed JSON, missing or mistyped fields): FastAPI's validation handler
  answers ``{"object": "error", "message": ..., "type": "Bad Request", "param": null,
  "code": 400}`` (:func:`validation_error_body`);
- engine-side rejections on ``/generate`` (prompt longer than the context, unknown session):
  ``{"error": {"message": ...}}`` (:func:`engine_error_body`); the OpenAI endpoints use the
  first style with ``"type": "BadRequestError"`` for those.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from saga.emulator.core import Request, tokenizer

DEFAULT_MAX_NEW_TOKENS = 128
"""SGLang's default ``sampling_params.max_new_tokens``."""

OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS = 16
"""OpenAI's (and SGLang's) default ``max_tokens`` for ``/v1/completions``."""

CHAT_DEFAULT_MAX_TOKENS = 128
"""Emulator default for chat when ``max_tokens`` is absent (SGLang generates up to the context
length; the emulator has no end-of-sequence token, so it needs a bound)."""


class BadRequest(Exception):
    """A request body failed validation (HTTP 400, validation style)."""


def validation_error_body(message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": "Bad Request", "param": None, "code": 400}


def openai_error_body(message: str, err_type: str = "BadRequestError", code: int = 400) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": code}


def engine_error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


@dataclass(frozen=True, slots=True)
class GenerateInput:
    request: Request
    stream: bool


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise BadRequest(f"field '{key}' must be a non-empty string")
    return v


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadRequest(f"field '{key}' must be an integer")
    return v


def _session_of(body: dict[str, Any]) -> dict[str, Any]:
    """The request's session as ``Request`` keywords: a top-level ``session_id`` is radix-native,
    ``session_params.id`` a legacy (continual-prompt) session; SGLang refuses both at once."""
    sid = _opt_str(body, "session_id")
    params = body.get("session_params")
    if params is None:
        return {"session_id": sid}
    if not isinstance(params, dict):
        raise BadRequest("field 'session_params' must be an object")
    if sid is not None:
        raise BadRequest("session_id and session_params cannot both be set.")
    inner = _opt_str(params, "id")
    return {"session_id": inner, "legacy_session": inner is not None}


def _token_ids(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"field '{field}' must be a non-empty list of token ids")
    for t in value:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            if isinstance(t, list):
                raise BadRequest("batched requests (a list of prompts) are not supported by the emulator")
            raise BadRequest(f"field '{field}' must hold non-negative integers")
    return value


def _seed(sampling: dict[str, Any]) -> int | None:
    for key in ("sampling_seed", "seed"):
        v = sampling.get(key)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int):
                raise BadRequest(f"sampling_params.{key} must be an integer")
            return v
    return None


def parse_generate(body: Any, page_size: int) -> GenerateInput:
    """``POST /generate`` body: ``text`` or ``input_ids``, ``sampling_params``, ``rid``,
    ``session_id`` (radix-native session) or ``session_params.id`` (legacy session), ``priority``,
    ``stream``; others are ignored."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise BadRequest("Either text or input_ids should be provided (exactly one).")
    if text is not None:
        if isinstance(text, list):
            raise BadRequest("batched requests (a list of prompts) are not supported by the emulator")
        if not isinstance(text, str) or not text:
            raise BadRequest("field 'text' must be a non-empty string")
        token_ids = tokenizer.encode(text)
    else:
        token_ids = _token_ids(ids, "input_ids")
    sampling = body.get("sampling_params") or {}
    if not isinstance(sampling, dict):
        raise BadRequest("field 'sampling_params' must be an object")
    max_new = _opt_int(sampling, "max_new_tokens")
    if max_new is None:
        max_new = DEFAULT_MAX_NEW_TOKENS
    if max_new < 0:
        raise BadRequest("sampling_params.max_new_tokens must be >= 0")
    rid = _opt_str(body, "rid") or uuid.uuid4().hex
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("field 'stream' must be a boolean")
    req = Request.from_tokens(
        rid,
        token_ids,
        max_new,
        page_size,
        **_session_of(body),
        priority=_opt_int(body, "priority"),
        seed=_seed(sampling),
    )
    return GenerateInput(req, stream)


@dataclass(frozen=True, slots=True)
class OpenAIInput:
    request: Request
    stream: bool
    include_usage: bool
    model: str
    chat: bool


def parse_openai(body: Any, page_size: int, *, chat: bool, default_model: str) -> OpenAIInput:
    """``/v1/completions`` (``prompt``: string or token ids) or ``/v1/chat/completions``
    (``messages``); ``max_tokens``/``max_completion_tokens``, ``stream``,
    ``stream_options.include_usage``, ``seed``, plus SGLang's ``rid``, ``session_id``,
    ``priority``."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("field 'messages' is required and must be a non-empty list")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("every message must be an object")
        try:
            token_ids = tokenizer.encode(tokenizer.render_chat(messages))
        except ValueError as e:
            raise BadRequest(str(e)) from None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str) and prompt:
            token_ids = tokenizer.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            token_ids = _token_ids(prompt, "prompt")
        elif isinstance(prompt, list):
            raise BadRequest("batched prompts are not supported by the emulator")
        else:
            raise BadRequest("field 'prompt' is required (a string or a list of token ids)")
    max_tokens = _opt_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens")
    if max_tokens is None:
        max_tokens = CHAT_DEFAULT_MAX_TOKENS if chat else OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS
    if max_tokens < 0:
        raise BadRequest("max_tokens must be >= 0")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("field 'stream' must be a boolean")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("field 'stream_options' must be an object")
    model = body.get("model", default_model)
    if not isinstance(model, str):
        raise BadRequest("field 'model' must be a string")
    seed = _opt_int(body, "seed")
    rid = _opt_str(body, "rid") or f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    req = Request.from_tokens(
        rid,
        token_ids,
        max_tokens,
        page_size,
        **_session_of(body),
        priority=_opt_int(body, "priority"),
        seed=seed,
    )
    return OpenAIInput(req, stream, bool(opts.get("include_usage", False)), model, chat)


def finish_reason_native(reason: str, completion_tokens: int) -> dict[str, Any]:
    if reason == "abort":
        return {"type": "abort", "message": "Abort in waiting queue or running batch."}
    return {"type": "length", "length": completion_tokens}


def usage_body(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }

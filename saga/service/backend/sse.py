"""Server-sent-event framing as SGLang writes it, and strict JSON decoding.

SGLang streams ``data: <json>\\n\\n`` events and ends with ``data: [DONE]``. This module
turns raw body bytes into the payload strings of those events: it buffers partial lines,
ignores blank lines, SSE comments (``:`` keep-alives) and ``event:``/``id:``/``retry:``
fields, and rejects anything else as a protocol error. It does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

DONE = "[DONE]"


class SSEFormatError(ValueError):
    """A line that is not valid server-sent-event framing, or a payload that is not a JSON
    object."""


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    """Decode ``text`` as a JSON object; :class:`SSEFormatError` names what is wrong."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SSEFormatError(f"not JSON: {_preview(text)!r} ({exc})") from None
    if not isinstance(value, dict):
        raise SSEFormatError(f"expected a JSON object, got {type(value).__name__}: {_preview(text)!r}")
    return value


class SSEDecoder:
    """Incremental decoder: feed body chunks, get completed ``data:`` payloads.

    ``max_line`` (bytes, default 16 MiB): a line longer than this without a newline is a
    protocol error rather than unbounded buffering (a 32k-token chunk with logprobs is a
    few MB at most).
    """

    def __init__(self, max_line: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._max_line = max_line

    def feed(self, chunk: bytes) -> Iterator[str]:
        """Payloads completed by ``chunk``, in order. Lazy: a malformed line raises
        :class:`SSEFormatError` only after the payloads before it were yielded."""
        self._buf += chunk
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
            payload = self._line(line)
            if payload is not None:
                yield payload
        if len(self._buf) > self._max_line:
            raise SSEFormatError(f"SSE line longer than {self._max_line} bytes")

    def finish(self) -> Iterator[str]:
        """The end of the body: a last line without a newline still counts."""
        rest, self._buf = self._buf, b""
        payload = self._line(rest)
        if payload is not None:
            yield payload

    @staticmethod
    def _line(raw: bytes) -> str | None:
        line = raw.rstrip(b"\r")
        if not line or line.startswith(b":"):
            return None
        try:
            text = line.decode()
        except UnicodeDecodeError:
            raise SSEFormatError(f"SSE line is not UTF-8: {_preview(line)!r}") from None
        field, sep, value = text.partition(":")
        if not sep:
            raise SSEFormatError(f"not an SSE line: {_preview(text)!r}")
        if field == "data":
            return value[1:] if value.startswith(" ") else value
        if field in ("event", "id", "retry"):
            return None
        raise SSEFormatError(f"unexpected SSE field {field!r}: {_preview(text)!r}")


def _preview(text: str | bytes, limit: int = 120) -> str | bytes:
    return text[:limit]

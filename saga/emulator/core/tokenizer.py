"""A deterministic stand-in tokenizer: equal text prefixes give equal token-id prefixes.

Text is cut into pieces: a newline, a word with its leading spaces, or a run of spaces; each
piece is one id.
Words of the emulator's own output vocabulary (``" w<id>"``, what :func:`decode` writes) map back
to their id, so generated text re-sent in the next turn of a conversation tokenizes to the very
ids that were generated (and hits the cached output pages, as a real tokenizer would). Any other
piece maps to ``crc32(piece) % VOCAB_SIZE``. Chat messages are rendered with a fixed template.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence

from saga.emulator.core.request import VOCAB_SIZE

_PIECE = re.compile(r"\n|[^\S\n]*\S+|[^\S\n]+")
_OWN_WORD = re.compile(r" w(\d{1,5})")


def encode(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _PIECE.findall(text):
        m = _OWN_WORD.fullmatch(piece)
        if m is not None and int(m.group(1)) < VOCAB_SIZE:
            ids.append(int(m.group(1)))
        else:
            ids.append(zlib.crc32(piece.encode("utf-8")) % VOCAB_SIZE)
    return ids


def decode(token_ids: Iterable[int]) -> str:
    return "".join(f" w{t}" for t in token_ids)


def render_chat(messages: Sequence[Mapping[str, object]]) -> str:
    """Render OpenAI chat messages as one prompt (template ``<|role|>\\ncontent\\n``, then the
    assistant header). Content may be a string or a list of ``{"type": "text", "text": ...}``."""
    parts: list[str] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content", "")
        if not isinstance(role, str):
            raise ValueError("every message needs a string 'role'")
        if isinstance(content, list):
            texts = []
            for item in content:
                if isinstance(item, Mapping) and isinstance(item.get("text"), str):
                    texts.append(str(item["text"]))
            content = "".join(texts)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise ValueError("message 'content' must be a string or a list of text parts")
        parts.append(f"<|{role}|>\n{content}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)

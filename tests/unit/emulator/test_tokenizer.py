"""Deterministic tokenizer and output tokens."""

from __future__ import annotations

import pytest

from saga.emulator.core import VOCAB_SIZE, Request, output_token_ids, tokenizer

pytestmark = pytest.mark.unit


def test_equal_prefixes_give_equal_ids() -> None:
    a = tokenizer.encode("hello world, this is a test of the tokenizer")
    b = tokenizer.encode("hello world, this is a test of something else")
    assert a[:7] == b[:7]
    assert a != b
    assert tokenizer.encode("same text") == tokenizer.encode("same text")
    assert all(0 <= t < VOCAB_SIZE for t in a)


def test_generated_text_tokenizes_back_to_its_ids_inside_a_chat() -> None:
    out = output_token_ids(seed=42, count=12)
    prompt = tokenizer.render_chat([{"role": "user", "content": "hi"}])
    history = tokenizer.render_chat(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": tokenizer.decode(out)}]
    )
    p_ids, h_ids = tokenizer.encode(prompt), tokenizer.encode(history)
    assert h_ids[: len(p_ids) + len(out)] == p_ids + out


def test_output_tokens_are_deterministic_and_seeded() -> None:
    assert output_token_ids(1, 10) == output_token_ids(1, 10)
    assert output_token_ids(1, 10) != output_token_ids(2, 10)
    assert output_token_ids(1, 10)[4:] == output_token_ids(1, 6, start=4)
    r1 = Request.from_tokens("a", [1, 2, 3], 5, 1)
    r2 = Request.from_tokens("b", [1, 2, 3], 5, 1)
    assert r1.seed == r2.seed  # same prompt, no explicit seed: same output (greedy-like)


def test_render_chat_rejects_bad_messages() -> None:
    with pytest.raises(ValueError, match="role"):
        tokenizer.render_chat([{"content": "x"}])
    with pytest.raises(ValueError, match="content"):
        tokenizer.render_chat([{"role": "user", "content": 3}])
    text = tokenizer.render_chat(
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    )
    assert "ab" in text

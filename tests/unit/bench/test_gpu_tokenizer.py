"""The tokenizer ``bench/gpu/make_model.py`` gives real SGLang: the benchmark's prompt words keep
their ids, model output reads back as the same ids, and JSON can be spelt (for forced tool
calls under SGLang's grammar-constrained decoding)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from script_modules import load_script

pytestmark = pytest.mark.unit

MM = load_script("bench/gpu/make_model.py")
TOK: Any = MM.build_backend()


def ids_of(text: str) -> list[int]:
    return list(TOK.encode(text, add_special_tokens=False).ids)


def test_prompt_words_keep_their_ids() -> None:
    assert ids_of(" w10001 w20002 w31999") == [10001, 20002, 31999]
    assert ids_of(" w3 w10 w100 w1000") == [3, 10, 100, 1000]
    assert TOK.get_vocab_size() <= MM.VOCAB_PADDED


def test_json_can_be_spelt_and_reads_back() -> None:
    call = '[{"name": "code_execution", "parameters": {"input": " w12 w7"}}]'
    ids = ids_of(call)
    assert TOK.decode(ids) == call
    assert json.loads(TOK.decode(ids))[0]["name"] == "code_execution"
    # the fixed pieces are single tokens that decode to the same text as their characters
    pieces = [TOK.token_to_id(p) for p in MM.JSON_PIECES]
    assert None not in pieces
    assert TOK.decode(pieces) == "".join(p.replace("▁", " ") for p in MM.JSON_PIECES)
    assert "[UNK]" not in TOK.encode(call).tokens


words = st.integers(min_value=3, max_value=MM.VOCAB - 1)
chars = st.sampled_from([c for c in map(chr, range(33, 127)) if not c.isdigit()])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(words, chars), min_size=1, max_size=20))
def test_output_text_reads_back_as_the_same_ids(seq: list[int | str]) -> None:
    ids = [x if isinstance(x, int) else TOK.token_to_id(x) for x in seq]
    assert ids_of(TOK.decode(ids)) == ids

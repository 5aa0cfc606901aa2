"""Write a local model folder for real SGLang with dummy weights (no model hub needed).

    python bench/gpu/make_model.py OUT_DIR [--shape 8b|tiny]

- ``config.json``: a Llama config. ``8b`` is Llama-3.1-8B's shape (32 layers, hidden 4096,
  8 KV heads, head dim 128) with a 32,256-token vocabulary (32,000 words, then characters),
  i.e. the model the emulator's timing defaults describe, so emulated and real runs are
  comparable; ``tiny`` (2 layers, hidden 256) only checks the pipeline. SGLang is started with
  ``--load-format dummy``: random weights, real kernels, real KV cache and radix tree.
- A tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, :func:`build_tokenizer`): the
  word ``" w<id>"`` is token ``id`` for every id in [3, 32000). The benchmark's prompts are
  exactly such words (``saga.bench.prompts``), so on the real engine every prompt has exactly
  the token ids, lengths and shared prefixes of the emulated run. Printable ASCII characters
  are tokens too, so SGLang's grammar-constrained decoding of a forced tool call can spell
  its JSON (``check_tool_grammar.py``). Any id sequence decodes to text that tokenizes back to
  it, except where a digit character directly follows a word (``w12`` + ``3`` reads as
  ``w123``). A trivial chat template renders each message's content after its role word (an
  assistant message holding only tool calls, content null, renders as its role word; tools
  and tool calls are not rendered, as in the emulator's template).

Needs ``tokenizers`` and ``transformers`` (both installed with ``sglang``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VOCAB = 32_000
VOCAB_PADDED = 32_256  # the model's vocab_size: the words, then characters and JSON_PIECES
# The fixed parts of SGLang's forced tool call, ``[{"name":"X","parameters":{...}}]`` without
# whitespace (``--constrained-json-disable-any-whitespace``), as single tokens.
JSON_PIECES = ('[{"name":▁"', '",▁"parameters":▁', '{"input":▁"', '"}}]')

SHAPES = {
    "8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "tiny": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}{{ ' ' }}{{ m['content'] or '' }}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def build_backend() -> Any:
    """The benchmark's tokenizer (a ``tokenizers.Tokenizer``): ``" w<id>"`` is token ``id``, and
    JSON can be spelt.

    A BPE model over a Metaspace pre-tokenizer: a space becomes ``▁`` and starts a new piece, so
    ``" w123"`` is the piece ``▁w123``, merged from its characters into the single token 123
    (the merges build every ``▁w`` + digits prefix, each itself a word). Every other character
    of printable ASCII is a token of its own (ids from ``VOCAB``), so grammar-constrained
    decoding (SGLang's JSON schema for a forced ``tool_choice``) has the characters JSON needs;
    ``JSON_PIECES`` add the tool-call array's fixed parts as single tokens (the model may use
    them or spell the same text). Decoding turns ``▁`` back into a space. The text of an id
    sequence tokenizes back to the same ids unless it holds a piece, or a digit character
    right after a word (``w12`` + ``3`` reads as ``w123``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab: dict[str, int] = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"▁w{i}": i for i in range(3, VOCAB)})
    extra = ["▁", "▁w", "▁w0", "▁w1", "▁w2", *(chr(c) for c in range(33, 127)), *JSON_PIECES]
    next_id = VOCAB
    for piece in extra:
        if piece not in vocab:
            vocab[piece] = next_id
            next_id += 1
    assert next_id <= VOCAB_PADDED, next_id
    merges: list[tuple[str, str]] = [("▁", "w")]
    seen = set()
    for i in range(VOCAB):
        digits = str(i)
        for k in range(1, len(digits) + 1):
            pair = ("▁w" + digits[: k - 1], digits[k - 1])
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    # sentencepiece's decoder shape, from which xgrammar knows that ▁ is a space
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def build_tokenizer() -> Any:
    """:func:`build_backend` as a ``transformers`` tokenizer with the chat template."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_backend(),
        unk_token="[UNK]",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_PADDED,
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": 1,
        "eos_token_id": 2,
        **SHAPES[a.shape],
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))

    fast = build_tokenizer()
    fast.save_pretrained(out)
    ids = fast(" w10001 w20002 w31999", add_special_tokens=False)["input_ids"]
    assert ids == [10001, 20002, 31999], ids
    print(f"model folder ready: {out} ({a.shape})")


if __name__ == "__main__":
    main()

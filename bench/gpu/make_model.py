"""Write a local model folder for real SGLang with dummy weights (no model hub needed).

    python bench/gpu/make_model.py OUT_DIR [--shape 8b|tiny]

- ``config.json``: a Llama config. ``8b`` is Llama-3.1-8B's shape (32 layers, hidden 4096,
  8 KV heads, head dim 128) with a 32000-token vocabulary, i.e. the model the emulator's
  timing defaults describe, so emulated and real runs are comparable; ``tiny`` (2 layers,
  hidden 256) only checks the pipeline. SGLang is started with ``--load-format dummy``: random
  weights, real kernels, real KV cache and radix tree.
- A word-level tokenizer (``tokenizer.json`` + ``tokenizer_config.json``): the word ``w<id>``
  is token ``id`` for every id in [0, 32000), split on whitespace. The benchmark's prompts are
  exactly such words (``saga.bench.prompts``), so on the real engine every prompt has exactly
  the token ids, lengths and shared prefixes of the emulated run. A trivial chat template
  renders each message's content after its role word (an assistant message holding only
  tool calls, content null, renders as its role word; tools and tool calls are not rendered,
  as in the emulator's template).

Needs ``tokenizers`` and ``transformers`` (both installed with ``sglang``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VOCAB = 32_000

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
        "vocab_size": VOCAB,
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

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    vocab["[UNK]"], vocab["<s>"], vocab["</s>"] = 0, 1, 2  # ids 0-2 double as specials
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    ids = fast(" w10001 w20002 w31999", add_special_tokens=False)["input_ids"]
    assert ids == [10001, 20002, 31999], ids
    print(f"model folder ready: {out} ({a.shape})")


if __name__ == "__main__":
    main()

"""Can a dummy-weight model on real SGLang answer the benchmark's forced tool calls? (CPU only.)

    python bench/gpu/check_tool_grammar.py MODEL_DIR [--trials 200] [--max-tokens 8,32,128,512]

On a forced ``tool_choice`` without ``--tool-call-parser``, SGLang 0.5.17
(``entrypoints/openai/serving_chat.py``) constrains decoding to the JSON schema
``{"type": "array", "minItems": 1, "maxItems": 1 (parallel_tool_calls false), "items":
{"properties": {"name": {"enum": [X]}, "parameters": <the tool's schema>}, "required": [...]}}``
(``function_call/utils.py: get_json_schema_constraint``), compiled by xgrammar from the model's
tokenizer, and parses the text into ``tool_calls`` only if it is complete JSON. A model with
random weights then picks uniformly among the tokens the grammar allows. This script does the
same on the CPU: xgrammar's matcher over the model folder's tokenizer (``make_model.py``), with
the benchmark's tool definitions (``saga.bench.conversation.tool_definitions``) and uniform
random choices, and reports how often the answer is a parseable call of the forced tool within
``max_tokens``. Needs ``xgrammar``, ``torch`` and ``transformers`` (SGLang's own dependencies).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from saga.bench.conversation import tool_definitions


def sglang_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """SGLang 0.5.17's constraint for a forced function with ``parallel_tool_calls: false``."""
    fn = tool["function"]
    item = {
        "properties": {
            "name": {"type": "string", "enum": [fn["name"]]},
            "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
        },
        "required": ["name", "parameters"],
    }
    return {"type": "array", "minItems": 1, "maxItems": 1, "items": item}


def main() -> int:
    import torch
    import xgrammar as xgr
    from transformers import AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("model")
    p.add_argument("--tool", default="code_execution")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--max-tokens", default="8,32,128,512")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    try:
        budgets = [int(x) for x in a.max_tokens.split(",")]
        if min(budgets) < 1:
            raise ValueError("every budget must be >= 1")
        config = json.loads((Path(a.model) / "config.json").read_text())
        vocab_size = int(config["vocab_size"])
        eos = int(config["eos_token_id"])
        tok = AutoTokenizer.from_pretrained(a.model)
    except (OSError, ValueError, KeyError) as exc:
        p.error(f"{a.model} / --max-tokens {a.max_tokens}: {type(exc).__name__}: {exc}")
    rng = random.Random(a.seed)
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab_size, stop_token_ids=[eos])
    schema = sglang_schema(tool_definitions([a.tool])[0])
    # --constrained-json-disable-any-whitespace: no optional whitespace between JSON tokens
    ctx = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False)
    print(f"schema: {json.dumps(schema)}")
    bitmask = xgr.allocate_token_bitmask(1, vocab_size)
    ok_all = True
    for max_tokens in budgets:
        good, lengths = 0, []
        for _ in range(a.trials):
            matcher = xgr.GrammarMatcher(ctx)
            ids: list[int] = []
            while len(ids) < max_tokens and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(bitmask)
                logits = torch.zeros(1, vocab_size)
                xgr.apply_token_bitmask_inplace(logits, bitmask)
                allowed = torch.nonzero(logits[0] == 0).flatten().tolist()
                t = allowed[rng.randrange(len(allowed))]
                assert matcher.accept_token(t), t
                if t != eos:
                    ids.append(t)
            text = tok.decode(ids)
            try:
                calls = json.loads(text)
                good += int(calls[0]["name"] == a.tool and isinstance(calls[0]["parameters"], dict))
            except (ValueError, LookupError, TypeError):
                pass
            lengths.append(len(ids))
        lengths.sort()
        print(
            f"max_tokens {max_tokens}: {good}/{a.trials} complete calls of {a.tool}; "
            f"tokens p50 {lengths[len(lengths) // 2]}, max {lengths[-1]}"
        )
        ok_all &= good == a.trials
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())

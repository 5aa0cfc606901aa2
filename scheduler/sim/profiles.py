"""Named replica profiles for the simulator (``saga simulate --replica-profile``).

- ``llama8b-h100``: the emulator's default (Llama-3.1-8B, bf16, one H100 SXM; derivation in
  ``saga.emulator.core.config``), context length raised to 1M tokens.
- ``llama70b-h100x8`` (default): Llama-3-70B, bf16, tensor-parallel over 8 H100 SXM 80 GB, the
  model class of the paper's evaluation, and the only one here whose KV pool holds the
  Claude Code traces' longest contexts (894k tokens). Derived with the emulator's method:

  * weights 70.6e9 x 2 B = 141 GB, 17.6 GB per GPU read at 80% of 3.35 TB/s = 6.6 ms, plus
    ~1 ms launch/scheduling and ~1 ms tensor-parallel all-reduce: ``fixed_overhead_s`` 8.5 ms;
  * prefill 2 x 70.6e9 FLOP per token at 50% of 8 x 989 TFLOPS: 3.6e-5 s per token;
  * decode 2 x 70.6e9 FLOP per sequence per step at 55%: 3.2e-5 s;
  * KV per token 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 B = 320 KiB, 40 KiB per GPU read
    at 80% of 3.35 TB/s: 1.53e-8 s per token;
  * KV pool 8 x 80 GiB x 0.88 - 131 GiB weights - 40 GiB activations = 392 GiB / 320 KiB =
    1,284,505 tokens.
"""

from __future__ import annotations

from saga.emulator.core import ReplicaConfig, TimingParams

CONTEXT_TOKENS = 1 << 20

PROFILES: dict[str, ReplicaConfig] = {
    "llama8b-h100": ReplicaConfig(context_length=CONTEXT_TOKENS),
    "llama70b-h100x8": ReplicaConfig(
        kv_capacity_tokens=1_284_505,
        context_length=CONTEXT_TOKENS,
        model_name="meta-llama/Meta-Llama-3-70B-Instruct",
        timing=TimingParams(
            fixed_overhead_s=8.5e-3,
            prefill_s_per_token=3.6e-5,
            decode_s_per_seq=3.2e-5,
            kv_read_s_per_token=1.53e-8,
        ),
    ),
}
DEFAULT_PROFILE = "llama70b-h100x8"

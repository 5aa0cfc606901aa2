"""Named replica profiles for the simulator (``saga simulate --replica-profile``).

Every profile has ``enable_session_radix_cache`` on, as SAGA's operator starts SGLang.

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
- ``llama70b-a100x4``: the paper's testbed (64 A100 GPUs serving Llama-3-70B: 16 replicas of
  tensor-parallel 4 over A100 SXM 80 GB; A100 datasheet: 2.039 TB/s HBM2e, 312 TFLOPS dense
  bf16). A third of the H100 x8 KV pool, so agent sessions compete for KV memory; use it to
  see retention, stealing and gating at work. Same method:

  * weights 35.3 GB per GPU read at 80% of 2.039 TB/s = 21.6 ms, plus ~1 ms launch and ~1 ms
    all-reduce: ``fixed_overhead_s`` 23.6 ms;
  * prefill 2 x 70.6e9 FLOP per token at 50% of 4 x 312 TFLOPS: 2.26e-4 s per token;
  * decode 2 x 70.6e9 FLOP per sequence per step at 55%: 2.06e-4 s;
  * KV 80 KiB per token per GPU read at 80% of 2.039 TB/s: 5.02e-8 s per token;
  * KV pool 4 x 80 GiB x 0.88 - 131 GiB weights - 20 GiB activations = 130.6 GiB / 320 KiB =
    427,950 tokens (the longest Claude Code contexts do not fit: use it with the synthetic
    workloads).
"""

from __future__ import annotations

from saga.emulator.core import ReplicaConfig, TimingParams

CONTEXT_TOKENS = 1 << 20

PROFILES: dict[str, ReplicaConfig] = {
    "llama8b-h100": ReplicaConfig(context_length=CONTEXT_TOKENS, enable_session_radix_cache=True),
    "llama70b-h100x8": ReplicaConfig(
        kv_capacity_tokens=1_284_505,
        context_length=CONTEXT_TOKENS,
        enable_session_radix_cache=True,
        model_name="meta-llama/Meta-Llama-3-70B-Instruct",
        timing=TimingParams(
            fixed_overhead_s=8.5e-3,
            prefill_s_per_token=3.6e-5,
            decode_s_per_seq=3.2e-5,
            kv_read_s_per_token=1.53e-8,
        ),
    ),
    "llama70b-a100x4": ReplicaConfig(
        kv_capacity_tokens=427_950,
        context_length=CONTEXT_TOKENS,
        enable_session_radix_cache=True,
        model_name="meta-llama/Meta-Llama-3-70B-Instruct",
        timing=TimingParams(
            fixed_overhead_s=23.6e-3,
            prefill_s_per_token=2.26e-4,
            decode_s_per_seq=2.06e-4,
            kv_read_s_per_token=5.02e-8,
        ),
    ),
}
DEFAULT_PROFILE = "llama70b-h100x8"

"""Settings of one emulated replica: KV pool, batching limits and the iteration-time model.

Every field says its unit and why its default. The defaults describe one named pair:
**Llama-3.1-8B-Instruct in bf16 on one NVIDIA H100 SXM 80 GB** served by SGLang 0.5 with its
default server arguments. They are derived (roofline arithmetic with stated efficiencies), not
measured; ``docs/emulator.md`` shows the derivation and the sources:

- model shape (32 layers, 8 KV heads, head dim 128, 8.03 B parameters): the model's
  ``config.json`` on Hugging Face; KV per token = 2 (K,V) x 32 x 8 x 128 x 2 bytes = 128 KiB,
  matching the 0.125 GB per 1k tokens in https://huggingface.co/blog/llama31 ;
- H100 SXM: 3.35 TB/s HBM3, 989 TFLOPS dense bf16 (NVIDIA H100 datasheet);
- SGLang defaults: ``--page-size 1``, ``--chunked-prefill-size 8192`` on 80 GB GPUs,
  ``--mem-fraction-static`` about 0.88 (``python/sglang/srt/server_args.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TimingParams:
    """Iteration-time model: one forward pass (iteration) of the batch takes

    ``fixed_overhead_s + prefill_s_per_token * new_prefill_tokens
    + decode_s_per_seq * decoding_sequences + kv_read_s_per_token * kv_tokens_attended``.
    """

    fixed_overhead_s: float = 6.0e-3
    """Seconds per iteration whatever the batch: reading the 16.06 GB of weights at ~80% of
    3.35 TB/s (4.8 ms at 100%) plus ~1 ms of scheduler/launch overhead."""

    prefill_s_per_token: float = 3.2e-5
    """Seconds per newly computed (uncached) prompt token: 2 x 8.03e9 FLOP per token at ~50%
    of 989 TFLOPS (about 31k prefill tokens/s)."""

    decode_s_per_seq: float = 3.0e-5
    """Seconds per decoding sequence per iteration: one token's 16 GFLOP at ~55% of peak plus
    sampling; dominates only at large batch sizes."""

    kv_read_s_per_token: float = 4.9e-8
    """Seconds per KV-cache token read by attention in one iteration: 128 KiB per token at
    ~80% of 3.35 TB/s. Charged for every context token of every decoding sequence and for the
    cached prefix a prefill chunk attends to."""

    def __post_init__(self) -> None:
        for name in ("fixed_overhead_s", "prefill_s_per_token", "decode_s_per_seq", "kv_read_s_per_token"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"TimingParams.{name} must be >= 0, got {value}")
        if self.fixed_overhead_s <= 0 and self.decode_s_per_seq <= 0:
            raise ValueError("TimingParams: fixed_overhead_s or decode_s_per_seq must be > 0")


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """One replica (one SGLang server process with data parallelism 1)."""

    page_size: int = 1
    """Tokens per KV page (SGLang ``--page-size``, default 1). Prefix matching and caching work
    on whole pages; the cluster simulator sets this to a trace's block size (64 for the Claude
    Code traces)."""

    kv_capacity_tokens: int = 425_984
    """Tokens the KV pool holds (SGLang's ``max_total_num_tokens``): 0.88 x 80 GiB minus
    15 GiB of weights minus ~5.4 GiB of activations/CUDA graphs = 52 GiB / 128 KiB per token."""

    max_running_requests: int = 1024
    """Most requests in the running batch (SGLang ``--max-running-requests``; SGLang derives it
    from the pool size when unset, this is an assumption of the same order)."""

    chunked_prefill_size: int = 8192
    """Most prompt tokens computed in one prefill iteration (SGLang ``--chunked-prefill-size``,
    8192 on 80 GB GPUs); longer prompts are prefilled over several iterations."""

    context_length: int = 131_072
    """Longest sequence in tokens (Llama 3.1's 128k context)."""

    enable_priority_scheduling: bool = False
    """Order the waiting queue by request ``priority`` instead of arrival (SGLang
    ``--enable-priority-scheduling``)."""

    schedule_low_priority_values_first: bool = False
    """With priority scheduling, smaller values run first (SGLang
    ``--schedule-low-priority-values-first``); by default larger values run first."""

    enable_session_radix_cache: bool = False
    """A request's top-level ``session_id`` references its cached entries, evicted last until
    ``/close_session`` (SGLang ``--enable-session-radix-cache``, off by default as in SGLang;
    SAGA's operator always turns it on). Off: such a request is an ordinary one and its entries
    are plain LRU prefix cache."""

    timing: TimingParams = field(default_factory=TimingParams)
    """Iteration-time model (see :class:`TimingParams`)."""

    model_name: str = "meta-llama/Llama-3.1-8B-Instruct"
    """Name reported by ``/model_info`` and in metric labels."""

    def __post_init__(self) -> None:
        positive = ("page_size", "kv_capacity_tokens", "max_running_requests", "chunked_prefill_size")
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"ReplicaConfig.{name} must be > 0, got {value}")
        if self.context_length < 2:
            raise ValueError(f"ReplicaConfig.context_length must be >= 2, got {self.context_length}")
        if self.kv_capacity_tokens < self.page_size:
            raise ValueError("ReplicaConfig.kv_capacity_tokens must hold at least one page")
        if self.max_req_input_len < 1:  # SGLang refuses to start: "Memory pool size is too small"
            raise ValueError("ReplicaConfig: context_length and kv_capacity_tokens must both be >= 7")

    @property
    def max_req_input_len(self) -> int:
        """SGLang's scheduler refuses a prompt of this many tokens or more:
        ``min(context_length - 1, max_total_num_tokens - 1) - 5`` (its ``max_req_len - 5``),
        reported in ``/server_info``."""
        return min(self.context_length - 1, self.kv_capacity_tokens - 1) - 5

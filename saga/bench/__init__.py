"""Live benchmarks: ``saga bench e2e`` replays agent workloads over real HTTP through SAGA and
through the real sglang-router on the same emulated SGLang cluster (docs/bench.md)."""

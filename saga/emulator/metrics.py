"""Prometheus exposition of one replica with SGLang's ``sglang:*`` metric names.

Each replica has its own ``CollectorRegistry`` (no global state). Gauges and counters are read
from the model when scraped; the two latency histograms are observed from the model's events and
are in **model seconds** (equal to wall seconds at time scale 1).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from saga.emulator.core import ReplicaModel

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _ModelCollector(Collector):
    def __init__(self, model: ReplicaModel) -> None:
        self._model = model
        self._labels = {"model_name": model.config.model_name}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        m = self._model
        load = m.load()
        c = m.counters()
        names = list(self._labels)
        values = list(self._labels.values())

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            k = CounterMetricFamily(name, doc, labels=names)
            k.add_metric(values, value)
            return k

        yield gauge("sglang:num_running_reqs", "The number of running requests.", load.num_running)
        yield gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", load.num_waiting)
        yield gauge("sglang:num_used_tokens", "The number of used KV tokens.", load.used_tokens)
        yield gauge("sglang:token_usage", "The token usage.", load.token_usage)
        yield gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", load.cache_hit_rate)
        yield gauge("sglang:max_total_num_tokens", "Maximum total number of tokens.", load.total_tokens)
        yield gauge(
            "sglang:num_open_sessions", "Open radix-cache sessions (emulator-specific).", load.open_sessions
        )
        yield counter("sglang:prompt_tokens", "Number of prefill tokens processed.", c.prompt_tokens)
        yield counter(
            "sglang:cached_tokens", "Number of prompt tokens served from the cache.", c.cached_tokens
        )
        yield counter(
            "sglang:generation_tokens", "Number of generation tokens processed.", c.completion_tokens
        )
        yield counter(
            "sglang:evicted_tokens", "Number of tokens evicted from the prefix cache.", c.evicted_tokens
        )
        yield counter("sglang:num_requests", "Number of requests processed.", c.requests)
        yield counter("sglang:num_aborted_requests", "Number of requests aborted.", c.aborted_requests)


class ReplicaMetrics:
    """The registry of one replica and its two histograms."""

    def __init__(self, model: ReplicaModel) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_ModelCollector(model))
        labels = ["model_name"]
        self._name = model.config.model_name
        self.ttft = Histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(self._name)
        self.e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(self._name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

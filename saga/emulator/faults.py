"""Fault knobs of one emulated replica (set from the CLI or ``POST /admin/faults``)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any


class FaultConfigError(ValueError):
    """A fault knob got a value of the wrong type or out of range."""


@dataclass(slots=True)
class FaultConfig:
    failure_rate: float = 0.0
    """Probability in [0, 1] that a generation request fails with HTTP 500 (an injected engine
    error) before reaching the model. 0: never."""
    added_latency_s: float = 0.0
    """Wall seconds added before every generation request is handled (a slow network or host)."""
    healthy: bool = True
    """False: ``/health`` and ``/health_generate`` answer 503 while generation still works (a
    replica the router should take out of rotation)."""
    crash_after_requests: int | None = None
    """After this many generation requests the replica crashes: it stops listening and drops
    every connection, like a killed process. None: never."""
    seed: int = 0
    """Seed of the failure draws (reproducible fault sequences)."""
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()
        self._rng.seed(self.seed)

    def validate(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise FaultConfigError(f"failure_rate must be in [0, 1], got {self.failure_rate}")
        if self.added_latency_s < 0:
            raise FaultConfigError(f"added_latency_s must be >= 0, got {self.added_latency_s}")
        if self.crash_after_requests is not None and self.crash_after_requests < 0:
            raise FaultConfigError(f"crash_after_requests must be >= 0, got {self.crash_after_requests}")

    def should_fail(self) -> bool:
        return self.failure_rate > 0 and self._rng.random() < self.failure_rate

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update (the admin endpoint's JSON body); all or nothing."""
        known = {"failure_rate": (int, float), "added_latency_s": (int, float), "healthy": (bool,)}
        staged = asdict(self)
        staged.pop("_rng", None)
        for key, value in values.items():
            if key == "crash_after_requests":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise FaultConfigError("crash_after_requests must be an integer or null")
            elif key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise FaultConfigError("seed must be an integer")
            elif key in known:
                if isinstance(value, bool) and key != "healthy":
                    raise FaultConfigError(f"{key} must be a number")
                if not isinstance(value, known[key]):
                    raise FaultConfigError(f"{key} has the wrong type")
            else:
                raise FaultConfigError(f"unknown fault knob {key!r}")
            staged[key] = value
        trial = FaultConfig(**staged)
        self.failure_rate = float(trial.failure_rate)
        self.added_latency_s = float(trial.added_latency_s)
        self.healthy = trial.healthy
        self.crash_after_requests = trial.crash_after_requests
        if "seed" in values:
            self.seed = trial.seed
            self._rng.seed(self.seed)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_rng", None)
        return d

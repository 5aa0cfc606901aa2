"""Log-binned histograms: the distributions an Agent Execution Graph keeps on its edges.

Tool latencies and token counts span many orders of magnitude and are heavy-tailed (half the
Claude Code tool gaps are <= 9 s but the p99 is 611 s), so they are kept as counts in
log-spaced bins: bin 0 holds ``[0, lo)``, bin ``i >= 1`` holds ``[lo·r^(i-1), lo·r^i)`` with
``r = 10^(1/bins_per_decade)``, and the last bin also takes everything above. Counts are floats
so that priors can be added as fractional pseudo-observations and histograms can be mixed.

Why histograms rather than a fitted log-normal: the gap distributions are multi-modal (fast
tools, slow builds, a person replying) and the *conditional* distribution given an elapsed time
— what the scheduler asks mid-gap — is exactly the histogram's tail renormalised; a log-normal
gets that tail wrong by large factors. Quantiles interpolate log-linearly inside a bin, so the
resolution is a factor ``r`` (≈ 1.33 at 8 bins per decade).

Tunables (per :class:`BinSpec`): ``lo`` (the smallest resolved value; below it is one bin),
``decades`` (range above ``lo``) and ``bins_per_decade`` (resolution). Two specs are used:
:data:`TIME_SPEC` (10 ms .. ~11.6 days, 8 bins per decade = 65 bins) and :data:`TOKEN_SPEC`
(1 .. 10^7 tokens, 8 per decade = 57 bins).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BinSpec:
    lo: float  # smallest resolved value (seconds or tokens); [0, lo) is bin 0
    decades: int  # orders of magnitude covered above lo
    bins_per_decade: int  # resolution: bin edges grow by 10^(1/bins_per_decade)

    @property
    def n_bins(self) -> int:
        return self.decades * self.bins_per_decade + 1

    def edge(self, i: int) -> float:
        """Lower edge of bin ``i`` (0 for bin 0)."""
        if i <= 0:
            return 0.0
        return float(self.lo * 10.0 ** ((i - 1) / self.bins_per_decade))

    def index(self, x: float) -> int:
        if x < self.lo:
            return 0
        i = 1 + int(math.log10(x / self.lo) * self.bins_per_decade)
        return i if i < self.n_bins else self.n_bins - 1


TIME_SPEC = BinSpec(lo=0.01, decades=8, bins_per_decade=8)
TOKEN_SPEC = BinSpec(lo=1.0, decades=7, bins_per_decade=8)


class LogHistogram:
    """Weighted counts in log-spaced bins (see the module docstring)."""

    __slots__ = ("counts", "spec", "total")

    def __init__(self, spec: BinSpec, counts: Sequence[float] | None = None) -> None:
        self.spec = spec
        self.counts: list[float] = list(counts) if counts is not None else [0.0] * spec.n_bins
        if len(self.counts) != spec.n_bins:
            raise ValueError(f"expected {spec.n_bins} bins, got {len(self.counts)}")
        self.total = float(sum(self.counts))

    # ----------------------------------------------------------------- building
    def add(self, x: float, weight: float = 1.0) -> None:
        self.counts[self.spec.index(max(0.0, x))] += weight
        self.total += weight

    def add_hist(self, other: LogHistogram, weight: float = 1.0) -> None:
        """Add ``other`` scaled so that it contributes ``weight`` × its total."""
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c * weight
        self.total += other.total * weight

    def normalized(self, mass: float) -> LogHistogram:
        """A copy rescaled to total ``mass`` (empty stays empty)."""
        if self.total <= 0:
            return LogHistogram(self.spec)
        k = mass / self.total
        return LogHistogram(self.spec, [c * k for c in self.counts])

    @classmethod
    def lognormal(cls, spec: BinSpec, p50: float, p95: float, mass: float) -> LogHistogram:
        """``mass`` pseudo-observations spread as a log-normal with the given median and p95."""
        sigma = max(1e-3, math.log(p95 / p50) / 1.6448536269514722)
        mu = math.log(p50)
        h = cls(spec)

        def cdf(x: float) -> float:
            return 0.0 if x <= 0 else 0.5 * (1 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2))))

        prev = 0.0
        for i in range(spec.n_bins):
            hi = spec.edge(i + 1) if i + 1 < spec.n_bins else math.inf
            c = 1.0 if hi == math.inf else cdf(hi)
            h.counts[i] = (c - prev) * mass
            prev = c
        h.total = float(sum(h.counts))
        return h

    # ----------------------------------------------------------------- reading
    def survival_at_bin(self, k: int) -> float:
        """P(X >= lower edge of bin k)."""
        if self.total <= 0:
            return 1.0
        return sum(self.counts[k:]) / self.total

    def quantiles(self, levels: Sequence[float], from_bin: int = 0) -> tuple[float, ...]:
        """Quantiles of X conditioned on X >= edge(from_bin) (log-linear inside a bin)."""
        spec = self.spec
        mass = sum(self.counts[from_bin:])
        if mass <= 0:
            base = spec.edge(from_bin) or spec.lo
            return tuple(base for _ in levels)
        out: list[float] = []
        cum = 0.0
        i = from_bin
        for p in levels:
            target = p * mass
            while i < spec.n_bins - 1 and cum + self.counts[i] < target:
                cum += self.counts[i]
                i += 1
            c = self.counts[i]
            frac = (target - cum) / c if c > 0 else 0.0
            frac = min(1.0, max(0.0, frac))
            lo_edge = spec.edge(i)
            if i == 0:
                out.append(spec.lo * frac)
            else:
                out.append(lo_edge * 10.0 ** (frac / spec.bins_per_decade))
        return tuple(out)

    def quantile(self, p: float) -> float:
        return self.quantiles((p,))[0]

    def mean(self) -> float:
        """Mean, taking each bin at its geometric centre (bin 0 at lo/2)."""
        if self.total <= 0:
            return 0.0
        spec = self.spec
        half = 10.0 ** (0.5 / spec.bins_per_decade)
        s = self.counts[0] * spec.lo / 2
        for i in range(1, spec.n_bins):
            c = self.counts[i]
            if c:
                s += c * spec.edge(i) * half
        return s / self.total

    # ----------------------------------------------------------------- serialisation
    def to_sparse(self, digits: int = 4) -> list[list[float]]:
        """``[[bin, count], ...]`` for the non-empty bins, counts rounded to ``digits`` significant."""
        return [[i, _sig(c, digits)] for i, c in enumerate(self.counts) if c > 0]

    @classmethod
    def from_sparse(cls, spec: BinSpec, pairs: object, where: str) -> LogHistogram:
        h = cls(spec)
        if not isinstance(pairs, list):
            raise ValueError(f"{where}: expected a list of [bin, count]")
        for j, pair in enumerate(pairs):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], int)
                or not 0 <= pair[0] < spec.n_bins
                or not isinstance(pair[1], int | float)
                or pair[1] < 0
            ):
                raise ValueError(
                    f"{where}[{j}]: expected [bin in 0..{spec.n_bins - 1}, count >= 0], got {pair!r}"
                )
            h.counts[pair[0]] += float(pair[1])
        h.total = float(sum(h.counts))
        return h


def _sig(x: float, digits: int) -> float:
    if x == 0:
        return 0.0
    r = round(x, digits - 1 - math.floor(math.log10(abs(x))))
    return int(r) if float(r).is_integer() else r

"""Partial moments that merge exactly: what lets analysis tasks split without sharing data.

A split analysis task sends each subtask a contiguous chunk; each returns a
small summary of its chunk (never the values), and the merge combines the
summaries as if one agent had seen all the data:

* :class:`Moments` — count, mean, the central moment sums ``M2``, ``M3``,
  ``M4``, minimum and maximum of one series (Pébay 2008, the pairwise form of
  Chan et al. extended to the third and fourth moments);
* :class:`CoMoments` — count, means, ``M2`` per series and the co-moment sums
  ``C[i][j] = Σ (x_i - mean_i)(x_j - mean_j)`` of several aligned series
  (correlation and linear trend).

Merging is exact up to floating-point rounding: the merged summary of two
halves equals the summary of the whole to about 1e-12 relative (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CoMoments", "Moments"]


@dataclass(frozen=True, slots=True)
class Moments:
    """Summary of one series: enough for mean, variance, skewness and kurtosis."""

    n: int
    mean: float
    m2: float
    m3: float
    m4: float
    lo: float
    hi: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        """The moments of ``values`` (at least one finite number)."""
        n = len(values)
        mean = math.fsum(values) / n
        d = [x - mean for x in values]
        m2 = math.fsum(x * x for x in d)
        m3 = math.fsum(x * x * x for x in d)
        m4 = math.fsum(x * x * x * x for x in d)
        return cls(n, mean, m2, m3, m4, float(min(values)), float(max(values)))

    def merge(self, b: Moments) -> Moments:
        """The moments of this series followed by ``b`` (Pébay's pairwise update)."""
        a = self
        n = a.n + b.n
        delta = b.mean - a.mean
        d_n = delta / n
        na_nb = a.n * b.n
        m2 = a.m2 + b.m2 + delta * d_n * na_nb
        m3 = (
            a.m3
            + b.m3
            + delta * d_n * d_n * na_nb * (a.n - b.n)
            + 3.0 * d_n * (a.n * b.m2 - b.n * a.m2)
        )
        m4 = (
            a.m4
            + b.m4
            + delta * d_n**3 * na_nb * (a.n * a.n - na_nb + b.n * b.n)
            + 6.0 * d_n * d_n * (a.n * a.n * b.m2 + b.n * b.n * a.m2)
            + 4.0 * d_n * (a.n * b.m3 - b.n * a.m3)
        )
        return Moments(n, a.mean + d_n * b.n, m2, m3, m4, min(a.lo, b.lo), max(a.hi, b.hi))

    def describe(self) -> dict[str, Any]:
        """Count, mean, population variance and stdev, skewness, excess kurtosis, extremes."""
        # All values equal (min == max) means no spread at all, whatever rounding
        # left in M2: merging halves of a constant series can leave ~1e-20 there,
        # and skewness and kurtosis of that noise would be arbitrary numbers.
        flat = self.m2 == 0.0 or self.lo == self.hi
        variance = 0.0 if flat else self.m2 / self.n
        return {
            "count": self.n,
            "mean": self.mean,
            "variance": variance,
            "stdev": math.sqrt(variance),
            "sample_variance": 0.0 if flat or self.n < 2 else self.m2 / (self.n - 1),
            "skewness": 0.0 if flat else math.sqrt(self.n) * self.m3 / self.m2**1.5,
            "kurtosis": 0.0 if flat else self.n * self.m4 / (self.m2 * self.m2) - 3.0,
            "min": self.lo,
            "max": self.hi,
        }

    def to_data(self) -> list[float]:
        return [self.n, self.mean, self.m2, self.m3, self.m4, self.lo, self.hi]

    @classmethod
    def from_data(cls, data: Sequence[Any]) -> Moments:
        n, mean, m2, m3, m4, lo, hi = data
        return cls(int(n), mean, m2, m3, m4, lo, hi)


@dataclass(frozen=True, slots=True)
class CoMoments:
    """Summary of ``k`` aligned series: counts, means and the co-moment matrix."""

    n: int
    means: tuple[float, ...]
    c: tuple[tuple[float, ...], ...]  # c[i][j] = sum of (x_i - mean_i)(x_j - mean_j)

    @classmethod
    def of(cls, columns: Sequence[Sequence[float]]) -> CoMoments:
        """The co-moments of aligned ``columns`` (each of the same length, at least 1)."""
        n = len(columns[0])
        means = tuple(math.fsum(col) / n for col in columns)
        centred = [[x - m for x in col] for col, m in zip(columns, means, strict=True)]
        k = len(columns)
        c = [[0.0] * k for _ in range(k)]
        for i in range(k):
            for j in range(i, k):
                c[i][j] = c[j][i] = math.fsum(
                    a * b for a, b in zip(centred[i], centred[j], strict=True)
                )
        return cls(n, means, tuple(map(tuple, c)))

    def merge(self, b: CoMoments) -> CoMoments:
        """The co-moments of these rows followed by ``b``'s (Chan et al., pairwise)."""
        a = self
        n = a.n + b.n
        deltas = [mb - ma for ma, mb in zip(a.means, b.means, strict=True)]
        factor = a.n * b.n / n
        k = len(deltas)
        c = tuple(
            tuple(a.c[i][j] + b.c[i][j] + deltas[i] * deltas[j] * factor for j in range(k))
            for i in range(k)
        )
        means = tuple(ma + d * b.n / n for ma, d in zip(a.means, deltas, strict=True))
        return CoMoments(n, means, c)

    def correlation(self, i: int, j: int) -> float | None:
        """Pearson's r of series ``i`` and ``j`` (None when either is constant)."""
        denominator = math.sqrt(self.c[i][i] * self.c[j][j])
        return None if denominator == 0.0 else max(-1.0, min(1.0, self.c[i][j] / denominator))

    def to_data(self) -> dict[str, Any]:
        return {"n": self.n, "means": list(self.means), "c": [list(row) for row in self.c]}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CoMoments:
        return cls(int(data["n"]), tuple(data["means"]), tuple(tuple(row) for row in data["c"]))

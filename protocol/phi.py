"""The phi-accrual estimator: how suspicious an agent's silence is, from its heartbeats.

A :class:`PhiAccrualDetector` (Hayashibara et al. 2004, as in Akka and
Cassandra) turns the inter-arrival times of one agent's heartbeats into a
suspicion level ``phi = -log10(P(a heartbeat arrives later than now))``
under a normal model of the intervals whose mean is shifted by the tolerated
pause. The health state machine built on it is
:class:`~robeing.protocol.failure_detector.HealthMonitor`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robeing.protocol.failure_detector import DetectorConfig

__all__ = ["PhiAccrualDetector", "phi", "silence_at_phi"]

# Logistic approximation of the standard normal CDF (Bowling et al. 2009), the
# one Akka uses: F(y) ~ 1 / (1 + exp(-y * (_B + _A * y**2))).
_A = 0.070566
_B = 1.5976
_LN10 = math.log(10.0)


def phi(silence: float, mean: float, std: float) -> float:
    """Suspicion level after ``silence`` seconds, for intervals ~ N(mean, std).

    Args:
        silence: seconds since the last heartbeat.
        mean: expected interval, including any tolerated pause.
        std: standard deviation of the interval, > 0.

    Returns:
        ``-log10(1 - F(silence))`` with F the logistic approximation of the
        normal CDF; non-negative, continuous and increasing in ``silence``.

    Raises:
        ZeroDivisionError: if ``std`` is 0.
    """
    y = (silence - mean) / std
    g = y * (_B + _A * y * y)
    if g > 30.0:  # exp(g) would dominate 1 and overflow for large g
        return (g + math.log1p(math.exp(-g))) / _LN10
    return math.log1p(math.exp(g)) / _LN10


def silence_at_phi(threshold: float, mean: float, std: float) -> float:
    """Inverse of :func:`phi`: the silence at which phi reaches ``threshold``.

    Solves ``y * (B + A*y**2) = ln(10**threshold - 1)`` in closed form
    (Cardano; the cubic is strictly increasing, so the real root is unique).

    Args:
        threshold: phi level, > 0.
        mean: expected interval, including any tolerated pause.
        std: standard deviation of the interval, > 0.

    Returns:
        Seconds since the last heartbeat.
    """
    c = threshold * _LN10 + math.log1p(-(10.0**-threshold))
    p = _B / _A
    half_q = -c / (2.0 * _A)
    u = math.cbrt(-half_q + math.sqrt(half_q * half_q + p * p * p / 27.0))
    return mean + std * (u - p / (3.0 * u))


class PhiAccrualDetector:
    """Phi-accrual detector of one agent over a bounded window of intervals.

    The running sums make every operation O(1). An interval that ends while the
    agent is already past the suspect threshold is not recorded (as in Akka), so
    an outage does not inflate the estimates and blunt the next detection.
    """

    __slots__ = ("_config", "_intervals", "_last", "_resum_in", "_sum", "_sum_sq", "_suspect_at")

    def __init__(self, config: DetectorConfig) -> None:
        self._config = config
        self._intervals: deque[float] = deque(maxlen=config.window_size)
        self.reset()

    def reset(self) -> None:
        """Forget all history, as for an agent never seen before."""
        self._intervals.clear()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._resum_in = self._config.window_size
        self._last: float | None = None
        self._suspect_at = math.inf

    @property
    def last_heartbeat(self) -> float | None:
        """Time of the latest heartbeat, or None before the first one."""
        return self._last

    @property
    def suspect_at(self) -> float:
        """Time at which phi reaches the suspect threshold (inf before any beat)."""
        return self._suspect_at

    @property
    def mean(self) -> float:
        """Mean recorded interval (the configured interval before any beat)."""
        n = len(self._intervals)
        return self._sum / n if n else self._config.heartbeat_interval

    @property
    def std_deviation(self) -> float:
        """Standard deviation of the recorded intervals, floored at the minimum."""
        n = len(self._intervals)
        variance = self._sum_sq / n - (self._sum / n) ** 2 if n else 0.0
        return max(math.sqrt(max(variance, 0.0)), self._config.min_std_deviation)

    def heartbeat(self, now: float) -> None:
        """Record a heartbeat received at ``now``.

        Args:
            now: receive time; an earlier time than the latest beat is ignored.
        """
        cfg = self._config
        if self._last is None:
            # Akka's bootstrap: two samples around the expected interval, std = interval/4.
            estimate = cfg.heartbeat_interval
            self._record(estimate * 0.75)
            self._record(estimate * 1.25)
        elif now < self._last:
            return
        elif now < self._suspect_at:
            self._record(now - self._last)
        self._last = now
        self._suspect_at = now + silence_at_phi(
            cfg.suspect_threshold, self.mean + cfg.acceptable_pause, self.std_deviation
        )

    def phi(self, now: float) -> float:
        """Current suspicion level (0.0 before the first heartbeat).

        Args:
            now: current time.
        """
        if self._last is None:
            return 0.0
        mean = self.mean + self._config.acceptable_pause
        return phi(max(now - self._last, 0.0), mean, self.std_deviation)

    def _record(self, interval: float) -> None:
        if len(self._intervals) == self._intervals.maxlen:
            old = self._intervals[0]
            self._sum -= old
            self._sum_sq -= old * old
        self._intervals.append(interval)
        self._sum += interval
        self._sum_sq += interval * interval
        self._resum_in -= 1
        if self._resum_in <= 0:  # bound the drift of the running sums: O(1) amortised
            self._sum = math.fsum(self._intervals)
            self._sum_sq = math.fsum(x * x for x in self._intervals)
            self._resum_in = len(self._intervals)

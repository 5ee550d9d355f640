"""Learned past performance of agents, as one score in ``[0, 1]`` per agent.

The coordinator records the outcome of every finished attempt (success or not,
how long it took, whether it met its deadline) and the scheduler adds
``20 * score`` to an agent's selection score (see :mod:`robeing.protocol.scheduling`).

How the score is built:

* Three rates are tracked per agent: success rate, deadline-met rate and a
  latency rate (each latency sample ``l`` counts as ``ref / (ref + l)``, so a
  sample at the reference latency counts 0.5, an instant one 1.0).
* Every observation is weighted by ``0.5 ** (age / half_life)``: old behaviour
  fades, so an agent that was bad an hour ago and is good now recovers.
* Each rate is smoothed towards the neutral ``prior`` by ``prior_weight``
  pseudo-observations, so one lucky success does not make an agent the best
  in the fleet, and as evidence decays the rate drifts back to the prior.
* The score is the weighted mean of the three rates.

Invariants:
    * ``score`` is always within ``[0, 1]``; an unknown agent scores ``prior``.
    * ``record`` and ``score`` are O(1): decay is applied lazily from the time
      of the previous update, never by scanning history.
    * Time only moves forward per agent: an observation older than the last
      one is applied as if it happened at the last update (no negative decay).
    * Pure: no clock, no I/O; ``now`` is always passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from robeing.protocol.errors import ConfigError

__all__ = ["PerformanceConfig", "PerformanceSnapshot", "PerformanceTracker"]


@dataclass(frozen=True, slots=True)
class PerformanceConfig:
    """Tuning of the learned performance score.

    Attributes:
        half_life: seconds after which an observation counts half as much.
        prior: score of an agent nothing is known about (neutral: 0.5).
        prior_weight: how many pseudo-observations of ``prior`` smooth each rate.
        reference_latency: latency in seconds that scores 0.5 on the latency rate.
        success_weight: weight of the success rate in the combined score.
        deadline_weight: weight of the deadline-met rate.
        latency_weight: weight of the latency rate.
    """

    half_life: float = 600.0
    prior: float = 0.5
    prior_weight: float = 2.0
    reference_latency: float = 1.0
    success_weight: float = 0.6
    deadline_weight: float = 0.25
    latency_weight: float = 0.15

    def __post_init__(self) -> None:
        if not self.half_life > 0:
            raise ConfigError(f"half_life must be > 0, got {self.half_life!r}")
        if not 0.0 <= self.prior <= 1.0:
            raise ConfigError(f"prior must be within [0, 1], got {self.prior!r}")
        if not self.prior_weight > 0:
            raise ConfigError(f"prior_weight must be > 0, got {self.prior_weight!r}")
        if not self.reference_latency > 0:
            raise ConfigError(f"reference_latency must be > 0, got {self.reference_latency!r}")
        weights = (self.success_weight, self.deadline_weight, self.latency_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"weights must be >= 0 with a positive sum, got {weights!r}")


@dataclass(frozen=True, slots=True)
class PerformanceSnapshot:
    """What is known about one agent at a point in time (for status displays).

    Attributes:
        agent_id: the agent.
        samples: decayed number of recorded outcomes.
        success_rate: smoothed, decayed success rate.
        deadline_rate: smoothed, decayed share of deadlines met.
        latency_rate: smoothed, decayed latency rate (1 = instant).
        mean_latency: decayed mean latency in seconds, ``None`` without samples.
        score: the combined score in ``[0, 1]``.
    """

    agent_id: str
    samples: float
    success_rate: float
    deadline_rate: float
    latency_rate: float
    mean_latency: float | None
    score: float


@dataclass(slots=True)
class _Stats:
    # Decayed sums, all valid as of ``updated``.
    updated: float
    outcomes: float = 0.0
    successes: float = 0.0
    timed: float = 0.0
    met: float = 0.0
    latencies: float = 0.0
    latency_points: float = 0.0
    latency_seconds: float = 0.0


class PerformanceTracker:
    """Per-agent decayed performance statistics.

    Args:
        config: tuning; the defaults suit tasks of seconds to minutes.
    """

    __slots__ = ("_config", "_mix", "_stats")

    def __init__(self, config: PerformanceConfig | None = None) -> None:
        cfg = self._config = PerformanceConfig() if config is None else config
        total = cfg.success_weight + cfg.deadline_weight + cfg.latency_weight
        self._mix = (
            cfg.success_weight / total,
            cfg.deadline_weight / total,
            cfg.latency_weight / total,
        )
        self._stats: dict[str, _Stats] = {}

    @property
    def config(self) -> PerformanceConfig:
        """The tuning this tracker was built with."""
        return self._config

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._stats

    def __len__(self) -> int:
        return len(self._stats)

    def record(
        self,
        agent_id: str,
        *,
        now: float,
        success: bool,
        latency: float | None = None,
        deadline_met: bool | None = None,
    ) -> None:
        """Learn from one finished attempt. O(1).

        Args:
            agent_id: the agent that ran the attempt.
            now: time of the outcome (seconds, any monotonic origin).
            success: whether the attempt produced a result.
            latency: seconds from assignment to outcome, if measured.
            deadline_met: whether the task's deadline held; ``None`` if it had none.

        Raises:
            ConfigError: ``latency`` is negative.
        """
        if latency is not None and latency < 0:
            raise ConfigError(f"latency must be >= 0, got {latency!r}")
        stats = self._stats.get(agent_id)
        if stats is None:
            stats = self._stats[agent_id] = _Stats(updated=now)
        elif now > stats.updated:
            self._decay(stats, now)
        stats.outcomes += 1.0
        stats.successes += 1.0 if success else 0.0
        if deadline_met is not None:
            stats.timed += 1.0
            stats.met += 1.0 if deadline_met else 0.0
        if latency is not None:
            ref = self._config.reference_latency
            stats.latencies += 1.0
            stats.latency_points += ref / (ref + latency)
            stats.latency_seconds += latency

    def score(self, agent_id: str, now: float | None = None) -> float:
        """The agent's combined score in ``[0, 1]``. O(1).

        Args:
            agent_id: the agent.
            now: evaluate the decay at this time; ``None`` evaluates it at the
                agent's last recorded outcome.

        Returns:
            ``config.prior`` for an agent with no recorded outcome.
        """
        stats = self._stats.get(agent_id)
        cfg = self._config
        if stats is None:
            return cfg.prior
        # _rates and _combine inlined: selection calls this once per candidate,
        # and inlining halves its cost (tests/bench/bench_scheduling.py).
        if now is None or now <= stats.updated:
            keep = 1.0
        else:
            keep = 0.5 ** ((now - stats.updated) / cfg.half_life)
        weight = cfg.prior_weight
        pseudo = cfg.prior * weight
        mix_success, mix_deadline, mix_latency = self._mix
        value = (
            mix_success * (stats.successes * keep + pseudo) / (stats.outcomes * keep + weight)
            + mix_deadline * (stats.met * keep + pseudo) / (stats.timed * keep + weight)
            + mix_latency
            * (stats.latency_points * keep + pseudo)
            / (stats.latencies * keep + weight)
        )
        return min(1.0, value)

    def snapshot(self, agent_id: str, now: float | None = None) -> PerformanceSnapshot:
        """Everything known about one agent, decayed to ``now``.

        Raises:
            KeyError: nothing was ever recorded for ``agent_id``.
        """
        stats = self._stats[agent_id]
        success, deadline, latency = self._rates(stats, now)
        keep = self._keep(stats, now)
        return PerformanceSnapshot(
            agent_id=agent_id,
            samples=stats.outcomes * keep,
            success_rate=success,
            deadline_rate=deadline,
            latency_rate=latency,
            mean_latency=(stats.latency_seconds / stats.latencies if stats.latencies else None),
            score=self._combine(success, deadline, latency),
        )

    def forget(self, agent_id: str) -> None:
        """Drop an agent's history (for example after it was decommissioned)."""
        self._stats.pop(agent_id, None)

    # --- internals ---------------------------------------------------------

    def _keep(self, stats: _Stats, now: float | None) -> float:
        if now is None or now <= stats.updated:
            return 1.0
        return float(0.5 ** ((now - stats.updated) / self._config.half_life))

    def _decay(self, stats: _Stats, now: float) -> None:
        keep = self._keep(stats, now)
        stats.outcomes *= keep
        stats.successes *= keep
        stats.timed *= keep
        stats.met *= keep
        stats.latencies *= keep
        stats.latency_points *= keep
        stats.latency_seconds *= keep
        stats.updated = now

    def _rates(self, stats: _Stats, now: float | None) -> tuple[float, float, float]:
        # Decay scales numerator and denominator alike, so only the prior's
        # fixed pseudo-count makes old evidence fade towards neutral.
        keep = self._keep(stats, now)
        weight = self._config.prior_weight
        pseudo = self._config.prior * weight
        return (
            (stats.successes * keep + pseudo) / (stats.outcomes * keep + weight),
            (stats.met * keep + pseudo) / (stats.timed * keep + weight),
            (stats.latency_points * keep + pseudo) / (stats.latencies * keep + weight),
        )

    def _combine(self, success: float, deadline: float, latency: float) -> float:
        mix_success, mix_deadline, mix_latency = self._mix
        value = mix_success * success + mix_deadline * deadline + mix_latency * latency
        return min(1.0, value)

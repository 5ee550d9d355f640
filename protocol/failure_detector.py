"""Phi-accrual failure detection and the health state machine of monitored agents.

A :class:`PhiAccrualDetector` (Hayashibara et al. 2004, as in Akka and Cassandra)
turns the inter-arrival times of one agent's heartbeats into a suspicion level
``phi``: ``phi = -log10(P(a heartbeat arrives later than now))`` under a normal
model of the intervals whose mean is shifted by ``acceptable_pause``. A
:class:`HealthMonitor` runs one detector per agent and turns heartbeats, the
broker's connection-closed events and clock ticks into :class:`Transition` s.

States (:class:`Health`): ALIVE and BACKUP (alive, announced as standby) are the
healthy modes; SUSPECTED means phi crossed ``suspect_threshold``; DEAD means
suspected for ``dead_after`` seconds, or the broker saw the connection close, or
a newer incarnation replaced it; RECOVERING is an agent that came back after
DEAD with fresh state and has not yet sent ``recovery_heartbeats`` more beats.

Invariants:
    * Memory per agent is bounded: at most ``window_size`` intervals, none once DEAD.
    * While the silence since an agent's last heartbeat is at most
      ``acceptable_pause`` plus its mean observed interval, its phi is below
      ``log10(2)``, whatever the history, so it is never SUSPECTED. A pause
      shorter than ``acceptable_pause`` therefore never causes suspicion, and
      heartbeat-based death needs a silence longer than
      ``acceptable_pause + dead_after``.
    * SUSPECTED and DEAD are distinct: death through silence is always preceded
      by a reported suspicion; a suspected agent that beats again is restored.
    * DEAD is never undone silently: a beat after DEAD is reported as a rejoin
      (DEAD -> RECOVERING), and the agent is ALIVE again only after
      ``recovery_heartbeats`` further beats.
    * Every state change is reported exactly once, in order, as a Transition.

Everything here is pure: time is always the caller's ``now`` (a monotonic clock
in seconds, read by the receiver when the heartbeat is consumed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from robeing.protocol.errors import ConfigError
from robeing.protocol.phi import PhiAccrualDetector, silence_at_phi

__all__ = [
    "AgentHealth",
    "DetectorConfig",
    "Health",
    "HealthMonitor",
    "Transition",
]


class Health(StrEnum):
    """Health of a monitored agent, as judged by the :class:`HealthMonitor`."""

    ALIVE = "alive"
    BACKUP = "backup"
    SUSPECTED = "suspected"
    DEAD = "dead"
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one agent; ``old`` is None when the agent first joins."""

    agent_id: str
    old: Health | None
    new: Health
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """A read-only view of one agent for status displays."""

    agent_id: str
    state: Health
    phi: float
    last_heartbeat: float | None
    mean_interval: float


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Tuning of failure detection (defaults follow Akka's cluster detector).

    Attributes:
        heartbeat_interval: seconds between an agent's heartbeats (match the
            agents' setting); the first estimate of the mean interval.
        suspect_threshold: phi at which an agent becomes SUSPECTED (8: a false
            suspicion needs a 1-in-10^8 delay under the model).
        dead_after: seconds an agent stays SUSPECTED before it is declared DEAD.
        acceptable_pause: a pause (GC, busy loop) this long is tolerated: it is
            added to the mean interval, so it never raises phi past log10(2).
        min_std_deviation: floor of the interval standard deviation, so that a
            perfectly regular agent is not suspected on the first tiny jitter.
        window_size: how many recent intervals are kept per agent.
        recovery_heartbeats: beats an agent must send after a rejoin before it
            is ALIVE again (a single stray in-flight beat does not resurrect it).
    """

    heartbeat_interval: float = 1.0
    suspect_threshold: float = 8.0
    dead_after: float = 5.0
    acceptable_pause: float = 3.0
    min_std_deviation: float = 0.1
    window_size: int = 100
    recovery_heartbeats: int = 2

    def __post_init__(self) -> None:
        if not self.heartbeat_interval > 0:
            raise ConfigError("heartbeat_interval must be > 0")
        if not self.suspect_threshold >= 1:
            raise ConfigError("suspect_threshold must be >= 1")
        if not (self.dead_after >= 0 and self.acceptable_pause >= 0):
            raise ConfigError("dead_after and acceptable_pause must be >= 0")
        if not self.min_std_deviation > 0:
            raise ConfigError("min_std_deviation must be > 0")
        if self.window_size < 2 or self.recovery_heartbeats < 0:
            raise ConfigError("window_size must be >= 2 and recovery_heartbeats >= 0")

    def steady_suspect_silence(self) -> float:
        """Seconds from the last beat to SUSPECTED, for a history of equal intervals."""
        mean = self.heartbeat_interval + self.acceptable_pause
        return silence_at_phi(self.suspect_threshold, mean, self.min_std_deviation)

    def steady_dead_silence(self) -> float:
        """Seconds from the last beat to DEAD, for a history of equal intervals."""
        return self.steady_suspect_silence() + self.dead_after


_Incarnation = tuple[float | None, float | None]  # (incarnation, started_at); None: not sent


@dataclass(slots=True)
class _Agent:
    agent_id: str
    detector: PhiAccrualDetector
    state: Health
    mode: Health  # ALIVE or BACKUP: where a healthy agent belongs
    incarnation: _Incarnation
    recovery_left: int = 0  # beats still needed to leave RECOVERING
    suspected_at: float = 0.0


def _incarnation_of(info: Mapping[str, Any] | None) -> _Incarnation:
    def number(key: str) -> float | None:
        value = info.get(key) if info else None
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{key} must be a number, got {value!r}") from exc

    return (number("incarnation"), number("started_at"))


def _compare(known: _Incarnation, seen: _Incarnation) -> int:
    """-1 if ``seen`` is an older incarnation, 1 if newer, 0 if the same or unknown.

    Compared field by field (incarnation first), skipping fields either side lacks.
    """
    for k, s in zip(known, seen, strict=True):
        if k is not None and s is not None and k != s:
            return 1 if s > k else -1
    return 0


def _fill(known: _Incarnation, seen: _Incarnation) -> _Incarnation:
    return (seen[0] if known[0] is None else known[0], seen[1] if known[1] is None else known[1])


class HealthMonitor:
    """Health state machine of many agents, one phi-accrual detector each.

    Feed it :meth:`heartbeat`, :meth:`connection_closed` and periodic
    :meth:`tick` calls; act on the returned transitions (reassign a DEAD agent's
    work, treat a RECOVERING agent as having lost its state). ``tick`` is O(n)
    with one float comparison per healthy agent.

    Heartbeat ``info`` may carry ``incarnation`` (int, bumped on every restart)
    and/or ``started_at`` (process start time); the pair orders incarnations.
    ``standby: True`` puts the agent in BACKUP instead of ALIVE.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._agents: dict[str, _Agent] = {}
        self.stale_heartbeats = 0

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def heartbeat(
        self, agent_id: str, now: float, info: Mapping[str, Any] | None = None
    ) -> list[Transition]:
        """Record a heartbeat of ``agent_id`` received at ``now``.

        A beat from an older incarnation than the known one is counted in
        ``stale_heartbeats`` and otherwise ignored.

        Args:
            agent_id: the sender.
            now: receive time.
            info: the heartbeat payload (``incarnation``, ``started_at``, ``standby``).

        Returns:
            The transitions caused: a join, a restore from SUSPECTED, a standby
            change, or a rejoin (``DEAD -> RECOVERING``, preceded by ``-> DEAD``
            when a newer incarnation replaced a live one).

        Raises:
            ValueError: if ``incarnation``/``started_at`` in ``info`` are not numbers.
        """
        seen = _incarnation_of(info)
        mode = Health.BACKUP if info and info.get("standby") else Health.ALIVE
        rec = self._agents.get(agent_id)
        if rec is None:
            rec = self._agents[agent_id] = _Agent(
                agent_id, PhiAccrualDetector(self.config), mode, mode, seen
            )
            rec.detector.heartbeat(now)
            return [Transition(agent_id, None, mode, now, "joined")]
        out: list[Transition] = []
        order = _compare(rec.incarnation, seen)
        if order < 0:
            self.stale_heartbeats += 1
            return out
        restarted = order > 0
        rec.incarnation = seen if restarted else _fill(rec.incarnation, seen)
        if restarted and rec.state is not Health.DEAD:
            self._move(rec, Health.DEAD, now, "replaced by a new incarnation", out)
        rec.mode = mode
        rec.detector.heartbeat(now)
        if rec.state is Health.DEAD:
            rec.recovery_left = self.config.recovery_heartbeats
            why = "rejoined with fresh state" if restarted else "heartbeat resumed after death"
            self._move(rec, Health.RECOVERING, now, why, out)
            if rec.recovery_left == 0:
                self._move(rec, mode, now, "recovered", out)
            return out
        rec.recovery_left = max(rec.recovery_left - 1, 0)
        target = Health.RECOVERING if rec.recovery_left else mode
        if rec.state is not target:
            if rec.state is Health.SUSPECTED:
                why = "heartbeat resumed"
            elif rec.state is Health.RECOVERING:
                why = "recovered"
            else:
                why = "entered standby" if target is Health.BACKUP else "left standby"
            self._move(rec, target, now, why, out)
        return out

    def connection_closed(
        self, agent_id: str, now: float, info: Mapping[str, Any] | None = None
    ) -> list[Transition]:
        """The broker reported the agent's connection closed: DEAD at once.

        Args:
            agent_id: the connection's owner.
            now: event receive time.
            info: optional ``incarnation``/``started_at`` of the closed
                connection; an event about an older incarnation than the known
                one is stale (the agent already restarted) and ignored.

        Returns:
            ``[old -> DEAD]``, or ``[]`` for an unknown, already DEAD or stale agent.

        Raises:
            ValueError: if ``incarnation``/``started_at`` in ``info`` are not numbers.
        """
        rec = self._agents.get(agent_id)
        seen = _incarnation_of(info)
        if rec is None or rec.state is Health.DEAD or _compare(rec.incarnation, seen) < 0:
            return []
        out: list[Transition] = []
        self._move(rec, Health.DEAD, now, "connection closed", out)
        return out

    def suspect(self, agent_id: str, now: float, within: float) -> list[Transition]:
        """Suspect ``agent_id`` now; declare it DEAD unless it beats within ``within`` s.

        For evidence of death that is not proof (a connection close the broker
        cannot attribute to the agent). A heartbeat in time restores it as
        from any suspicion.

        Returns:
            ``[old -> SUSPECTED]``, or ``[]`` for an unknown or DEAD agent (an
            already suspected one only gets the earlier deadline).
        """
        rec = self._agents.get(agent_id)
        if rec is None or rec.state is Health.DEAD:
            return []
        deadline = now + within - self.config.dead_after
        out: list[Transition] = []
        if rec.state is not Health.SUSPECTED:
            self._move(rec, Health.SUSPECTED, now, "connection closed (unconfirmed)", out)
            rec.suspected_at = deadline
        else:
            rec.suspected_at = min(rec.suspected_at, deadline)
        return out

    def tick(self, now: float) -> list[Transition]:
        """Advance the clock: suspect silent agents, kill long-suspected ones.

        An agent silent long enough for both is reported ``-> SUSPECTED`` then
        ``-> DEAD`` in the same call.

        Args:
            now: current time.

        Returns:
            The transitions, in agent insertion order.
        """
        out: list[Transition] = []
        threshold = self.config.suspect_threshold
        dead_after = self.config.dead_after
        for rec in self._agents.values():
            state = rec.state
            if state is Health.DEAD:
                continue
            if state is not Health.SUSPECTED:
                suspect_at = rec.detector.suspect_at
                if now < suspect_at:
                    continue
                # Measure suspicion from the crossing, not the tick, so the time
                # to DEAD does not depend on the tick cadence.
                rec.suspected_at = suspect_at
                silence = now - (rec.detector.last_heartbeat or 0.0)
                why = f"phi >= {threshold:g} after {silence:.3f}s without heartbeat"
                self._move(rec, Health.SUSPECTED, now, why, out)
            if now >= rec.suspected_at + dead_after:
                why = f"suspected for {now - rec.suspected_at:.3f}s"
                self._move(rec, Health.DEAD, now, why, out)
        return out

    def forget(self, agent_id: str) -> bool:
        """Drop an agent that left for good (True if known); a later beat is a join."""
        return self._agents.pop(agent_id, None) is not None

    def state(self, agent_id: str) -> Health | None:
        """The agent's health, or None if it is not monitored."""
        rec = self._agents.get(agent_id)
        return rec.state if rec else None

    def phi(self, agent_id: str, now: float) -> float:
        """The agent's current phi (0.0 if unknown or DEAD)."""
        rec = self._agents.get(agent_id)
        return rec.detector.phi(now) if rec else 0.0

    def agents(self, *states: Health) -> list[str]:
        """Ids of monitored agents, restricted to ``states`` when any are given."""
        if not states:
            return list(self._agents)
        return [a for a, rec in self._agents.items() if rec.state in states]

    def snapshot(self, now: float) -> list[AgentHealth]:
        """A status view of every monitored agent at ``now``."""
        return [
            AgentHealth(a, r.state, r.detector.phi(now), r.detector.last_heartbeat, r.detector.mean)
            for a, r in self._agents.items()
        ]

    @staticmethod
    def _move(rec: _Agent, new: Health, now: float, reason: str, out: list[Transition]) -> None:
        out.append(Transition(rec.agent_id, rec.state, new, now, reason))
        rec.state = new
        if new is Health.DEAD:
            rec.recovery_left = 0
            rec.detector.reset()  # a rejoin starts with fresh estimates; frees the window

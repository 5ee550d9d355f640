"""Rate anomalies per sender, from what receivers count (pure: clock passed in).

Every agent counts the messages it accepted per verified sender and
announces the largest counts in its heartbeats (``stats.from``: cumulative
since it started). A guardian feeds each heartbeat to :class:`RateWatch`,
which keeps, per sender, the rate each receiver saw lately and a slow
baseline of the total, and reports an :class:`Anomaly` when a sender

* sends more than ``factor`` times its usual rate and at least ``floor``
  messages per second in all (a burst from a quiet agent is not an anomaly
  below the floor), or
* reaches more than ``fanout`` distinct receivers at once,

as seen by at least ``min_reporters`` receivers: the counts are receivers'
claims, and one lying receiver cannot make an honest agent look like a
flood. Anomalies raise alerts; quarantine needs verified refusals or
contradicted results, which a receiver cannot fabricate.

Bounded: at most ``max_senders`` senders tracked (the least recently seen
forgotten first); one alert per sender per ``cooldown`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Anomaly", "RateLimits", "RateWatch"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Thresholds of :class:`RateWatch` (the guardian's settings)."""

    factor: float = 10.0
    floor: float = 100.0
    fanout: int = 50
    min_reporters: int = 2
    stale_s: float = 5.0
    cooldown: float = 60.0
    alpha: float = 0.05  # weight of one new observation in the baseline


@dataclass(frozen=True, slots=True)
class Anomaly:
    sender: str
    kind: str  # "rate" or "fanout"
    rate: float
    baseline: float
    receivers: int


@dataclass(slots=True)
class _Sender:
    # receiver -> (cumulative count, at, rate since the previous report)
    seen: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    baseline: float | None = None
    alerted: float = -1e18


class RateWatch:
    """Per-sender message rates as receivers report them, and their anomalies."""

    def __init__(self, limits: RateLimits | None = None, max_senders: int = 10_000) -> None:
        self.limits = limits or RateLimits()
        self.max_senders = max_senders
        self._senders: dict[str, _Sender] = {}

    def report(self, receiver: str, counts: Mapping[str, int], now: float) -> list[Anomaly]:
        """Take ``receiver``'s cumulative counts per sender; returns anomalies found."""
        out = []
        for sender, count in counts.items():
            if sender == receiver or not isinstance(count, int) or count < 0:
                continue
            state = self._senders.pop(sender, None) or _Sender()
            self._senders[sender] = state  # most recently seen last
            before = state.seen.get(receiver)
            rate = 0.0
            if before is not None and count >= before[0] and now > before[1]:
                rate = (count - before[0]) / (now - before[1])
            state.seen[receiver] = (count, now, rate)
            if before is not None:
                anomaly = self._judge(sender, state, now)
                if anomaly is not None:
                    out.append(anomaly)
        while len(self._senders) > self.max_senders:
            self._senders.pop(next(iter(self._senders)))
        return out

    def _judge(self, sender: str, state: _Sender, now: float) -> Anomaly | None:
        lim = self.limits
        live = {r: v for r, v in state.seen.items() if now - v[1] <= lim.stale_s}
        state.seen = live
        total = sum(rate for _, _, rate in live.values())
        receivers = sum(1 for _, _, rate in live.values() if rate > 0)
        baseline = state.baseline
        kind = None
        if receivers >= lim.min_reporters:
            if receivers > lim.fanout:
                kind = "fanout"
            elif baseline is not None and total >= lim.floor and total > lim.factor * baseline:
                kind = "rate"
        if kind is None or baseline is None:  # the baseline learns only from the usual
            state.baseline = (
                total if baseline is None else baseline + lim.alpha * (total - baseline)
            )
        if kind is None or now - state.alerted < lim.cooldown:
            return None
        state.alerted = now
        return Anomaly(sender, kind, total, baseline or 0.0, receivers)

    def rates(self, now: float, top: int = 10) -> dict[str, float]:
        """The ``top`` senders by their current total rate."""
        totals = {
            s: sum(rate for _, at, rate in st.seen.values() if now - at <= self.limits.stale_s)
            for s, st in self._senders.items()
        }
        best = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
        return {s: round(r, 2) for s, r in best}

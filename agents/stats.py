"""Counters an agent keeps and announces in its heartbeats (and serves as metrics)."""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SENDERS_KEPT = 4096
SENDERS_ANNOUNCED = 32  # per heartbeat: a flood's sender is among the busiest
MAX_TYPES = 256  # message types counted apart; senders choose types, so the count is bounded


@dataclass
class Stats:
    """Message counters; ``rejected`` is keyed by the rejection reason."""

    received: int = 0
    handled: int = 0
    failed: int = 0
    duplicates: int = 0
    adopted: int = 0  # redeliveries of messages still being handled (see runtime/inbound.py)
    late_answers: int = 0
    ignored_broadcasts: int = 0  # broadcasts of a type we have no handler for
    rejected: Counter[str] = field(default_factory=Counter)
    # Accepted messages per verified sender (guardians watch rates from these).
    by_sender: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)  # accepted messages, by type
    _logged: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def count_type(self, message_type: str) -> None:
        """Count an accepted message by type; past :data:`MAX_TYPES` types, as ``other``."""
        by_type = self.by_type
        if message_type in by_type or len(by_type) < MAX_TYPES:
            by_type[message_type] += 1
        else:
            by_type["other"] += 1

    def reject(self, reason: str, detail: str, source: str) -> None:
        """Count a rejection and log it once per (reason, source).

        The first rejection of a kind is a warning with the detail; repeats
        are debug lines, so a flood of garbage cannot flood the logs.
        """
        self.rejected[reason] += 1
        key = (reason, source)
        if key not in self._logged and len(self._logged) < 10_000:
            self._logged.add(key)
            log.warning("rejected message (%s) from %s: %s", reason, source, detail)
        else:
            log.debug("rejected message (%s) from %s: %s", reason, source, detail)

    def accepted(self, sender: str) -> None:
        """Count one message accepted from ``sender`` (bounded: the busiest kept)."""
        self.by_sender[sender] += 1
        if len(self.by_sender) > SENDERS_KEPT:
            self.by_sender = Counter(dict(self.by_sender.most_common(SENDERS_KEPT // 4)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "handled": self.handled,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "from": dict(self.by_sender.most_common(SENDERS_ANNOUNCED)),
        }


# Upper bounds (seconds) of the latency buckets: from a fast handler to a long task.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0, 300.0)  # fmt: skip


@dataclass
class Latency:
    """A histogram of durations in :data:`BUCKETS`; observing costs a bisect and two adds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)``, ending with ``inf``."""
        out, running = [], 0
        for bound, n in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def to_data(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total}

    @classmethod
    def from_data(cls, data: Any) -> Latency | None:
        """Read :meth:`to_data` (from a heartbeat); None when it is not that."""
        counts = data.get("counts") if isinstance(data, dict) else None
        total = data.get("sum") if isinstance(data, dict) else None
        if (
            not isinstance(counts, list)
            or len(counts) != len(BUCKETS) + 1
            or not all(isinstance(n, int) and n >= 0 for n in counts)
            or not isinstance(total, int | float)
        ):
            return None
        return cls(counts, float(total))

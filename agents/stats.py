"""Counters an agent keeps and announces in its heartbeats."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SENDERS_KEPT = 4096
SENDERS_ANNOUNCED = 32  # per heartbeat: a flood's sender is among the busiest


@dataclass
class Stats:
    """Message counters; ``rejected`` is keyed by the rejection reason."""

    received: int = 0
    handled: int = 0
    failed: int = 0
    duplicates: int = 0
    adopted: int = 0  # redeliveries of messages still being handled (see runtime/inbound.py)
    late_answers: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Accepted messages per verified sender (guardians watch rates from these).
    by_sender: Counter[str] = field(default_factory=Counter)
    _logged: set[tuple[str, str]] = field(default_factory=set, repr=False)

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

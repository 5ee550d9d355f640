"""Replay protection: a timestamp window plus a bounded cache of seen ids.

Invariant: within the accepted age window, an envelope id is accepted at most
once. An id older than the window cannot come back, because the timestamp
check rejects it first; so the cache only has to remember ids for
``max_age + max_skew`` seconds, and it forgets them in whole time buckets
(cheap: no per-entry expiry, no heap).

A broker redelivery of a message we already accepted (the AMQP
``redelivered`` flag, which only the broker can set) is a *duplicate*, not an
attack: the caller acknowledges and drops it instead of dead-lettering it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .errors import Replay, StaleMessage


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Accept messages no older than ``max_age`` and no further ahead than ``max_skew``."""

    max_age: float = 300.0
    max_skew: float = 30.0

    def check(self, timestamp: float, now: float, age_exempt: bool = False) -> None:
        """Raise unless ``timestamp`` is inside the window.

        Args:
            timestamp: the sender's clock.
            now: the receiver's clock.
            age_exempt: skip the age bound (for idempotent, durable message types
                such as task submissions that may wait in a queue for long).

        Raises:
            StaleMessage: too old or too far in the future.
        """
        if timestamp > now + self.max_skew:
            raise StaleMessage(f"timestamp {timestamp - now:.1f}s in the future")
        if not age_exempt and timestamp < now - self.max_age:
            raise StaleMessage(f"message is {now - timestamp:.1f}s old (limit {self.max_age}s)")


class SeenIds:
    """Ids accepted within the window, forgotten bucket by bucket.

    Memory is bounded by the message rate times the window; ``max_ids`` is a
    hard cap against floods (oldest buckets go first when it is exceeded,
    which can only make the cache forget ids that the window still covers;
    the count of such evictions is exposed as ``evicted``).
    """

    def __init__(self, horizon: float, buckets: int = 8, max_ids: int = 2_000_000) -> None:
        self._span = max(horizon / buckets, 0.001)
        self._buckets: deque[tuple[int, set[str]]] = deque()
        self._count = 0
        self._max_ids = max_ids
        self._nbuckets = buckets + 1
        self.evicted = 0

    def __contains__(self, message_id: str) -> bool:
        return any(message_id in ids for _, ids in self._buckets)

    def __len__(self) -> int:
        return self._count

    def add(self, message_id: str, now: float) -> None:
        """Record ``message_id``, seen at ``now``, and forget expired buckets.

        Raises:
            Replay: the id was already recorded.
        """
        index = int(now // self._span)
        buckets = self._buckets
        # Forget expired buckets first, so whether an old id is still known
        # never depends on unrelated traffic.
        while buckets and buckets[0][0] <= index - self._nbuckets:
            self._count -= len(buckets.popleft()[1])
        if message_id in self:
            raise Replay(f"message {message_id} was already received")
        if not buckets or buckets[-1][0] < index:
            buckets.append((index, set()))
        buckets[-1][1].add(message_id)
        self._count += 1
        while self._count > self._max_ids and buckets:
            dropped = len(buckets.popleft()[1])
            self._count -= dropped
            self.evicted += dropped

    def discard(self, message_id: str) -> None:
        """Forget ``message_id`` (the message is handed back for a retry)."""
        for _, ids in self._buckets:
            if message_id in ids:
                ids.discard(message_id)
                self._count -= 1
                return

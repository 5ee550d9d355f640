"""Removing dead members from their cluster after a grace period (the original remove_from_cluster).

A leader reports a member it declared dead in its next summary (the
coordinator reassigns the member's attempts at once); the member stays in its
formed cluster for :data:`GRACE_S`, so a process that restarts at once keeps
its place, and is then removed with a ``leave`` record. Members of a static
cluster (their own ``CLUSTER_ID``) have no record to remove: a dead one just
stops counting as live.

Invariants:
    * A member is due at most once per death: :meth:`Removals.due` forgets what
      it returns.
    * A member heard alive again (:meth:`Removals.alive`) before its grace
      passed is never due for that death.
    * Pure and bounded (:data:`MAX_PENDING`): the caller supplies ``now``.
"""

from __future__ import annotations

__all__ = ["GRACE_S", "MAX_PENDING", "Removals"]

GRACE_S = 30.0
MAX_PENDING = 10_000


class Removals:
    """Members declared dead, by when, awaiting removal from their formed cluster."""

    def __init__(self, grace: float = GRACE_S) -> None:
        self.grace = grace
        self._pending: dict[str, tuple[str, float]] = {}  # member -> (cluster, died at)

    def lost(self, member: str, cluster: str, now: float) -> None:
        """A leader reported ``member`` of ``cluster`` dead at ``now`` (the first report counts)."""
        if member in self._pending:
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        self._pending[member] = (cluster, now)

    def alive(self, member: str) -> None:
        """``member`` was heard again: it keeps its place."""
        self._pending.pop(member, None)

    def due(self, now: float) -> list[tuple[str, str]]:
        """``(member, cluster)`` whose grace has passed, oldest first; forgotten here."""
        out = [(m, c) for m, (c, t) in self._pending.items() if now - t >= self.grace]
        for m, _ in out:
            del self._pending[m]
        return out

    def __len__(self) -> int:
        return len(self._pending)

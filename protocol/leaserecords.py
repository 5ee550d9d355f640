"""Pool leases as signed records in the stream ``robeing.coordinator.leases`` (pure).

The active coordinator writes one record per change of a lease — ``grant``,
``renew``, ``end`` (released, expired, revoked, holder lost) — and answers the
holder only once the broker confirmed it. A coordinator that becomes active
folds every record in order (:class:`LeaseFold`) and knows every live lease:
what it holds on which agents, its holder, its kind and when it expires.

``grant`` and ``renew`` records carry the whole lease, so any record of a
live lease describes it fully: the stream may drop records older than its
``x-max-age`` (:data:`~robeing.broker.topology.LEASES_MAX_AGE_S`) as long as
every live lease has a younger record. The active coordinator guarantees it by
recording a ``renew`` of its own for a lease whose last record is older than
:data:`REFRESH_S`.

Invariants:
    * Records are folded in stream order; the last record of a lease wins.
    * Fencing by term: a record stamped with an older coordinator epoch than
      one already folded comes from a deposed coordinator and is skipped
      (counted in :attr:`LeaseFold.stale`).
    * An ``end`` is final: a later ``grant`` or ``renew`` of the same id (from
      a deposed coordinator, skipped above) never revives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import DecodeError
from .fields import count, finite, need, text
from .leases import MAX_ENDED, Lease, LeaseTerms

__all__ = ["RECORD_TYPE", "REFRESH_S", "LeaseFold", "LeaseRecord"]

RECORD_TYPE = "pool.record"
REFRESH_S = 24 * 3600.0  # a live lease gets a record at least this often
OPS = ("grant", "renew", "end")
MAX_EPOCH = 2**62


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One change of one lease, as stored.

    Attributes:
        op: ``grant``, ``renew`` or ``end``.
        epoch: the recording coordinator's epoch.
        at: when it was recorded (the coordinator's wall clock).
        lease_id: the lease.
        terms: the whole lease (grant, renew); None for an end.
        why: why it ended (end only): ``released``, ``expired``, ``revoked: …``,
            ``holder lost``.
    """

    op: str
    epoch: int
    at: float
    lease_id: str
    terms: LeaseTerms | None = None
    why: str = ""

    @staticmethod
    def of(op: str, epoch: int, at: float, lease: Lease) -> LeaseRecord:
        """A grant or renew record of ``lease``."""
        return LeaseRecord(op, epoch, at, lease.lease_id, lease.terms())

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "epoch": self.epoch, "at": self.at}
        out["lease"] = self.lease_id
        if self.terms is not None:
            out["terms"] = self.terms.to_data()
        if self.why:
            out["why"] = self.why
        return out

    @staticmethod
    def from_data(data: Any) -> LeaseRecord:
        """Raises: DecodeError: malformed, or terms that do not name this lease."""
        op = need(data, "op", str)
        if op not in OPS:
            raise DecodeError(f"unknown lease record op {op!r}")
        lease_id = text(need(data, "lease", str), "lease", 128)
        terms = None
        if op != "end":
            terms = LeaseTerms.from_data(need(data, "terms", dict))
            if terms.lease_id != lease_id:
                raise DecodeError("a lease record's terms name another lease")
        return LeaseRecord(
            op,
            count(need(data, "epoch", int), "epoch", high=MAX_EPOCH),
            finite(need(data, "at", (int, float)), "at"),
            lease_id,
            terms,
            text(need(data, "why", str, ""), "why", 500),
        )


class LeaseFold:
    """Every live lease, from the records folded so far (oldest first)."""

    def __init__(self) -> None:
        self.live: dict[str, LeaseTerms] = {}
        self.recorded: dict[str, float] = {}  # lease id -> when its last record was written
        self.ended: dict[str, str] = {}  # lease id -> why (kept for the holder's next question)
        self.epoch = 0
        self.stale = 0

    def apply(self, record: LeaseRecord) -> None:
        """Fold one record (see the module's invariants)."""
        if record.epoch < self.epoch:
            self.stale += 1
            return
        self.epoch = record.epoch
        if record.lease_id in self.ended:
            return
        if record.op == "end":
            self.live.pop(record.lease_id, None)
            self.recorded.pop(record.lease_id, None)
            if len(self.ended) >= MAX_ENDED:
                self.ended.pop(next(iter(self.ended)))
            self.ended[record.lease_id] = record.why or "ended"
            return
        assert record.terms is not None, "from_data gives grants and renewals terms"
        self.live[record.lease_id] = record.terms
        self.recorded[record.lease_id] = record.at

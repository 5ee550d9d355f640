"""Pooled resources as their own API: what the pool holds, and leases on it (pure).

The :class:`~robeing.protocol.ledger.ResourceLedger` keeps what agents
contribute and what is reserved. :func:`pool_view` summarises it — free and
total per dimension, and the *largest single placement*: per dimension, the
most any one agent has free (so "cpu 8/8 free" is never shown alone when no
agent can take more than 4). :class:`LeaseBook` hands out leases: a request
placed whole on one agent when one has room, else split over several in
parts shaped like the request (the original allocation).

Invariants:
    * A lease holds exactly one live ledger allocation; releasing or expiring
      it frees the allocation, once.
    * Only the holder releases its lease.
    * A lease whose allocation the ledger dropped (a contributor withdrew or
      shrank below what it lends) is not silently kept: :meth:`LeaseBook.sweep`
      ends it with the reason ``revoked``, and the holder learns it when it
      releases, renews or lists.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .ledger import Allocation, Constraints, ResourceLedger
from .resources import DIMENSIONS, ZERO, Resources, from_vec, to_vec, vec_add

__all__ = [
    "LEASE_PREFIX",
    "Lease", "LeaseBook", "PoolView", "format_resources", "pool_view", "shortfall"]

MAX_TTL = 7 * 24 * 3600.0
LEASE_PREFIX = "lease:"  # ledger request ids of leases; no task id may start with it


@dataclass(frozen=True, slots=True)
class PoolView:
    """Free and total in a pool, and the most one agent has free (per dimension)."""

    free: Resources
    total: Resources
    largest: Resources
    agents: int

    def to_data(self) -> dict[str, object]:
        return {
            "free": self.free.to_mapping(),
            "total": self.total.to_mapping(),
            "largest": self.largest.to_mapping(),
            "agents": self.agents,
        }


def pool_view(ledger: ResourceLedger, agents: Collection[str] | None = None) -> PoolView:
    """The pool of ``agents`` (None: every contributor)."""
    names = [a for a in ledger.agents() if agents is None or a in agents]
    free, total, largest = ZERO, ZERO, ZERO
    for a in names:
        f = to_vec(ledger.available(a), up=False)
        free = vec_add(free, f)
        total = vec_add(total, to_vec(ledger.capacity(a), up=False))
        m = largest
        largest = (max(m[0], f[0]), max(m[1], f[1]), max(m[2], f[2]), max(m[3], f[3]))
    return PoolView(from_vec(free), from_vec(total), from_vec(largest), len(names))


def format_resources(r: Resources, dims: Collection[str] = DIMENSIONS) -> str:
    """``cpu=2,memory=1073741824`` — the CLI form, zero dimensions left out unless asked."""
    out = []
    for d in DIMENSIONS:
        if d in dims:
            v = getattr(r, d)
            out.append(f"{d}={v:g}" if d == "cpu" else f"{d}={v}")
    return ",".join(out) or "nothing"


def shortfall(asked: Resources, view: PoolView) -> str:
    """The one line for a request the pool cannot meet, naming the dimensions asked.

    ``insufficient resources: asked cpu=16; free cpu=8 (largest on one agent: 4)``
    """
    dims = [d for d in DIMENSIONS if getattr(asked, d)] or list(DIMENSIONS)
    largest = format_resources(view.largest, dims)
    if len(dims) == 1:
        largest = largest.split("=", 1)[1]
    return (
        f"insufficient resources: asked {format_resources(asked, dims)}; "
        f"free {format_resources(view.free, dims)} (largest on one agent: {largest})"
    )


@dataclass(frozen=True, slots=True)
class Lease:
    """Resources reserved for ``holder`` until released, or ``expires_at`` (None: never)."""

    lease_id: str
    holder: str
    allocation: Allocation
    expires_at: float | None

    def to_data(self) -> dict[str, object]:
        return {
            "lease": self.lease_id,
            "holder": self.holder,
            "requested": self.allocation.requested.to_mapping(),
            "parts": [
                {"agent": p.agent_id, "resources": p.resources.to_mapping()}
                for p in self.allocation.parts
            ],
            "expires_at": self.expires_at,
        }


class LeaseBook:
    """Leases on a ledger's pool, by id."""

    def __init__(self, ledger: ResourceLedger) -> None:
        self.ledger = ledger
        self.leases: dict[str, Lease] = {}
        self.ended: dict[str, str] = {}  # lease id -> why it ended (revoked, expired…), bounded

    def request(
        self,
        lease_id: str,
        holder: str,
        asked: Resources,
        now: float,
        ttl: float | None = None,
        agents: Collection[str] | None = None,
    ) -> Lease:
        """Reserve ``asked`` for ``holder``: whole on one agent, else split over several.

        Raises:
            InsufficientResources: the pool (of ``agents``, if given) cannot hold it.
            InvalidResources: ``asked`` is zero.
            ValueError: ``ttl`` is not in ``(0, MAX_TTL]``.
        """
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be in (0, {MAX_TTL:g}] seconds, got {ttl}")
        if lease_id in self.leases:
            return self.leases[lease_id]
        constraints = Constraints(
            allow_split=True, agents=frozenset(agents) if agents is not None else None
        )
        allocation = self.ledger.allocate(LEASE_PREFIX + lease_id, asked, constraints)
        lease = Lease(lease_id, holder, allocation, None if ttl is None else now + ttl)
        self.leases[lease_id] = lease
        return lease

    def release(self, lease_id: str, holder: str) -> str:
        """End ``holder``'s lease; returns ``released``, or why it could not be.

        Returns:
            ``released``; ``not yours``; or the reason it had ended
            (``expired``, ``revoked: …``, ``holder lost``) or ``unknown``.
        """
        lease = self.leases.get(lease_id)
        if lease is None:
            return self.ended.get(lease_id, "unknown")
        if lease.holder != holder:
            return "not yours"
        self._end(lease_id, "released")
        return "released"

    def sweep(self, now: float) -> list[tuple[Lease, str]]:
        """End leases past their TTL and those whose allocation the ledger dropped."""
        out = []
        for lease in list(self.leases.values()):
            if self.ledger.get(lease.allocation.allocation_id) is None:
                out.append((lease, "revoked: a contributor withdrew or shrank below its loans"))
            elif lease.expires_at is not None and now >= lease.expires_at:
                out.append((lease, "expired"))
        for lease, why in out:
            self._end(lease.lease_id, why)
        return out

    def holder_lost(self, holder: str) -> list[Lease]:
        """End every lease of a holder that is gone."""
        gone = [lease for lease in self.leases.values() if lease.holder == holder]
        for lease in gone:
            self._end(lease.lease_id, "holder lost")
        return gone

    def _end(self, lease_id: str, why: str) -> None:
        lease = self.leases.pop(lease_id)
        self.ledger.release(lease.allocation.allocation_id)
        if len(self.ended) >= 10_000:
            self.ended.pop(next(iter(self.ended)))
        self.ended[lease_id] = why


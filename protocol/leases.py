"""Pooled resources as their own API: what the pool holds, and leases on it (pure).

The :class:`~robeing.protocol.ledger.ResourceLedger` keeps what agents
contribute and what is reserved. :func:`pool_view` summarises it — free and
total per dimension, and the *largest single placement*: per dimension, the
most any one agent has free (so "cpu 8/8 free" is never shown alone when no
agent can take more than 4). :class:`LeaseBook` hands out leases: a request
placed whole on one agent when one has room, else split over several in
parts shaped like the request (the original allocation). Leases are ledger
allocations of the :attr:`~robeing.protocol.ledger.Holder.LEASE` kind, so the
coordinator's sweep of task reservations never touches them.

A lease ends exactly when one of these happens first:
    * its holder releases it;
    * its TTL passes without a renewal (``expires_at``; a renewal moves it
      to ``now + ttl``) — every *client* lease has a TTL: a client is not
      watched by the failure detector, so only renewals prove it lives;
    * its holder is an *agent* and the coordinator declares that agent dead
      (or gone: left, quarantined) — an agent lease needs no TTL;
    * an agent holding a part of it is gone (the ledger withdrew it): the
      lease ends as ``revoked``, and the holder learns it when it renews,
      releases or lists. A contributor *shrinking* never ends a lease: the
      new contribution takes effect as leases and reservations end.

Invariants:
    * A lease holds exactly one live ledger allocation; ending it frees the
      allocation, once.
    * Only the holder releases or renews its lease.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .errors import DecodeError
from .fields import finite, need, text
from .ledger import Allocation, Constraints, Holder, Part, ResourceLedger
from .resources import DIMENSIONS, ZERO, InvalidResources, Resources, from_vec, to_vec, vec_add

__all__ = [
    "AGENT",
    "CLIENT",
    "KINDS",
    "Lease",
    "LeaseBook",
    "LeaseTerms",
    "PoolView",
    "format_resources",
    "pool_view",
    "shortfall",
]

MAX_TTL = 7 * 24 * 3600.0
MAX_PARTS = 10_000
MAX_SHOWN = 100  # shrinking agents listed by a view
MAX_ENDED = 100_000  # ended lease ids remembered (and never granted again), oldest forgotten first
CLIENT = "client"  # held by a client: ends unless renewed within its TTL
AGENT = "agent"  # held by an agent: ends when the coordinator declares it dead (or its TTL)
KINDS = (CLIENT, AGENT)


@dataclass(frozen=True, slots=True)
class PoolView:
    """Free and total in a pool, and the most one agent has free (per dimension)."""

    free: Resources
    total: Resources
    largest: Resources
    agents: int
    shrinking: tuple[tuple[str, Resources, Resources], ...] = ()  # (agent, contributed, committed)

    def to_data(self) -> dict[str, object]:
        return {
            "free": self.free.to_mapping(),
            "total": self.total.to_mapping(),
            "largest": self.largest.to_mapping(),
            "agents": self.agents,
            "shrinking": [
                {"agent": a, "contributed": c.to_mapping(), "committed": u.to_mapping()}
                for a, c, u in self.shrinking
            ],
        }


def pool_view(ledger: ResourceLedger, agents: Collection[str] | None = None) -> PoolView:
    """The pool of ``agents`` (None: every contributor).

    ``total`` is what they contribute now; a shrinking agent (more committed
    than it contributes) has nothing free and is listed in ``shrinking``
    (at most :data:`MAX_SHOWN`).
    """
    names = [a for a in ledger.agents() if agents is None or a in agents]
    free, total, largest = ZERO, ZERO, ZERO
    shrinking: list[tuple[str, Resources, Resources]] = []
    for a in names:
        f = to_vec(ledger.available(a), up=False)
        free = vec_add(free, f)
        total = vec_add(total, to_vec(ledger.capacity(a), up=False))
        m = largest
        largest = (max(m[0], f[0]), max(m[1], f[1]), max(m[2], f[2]), max(m[3], f[3]))
        if ledger.shrinking(a) and len(shrinking) < MAX_SHOWN:
            shrinking.append((a, ledger.capacity(a), ledger.allocated(a)))
    return PoolView(
        from_vec(free), from_vec(total), from_vec(largest), len(names), tuple(shrinking)
    )


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
class LeaseTerms:
    """What a lease is, without the ledger: enough to restore it after a failover.

    Attributes:
        lease_id: the lease. holder: who holds it. kind: :data:`CLIENT` or :data:`AGENT`.
        requested: what was asked. parts: ``(agent, resources)`` where it is held.
        ttl: seconds a renewal extends it by (None: an agent lease without one).
        expires_at: when it ends unless renewed (None: never by time).
    """

    lease_id: str
    holder: str
    kind: str
    requested: Resources
    parts: tuple[Part, ...]
    ttl: float | None
    expires_at: float | None

    def to_data(self) -> dict[str, Any]:
        return {
            "lease": self.lease_id,
            "holder": self.holder,
            "kind": self.kind,
            "requested": self.requested.to_mapping(),
            "parts": [
                {"agent": p.agent_id, "resources": p.resources.to_mapping()} for p in self.parts
            ],
            "ttl": self.ttl,
            "expires_at": self.expires_at,
        }

    @staticmethod
    def from_data(data: Any) -> LeaseTerms:
        """Raises: DecodeError: malformed (an unknown kind, bad resources, no parts)."""
        kind = need(data, "kind", str)
        if kind not in KINDS:
            raise DecodeError(f"unknown lease holder kind {kind!r}")
        rows = need(data, "parts", list)
        if not 1 <= len(rows) <= MAX_PARTS:
            raise DecodeError(f"a lease has 1 to {MAX_PARTS} parts")
        try:
            requested = Resources.from_mapping(need(data, "requested", dict))
            parts = tuple(
                Part(
                    text(need(r, "agent", str), "agent", 128),
                    Resources.from_mapping(need(r, "resources", dict)),
                )
                for r in rows
            )
        except InvalidResources as exc:
            raise DecodeError(f"lease resources: {exc}") from None
        ttl, expires = (
            need(data, "ttl", (int, float), None),
            need(data, "expires_at", (int, float), None),
        )
        return LeaseTerms(
            text(need(data, "lease", str), "lease", 128),
            text(need(data, "holder", str), "holder", 128),
            kind,
            requested,
            parts,
            None if ttl is None else finite(ttl, "ttl"),
            None if expires is None else finite(expires, "expires_at"),
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """Resources reserved for ``holder`` until it ends (see the module: exactly when)."""

    lease_id: str
    holder: str
    allocation: Allocation
    expires_at: float | None
    kind: str = CLIENT
    ttl: float | None = None

    def terms(self) -> LeaseTerms:
        a = self.allocation
        return LeaseTerms(
            self.lease_id, self.holder, self.kind, a.requested, a.parts, self.ttl, self.expires_at
        )

    def to_data(self) -> dict[str, Any]:
        return self.terms().to_data()


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
        kind: str = CLIENT,
    ) -> Lease:
        """Reserve ``asked`` for ``holder``: whole on one agent, else split over several.

        Asking again for a live lease id returns that lease; an id that has
        ended is never granted again (the records would keep it ended).

        Raises:
            InsufficientResources: the pool (of ``agents``, if given) cannot hold it.
            InvalidResources: ``asked`` is zero.
            ValueError: ``ttl`` is not in ``(0, MAX_TTL]``, a client lease has
                none, ``kind`` is unknown, or the id names an ended lease.
        """
        if lease_id in self.ended:
            raise ValueError(f"lease {lease_id} has ended ({self.ended[lease_id]}); use a new id")
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise ValueError(f"ttl must be in (0, {MAX_TTL:g}] seconds, got {ttl}")
        if kind not in KINDS or (kind == CLIENT and ttl is None):
            raise ValueError(f"a {kind} lease needs a ttl" if kind in KINDS else f"kind {kind!r}")
        if lease_id in self.leases:
            return self.leases[lease_id]
        constraints = Constraints(
            allow_split=True, agents=frozenset(agents) if agents is not None else None
        )
        allocation = self.ledger.allocate(lease_id, asked, constraints, Holder.LEASE)
        expires = None if ttl is None else now + ttl
        lease = Lease(lease_id, holder, allocation, expires, kind, ttl)
        self.leases[lease_id] = lease
        return lease

    def renew(self, lease_id: str, holder: str, now: float) -> Lease | str:
        """Move ``holder``'s lease's expiry to ``now + ttl``.

        Returns:
            The renewed lease; or why not: ``not yours``, the reason it ended
            (``expired``, ``revoked: …``, ``holder lost``, ``released``) or ``unknown``.
        """
        lease = self.leases.get(lease_id)
        if lease is None:
            return self.ended.get(lease_id, "unknown")
        if lease.holder != holder:
            return "not yours"
        if lease.ttl is None:
            return lease
        renewed = Lease(lease_id, holder, lease.allocation, now + lease.ttl, lease.kind, lease.ttl)
        self.leases[lease_id] = renewed
        return renewed

    def restore(self, terms: LeaseTerms) -> Lease:
        """Hold a lease again as recorded (a new active coordinator folding the records).

        Raises:
            InvalidResources: the recorded parts are not a valid allocation.
        """
        allocation = self.ledger.restore(terms.lease_id, Holder.LEASE, terms.parts)
        lease = Lease(
            terms.lease_id, terms.holder, allocation, terms.expires_at, terms.kind, terms.ttl
        )
        self.leases[terms.lease_id] = lease
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
        self.end(lease_id, "released")
        return "released"

    def sweep(self, now: float) -> list[tuple[Lease, str]]:
        """End leases past their TTL and those whose allocation the ledger dropped."""
        out = []
        for lease in list(self.leases.values()):
            if self.ledger.get(lease.allocation.allocation_id) is None:
                out.append((lease, "revoked: an agent holding a part of it is gone"))
            elif lease.expires_at is not None and now >= lease.expires_at:
                out.append((lease, "expired"))
        for lease, why in out:
            self.end(lease.lease_id, why)
        return out

    def agents_gone(
        self, alive: Callable[[str], bool], heard: set[str], graced: bool
    ) -> list[Lease]:
        """End the agent leases whose holder the coordinator no longer has alive.

        Args:
            alive: whether the coordinator's failure detector has the agent
                (it forgets one it declared dead, that left or was quarantined).
            heard: agent holders seen alive so far (updated here).
            graced: whether a holder never seen counts as gone too (after a
                failover, once every live agent has had time to be heard).

        Returns:
            The leases ended, with the reason ``holder lost``.
        """
        gone = []
        for lease in list(self.leases.values()):
            if lease.kind != AGENT:
                continue
            if alive(lease.holder):
                heard.add(lease.holder)
            elif lease.holder in heard or graced:
                self.end(lease.lease_id, "holder lost")
                gone.append(lease)
        heard.intersection_update(lease.holder for lease in self.leases.values())
        return gone

    def holder_lost(self, holder: str) -> list[Lease]:
        """End every lease of a holder that is gone."""
        gone = [lease for lease in self.leases.values() if lease.holder == holder]
        for lease in gone:
            self.end(lease.lease_id, "holder lost")
        return gone

    def end(self, lease_id: str, why: str) -> None:
        """End a live lease for ``why`` (freeing its allocation, if the ledger still has it)."""
        lease = self.leases.pop(lease_id)
        self.ledger.release(lease.allocation.allocation_id)
        self.remember(lease_id, why)

    def remember(self, lease_id: str, why: str) -> None:
        """Keep why a lease ended, for its holder's next question (bounded)."""
        if len(self.ended) >= MAX_ENDED:
            self.ended.pop(next(iter(self.ended)))
        self.ended[lease_id] = why

"""The active coordinator's pooled-resources API: ``pool.show``, ``pool.request``, ``pool.release``.

The pool is the coordinator's :class:`~robeing.protocol.ledger.ResourceLedger`
(what agents announce in their heartbeats, and what tasks with
``--resources`` hold); leases are :mod:`robeing.protocol.leases`'. A request
names a cluster or not (the default cluster); it is placed on that cluster's
live contributors only.

Leases end on release, when their TTL passes (every lease has one: an
abandoned lease cannot hold the pool for ever), or when the ledger drops
their allocation because a contributor withdrew or shrank below what it
lends — then the lease ends as ``revoked`` (logged, and told to the holder
when it releases), never silently kept. Leases live in the active
coordinator's memory: a coordinator failover ends them, as it restarts
every running task's attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ....protocol.clusters import DEFAULT_CLUSTER
from ....protocol.clusters.names import cluster_name_problem
from ....protocol.coordinator import CoordinatorState
from ....protocol.errors import DecodeError
from ....protocol.fields import finite, need, text
from ....protocol.leases import MAX_TTL, LeaseBook, pool_view, shortfall
from ....protocol.resources import InsufficientResources, InvalidResources, Resources
from ...context import Message

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0
SWEEP_S = 1.0


class PoolHost:
    """Answers the ``pool.*`` questions for the active coordinator.

    Args:
        members: the live agents of a cluster, by name (the cluster host's view).
    """

    def __init__(self, members: Callable[[str], set[str]]) -> None:
        self.members = members
        self.book: LeaseBook | None = None
        self._next_sweep = 0.0

    def start(self, state: CoordinatorState) -> None:
        self.book = LeaseBook(state.fleet.ledger)

    def handlers(self) -> dict[str, Any]:
        return {
            "pool.show": self.on_show,
            "pool.request": self.on_request,
            "pool.release": self.on_release,
        }

    def _cluster(self, data: Any) -> str:
        cluster = text(need(data, "cluster", str, DEFAULT_CLUSTER), "cluster", 100)
        if (problem := cluster_name_problem(cluster)) is not None:
            raise DecodeError(problem)
        return cluster

    def on_show(self, msg: Message) -> dict[str, Any]:
        """``pool.show {cluster?}``: free / total / largest on one agent, and the leases."""
        assert self.book is not None
        cluster = self._cluster(msg.payload)
        view = pool_view(self.book.ledger, self.members(cluster))
        return {"cluster": cluster, **view.to_data(), "leases": len(self.book.leases)}

    def on_request(self, msg: Message) -> dict[str, Any]:
        """``pool.request {lease, resources, cluster?, ttl?}``: a lease, or the shortfall."""
        assert self.book is not None
        data = msg.payload
        lease_id = text(need(data, "lease", str), "lease", 128)
        cluster = self._cluster(data)
        ttl = finite(need(data, "ttl", (int, float), DEFAULT_TTL_S), "ttl")
        if not 0 < ttl <= MAX_TTL:
            return {"error": f"ttl must be more than 0 and at most {MAX_TTL:g} s, got {ttl:g}"}
        try:
            asked = Resources.from_mapping(need(data, "resources", dict))
            members = self.members(cluster)
            lease = self.book.request(lease_id, msg.sender, asked, time.time(), ttl, members)
        except InvalidResources as exc:
            return {"error": str(exc)}
        except InsufficientResources as exc:
            view = pool_view(self.book.ledger, self.members(cluster))
            return {"error": shortfall(exc.requested, view), "insufficient": True}
        log.info("lease %s to %s: %s", lease_id, msg.sender, lease.to_data()["parts"])
        return {"lease": lease.to_data()}

    def on_release(self, msg: Message) -> dict[str, Any]:
        """``pool.release {lease}``: end the sender's lease."""
        assert self.book is not None
        lease_id = text(need(msg.payload, "lease", str), "lease", 128)
        outcome = self.book.release(lease_id, msg.sender)
        if outcome != "released":
            return {"error": f"lease {lease_id!r} not released: {outcome}"}
        return {"released": lease_id}

    def tick(self) -> None:
        """End leases past their TTL or revoked by the ledger (about once a second)."""
        now = time.monotonic()
        if self.book is None or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        for lease, why in self.book.sweep(time.time()):
            log.warning("lease %s of %s ended: %s", lease.lease_id, lease.holder, why)

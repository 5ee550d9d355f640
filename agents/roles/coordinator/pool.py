"""The active coordinator's pooled-resources API: ``pool.show|request|renew|release|contribute``.

The pool is the coordinator's :class:`~robeing.protocol.ledger.ResourceLedger`
(what agents announce in their heartbeats, and what tasks with
``--resources`` hold); leases are :mod:`robeing.protocol.leases`'. A request
names a cluster or not (the default cluster); it is placed on that cluster's
live contributors only.

Durability. Every change of a lease is a signed record in the stream
``robeing.coordinator.leases`` (:mod:`robeing.protocol.leaserecords`), written
through the same :class:`~.records.RecordStream` as cluster definitions. A
coordinator that becomes active folds the records and holds every live lease
again before it consumes a heartbeat or a question, so a lease survives a
coordinator failover and a broker restart, and keeps blocking its capacity.

When a lease ends (see :mod:`robeing.protocol.leases` for the rules):
    * a *client* lease (its holder's certificate says ``client``) has a TTL,
      300 s unless asked: it ends at the first sweep (about a second) after
      ``expires_at``; :class:`~robeing.agents.clusters.Pool` renews it while
      its holder lives, ``robeing pool renew LEASE`` renews it by hand;
    * an *agent* lease has a TTL only if asked; it ends at the first sweep
      after the coordinator declares its holder dead (lost, left or
      quarantined) — after a failover, a holder the new coordinator has not
      heard from within :data:`TAKEOVER_GRACE_S` counts as dead;
    * any lease ends on release, and as ``revoked`` when an agent holding a
      part of it is gone (never when one merely shrinks its contribution).

Invariants:
    * A grant is answered only after its record was confirmed into the
      stream; a grant that could not be recorded is undone and refused.
    * A renewal is answered only after its record was confirmed.
    * Every end is recorded: an end record that could not be written is kept
      and written again at the next sweep (until then a failover would
      restore the lease, which then ends again by the same rule).
    * A live lease has a record younger than :data:`~robeing.protocol.leaserecords.REFRESH_S`
      (the coordinator re-records older ones), so the stream's ``x-max-age``
      never drops the last record of a live lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ....broker import topology as topo
from ....protocol.clusters import DEFAULT_CLUSTER
from ....protocol.clusters.names import cluster_name_problem
from ....protocol.contributions import ORDER_TYPE, ContributionOrder
from ....protocol.coordinator import CoordinatorState
from ....protocol.errors import DecodeError
from ....protocol.fields import finite, need, text
from ....protocol.leaserecords import RECORD_TYPE, REFRESH_S, LeaseFold, LeaseRecord
from ....protocol.leases import AGENT, CLIENT, MAX_TTL, Lease, LeaseBook, pool_view, shortfall
from ....protocol.resources import (
    InsufficientResources,
    InvalidResources,
    Resources,
    to_vec,
    vec_fits,
)
from ...context import AgentContext, Message
from .records import RecordStream

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0
SWEEP_S = 1.0
TAKEOVER_GRACE_S = 10.0  # after a failover, holders and contributors not heard by then are gone
ORDER_TIMEOUT_S = 5.0


class PoolHost:
    """Answers the ``pool.*`` questions for the active coordinator and keeps its leases.

    Args:
        agent: the coordinator.
        members: the live agents of a cluster, by name (the cluster host's view).
        spawn: runs a coroutine in the background (the coordinator's task set).
    """

    def __init__(
        self,
        agent: AgentContext,
        members: Callable[[str], set[str]],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.agent = agent
        self.members = members
        self._spawn = spawn
        self.records = RecordStream(agent, topo.leases_spec(), RECORD_TYPE, "lease record")
        self.book: LeaseBook | None = None
        self.state: CoordinatorState | None = None
        self._recorded: dict[str, float] = {}  # live lease -> when its last record was written
        self._unrecorded: dict[str, str] = {}  # ended lease -> why, its end not yet stored
        self._writing: set[str] = set()  # ends being stored now
        self._heard: set[str] = set()  # agent holders heard since we became active
        self._graced = False
        self._since = 0.0
        self._next_sweep = 0.0
        self._orders = 0

    async def load(self, state: CoordinatorState) -> None:
        """Fold every lease record and hold the live leases again (before serving)."""
        self.state = state
        book = self.book = LeaseBook(state.fleet.ledger)
        fold = LeaseFold()
        read = await self.records.load(lambda payload: fold.apply(LeaseRecord.from_data(payload)))
        for terms in fold.live.values():
            try:
                book.restore(terms)
            except InvalidResources as exc:
                self.records.invalid += 1
                log.warning("not restoring lease %s: %s", terms.lease_id, exc)
        for lease_id, why in fold.ended.items():
            book.remember(lease_id, why)
        self._recorded = {k: v for k, v in fold.recorded.items() if k in book.leases}
        self._since = time.monotonic()
        log.info(
            "loaded %d lease record(s): %d live lease(s), %d from a deposed coordinator skipped",
            read,
            len(book.leases),
            fold.stale,
        )

    def handlers(self) -> dict[str, Any]:
        return {
            "pool.show": self.on_show,
            "pool.request": self.on_request,
            "pool.renew": self.on_renew,
            "pool.release": self.on_release,
            "pool.contribute": self.on_contribute,
        }

    # -- questions -------------------------------------------------------------------

    def _cluster(self, data: Any) -> str:
        cluster = text(need(data, "cluster", str, DEFAULT_CLUSTER), "cluster", 100)
        if (problem := cluster_name_problem(cluster)) is not None:
            raise DecodeError(problem)
        return cluster

    def on_show(self, msg: Message) -> dict[str, Any]:
        """``pool.show {cluster?}``: free / total / largest on one agent, shrinking agents,
        and the number of live leases by holder kind."""
        assert self.book is not None
        cluster = self._cluster(msg.payload)
        view = pool_view(self.book.ledger, self.members(cluster))
        kinds = [lease.kind for lease in self.book.leases.values()]
        by_kind = {kind: kinds.count(kind) for kind in (CLIENT, AGENT)}
        return {"cluster": cluster, **view.to_data(), "leases": len(kinds), "by_kind": by_kind}

    async def on_request(self, msg: Message) -> dict[str, Any]:
        """``pool.request {lease, resources, cluster?, ttl?}``: a lease, or the shortfall.

        Answered once the grant's record is confirmed into the stream.
        """
        assert self.book is not None and self.state is not None
        data = msg.payload
        lease_id = text(need(data, "lease", str), "lease", 128)
        cluster = self._cluster(data)
        kind = CLIENT if msg.sender_role == "client" else AGENT
        asked_ttl = need(data, "ttl", (int, float), None)
        ttl = DEFAULT_TTL_S if asked_ttl is None and kind == CLIENT else asked_ttl
        if ttl is not None and not 0 < finite(ttl, "ttl") <= MAX_TTL:
            return {"error": f"ttl must be more than 0 and at most {MAX_TTL:g} s, got {ttl:g}"}
        try:
            asked = Resources.from_mapping(need(data, "resources", dict))
            members = self.members(cluster)
            known = lease_id in self.book.leases
            lease = self.book.request(
                lease_id, msg.sender, asked, time.time(), ttl, members, kind=kind
            )
        except (InvalidResources, ValueError) as exc:
            return {"error": str(exc)}
        except InsufficientResources as exc:
            view = pool_view(self.book.ledger, self.members(cluster))
            return {"error": shortfall(exc.requested, view), "insufficient": True}
        if lease.holder != msg.sender:
            return {"error": f"lease {lease_id!r} is another holder's"}
        try:
            await self._record("grant", lease)
        except Exception as exc:
            if not known and lease_id in self.book.leases:
                self.book.leases.pop(lease_id)
                self.book.ledger.release(lease.allocation.allocation_id)
            log.warning("lease %s not granted: its record was not stored: %s", lease_id, exc)
            return {"error": f"lease not granted: could not record it ({exc})"}
        log.info("lease %s to %s (%s): %s", lease_id, msg.sender, kind, lease.to_data()["parts"])
        return {"lease": lease.to_data()}

    async def on_renew(self, msg: Message) -> dict[str, Any]:
        """``pool.renew {lease}``: move the sender's lease's expiry to now + its TTL."""
        assert self.book is not None
        lease_id = text(need(msg.payload, "lease", str), "lease", 128)
        renewed = self.book.renew(lease_id, msg.sender, time.time())
        if isinstance(renewed, str):
            return {"error": f"lease {lease_id!r} not renewed: {renewed}"}
        try:
            await self._record("renew", renewed)
        except Exception as exc:
            return {"error": f"lease {lease_id!r} not renewed: could not record it ({exc})"}
        return {"lease": renewed.to_data()}

    async def on_release(self, msg: Message) -> dict[str, Any]:
        """``pool.release {lease}``: end the sender's lease (answered once recorded)."""
        assert self.book is not None
        lease_id = text(need(msg.payload, "lease", str), "lease", 128)
        live = lease_id in self.book.leases
        outcome = self.book.release(lease_id, msg.sender)
        if outcome != "released":
            return {"error": f"lease {lease_id!r} not released: {outcome}"}
        if live:  # a second release is answered the same, and recorded once
            self._recorded.pop(lease_id, None)
            self._unrecorded[lease_id] = "released"
            await self._record_end(lease_id)
        return {"released": lease_id}

    async def on_contribute(self, msg: Message) -> dict[str, Any]:
        """``pool.contribute {agent, resources}``: order a live agent to contribute ``resources``.

        Only operators (clients) may ask (the role table's ``operate``); the
        order (``pool.contribution``) comes from the coordinator only. The
        agent's next heartbeat announces the new contribution and the ledger
        follows it; a shrink below what is committed there revokes nothing
        (see :meth:`ResourceLedger.contribute <robeing.protocol.ledger.ResourceLedger.contribute>`).
        Refused in one line, with nothing changed: an unknown agent or
        resource, a bad quantity.
        """
        assert self.state is not None and self.book is not None
        data = msg.payload
        agent_id = text(need(data, "agent", str), "agent", 128)
        try:
            offered = Resources.from_mapping(need(data, "resources", dict))
        except InvalidResources as exc:
            return {"error": f"invalid resources: {exc}"}
        if agent_id not in self.state.fleet.registry:
            known = sorted(a.id for a in self.state.fleet.registry)
            shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
            return {"error": f"unknown agent {agent_id!r}; live agents: {shown or 'none'}"}
        self._orders += 1
        order = ContributionOrder(offered, self.state.epoch, self._orders)
        try:
            await self.agent.request(
                agent_id, ORDER_TYPE, order.to_data(), priority=8, timeout=ORDER_TIMEOUT_S
            )
        except Exception as exc:
            return {"error": f"agent {agent_id} did not take the order: {exc}"}
        committed = self.book.ledger.allocated(agent_id)
        over = to_vec(committed, up=True)
        log.warning("agent %s ordered to contribute %s (by %s)", agent_id, offered, msg.sender)
        return {
            "agent": agent_id,
            "contributed": offered.to_mapping(),
            "committed": committed.to_mapping(),
            "shrinking": not vec_fits(over, to_vec(offered, up=False)),
        }

    # -- records ---------------------------------------------------------------------

    async def _record(self, op: str, lease: Lease) -> None:
        assert self.state is not None
        now = time.time()
        await self.records.append(LeaseRecord.of(op, self.state.epoch, now, lease).to_data())
        if self.book is not None and lease.lease_id in self.book.leases:
            self._recorded[lease.lease_id] = now

    async def _record_end(self, lease_id: str) -> None:
        """Store the end of ``lease_id`` (kept for the next sweep if the broker refuses)."""
        assert self.state is not None
        why = self._unrecorded.get(lease_id)
        if why is None or lease_id in self._writing:
            return
        self._writing.add(lease_id)
        record = LeaseRecord("end", self.state.epoch, time.time(), lease_id, why=why)
        try:
            await self.records.append(record.to_data())
        except Exception as exc:
            log.warning("end of lease %s not recorded yet (%s); trying again", lease_id, exc)
            return
        finally:
            self._writing.discard(lease_id)
        if self._unrecorded.get(lease_id) == why:
            del self._unrecorded[lease_id]

    # -- the sweep -------------------------------------------------------------------

    def tick(self) -> None:
        """About once a :data:`SWEEP_S`: end leases by the module's rules, record what changed."""
        now = time.monotonic()
        if self.book is None or self.state is None or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        book, fleet = self.book, self.state.fleet
        graced = now - self._since >= TAKEOVER_GRACE_S
        if graced and not self._graced:
            self._graced = True
            # Contributors the records named that never came back are gone.
            for agent_id in book.ledger.agents():
                if agent_id not in fleet.health:
                    log.warning("agent %s not heard since the takeover: leaving the pool", agent_id)
                    book.ledger.withdraw(agent_id)
        gone = book.agents_gone(fleet.health.__contains__, self._heard, graced)
        ended = [(lease.lease_id, lease.holder, "holder lost") for lease in gone]
        ended += [(lease.lease_id, lease.holder, why) for lease, why in book.sweep(time.time())]
        for lease_id, holder, why in ended:
            log.warning("lease %s of %s ended: %s", lease_id, holder, why)
            self._recorded.pop(lease_id, None)
            self._unrecorded[lease_id] = why
        for lease_id in list(self._unrecorded):
            if lease_id not in self._writing:
                self._spawn(self._record_end(lease_id))
        stale = time.time() - REFRESH_S
        for lease_id, at in list(self._recorded.items()):
            if at < stale:
                self._recorded[lease_id] = time.time()  # one refresh in flight at a time
                self._spawn(self._refresh(book.leases[lease_id]))

    async def _refresh(self, lease: Lease) -> None:
        try:
            await self._record("renew", lease)
        except Exception as exc:  # the next sweep tries again
            self._recorded[lease.lease_id] = 0.0
            log.warning("lease %s not re-recorded: %s", lease.lease_id, exc)

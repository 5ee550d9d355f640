"""Clusters and pooled resources from the Python API: ``client.clusters``, ``client.pool``.

Each call is a question to the active coordinator (through its durable
task queue, encrypted to the coordinators, like ``task.query``); the
coordinator answers with the outcome or a one-line refusal, raised here as
:class:`ClusterRefused`::

    async with Client() as client:
        c = await client.clusters.form("etl", purpose="nightly", skills=["sort"], size=3)
        print(c["members"])
        lease = await client.pool.request({"cpu": 2, "memory": 2**30}, ttl=60)
        await client.pool.release(lease["lease"])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..protocol.envelope import new_id
from ..protocol.errors import ConfigError, DecodeError
from ..protocol.resources import InvalidResources, Resources

Ask = Callable[[str, Any, float], Awaitable[Any]]

log = logging.getLogger(__name__)

__all__ = ["ClusterRefused", "Clusters", "InsufficientPool", "Pool", "wire_resources"]


class ClusterRefused(ConfigError):
    """The coordinator refused a cluster request; the message says why and what is available."""


class InsufficientPool(ClusterRefused):
    """The pool cannot hold a request now; the message says what is free."""


class _Questions:
    """Questions asked of the active coordinator through ``ask``.

    Args:
        ask: sends ``(type, payload, timeout)`` to the active coordinator and
            returns its answer (the client's outbox).
        timeout: seconds to wait for each answer.
    """

    def __init__(self, ask: Ask, timeout: float = 10.0) -> None:
        self._ask_coordinator = ask
        self.timeout = timeout

    async def _ask(self, message_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer = await self._ask_coordinator(message_type, payload, self.timeout)
        if not isinstance(answer, dict):
            raise DecodeError(f"the coordinator's answer to {message_type} is not a map")
        if isinstance(answer.get("error"), str):
            if answer.get("insufficient"):
                raise InsufficientPool(answer["error"])
            raise ClusterRefused(answer["error"])
        return answer


class Clusters(_Questions):
    """The ``cluster.*`` questions."""

    async def form(
        self, name: str, *, purpose: str = "", skills: Sequence[str] = (), size: int = 1
    ) -> dict[str, Any]:
        """Form cluster ``name`` of the ``size`` best live agents of the default cluster
        with any of ``skills``; returns its definition (``members`` best first).

        Raises:
            ClusterRefused: a taken or invalid name, an unknown skill or too few agents
                (nobody moved).
            AckTimeout: no coordinator answered in time.
        """
        payload = {"name": name, "purpose": purpose, "skills": list(skills), "size": size}
        cluster: dict[str, Any] = (await self._ask("cluster.form", payload))["cluster"]
        return cluster

    async def dissolve(self, name: str) -> dict[str, Any]:
        """Dissolve a formed cluster; its members return to the default cluster.

        Raises:
            ClusterRefused: no such formed cluster.
            AckTimeout: no coordinator answered in time.
        """
        return await self._ask("cluster.dissolve", {"name": name})

    async def leave(self, agent_id: str) -> dict[str, Any]:
        """Take ``agent_id`` out of its formed cluster, back to the default one.

        Raises:
            ClusterRefused: it is in no formed cluster.
            AckTimeout: no coordinator answered in time.
        """
        return await self._ask("cluster.leave", {"agent": agent_id})

    async def list(self) -> list[dict[str, Any]]:
        """Every named cluster: kind, purpose, size, live members, leader.

        Raises:
            AckTimeout: no coordinator answered in time.
        """
        rows = (await self._ask("cluster.list", {})).get("clusters", [])
        return [r for r in rows if isinstance(r, dict)]

    async def show(self, name: str) -> dict[str, Any]:
        """One cluster in full, with each member's health.

        Raises:
            ClusterRefused: no such cluster (the message lists the named ones).
            AckTimeout: no coordinator answered in time.
        """
        cluster: dict[str, Any] = (await self._ask("cluster.show", {"name": name}))["cluster"]
        return cluster


class Pool(_Questions):
    """The ``pool.*`` questions: the pooled resources of a cluster, and leases on them.

    A lease this client holds (a *client* lease) ends when its TTL passes
    without a renewal. :meth:`request` renews it in the background every
    TTL / 3 for as long as this client lives (until :meth:`release`, or the
    client closes), so a client that dies loses its leases within one TTL.
    """

    def __init__(self, ask: Ask, timeout: float = 10.0) -> None:
        super().__init__(ask, timeout)
        self._renewing: dict[str, asyncio.Task[None]] = {}
        self.ended: dict[str, str] = {}  # lease id -> why renewing it stopped (ended, refused…)

    async def show(self, cluster: str | None = None) -> dict[str, Any]:
        """Free, total and largest on one agent (per resource) of ``cluster``'s pool
        (None: the default cluster), agents shrinking, and the number of live leases.

        Raises:
            ClusterRefused: an invalid cluster name.
            AckTimeout: no coordinator answered in time.
        """
        return await self._ask("pool.show", {"cluster": cluster} if cluster else {})

    async def request(
        self,
        resources: Resources | Mapping[str, float],
        *,
        cluster: str | None = None,
        ttl: float | None = None,
        lease_id: str | None = None,
        renew: bool = True,
    ) -> dict[str, Any]:
        """Lease ``resources``: whole on one agent if one has room, else spread over several.

        Args:
            ttl: seconds the lease lives without a renewal (default: the coordinator's, 300).
            renew: renew it every TTL / 3 while this client lives; False: it
                ends at ``expires_at`` unless :meth:`renew` is called.

        Returns:
            ``{lease, holder, kind, requested, parts: [{agent, resources}], ttl, expires_at}``.

        Raises:
            InsufficientPool: not that much free now (the message says what is).
            ClusterRefused: invalid resources, ttl or cluster.
            AckTimeout: no coordinator answered in time.
        """
        asked = wire_resources(resources)
        payload: dict[str, Any] = {"lease": lease_id or new_id(), "resources": asked}
        if cluster:
            payload["cluster"] = cluster
        if ttl is not None:
            payload["ttl"] = ttl
        lease: dict[str, Any] = (await self._ask("pool.request", payload))["lease"]
        every = lease.get("ttl")
        if renew and isinstance(every, (int, float)) and every > 0:
            self._keep(lease["lease"], every / 3)
        return lease

    async def renew(self, lease_id: str) -> dict[str, Any]:
        """Move our lease's expiry to now + its TTL; returns the lease.

        Raises:
            ClusterRefused: not ours, or it had ended (the message says why: expired, revoked…).
            AckTimeout: no coordinator answered in time.
        """
        lease: dict[str, Any] = (await self._ask("pool.renew", {"lease": lease_id}))["lease"]
        return lease

    async def release(self, lease_id: str) -> None:
        """End our lease (and stop renewing it).

        Raises:
            ClusterRefused: not ours, or it had ended (the message says why: expired, revoked…).
            AckTimeout: no coordinator answered in time.
        """
        task = self._renewing.pop(lease_id, None)
        if task is not None:
            task.cancel()
        await self._ask("pool.release", {"lease": lease_id})

    async def contribute(
        self, agent_id: str, resources: Resources | Mapping[str, float]
    ) -> dict[str, Any]:
        """Order live agent ``agent_id`` to contribute ``resources`` (all of it: a resource
        left out is contributed no more). Shrinking below what is committed on it revokes
        nothing: the new amount takes effect as leases and reservations end.

        Returns:
            ``{agent, contributed, committed, shrinking}``.

        Raises:
            ConfigError: an unknown resource or a bad quantity (nothing sent).
            ClusterRefused: an unknown agent, or the agent did not take the order.
            AckTimeout: no coordinator answered in time.
        """
        payload = {"agent": agent_id, "resources": wire_resources(resources)}
        return await self._ask("pool.contribute", payload)

    async def close(self) -> None:
        """Stop renewing (the leases then end at their TTL)."""
        tasks = list(self._renewing.values())
        self._renewing.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _keep(self, lease_id: str, every: float) -> None:
        old = self._renewing.pop(lease_id, None)
        if old is not None:
            old.cancel()
        self._renewing[lease_id] = asyncio.get_running_loop().create_task(
            self._renew_loop(lease_id, every)
        )

    async def _renew_loop(self, lease_id: str, every: float) -> None:
        """Renew every ``every`` s; a refusal (it ended) stops, a timeout tries again sooner."""
        wait = every
        while True:
            await asyncio.sleep(wait)
            try:
                await self.renew(lease_id)
                wait = every
            except ClusterRefused as exc:
                self.ended[lease_id] = str(exc)
                log.warning("lease %s no longer renewed: %s", lease_id, exc)
                self._renewing.pop(lease_id, None)
                return
            except Exception as exc:  # no answer in time: two more chances within the TTL
                log.warning("renewing lease %s failed (%s); trying again", lease_id, exc)
                wait = every / 2


def wire_resources(resources: Resources | Mapping[str, float] | None) -> dict[str, Any]:
    """The wire form of resources asked for (by a task or a lease).

    Raises:
        ConfigError: an unknown dimension or a bad quantity.
    """
    if resources is None:
        return {}
    if isinstance(resources, Resources):
        return resources.to_mapping()
    try:
        return Resources.from_mapping(resources).to_mapping()
    except InvalidResources as exc:
        raise ConfigError(f"invalid resources: {exc}") from None

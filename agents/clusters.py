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

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..protocol.envelope import new_id
from ..protocol.errors import ConfigError, DecodeError
from ..protocol.resources import InvalidResources, Resources

Ask = Callable[[str, Any, float], Awaitable[Any]]

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
    """The ``pool.*`` questions: the pooled resources of a cluster, and leases on them."""

    async def show(self, cluster: str | None = None) -> dict[str, Any]:
        """Free, total and largest on one agent (per resource) of ``cluster``'s pool
        (None: the default cluster), and the number of live leases.

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
    ) -> dict[str, Any]:
        """Lease ``resources``: whole on one agent if one has room, else spread over several.

        Returns:
            ``{lease, holder, requested, parts: [{agent, resources}], expires_at}``.

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
        return lease

    async def release(self, lease_id: str) -> None:
        """End our lease.

        Raises:
            ClusterRefused: not ours, or it had ended (the message says why: expired, revoked…).
            AckTimeout: no coordinator answered in time.
        """
        await self._ask("pool.release", {"lease": lease_id})


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

"""The client that commits values through PBFT groups.

A group (:class:`~robeing.protocol.pbft.GroupSpec`) is a named set of
``n >= 3f + 1`` agent ids; each member hosts a replica
(:mod:`robeing.agents.bft_replica`).

A client commits a value with :class:`BftClient`: it signs a PBFT request
whose op is ``{"g": group, "v": value, "r": its reply queue}``, sends it to
the primary it believes in (the view of the last replies) and returns once
``f + 1`` members sent matching ``pbft.reply`` messages (same sequence
number, digest and result). Every ``retry`` seconds it re-sends the request
to the whole group: one publish to the group's key on ``robeing.direct``
(:func:`group_key`), to which every member's inbox is bound. That is also
what makes backups suspect a dead primary and change views.

Invariants:
    * A client accepts a result only from ``f + 1`` distinct members whose
      replies match exactly, so at least one correct replica vouches for it;
      replies from non-members, for other clients or other requests are
      counted in :attr:`BftClient.refused` and ignored.
    * Request timestamps of one client strictly increase (microseconds, never
      reused), which is what replicas deduplicate executions by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ...protocol.envelope import BROADCAST, Envelope
from ...protocol.errors import AckTimeout, ConfigError, UnknownPeer, Unroutable
from ...protocol.evidence import ed25519_signer
from ...protocol.pbft import GroupSpec, Request, encode_message, group_key, sign

# Still imported from here by the CLI; new code imports it from robeing.protocol.pbft.
from ..context import AgentContext, Message

log = logging.getLogger(__name__)

PRIORITY = 7  # consensus traffic goes ahead of ordinary messages (default 5)


class ConsensusTimeout(AckTimeout):
    """No decision was reached within the caller's timeout."""


@dataclass(frozen=True)
class BftResult:
    """A value committed by a PBFT group.

    Attributes:
        group: the group name.
        seq: its sequence number in the group's decided log.
        value: the committed value.
        digest: the request digest the replicas agreed on.
        replicas: the members whose matching replies proved it (``f + 1`` or more).
        timestamp: the request's client timestamp.
        latency_s: from the first send to the ``f + 1``-th matching reply.
    """

    group: str
    seq: int
    value: Any
    digest: bytes
    replicas: tuple[str, ...]
    timestamp: int
    latency_s: float


@dataclass
class _Waiter:
    spec: GroupSpec
    fut: asyncio.Future[tuple[int, bytes, Any, tuple[str, ...]]]
    votes: dict[tuple[int, bytes, bytes], set[str]] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)


class BftClient:
    """Commits values through PBFT groups on behalf of one agent or client.

    Args:
        agent: the sending agent (its reply queue receives ``pbft.reply``).
    """

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.refused: Counter[str] = Counter()
        self._sign = ed25519_signer(agent.identity.signing_key)
        self._waiting: dict[tuple[str, int], _Waiter] = {}
        self._views: dict[str, int] = {}  # group -> the view its last replies reported
        self._last_ts = 0

    def on_reply(self, msg: Message) -> None:
        """Count one ``pbft.reply`` (an answer handler on the reply queue).

        Raises:
            Nothing: malformed, unexpected and foreign replies are counted.
        """
        p = msg.payload
        try:
            key = (str(p["g"]), int(p["ts"]))
            vote = (int(p["seq"]), bytes(p["digest"]), msgpack.packb(p["result"]))
            client = p["client"]
        except (KeyError, TypeError, ValueError):
            self.refused["malformed"] += 1
            return
        waiter = self._waiting.get(key)
        sender = msg.sender
        if waiter is None:
            self.refused["late"] += 1
        elif sender not in waiter.spec.members or client != self.agent.id:
            self.refused["not_member"] += 1
        else:
            voters = waiter.votes.setdefault(vote, set())
            voters.add(sender)
            if isinstance(p.get("view"), int):
                waiter.views[sender] = p["view"]
            if len(voters) > waiter.spec.f and not waiter.fut.done():
                views = Counter(waiter.views[v] for v in voters if v in waiter.views)
                if views:  # a wrong guess costs one hop: any replica forwards to the primary
                    self._views[waiter.spec.name] = views.most_common(1)[0][0]
                waiter.fut.set_result((vote[0], vote[1], p["result"], tuple(sorted(voters))))

    async def commit(
        self, spec: GroupSpec, value: Any, timeout: float = 30.0, retry: float = 2.0
    ) -> BftResult:
        """Order ``value`` through ``spec``'s replicas; return once ``f + 1`` agree.

        Args:
            spec: the group.
            value: any msgpack-serialisable value.
            timeout: give up after this many seconds.
            retry: re-send the request to every member this often.

        Returns:
            The committed entry.

        Raises:
            ConfigError: this agent is a member (replicas cannot be clients).
            ConsensusTimeout: fewer than ``f + 1`` matching replies in time.
            Unroutable: no member of the group ever started.
            BrokerError: the broker did not confirm the request.
        """
        agent = self.agent
        if agent.id in spec.members:
            raise ConfigError(f"{agent.id!r} is a member of group {spec.name!r}, not a client")
        ts = self._last_ts = max(time.time_ns() // 1000, self._last_ts + 1)
        op = {"g": spec.name, "v": value, "r": agent.reply_queue}
        wire = encode_message(sign(Request(agent.id, op, ts), self._sign))
        loop = asyncio.get_running_loop()
        waiter = _Waiter(spec, loop.create_future())
        self._waiting[(spec.name, ts)] = waiter
        started = time.perf_counter()
        deadline = loop.time() + timeout
        try:
            primary: str | None = spec.members[self._views.get(spec.name, 0) % len(spec.members)]
            while (remaining := deadline - loop.time()) > 0:
                # As in Castro & Liskov: first to the primary we believe in, then to all
                # (which is also what makes backups suspect a silent primary).
                await self._send(spec, wire, primary)
                primary = None
                with contextlib.suppress(TimeoutError):
                    seq, digest, result, voters = await asyncio.wait_for(
                        asyncio.shield(waiter.fut), min(retry, remaining)
                    )
                    value_out = result.get("value") if isinstance(result, dict) else None
                    return BftResult(
                        spec.name, seq, value_out, digest, voters, ts, time.perf_counter() - started
                    )
            raise ConsensusTimeout(
                f"group {spec.name!r}: no {spec.f + 1} matching replies within {timeout}s"
            )
        finally:
            del self._waiting[(spec.name, ts)]

    async def _send(self, spec: GroupSpec, wire: bytes, to: str | None) -> None:
        agent, payload = self.agent, {"g": spec.name, "m": wire}
        if to is not None:
            try:
                await agent.send(to, "pbft.request", payload, priority=PRIORITY)
                return
            except (Unroutable, UnknownPeer) as exc:
                log.debug("primary %s unreachable (%s): sending to the whole group", to, exc)
        env = Envelope("pbft.request", payload, receiver=BROADCAST, priority=PRIORITY)
        try:
            await agent.multicast(group_key(spec.name), env)
        except Unroutable:
            raise Unroutable(f"no member of BFT group {spec.name!r} has ever started") from None

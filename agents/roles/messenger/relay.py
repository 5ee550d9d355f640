"""Store and forward: a messenger holds messages for agents that are away.

``robeing send --via MESSENGER --to ID`` seals the message for ``ID`` as
usual (signed by the sender, encrypted to ``ID``: the messenger can neither
read nor alter it) and hands it to the messenger with ``relay.forward``. The
messenger keeps it on disk (``Settings.state_file("relay")``, one file per
message, so it survives the messenger's restart) and delivers it with a
``relay.deliver`` request once ``ID`` heartbeats, until the receiver
acknowledges it or the TTL passes. Then the message is dropped and, when the
sender is an agent, it is told with ``relay.expired``; anyone may ask
``relay.status`` about a message id (``pending``, ``delivered``, ``expired``,
``refused: …`` when the receiver took it and refused it or its handler failed).

The receiver (every agent installs :func:`accept_relayed`) opens the inner
envelope with every check but the age bound — the relay held it on purpose
— and runs its own handler for it, as if it had come straight from its
sender: ``msg.sender`` is the original sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from ....protocol.envelope import DEFAULT_LIMITS, new_id
from ....protocol.errors import (
    AckTimeout,
    BrokerError,
    DecodeError,
    ProtocolError,
    Reject,
    Replay,
    UnknownPeer,
)
from ....protocol.fields import blob, finite, mapping, need, text
from ...context import AgentContext, Message
from ...heartbeats import AgentStatus, follow_heartbeats

log = logging.getLogger(__name__)

MAX_TTL = 7 * 86400.0
DEFAULT_TTL = 3600.0
MAX_HELD = 10_000
RETRY_S = 1.0
ALIVE_WITHIN_S = 5.0
OUTCOMES_KEPT = 10_000


@dataclass(slots=True)
class Held:
    """One message a messenger holds."""

    id: str
    sender: str
    to: str
    sealed: bytes
    stored_at: float
    expires: float

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.sender,
            "to": self.to,
            "sealed": self.sealed,
            "stored_at": self.stored_at,
            "expires": self.expires,
        }

    @classmethod
    def from_data(cls, data: Any) -> Held:
        """Raises: DecodeError: not a held message."""
        d = mapping(data, "held message")
        return cls(
            text(need(d, "id", str), "id", 64),
            text(need(d, "sender", str), "sender", 128),
            text(need(d, "to", str), "to", 128),
            blob(need(d, "sealed", bytes), "sealed"),
            finite(need(d, "stored_at", (int, float)), "stored_at"),
            finite(need(d, "expires", (int, float)), "expires"),
        )


class Relay:
    """A messenger's held messages, on disk, and their delivery."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.dir: Path = agent.settings.state_file("relay")
        self.held: dict[str, Held] = {}
        self.persist = True  # on disk; False when the state directory is not writable
        self.outcomes: OrderedDict[str, str] = OrderedDict()  # id -> delivered | expired
        self.seen: dict[str, float] = {}  # agent id -> last heartbeat
        self.delivered = 0
        self.expired = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, agent: AgentContext) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only file system: hold in memory only
            log.warning("relay cannot keep messages in %s (%s): restarts lose them", self.dir, exc)
            self.persist = False
        for path in sorted(self.dir.glob("*.msg")) if self.persist else ():
            try:
                item = Held.from_data(msgpack.unpackb(path.read_bytes(), raw=False))
            except (DecodeError, ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
                log.warning("dropping unreadable relayed message %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            self.held[item.id] = item
        if self.held:
            log.info("holding %d relayed message(s) from before the restart", len(self.held))
        await follow_heartbeats(agent, self._on_status, f"relay-{os.urandom(3).hex()}")
        self._task = asyncio.create_task(self._loop())

    async def stop(self, agent: AgentContext) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_status(self, status: AgentStatus) -> None:
        if status.state == "alive":
            self.seen[status.id] = status.last_seen
        elif status.state == "leaving":
            self.seen.pop(status.id, None)

    # -- requests -------------------------------------------------------------------------

    def on_forward(self, msg: Message) -> dict[str, Any]:
        """``relay.forward``: ``{"to", "sealed", "ttl"}`` — hold a sealed message for ``to``.

        Raises:
            Reject: malformed, too large, a TTL out of range, or too many held.
        """
        p = msg.payload if isinstance(msg.payload, dict) else {}
        to, sealed, ttl = p.get("to"), p.get("sealed"), p.get("ttl", DEFAULT_TTL)
        if not isinstance(to, str) or not isinstance(sealed, bytes):
            raise Reject("relay.forward needs {'to': agent id, 'sealed': bytes, 'ttl': seconds}")
        if len(sealed) > DEFAULT_LIMITS.max_message_bytes:
            raise Reject("a relayed message must fit in one message; send files with --file")
        if type(ttl) not in (int, float) or not 0 < ttl <= MAX_TTL:
            raise Reject(f"ttl must be in (0, {MAX_TTL:g}] seconds")
        if len(self.held) >= MAX_HELD:
            raise Reject(f"{MAX_HELD} messages held already; try later")
        now = self.agent.clock()
        item = Held(new_id(), msg.sender, to, sealed, now, now + float(ttl))
        self._write(item)
        self.held[item.id] = item
        return {"id": item.id, "to": to, "expires": item.expires}

    def on_status(self, msg: Message) -> dict[str, Any]:
        """``relay.status``: ``{"id"}`` → pending, delivered, expired or unknown."""
        relay_id = msg.payload.get("id") if isinstance(msg.payload, dict) else None
        if relay_id in self.held:
            item = self.held[relay_id]
            return {"id": relay_id, "state": "pending", "to": item.to, "expires": item.expires}
        return {"id": relay_id, "state": self.outcomes.get(str(relay_id), "unknown")}

    # -- delivery -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await self.round()
            except Exception:
                log.exception("relay round failed")

    async def round(self) -> None:
        """Expire what is past its TTL; deliver to receivers heard from lately."""
        now = self.agent.clock()
        for item in sorted(self.held.values(), key=lambda h: h.stored_at):
            if now >= item.expires:
                await self._expire(item)
            elif now - self.seen.get(item.to, -1e18) <= ALIVE_WITHIN_S:
                await self._deliver(item)

    async def _deliver(self, item: Held) -> None:
        payload = {"id": item.id, "sealed": item.sealed, "via": self.agent.id}
        try:
            await self.agent.request(item.to, "relay.deliver", payload, timeout=10)
        except (AckTimeout, BrokerError, UnknownPeer, ConnectionError) as exc:
            log.info("relayed message %s not delivered yet to %s: %s", item.id, item.to, exc)
            return
        except Exception as exc:  # the receiver took it and refused it, or its handler failed
            log.warning("relayed message %s refused by %s: %s", item.id, item.to, exc)
            self._done(item, f"refused: {exc}"[:200])
            return
        self.delivered += 1
        self._done(item, "delivered")

    async def _expire(self, item: Held) -> None:
        self.expired += 1
        self._done(item, "expired")
        cert = self.agent.peer(item.sender)
        if cert is not None and cert.role != "client":  # clients have no inbox: they ask
            with contextlib.suppress(Exception):
                note = {"id": item.id, "to": item.to, "stored_at": item.stored_at}
                await self.agent.send(item.sender, "relay.expired", note)

    def _done(self, item: Held, outcome: str) -> None:
        self.held.pop(item.id, None)
        if self.persist:
            (self.dir / f"{item.id}.msg").unlink(missing_ok=True)
        self.outcomes[item.id] = outcome
        while len(self.outcomes) > OUTCOMES_KEPT:
            self.outcomes.popitem(last=False)

    def _write(self, item: Held) -> None:
        if not self.persist:
            return
        path = self.dir / f"{item.id}.msg"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgpack.packb(item.to_data(), use_bin_type=True))
        tmp.replace(path)

    def report(self) -> dict[str, Any]:
        return {"held": len(self.held), "delivered": self.delivered, "expired": self.expired}


class RelayedIds:
    """Ids of relayed envelopes already run here (a relay retries until acknowledged)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.ids: OrderedDict[str, Any] = OrderedDict()
        self.capacity = capacity

    async def on_deliver(self, msg: Message) -> Any:
        """``relay.deliver``: open the held envelope and run our handler for it.

        Raises:
            Reject: the envelope fails a check, or no handler takes its type.
        """
        p = msg.payload if isinstance(msg.payload, dict) else {}
        sealed = p.get("sealed")
        if not isinstance(sealed, bytes):
            raise Reject("relay.deliver needs {'sealed': bytes}")
        try:
            opened = msg.agent.open_held(sealed)
        except Replay:
            return {"duplicate": True}  # run already; our acknowledgement was lost
        except ProtocolError as exc:
            raise Reject(f"relayed envelope refused ({exc.reason}): {exc}") from exc
        env = opened.envelope
        if env.id in self.ids:
            return self.ids[env.id]
        result = await msg.agent.dispatch(opened, queue=f"relay via {msg.sender}")
        self.ids[env.id] = result
        while len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return result


def accept_relayed(agent: AgentContext) -> None:
    """Let ``agent`` take messages a messenger held for it (every agent that takes work)."""
    agent.handle("relay.deliver", RelayedIds().on_deliver)


def install_relay(agent: AgentContext) -> Relay:
    """Give a messenger its store and forward."""
    relay = Relay(agent)
    agent.on_start(relay.start)
    agent.on_stop(relay.stop)
    agent.handle("relay.forward", relay.on_forward)
    agent.handle("relay.status", relay.on_status)
    return relay

"""Every agent enforces the guardians' quarantine orders; this installs how it learns them.

The runtime refuses a quarantined sender's messages on the one inbound path
(reason ``quarantined``) from the agent's
:class:`~robeing.protocol.quarantine.QuarantineBook`; this module feeds the
book:

* ``guardian.quarantine`` — one signed order, broadcast by a guardian;
* ``guardian.orders`` — a guardian's orders in force, sent to an agent that
  just started: every guardian answers the ``hello`` each agent broadcasts
  at start (no broadcast of its own, so a fleet's start costs no more);
* the agent's state file (``Settings.state_file("quarantine")``): the
  orders in force, rewritten on every change and loaded at start, so a
  restarted agent refuses a quarantined sender before any guardian speaks.

The guardians' access policy (:mod:`robeing.protocol.policy`) travels and
is kept the same way: ``guardian.policy`` (broadcast, or sent in answer to
a ``hello``) and ``Settings.state_file("policy")``.

Every order is verified on its own (:meth:`Order.verify`: signed by an
identity certified as a guardian), wherever it came from — the file too,
which anyone with access to the disk could edit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import msgpack

from ....protocol.errors import DecodeError, Reject
from ....protocol.policy import AccessPolicy
from ....protocol.quarantine import Order
from ...context import AgentContext, Message

log = logging.getLogger(__name__)

MAX_ORDERS_PER_MESSAGE = 200  # 200 orders of at most 4 KiB fit in a message


def role_of(agent: AgentContext, agent_id: str) -> str | None:
    cert = agent.peer(agent_id)
    return None if cert is None else cert.role


def take(agent: AgentContext, raw: Any) -> Order | None:
    """Verify a signed order and apply it; returns it when it is now in force.

    Raises:
        DecodeError: not a valid order from a certified guardian.
    """
    order = Order.verify(raw, agent.check_signature, lambda a: role_of(agent, a))
    if agent.quarantine.apply(order, raw, agent.clock()):
        log.warning(
            "%s %s by guardian %s: %s",
            order.target,
            "quarantined" if order.quarantines else "released",
            order.guardian,
            order.reason,
        )
        return order
    return None


def take_policy(agent: AgentContext, raw: Any) -> bool:
    """Verify an access policy and apply it if newer (then keep it on disk).

    Raises:
        DecodeError: not a policy signed by a certified guardian.
    """
    policy = AccessPolicy.verify(raw, agent.check_signature, lambda a: role_of(agent, a))
    if not agent.access_policy.apply(policy, raw):
        return False
    log.warning("access policy v%d of %s in force", policy.version, policy.guardian)
    path = agent.settings.state_file("policy")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(raw)
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not keep the access policy in %s: %s", path, exc)
    return True


class Enforcement:
    """Feeds one agent's quarantine book and keeps it on disk."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.path: Path = agent.settings.state_file("quarantine")
        self.policy_path: Path = agent.settings.state_file("policy")
        self.invalid = 0  # orders that did not verify (file or wire)

    async def start(self, agent: AgentContext) -> None:
        """Load the orders and policy kept on disk (guardians send theirs on our hello)."""
        self.load()
        try:
            self.take_policy(self.policy_path.read_bytes())
        except FileNotFoundError:
            pass
        except DecodeError as exc:
            log.warning("ignoring the access policy kept in %s: %s", self.policy_path, exc)
        agent.quarantine.listeners.append(lambda target, q: self.save())

    def load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            orders = msgpack.unpackb(raw, raw=False, max_bin_len=1 << 20)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError) as exc:
            log.warning("ignoring unreadable quarantine state %s: %s", self.path, exc)
            return
        for item in orders if isinstance(orders, list) else []:
            self._take(item)

    def save(self) -> None:
        """Write the orders in force (atomically: a crash leaves the old file or the new)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(msgpack.packb(self.agent.quarantine.orders(), use_bin_type=True))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("could not keep quarantine orders in %s: %s", self.path, exc)

    def _take(self, raw: Any) -> Order | None:
        try:
            return take(self.agent, raw)
        except DecodeError as exc:
            self.invalid += 1
            log.warning("refusing a quarantine order: %s", exc)
            return None

    def on_order(self, msg: Message) -> bool:
        """``guardian.quarantine``: one signed order.

        Raises:
            Reject: it does not verify (dead-lettered, blaming its sender).
        """
        try:
            return take(self.agent, msg.payload) is not None
        except DecodeError as exc:
            self.invalid += 1
            raise Reject(f"invalid quarantine order: {exc}") from exc

    def on_orders(self, msg: Message) -> int:
        """``guardian.orders``: a guardian's orders in force (each verified on its own)."""
        items = msg.payload if isinstance(msg.payload, list) else []
        return sum(self._take(raw) is not None for raw in items[:MAX_ORDERS_PER_MESSAGE])

    def take_policy(self, raw: Any) -> bool:
        return take_policy(self.agent, raw)

    def on_policy(self, msg: Message) -> bool:
        """``guardian.policy``: a signed access policy.

        Raises:
            Reject: it does not verify.
        """
        try:
            return self.take_policy(msg.payload)
        except DecodeError as exc:
            self.invalid += 1
            raise Reject(f"invalid access policy: {exc}") from exc

    def report(self) -> dict[str, Any]:
        return {"quarantined": self.agent.quarantine.quarantined(), "invalid": self.invalid}


def enforce(agent: AgentContext) -> Enforcement:
    """Make ``agent`` learn, keep and (through the runtime) enforce quarantine orders."""
    enforcement = Enforcement(agent)
    agent.on_start(enforcement.start)
    agent.handle("guardian.quarantine", enforcement.on_order)
    agent.handle("guardian.orders", enforcement.on_orders)
    agent.handle("guardian.policy", enforcement.on_policy)
    return enforcement

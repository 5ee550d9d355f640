"""The guardian: watches refusals, signs and distributes quarantine orders, reports.

Quarantine orders come from two places:

* automatically, when one sender's *verified* refusals (signed rejection
  reports, :mod:`.watch`) reach ``Settings.quarantine_after`` within the
  alert window, reported by at least two agents;
* on an operator's command (``robeing guardian quarantine ID --reason …`` /
  ``release ID``): a ``guardian.command`` request from an identity
  certified as a client or a guardian.

Either way the guardian signs the order (:class:`~robeing.protocol.quarantine.Order`),
applies it to its own book (kept on disk by :mod:`.orders`) and broadcasts
it as ``guardian.quarantine``; an agent that starts later is sent every
order in force (and the access policy) in answer to its ``hello``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ....protocol.errors import DecodeError, Reject
from ....protocol.evidence import ed25519_signer
from ....protocol.policy import AccessPolicy
from ....protocol.quarantine import Order
from ...builtins import hello
from ...context import AgentContext, DeadLetter, Message
from ...heartbeats import AgentStatus, follow_heartbeats
from .orders import MAX_ORDERS_PER_MESSAGE, take, take_policy
from .rates import Rates
from .verify import Validator
from .watch import MIN_REPORTERS, DeadLetterWatch, verified_report

log = logging.getLogger(__name__)

OPERATOR_ROLES = frozenset({"client", "guardian"})


class Guardian:
    """Watches dead letters, alerts on offenders, quarantines, reports its counts."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        # Two reporters at least: one compromised agent cannot get another alerted alone.
        self.watch = DeadLetterWatch(min_reporters=MIN_REPORTERS)
        self.sign = ed25519_signer(agent.identity.signing_key)
        self.orders_issued = 0
        self.extras: list[Any] = []  # report sections of the guardian's other duties
        self.watchers: list[Any] = []  # what else follows the fleet's heartbeats

    async def start(self, agent: AgentContext) -> None:
        await agent.watch_dead_letters(self.on_dead_letter)
        await follow_heartbeats(agent, self._on_status, f"guardian-{agent.incarnation}")

    def _on_status(self, status: AgentStatus) -> None:
        for watcher in self.watchers:
            watcher(status)

    # -- refusals -------------------------------------------------------------------------

    async def on_dead_letter(self, letter: DeadLetter) -> None:
        watch = self.watch
        report = verified_report(self.agent, letter, watch)
        if report is None:
            watch.unverified(letter.reason)
            return
        now = time.time()
        offender = watch.observe(report.reason, report.queue, report.sender, now, report.reporter)
        if offender is not None:
            await self.alert(
                offender,
                report.reason,
                count=watch.by_sender[offender],
                window_s=watch.window,
                reporters=sorted(watch.reporters.get(offender, ())),
            )
        sender = report.sender
        if (
            sender is not None
            and not self.agent.quarantine.blocks(sender)
            and watch.supports_quarantine(sender, self.agent.settings.quarantine_after, now)
        ):
            reporters = sorted(watch.reporters.get(sender, ()))
            await self.order(
                sender,
                "quarantine",
                f"{watch.recent(sender, now)} verified refusals in {watch.window:.0f}s "
                f"(last: {report.reason})",
                tuple(reporters),
            )

    async def alert(self, offender: str, reason: str, **details: Any) -> None:
        """Broadcast a signed ``guardian.alert`` about ``offender`` (logged everywhere)."""
        log.warning("alert about %s: %s %s", offender, reason, details or "")
        payload = {"sender": offender, "reason": reason, **details}
        try:
            await self.agent.broadcast("guardian.alert", payload)
        except Exception as exc:
            log.warning("could not broadcast alert: %s", exc)

    # -- orders ---------------------------------------------------------------------------

    async def order(
        self, target: str, action: str, reason: str, evidence: tuple[str, ...] = ()
    ) -> Order:
        """Sign an order, take it ourselves (kept on disk) and broadcast it.

        Raises:
            BrokerError: the broadcast was not confirmed (the order holds here).
        """
        order = Order(self.agent.id, target, action, reason, self.agent.clock(), evidence)
        raw = order.sign(self.sign)
        take(self.agent, raw)
        self.orders_issued += 1
        await self.agent.broadcast("guardian.quarantine", raw, priority=9)
        return order

    async def on_command(self, msg: Message) -> dict[str, Any]:
        """``guardian.command``: ``{"action": "quarantine"|"release", "target", "reason"}``.

        Raises:
            Reject: the requester is not an operator, or the command is malformed.
        """
        if msg.sender_role not in OPERATOR_ROLES:
            raise Reject(f"only {sorted(OPERATOR_ROLES)} identities may order quarantines")
        p = msg.payload if isinstance(msg.payload, dict) else {}
        if p.get("action") == "policy":
            return await self.set_policy(p.get("deny") or {})
        action, target = p.get("action"), p.get("target")
        if action not in ("quarantine", "release") or not isinstance(target, str) or not target:
            raise Reject("guardian.command needs {'action': quarantine|release, 'target': id}")
        if target == self.agent.id:
            raise Reject("a guardian does not quarantine itself")
        reason = str(p.get("reason") or f"{action} ordered by {msg.sender}")[:200]
        order = await self.order(target, action, reason, (f"operator:{msg.sender}",))
        return {"target": target, "action": action, "guardian": order.guardian, "at": order.at}

    async def set_policy(self, deny: Any) -> dict[str, Any]:
        """Sign a new access policy (the next version), take it, broadcast it.

        Raises:
            Reject: malformed rules.
        """
        try:
            rules = AccessPolicy.parse_rules(deny)
        except DecodeError as exc:
            raise Reject(f"bad policy: {exc}") from exc
        current = self.agent.access_policy.current
        version = 1 if current is None else current.version + 1
        raw = AccessPolicy(self.agent.id, version, self.agent.clock(), rules).sign(self.sign)
        take_policy(self.agent, raw)
        await self.agent.broadcast("guardian.policy", raw, priority=9)
        return {"version": version, "guardian": self.agent.id, "deny": rules}

    async def on_hello(self, msg: Message) -> None:
        """A starting agent's ``hello``: answer it as everyone does, then send it our
        orders in force and the access policy."""
        await hello(msg)
        if msg.envelope.is_broadcast:
            try:
                await self.send_orders(msg.sender)
            except Exception as exc:
                log.warning("could not send the orders in force to %s: %s", msg.sender, exc)

    async def send_orders(self, to: str) -> None:
        """Every order in force and the access policy, to ``to``."""
        policy = self.agent.access_policy.raw
        if policy is not None:
            await self.agent.send(to, "guardian.policy", policy, priority=8)
        orders = self.agent.quarantine.orders()
        for i in range(0, len(orders), MAX_ORDERS_PER_MESSAGE):
            chunk = orders[i : i + MAX_ORDERS_PER_MESSAGE]
            await self.agent.send(to, "guardian.orders", chunk, priority=8)

    def report(self) -> dict[str, Any]:
        out = {
            **self.watch.report(),
            "quarantined": self.agent.quarantine.quarantined(),
            "orders_issued": self.orders_issued,
            "policy": self.agent.access_policy.describe(),
        }
        for extra in self.extras:
            out.update(extra())
        return out


def install(agent: AgentContext) -> Guardian:
    """Give a guardian its dead-letter watch, orders, heartbeat section and report handler."""
    guardian = Guardian(agent)
    agent.on_start(guardian.start)
    agent.add_heartbeat_extra(lambda: {"guardian": guardian.report()})
    agent.handle("guardian.report", lambda msg: guardian.report())
    agent.handle("guardian.command", guardian.on_command)
    agent.handle("hello", guardian.on_hello, replace=True)
    validator, rates = Validator(agent, guardian), Rates(agent, guardian)
    agent.handle("guardian.audit", validator.on_audit)
    guardian.watchers += [validator.on_status, rates.on_status]
    guardian.extras += [validator.report, rates.report]
    return guardian

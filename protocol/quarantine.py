"""Quarantine orders and the book every agent keeps of them (pure: no I/O, clock passed in).

A guardian quarantines an agent by signing an :class:`Order` — a statement
(:mod:`robeing.protocol.evidence`) in the domain ``robeing.quarantine.v1``
naming the target, ``quarantine`` or ``release``, the reason, the time and
the evidence (the reporters whose verified refusals crossed the threshold,
or the validation mismatch) — and distributing it. An order is
self-verifying: anyone holding the signer's certificate checks it, so it
can be stored, relayed and reloaded after a restart without trusting
whoever carried it. Only an order signed by an identity certified as a
*guardian* is accepted (:meth:`Order.verify`).

Every agent keeps a :class:`QuarantineBook`. Rules:

* The newest order about a target wins (by its time), so a later release lifts an
  earlier quarantine, whichever guardian signed either, and every agent
  that saw the same orders agrees, in whatever order they came (a tie
  goes to the release, then to the greater guardian id).
* An order timed more than ``max_skew`` ahead of the receiver's clock is
  refused: it could never be overruled.
* Bounded: at most ``capacity`` targets; past it, the oldest release is
  forgotten first (a release is the default state), then the oldest order.
* Idempotent: applying an order twice, or an older one, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import DecodeError, ProtocolError
from .evidence import (
    SignatureCheck,
    Signer,
    decode_statement,
    encode_statement,
    split_signed,
)
from .fields import finite, items, strings, text

__all__ = [
    "ACTIONS",
    "QUARANTINE_DOMAIN",
    "Order",
    "QuarantineBook",
    "Quarantined",
]

QUARANTINE_DOMAIN = b"robeing.quarantine.v1"
ACTIONS = ("quarantine", "release")
MAX_ORDER_BYTES = 4096
MAX_REASON = 200
MAX_EVIDENCE = 32


class Quarantined(ProtocolError):
    """The sender is quarantined by a guardian's order: its messages are refused."""

    reason = "quarantined"


@dataclass(frozen=True, slots=True)
class Order:
    """A guardian's signed order about one agent.

    Attributes:
        guardian: the signer. target: the agent it is about.
        action: ``quarantine`` or ``release``. reason: why (free text).
        at: the guardian's clock. evidence: who or what supports it.
    """

    guardian: str
    target: str
    action: str
    reason: str
    at: float
    evidence: tuple[str, ...] = ()

    @property
    def quarantines(self) -> bool:
        return self.action == "quarantine"

    def sign(self, signer: Signer) -> bytes:
        """The wire form ``msgpack([statement, signature])``.

        Raises:
            ValueError: an unknown action.
        """
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        content = [self.action, self.reason[:MAX_REASON], self.at, list(self.evidence)]
        statement = encode_statement(QUARANTINE_DOMAIN, self.guardian, (self.target,), content)
        return msgpack.packb([statement, signer(statement)], use_bin_type=True)

    @classmethod
    def verify(
        cls, data: Any, check: SignatureCheck, role_of: Callable[[str], str | None]
    ) -> Order:
        """Read an order and check it was signed by a certified guardian.

        Args:
            data: the wire form.
            check: whether an agent's certified key signed some bytes.
            role_of: the certified role of an agent (None: unknown).

        Raises:
            DecodeError: malformed, not signed by its guardian, or the signer
                is not certified as a guardian.
        """
        if not isinstance(data, bytes) or len(data) > MAX_ORDER_BYTES:
            raise DecodeError("a quarantine order is at most 4096 bytes")
        statement, signature = split_signed(data, "quarantine order")
        st = decode_statement(statement, QUARANTINE_DOMAIN)
        (target,) = items(list(st.slot), "order slot", 1)
        action, reason, at, evidence = items(st.content, "order content", 4)
        order = cls(
            text(st.signer, "guardian", 128),
            text(target, "target", 128),
            text(action, "action", 16),
            text(reason, "reason", MAX_REASON),
            finite(at, "at"),
            strings(evidence, "evidence", max_items=MAX_EVIDENCE, max_len=200),
        )
        if order.action not in ACTIONS:
            raise DecodeError(f"unknown quarantine action {order.action!r:.20}")
        if role_of(order.guardian) != "guardian":
            raise DecodeError(f"{order.guardian!r} is not a certified guardian")
        if not check(order.guardian, statement, signature):
            raise DecodeError(f"quarantine order of {order.guardian!r} does not verify")
        return order

    def _rank(self) -> tuple[float, int, str]:
        # Newest wins; at equal times a release, then the guardian id (any fixed rule).
        return (self.at, 1 if self.action == "release" else 0, self.guardian)


class QuarantineBook:
    """The orders an agent knows, newest per target (see the module doc).

    Attributes:
        listeners: called with ``(target, quarantined)`` when a target's state changes.
    """

    def __init__(self, capacity: int = 10_000, max_skew: float = 30.0) -> None:
        self.capacity = capacity
        self.max_skew = max_skew
        self._orders: dict[str, tuple[Order, bytes]] = {}
        self.listeners: list[Callable[[str, bool], None]] = []

    def apply(self, order: Order, raw: bytes, now: float) -> bool:
        """Take a verified order (``raw``: its signed wire form) into account.

        Returns:
            Whether it is now the order in force for its target.

        Raises:
            DecodeError: it is timed too far in the future.
        """
        if order.at > now + self.max_skew:
            raise DecodeError(f"quarantine order timed {order.at - now:.0f}s in the future")
        current = self._orders.get(order.target)
        if current is not None and current[0]._rank() >= order._rank():
            return False
        was = self.blocks(order.target)
        self._orders[order.target] = (order, raw)
        self._bound()
        if was != order.quarantines:
            for listener in list(self.listeners):
                listener(order.target, order.quarantines)
        return True

    def blocks(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is quarantined."""
        entry = self._orders.get(agent_id)
        return entry is not None and entry[0].quarantines

    def check(self, sender: str) -> None:
        """Refuse a quarantined sender.

        Raises:
            Quarantined: ``sender`` is quarantined.
        """
        entry = self._orders.get(sender)
        if entry is not None and entry[0].quarantines:
            order = entry[0]
            raise Quarantined(f"{sender!r} is quarantined by {order.guardian}: {order.reason}")

    def quarantined(self) -> dict[str, dict[str, Any]]:
        """Every quarantined agent: by whom, why, since when, on what evidence."""
        return {
            target: {
                "guardian": o.guardian,
                "reason": o.reason,
                "at": o.at,
                "evidence": list(o.evidence),
            }
            for target, (o, _) in sorted(self._orders.items())
            if o.quarantines
        }

    def orders(self) -> list[bytes]:
        """The signed orders in force, oldest first (to store or hand on)."""
        return [raw for _, raw in sorted(self._orders.values(), key=lambda e: e[0].at)]

    def __len__(self) -> int:
        return len(self._orders)

    def _bound(self) -> None:
        while len(self._orders) > self.capacity:
            entries = sorted(self._orders.values(), key=lambda e: (e[0].quarantines, e[0].at))
            del self._orders[entries[0][0].target]

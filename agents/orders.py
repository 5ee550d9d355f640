"""How an agent obeys a kind of coordinator order: decode, fence by stamp, apply.

Membership orders (:mod:`.membership`) and contribution orders
(:mod:`.contributions`) share it. Who may send an order is the role table's
business (only coordinators); this module keeps the one rule every order
kind has: an order stamped older than the newest one obeyed is refused as
``stale_epoch`` (dead-lettered by the runtime) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..protocol.clusters.orders import OrderFence, Stamped
from ..protocol.election import StaleEpoch
from .context import AgentContext, Message

__all__ = ["obey"]

OrderT = TypeVar("OrderT", bound=Stamped)


def obey(
    agent: AgentContext,
    order_type: str,
    decode: Callable[[Any], OrderT],
    apply: Callable[[Message, OrderT], dict[str, Any]],
) -> OrderFence:
    """Handle ``order_type`` on ``agent``; returns its fence (for tests and reports).

    ``decode`` raises DecodeError on a malformed payload; ``apply`` runs only
    for an order not older than any obeyed, and its result is the reply.
    """
    fence = OrderFence()

    def on_order(msg: Message) -> dict[str, Any]:
        order = decode(msg.payload)
        if not fence.admit(order):
            raise StaleEpoch(order.epoch, fence.stamp[0])
        return apply(msg, order)

    agent.handle(order_type, on_order)
    return fence

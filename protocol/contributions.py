"""Contribution orders: the coordinator changes what a running agent contributes (pure).

An operator asks the active coordinator (``pool.contribute``, which needs the
``operate`` capability: clients and coordinators); the coordinator checks the
agent is live and orders it (``pool.contribution``, which needs ``assign``:
coordinators only). The order carries the agent's whole new contribution —
a resource left out is contributed no more, as with ``ROBEING_RESOURCES`` —
and is stamped ``(epoch, seq)``; an agent obeys an order only if its stamp
is not older than the newest it obeyed (:class:`ContributionFence`; the same
order again is obeyed again, with no effect), so a deposed
coordinator or an overtaken order cannot undo a later one. The agent's next
heartbeat announces the new contribution and the coordinator's ledger
follows it. The order is kept in memory: a restarted agent contributes its
``ROBEING_RESOURCES`` again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .clusters.orders import OrderFence
from .errors import DecodeError
from .fields import count, need
from .resources import InvalidResources, Resources

__all__ = ["ORDER_TYPE", "ContributionFence", "ContributionOrder"]

ORDER_TYPE = "pool.contribution"
MAX_STAMP = 2**62


@dataclass(frozen=True, slots=True)
class ContributionOrder:
    """Contribute ``resources`` (all of it: the rest is withdrawn), as of ``(epoch, seq)``."""

    resources: Resources
    epoch: int
    seq: int

    def to_data(self) -> dict[str, Any]:
        return {"resources": self.resources.to_mapping(), "epoch": self.epoch, "seq": self.seq}

    @staticmethod
    def from_data(data: Any) -> ContributionOrder:
        """Raises: DecodeError: malformed, an unknown resource or a bad quantity."""
        try:
            resources = Resources.from_mapping(need(data, "resources", dict))
        except InvalidResources as exc:
            raise DecodeError(f"field 'resources': {exc}") from None
        return ContributionOrder(
            resources,
            count(need(data, "epoch", int), "epoch", high=MAX_STAMP),
            count(need(data, "seq", int), "seq", high=MAX_STAMP),
        )


# The same fence as membership orders': one stamp that only grows, per kind of order.
ContributionFence = OrderFence

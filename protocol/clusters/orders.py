"""Membership orders: the coordinator tells an agent which cluster it is in.

A ``cluster.member`` order (from a coordinator only: it needs the ``assign``
capability) names the cluster and is stamped ``(epoch, seq)``: the
coordinator's epoch and the number of directory records it had applied.
An agent obeys an order only if its stamp is not older than the newest it
obeyed (:class:`OrderFence`), so a deposed coordinator, or an order
overtaken by a later one, cannot move it back. A coordinator sends the order
when it forms or dissolves a cluster and whenever an agent's heartbeat
announces another cluster than the directory assigns it (after a restart,
or a lost order), so agents converge on the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import DecodeError
from ..fields import count, need
from .names import cluster_name_problem

__all__ = ["ORDER_TYPE", "MembershipOrder", "OrderFence"]

ORDER_TYPE = "cluster.member"
MAX_STAMP = 2**62


@dataclass(frozen=True, slots=True)
class MembershipOrder:
    """Be in ``cluster`` (``default``: leave any named one), as of ``(epoch, seq)``."""

    cluster: str
    epoch: int
    seq: int

    def to_data(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "epoch": self.epoch, "seq": self.seq}

    @staticmethod
    def from_data(data: Any) -> MembershipOrder:
        """Raises: DecodeError: malformed, or an invalid cluster name."""
        cluster = need(data, "cluster", str)
        if (problem := cluster_name_problem(cluster)) is not None:
            raise DecodeError(problem)
        return MembershipOrder(
            cluster,
            count(need(data, "epoch", int), "epoch", high=MAX_STAMP),
            count(need(data, "seq", int), "seq", high=MAX_STAMP),
        )


class Stamped(Protocol):
    """An order stamped ``(epoch, seq)`` by the coordinator that sent it."""

    @property
    def epoch(self) -> int: ...

    @property
    def seq(self) -> int: ...


class OrderFence:
    """The newest order stamp obeyed; older ones are refused.

    One fence per kind of order an agent obeys (membership here, pool
    contributions in :mod:`robeing.protocol.contributions`).

    Invariant: the stamp only grows, so once an agent obeyed ``(e, s)`` it
    obeys nothing stamped before it.
    """

    __slots__ = ("stamp",)

    def __init__(self) -> None:
        self.stamp = (0, 0)

    def admit(self, order: Stamped) -> bool:
        """Whether to obey ``order`` (recording its stamp when so)."""
        stamp = (order.epoch, order.seq)
        if stamp < self.stamp:
            return False
        self.stamp = stamp
        return True

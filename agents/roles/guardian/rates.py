"""Threat detection: rate anomalies per sender, from the counts receivers announce.

Every agent counts the messages it accepted per verified sender and puts the
busiest in its heartbeats (``stats.from``); the guardian feeds them to a
:class:`~robeing.protocol.anomaly.RateWatch` and broadcasts a signed
``guardian.alert`` (reason ``rate_anomaly`` or ``fanout``) when one sender
suddenly sends far more than usual, or reaches very many receivers, as at
least two receivers report. Thresholds are settings (``--anomaly-factor``,
``--anomaly-floor``, ``--anomaly-fanout``). Rates only alert: they are
receivers' claims; quarantine needs refusals or results that verify.
Coordinators are not watched: their assignments burst with every burst of
submissions, by design (measured: a 2,000-task batch took a coordinator
from 8 to 110 messages per second at each of three workers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ....protocol.anomaly import Anomaly, RateLimits, RateWatch
from ...context import AgentContext
from ...heartbeats import AgentStatus

log = logging.getLogger(__name__)


class Rates:
    """A guardian's rate watch over the fleet's heartbeats."""

    def __init__(self, agent: AgentContext, guardian: Any) -> None:
        st = agent.settings
        self.agent = agent
        self.guardian = guardian
        self.watch = RateWatch(
            RateLimits(factor=st.anomaly_factor, floor=st.anomaly_floor, fanout=st.anomaly_fanout)
        )
        self.alerts = 0
        self.roles: dict[str, str] = {}  # agent -> certified role, from its heartbeats
        self._tasks: set[asyncio.Task[None]] = set()

    def on_status(self, status: AgentStatus) -> None:
        self.roles[status.id] = status.role
        if len(self.roles) > 10_000:
            self.roles.pop(next(iter(self.roles)))
        counts = status.stats.get("from")
        if not isinstance(counts, dict):
            return
        # A coordinator's traffic follows its submissions by design: bursts are its job.
        counts = {s: n for s, n in counts.items() if self.roles.get(s) != "coordinator"}
        for anomaly in self.watch.report(status.id, counts, status.last_seen):
            self.alerts += 1
            task = asyncio.get_running_loop().create_task(self._alert(anomaly))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _alert(self, a: Anomaly) -> None:
        reason = "rate_anomaly" if a.kind == "rate" else "fanout"
        await self.guardian.alert(
            a.sender,
            reason,
            rate=round(a.rate, 1),
            baseline=round(a.baseline, 1),
            receivers=a.receivers,
        )

    def report(self) -> dict[str, Any]:
        return {
            "rates": {"alerts": self.alerts, "busiest": self.watch.rates(self.agent.clock(), 5)}
        }

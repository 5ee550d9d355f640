"""Guardian: security, monitoring and validation.

The guardian watches every dead letter through its own bounded feed (the
shared ``robeing.dead-letters`` queue keeps the messages themselves for
operators), counts them by reason, by source queue
and by claimed sender, and raises a signed ``guardian.alert`` broadcast when
one sender's rejections cross ``ALERT_THRESHOLD`` within ``ALERT_WINDOW``
seconds. Its counts travel in its heartbeats and answer ``guardian.report``
requests. The sender named in a dead letter is only *claimed* (the message
failed its checks); alerts say so.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Any

from ...protocol.envelope import split_wire
from ...protocol.errors import ProtocolError
from ..context import AgentContext, DeadLetter

log = logging.getLogger(__name__)

ALERT_THRESHOLD = 20
ALERT_WINDOW = 60.0


class DeadLetterWatch:
    """Counts dead letters and decides when to alert (pure, clock passed in)."""

    def __init__(self, threshold: int = ALERT_THRESHOLD, window: float = ALERT_WINDOW) -> None:
        self.threshold = threshold
        self.window = window
        self.by_reason: Counter[str] = Counter()
        self.by_queue: Counter[str] = Counter()
        self.by_sender: Counter[str] = Counter()
        self._recent: dict[str, deque[float]] = {}
        self._alerted: dict[str, float] = {}

    def observe(
        self, reason: str, queue: str, claimed_sender: str | None, now: float
    ) -> str | None:
        """Record one dead letter.

        Returns:
            The sender to alert about, when it just crossed the threshold.
        """
        self.by_reason[reason] += 1
        self.by_queue[queue] += 1
        if claimed_sender is None:
            return None
        self.by_sender[claimed_sender] += 1
        times = self._recent.setdefault(claimed_sender, deque())
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        if (
            len(times) >= self.threshold
            and now - self._alerted.get(claimed_sender, -1e18) > self.window
        ):
            self._alerted[claimed_sender] = now
            return claimed_sender
        return None

    def report(self) -> dict[str, Any]:
        return {
            "dead_letters": sum(self.by_reason.values()),
            "by_reason": dict(self.by_reason),
            "by_queue": dict(self.by_queue),
            "top_senders": dict(self.by_sender.most_common(10)),
        }


def _claimed_sender(body: bytes) -> str | None:
    try:
        return str(split_wire(body).fields["sender"])
    except (ProtocolError, KeyError):
        return None


class Guardian:
    """Watches dead letters, alerts on offenders, reports its counts."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.watch = DeadLetterWatch()

    async def start(self, agent: AgentContext) -> None:
        await agent.watch_dead_letters(self.on_dead_letter)

    async def on_dead_letter(self, letter: DeadLetter) -> None:
        watch = self.watch
        sender = _claimed_sender(letter.body)
        offender = watch.observe(letter.reason, letter.source, sender, time.time())
        if offender is None:
            return
        log.warning(
            "agent %s (claimed) has %d+ rejected messages in %.0fs",
            offender,
            watch.threshold,
            watch.window,
        )
        try:
            await self.agent.broadcast(
                "guardian.alert",
                {
                    "claimed_sender": offender,
                    "reason": letter.reason,
                    "count": watch.by_sender[offender],
                    "window_s": watch.window,
                },
            )
        except Exception as exc:
            log.warning("could not broadcast alert: %s", exc)


def install(agent: AgentContext) -> Guardian:
    """Give a guardian its dead-letter watch, heartbeat section and report handler."""
    guardian = Guardian(agent)
    agent.on_start(guardian.start)
    agent.add_heartbeat_extra(lambda: {"guardian": guardian.watch.report()})
    agent.handle("guardian.report", lambda msg: guardian.watch.report())
    return guardian

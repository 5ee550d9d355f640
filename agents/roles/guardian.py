"""Guardian: security, monitoring and validation.

The guardian watches every dead letter through its own bounded feed (the
shared ``robeing.dead-letters`` queue keeps the messages themselves for
operators). A dead letter proves nothing by itself — anyone allowed to
dead-letter can publish one — so the guardian trusts only the refusing
agent's signed report attached to it (:mod:`robeing.protocol.rejections`):
a report that verifies against its reporter's certificate and matches the
stored bytes is counted under its reason and queue, and held against the
sender it blames (a sender whose signature had verified before the
refusal, and whose signature the guardian checks again on the stored bytes,
so a reporter cannot blame an agent for bytes it never signed). Anything
else — no report, a forged or mismatched one, a letter the broker
dead-lettered itself — is counted as unverified and blames nobody. When one
sender's verified refusals cross ``ALERT_THRESHOLD`` within ``ALERT_WINDOW``
seconds, reported by at least ``MIN_REPORTERS`` agents, the guardian
broadcasts a signed ``guardian.alert`` naming the reporters. Its counts travel in its
heartbeats and answer ``guardian.report`` requests.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter, deque
from typing import Any

from ...protocol.envelope import split_wire
from ...protocol.errors import DecodeError, ProtocolError
from ...protocol.rejections import RejectionReport
from ..context import AgentContext, DeadLetter

log = logging.getLogger(__name__)

ALERT_THRESHOLD = 20
ALERT_WINDOW = 60.0
MIN_REPORTERS = 2


class DeadLetterWatch:
    """Counts dead letters and decides when to alert (pure, clock passed in)."""

    def __init__(
        self,
        threshold: int = ALERT_THRESHOLD,
        window: float = ALERT_WINDOW,
        min_reporters: int = 1,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.min_reporters = min_reporters
        self.by_reason: Counter[str] = Counter()
        self.by_queue: Counter[str] = Counter()
        self.by_sender: Counter[str] = Counter()
        self.unverified_by_reason: Counter[str] = Counter()
        self.unsupported_blame: Counter[str] = Counter()  # reporter -> blames it could not back
        self.reporters: dict[str, set[str]] = {}  # blamed sender -> who reported it
        self._recent: dict[str, deque[float]] = {}
        self._alerted: dict[str, float] = {}

    def observe(
        self, reason: str, queue: str, sender: str | None, now: float, reporter: str = ""
    ) -> str | None:
        """Record one verified refusal (``sender``: whom it blames, if anyone).

        Returns:
            The sender to alert about, when it just crossed the threshold.
        """
        self.by_reason[reason] += 1
        self.by_queue[queue] += 1
        if sender is None:
            return None
        self.by_sender[sender] += 1
        self.reporters.setdefault(sender, set()).add(reporter)
        times = self._recent.setdefault(sender, deque())
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        if (
            len(times) >= self.threshold
            and len(self.reporters[sender]) >= self.min_reporters
            and now - self._alerted.get(sender, -1e18) > self.window
        ):
            self._alerted[sender] = now
            return sender
        return None

    def unverified(self, reason: str) -> None:
        """Record a dead letter whose origin cannot be verified (it blames nobody)."""
        self.unverified_by_reason[reason] += 1

    def report(self) -> dict[str, Any]:
        return {
            "dead_letters": sum(self.by_reason.values()),
            "by_reason": dict(self.by_reason),
            "by_queue": dict(self.by_queue),
            "top_senders": dict(self.by_sender.most_common(10)),
            "unverified": sum(self.unverified_by_reason.values()),
            "unverified_by_reason": dict(self.unverified_by_reason),
            "unsupported_blame": dict(self.unsupported_blame),
        }


class Guardian:
    """Watches dead letters, alerts on offenders, reports its counts."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        # Two reporters at least: one compromised agent cannot get another alerted alone.
        self.watch = DeadLetterWatch(min_reporters=MIN_REPORTERS)

    async def start(self, agent: AgentContext) -> None:
        await agent.watch_dead_letters(self.on_dead_letter)

    async def on_dead_letter(self, letter: DeadLetter) -> None:
        watch = self.watch
        report = self._verified(letter)
        if report is None:
            watch.unverified(letter.reason)
            return
        offender = watch.observe(
            report.reason, report.queue, report.sender, time.time(), report.reporter
        )
        if offender is None:
            return
        reporters = sorted(watch.reporters.get(offender, ()))
        log.warning(
            "agent %s has %d+ refused messages in %.0fs (reported by %s)",
            offender,
            watch.threshold,
            watch.window,
            ", ".join(reporters),
        )
        try:
            await self.agent.broadcast(
                "guardian.alert",
                {
                    "sender": offender,
                    "reason": report.reason,
                    "count": watch.by_sender[offender],
                    "window_s": watch.window,
                    "reporters": reporters,
                },
            )
        except Exception as exc:
            log.warning("could not broadcast alert: %s", exc)

    def _verified(self, letter: DeadLetter) -> RejectionReport | None:
        """The letter's report if it verifies and is about these bytes, else None.

        The sender it blames is kept only if the stored bytes are an envelope
        that sender signed: a reporter cannot pin a refusal on an agent that
        never sent anything like it.
        """
        if letter.report is None:
            return None
        try:
            report = RejectionReport.verify(letter.report, self.agent.check_signature)
        except DecodeError as exc:
            log.debug("unverifiable dead-letter report: %s", exc)
            return None
        if not report.matches(letter.body):
            return None
        if report.sender is not None and not self._signed_by(letter.body, report.sender):
            self.watch.unsupported_blame[report.reporter] += 1
            log.warning(
                "%s blames %s for bytes %s did not sign; not counted against it",
                report.reporter,
                report.sender,
                report.sender,
            )
            return dataclasses.replace(report, sender=None)
        return report

    def _signed_by(self, body: bytes, sender: str) -> bool:
        try:
            raw = split_wire(body)
        except ProtocolError:
            return False  # truncated or not an envelope: nothing proves who sent it
        return raw.fields.get("sender") == sender and self.agent.check_signature(
            sender, raw.body, raw.signature
        )


def install(agent: AgentContext) -> Guardian:
    """Give a guardian its dead-letter watch, heartbeat section and report handler."""
    guardian = Guardian(agent)
    agent.on_start(guardian.start)
    agent.add_heartbeat_extra(lambda: {"guardian": guardian.watch.report()})
    agent.handle("guardian.report", lambda msg: guardian.watch.report())
    return guardian

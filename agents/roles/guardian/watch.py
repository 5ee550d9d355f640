"""The guardian's dead-letter watch: verified refusals per sender, alerts and quarantines.

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
broadcasts a signed ``guardian.alert`` naming the reporters; past
``Settings.quarantine_after`` (same window, same two reporters) it orders a
quarantine. Its counts travel in its heartbeats and answer
``guardian.report`` requests.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, deque
from typing import Any

from ....protocol.envelope import split_wire
from ....protocol.errors import DecodeError, ProtocolError
from ....protocol.rejections import RejectionReport
from ...context import AgentContext, DeadLetter

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

    def recent(self, sender: str, now: float) -> int:
        """Verified refusals blaming ``sender`` within the window before ``now``."""
        times = self._recent.get(sender, ())
        return sum(1 for t in times if t >= now - self.window)

    def supports_quarantine(self, sender: str, threshold: int, now: float) -> bool:
        """Whether ``sender``'s verified refusals warrant a quarantine: at least
        ``threshold`` within the window, reported by at least ``min_reporters``
        agents (one compromised reporter cannot get an honest agent quarantined)."""
        return (
            self.recent(sender, now) >= threshold
            and len(self.reporters.get(sender, ())) >= self.min_reporters
        )

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


def verified_report(
    agent: AgentContext, letter: DeadLetter, watch: DeadLetterWatch
) -> RejectionReport | None:
    """The letter's report if it verifies and is about these bytes, else None.

    The sender it blames is kept only if the stored bytes are an envelope
    that sender signed: a reporter cannot pin a refusal on an agent that
    never sent anything like it.
    """
    if letter.report is None:
        return None
    try:
        report = RejectionReport.verify(letter.report, agent.check_signature)
    except DecodeError as exc:
        log.debug("unverifiable dead-letter report: %s", exc)
        return None
    if not report.matches(letter.body):
        return None
    if report.sender is not None and not _signed_by(agent, letter.body, report.sender):
        watch.unsupported_blame[report.reporter] += 1
        log.warning(
            "%s blames %s for bytes %s did not sign; not counted against it",
            report.reporter,
            report.sender,
            report.sender,
        )
        return dataclasses.replace(report, sender=None)
    return report


def _signed_by(agent: AgentContext, body: bytes, sender: str) -> bool:
    try:
        raw = split_wire(body)
    except ProtocolError:
        return False  # truncated or not an envelope: nothing proves who sent it
    return raw.fields.get("sender") == sender and agent.check_signature(
        sender, raw.body, raw.signature
    )

"""Dead letters as an operator sees them: what each is, and whether it can be replayed.

A dead letter is the bytes an agent (or the broker) refused, with headers
saying why (:mod:`robeing.broker.topology`: reason, detail, source queue,
original size, the refusing agent's signed report, when). Nothing in it is
trusted (DESIGN §8): :func:`describe` reads what it claims, and the
refusing agent's report counts only when its signature verifies.

A letter's id is the start of a SHA-256 of its stored bytes, the queue it
was refused from and when: stable while it waits, whatever its position in
the queue, and distinct for the copies of one broadcast refused by several agents.

Replay (re-publishing it to the queue it was refused from, once the cause is
fixed) is refused when the receiver would refuse it again whatever was
fixed (:func:`replay_problem`): the body was stored truncated, it is not a
signed envelope, its signature or certificate does not check out, or it is
older than receivers accept (their time window: replay soon after fixing).
A task that used up its attempts is not a message: submit it again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import AGE_EXEMPT_TYPES
from .envelope import split_wire, unpack
from .errors import ProtocolError
from .identity import TrustStore
from .rejections import RejectionReport
from .replay import ReplayWindow

__all__ = ["Headers", "Letter", "describe", "letter_id", "replay_problem"]

ID_LEN = 12  # hex characters of the body's SHA-256


@dataclass(frozen=True, slots=True)
class Headers:
    """The header names a dead letter carries, and the task queue's name (the broker's)."""

    task_queue: str
    reason: str
    detail: str
    source: str
    size: str
    report: str
    at: str


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter, as far as it can be read (nothing here is verified but ``reporter``).

    Attributes:
        id: :func:`letter_id` of the stored body, its source and time.
        reason, detail, source: why it was refused and where (headers).
        size: its size when refused; ``stored``: the bytes kept (fewer: truncated).
        at: when it was dead-lettered (header, else the broker's ``x-death``), or None.
        type, sender, receiver, sent_at, envelope_id: what the envelope says, if it is one.
        task: for a task that used up its attempts: its id, type and attempts.
        reporter: who refused it, when the signed report verifies.
    """

    id: str
    reason: str
    detail: str
    source: str
    size: int
    stored: int
    at: float | None = None
    type: str | None = None
    sender: str | None = None
    receiver: str | None = None
    sent_at: float | None = None
    envelope_id: str | None = None
    priority: int | None = None
    task: dict[str, Any] = field(default_factory=dict)
    reporter: str | None = None

    @property
    def truncated(self) -> bool:
        return self.stored < self.size

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "size": self.size,
            "stored": self.stored,
            "truncated": self.truncated,
            "at": self.at,
            "type": self.type,
            "sender": self.sender,
            "receiver": self.receiver,
            "sent_at": self.sent_at,
            "envelope_id": self.envelope_id,
            "task": self.task or None,
            "reporter": self.reporter,
        }


def letter_id(body: bytes, source: str = "", at: float | None = None) -> str:
    """The id of a dead letter: the first hex characters of a SHA-256 of what it is."""
    digest = hashlib.sha256(f"{source}\0{at!r}\0".encode())
    digest.update(body)
    return digest.hexdigest()[:ID_LEN]


def describe(
    body: bytes,
    headers: Mapping[str, Any],
    names: Headers,
    check_report: Callable[[str, bytes, bytes], bool] | None = None,
) -> Letter:
    """Read a dead letter (never raises: what cannot be read is left out).

    Args:
        body: the stored bytes. headers: the message's headers. names: their names.
        check_report: ``(signer, data, signature) -> bool`` to verify the refusing
            agent's report with its certified key; None: the report is not read.
    """
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    reason = _str(headers.get(names.reason)) or _str(death.get("reason")) or "dead"
    source = _str(headers.get(names.source)) or _str(death.get("queue")) or "?"
    size = headers.get(names.size)
    at = _number(headers.get(names.at)) or _number(death.get("time"))
    fields: dict[str, Any] = {}
    try:
        fields = split_wire(body).fields
    except ProtocolError:
        pass
    task: dict[str, Any] = {}
    if not fields and source == names.task_queue:
        task = _task(body)
    reporter = None
    report = headers.get(names.report)
    if check_report is not None and isinstance(report, bytes | bytearray):
        try:
            verified = RejectionReport.verify(bytes(report), check_report)
            reporter = verified.reporter if verified.matches(body) else None
        except ProtocolError:
            reporter = None
    return Letter(
        id=letter_id(body, source, at),
        reason=reason,
        detail=_str(headers.get(names.detail)),
        source=source,
        size=size if isinstance(size, int) and size > len(body) else len(body),
        stored=len(body),
        at=at,
        type=_str(fields.get("type")) or None,
        sender=_str(fields.get("sender")) or None,
        receiver=_str(fields.get("receiver")) or None,
        sent_at=_number(fields.get("timestamp")),
        envelope_id=_str(fields.get("id")) or None,
        priority=fields.get("priority") if isinstance(fields.get("priority"), int) else None,
        task=task,
        reporter=reporter,
    )


def replay_problem(
    letter: Letter, body: bytes, trust: TrustStore, window: ReplayWindow, now: float
) -> str | None:
    """Why ``letter`` cannot pass its receiver's checks again, or None if it may.

    Checks what no fix can change: the stored bytes are all of it, they are a
    signed envelope whose certificate is valid now and whose signature
    verifies, and its timestamp is still inside the receivers' window.
    """
    if letter.task:
        return (
            f"task {letter.task.get('task_id')!r} used up its attempts; it is not a message: "
            f"submit it again (robeing submit {letter.task.get('type')} …)"
        )
    if letter.truncated:
        return f"stored truncated ({letter.stored} of {letter.size} bytes): it cannot verify"
    try:
        raw = split_wire(body)
        cert = trust.check_certificate(raw.fields["cert"], now)
        if cert.agent_id != raw.fields["sender"]:
            return f"its certificate is {cert.agent_id!r}'s, not its sender's"
        trust.verify(cert, raw.body, raw.signature)
        exempt = raw.fields["type"] in AGE_EXEMPT_TYPES
        window.check(raw.fields["timestamp"], now, age_exempt=exempt)
    except ProtocolError as exc:
        return f"receivers would refuse it again ({exc.reason}): {exc}"
    return None


def _task(body: bytes) -> dict[str, Any]:
    """The coordinator's record of a task that used up its attempts (a msgpack map)."""
    try:
        data = unpack(body)
    except ProtocolError:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("task_id"), str):
        return {}
    return {k: data.get(k) for k in ("task_id", "type", "attempts")}


def _str(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if hasattr(value, "timestamp"):  # a datetime (x-death's time)
        value = value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

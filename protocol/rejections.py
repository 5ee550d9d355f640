"""Signed rejection reports: who refused which bytes, why, and whom the refusal blames.

Anyone allowed to dead-letter can publish anything to the dead-letter
exchange, headers included, so a dead letter by itself proves nothing. The
agent that refuses a message therefore attaches a report to the copy it
dead-letters, a statement (:mod:`robeing.protocol.evidence`) in the domain
``robeing.reject.v1`` signed with its own key: the queue, the SHA-256 of the
bytes stored, the reason, and the sender the refusal may be held against.

That sender is named only when its signature had verified before the
message was refused (a replay, a stale time, a forbidden type, a handler's
rejection): for refusals at or before the signature check (garbage, an
unknown or revoked certificate, a bad signature) the ``sender`` field of the
envelope is anybody's claim, and the report blames nobody. A guardian counts
only verified reports and alerts only on named senders, so neither a forged
dead letter nor a forged envelope can turn it against an honest agent.

Dead letters are bounded: a body over :data:`MAX_STORED` is stored
truncated (:func:`stored_copy`), its original size in the report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack

from .errors import DecodeError
from .evidence import (
    SignatureCheck,
    Signer,
    decode_statement,
    encode_statement,
    split_signed,
)
from .fields import count, finite, items, need, text

__all__ = [
    "MAX_STORED",
    "REJECT_DOMAIN",
    "UNATTRIBUTABLE",
    "RejectionReport",
    "stored_copy",
]

REJECT_DOMAIN = b"robeing.reject.v1"
MAX_STORED = 64 << 10  # bytes of a rejected body kept in the dead-letter queue

# Reasons decided before the sender's signature was verified: nobody to blame.
UNATTRIBUTABLE = frozenset(
    {
        "too_large",
        "decode",
        "version",
        "unknown_sender",
        "certificate",
        "certificate_expired",
        "revoked",
        "signature",
    }
)


def stored_copy(body: bytes) -> bytes:
    """What the dead-letter queue keeps of ``body``: all of it, or its first :data:`MAX_STORED`."""
    return body if len(body) <= MAX_STORED else body[:MAX_STORED]


@dataclass(frozen=True, slots=True)
class RejectionReport:
    """One agent's signed account of one refusal.

    Attributes:
        reporter: the refusing agent (the signer).
        queue: where the message was refused.
        digest: SHA-256 of the bytes stored in the dead letter.
        size: the size of the message as received (before truncation).
        reason: the refusal's reason code.
        sender: the sender to blame (verified before the refusal), else None.
        at: the reporter's clock.
    """

    reporter: str
    queue: str
    digest: bytes
    size: int
    reason: str
    sender: str | None
    at: float

    @classmethod
    def of(
        cls, reporter: str, queue: str, body: bytes, stored: bytes, reason: str,
        sender: str | None, at: float,
    ) -> RejectionReport:  # fmt: skip
        """The report of refusing ``body`` (stored as ``stored``) with ``reason``.

        ``sender`` is dropped for reasons in :data:`UNATTRIBUTABLE`.
        """
        blamed = None if reason in UNATTRIBUTABLE else sender
        digest = hashlib.sha256(stored).digest()
        return cls(reporter, queue, digest, len(body), reason, blamed, at)

    def matches(self, stored: bytes) -> bool:
        """Whether this report is about ``stored`` (the dead letter's body)."""
        return hashlib.sha256(stored).digest() == self.digest

    def sign(self, signer: Signer) -> bytes:
        """The wire form: ``msgpack([statement, signature])``.

        Raises:
            Nothing.
        """
        content = [self.reason, self.sender, self.size, self.at]
        statement = encode_statement(
            REJECT_DOMAIN, self.reporter, (self.queue, self.digest), content
        )
        return msgpack.packb([statement, signer(statement)], use_bin_type=True)

    @classmethod
    def verify(cls, data: bytes, check: SignatureCheck) -> RejectionReport:
        """Read a report and check its signature against the reporter's certified key.

        Raises:
            DecodeError: malformed, or the signature does not verify.
        """
        statement, signature = split_signed(data, "rejection report")
        st = decode_statement(statement, REJECT_DOMAIN)
        queue, digest = items(list(st.slot), "report slot", 2)
        reason, sender, size, at = items(st.content, "report content", 4)
        report = cls(
            st.signer,
            text(queue, "queue", 255),
            need({"d": digest}, "d", bytes),
            count(size, "size"),
            text(reason, "reason", 64),
            None if sender is None else text(sender, "sender", 128),
            finite(at, "at"),
        )
        if len(report.digest) != 32 or not check(st.signer, statement, signature):
            raise DecodeError(f"rejection report of {st.signer!r} does not verify")
        return report

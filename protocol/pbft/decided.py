"""The decided log of a PBFT group, and how a lagging replica checks a state transfer.

A replica that fell behind a stable checkpoint downloads the decided entries
it missed from a peer. Nothing a peer sends is trusted: :func:`verify_transfer`
accepts the entries only if they rebuild, from the replica's own state
digest, the checkpoint digest a quorum signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from .actions import Decide
from .messages import Request, chain_digest, decode_message, request_digest

__all__ = ["Decided", "verify_transfer"]


@dataclass(frozen=True, slots=True)
class Decided:
    """One entry of a group's decided log.

    Attributes:
        seq: sequence number (gap-free).
        view: view in which it committed.
        digest: request digest (``NULL_DIGEST`` for the null request).
        client: the requesting client, None for the null request.
        timestamp: the client's request timestamp.
        value: the committed value (None when not executed).
        executed: False for null requests, repeats and malformed ops.
    """

    seq: int
    view: int
    digest: bytes
    client: str | None
    timestamp: int | None
    value: Any
    executed: bool
    request: Request | None = field(default=None, repr=False, compare=False)

    def to_data(self) -> list[Any]:
        """``[seq, view, digest, client, timestamp, value, executed]``.

        Raises:
            Nothing.
        """
        return [
            self.seq,
            self.view,
            self.digest,
            self.client,
            self.timestamp,
            self.value,
            self.executed,
        ]


def verify_transfer(
    chain: bytes, start: int, entries: list[Any], seq: int, digest: bytes
) -> list[Decide] | None:
    """Check downloaded entries ``(start, seq]`` against the certified ``digest``.

    Args:
        chain: our state digest after ``start``.
        start: our last executed sequence number.
        entries: ``[seq, view, digest, request wire | None]`` items from a peer.
        seq: checkpoint to reach.
        digest: its quorum-certified state digest.

    Returns:
        The entries as decisions, or None if they do not rebuild ``digest``.

    Raises:
        Nothing: malformed entries are a failed check.
    """
    out: list[Decide] = []
    try:
        for expected, item in enumerate(entries, start + 1):
            s, view, d, wire = item
            req = None if wire is None else decode_message(wire)
            if s != expected or not isinstance(req, Request | None):
                return None
            if request_digest(req) != d:
                return None
            chain = chain_digest(chain, s, d)
            out.append(Decide(s, int(view), req, bytes(d)))
    except (DecodeError, TypeError, ValueError, OverflowError):
        return None
    return out if start + len(out) == seq and chain == digest else None

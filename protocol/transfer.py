"""Chunked transfers: payloads larger than a message, as a sequence of signed messages.

A transfer is three kinds of point-to-point envelope from one sender to one
receiver, each signed by the sender and encrypted to the receiver like any
message (so a chunk altered or forged on the way fails its signature and is
never written):

* ``transfer.begin`` — :class:`Begin`: the transfer id, the total size, the
  chunk size and count, the message type the whole is for, and a name;
* ``transfer.chunk`` — :class:`Chunk`: the transfer id, the chunk's index and
  its bytes (every chunk but the last is exactly ``chunk_size`` long);
* ``transfer.end`` — :class:`End`: the transfer id and the SHA-256 of the
  whole payload.

The receiver writes each chunk at its offset (so order does not matter),
checks the digest of what it wrote once every chunk is there, and only then
hands the payload on. :class:`Reassembly` is that bookkeeping, pure: which
chunks arrived, which are missing, whether a chunk is valid.

Invariants:
    * A chunk is accepted once: a duplicate (a broker redelivery) is ignored.
    * A chunk of the wrong size or index, or for an unknown transfer, is refused.
    * ``complete`` only when every index ``0..chunks-1`` arrived.
    * Sizes are bounded: ``chunk_size <= MAX_CHUNK``; ``size <= max_size`` of the receiver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeError
from .fields import blob, count, ensure, mapping, need, text

__all__ = ["MAX_CHUNK", "Begin", "Chunk", "End", "Reassembly", "TransferFailed"]

MAX_CHUNK = 768 << 10  # a chunk and its envelope fit in a 1 MiB message
DEFAULT_CHUNK = 512 << 10


class TransferFailed(DecodeError):
    """A transfer cannot complete: a chunk is missing or the digest differs."""

    reason = "transfer_failed"


@dataclass(frozen=True, slots=True)
class Begin:
    id: str
    size: int
    chunk_size: int
    chunks: int
    type: str
    name: str = ""

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "type": self.type,
            "name": self.name,
        }

    @classmethod
    def from_data(cls, data: Any) -> Begin:
        """Raises: DecodeError: a field is missing, of the wrong type or inconsistent."""
        d = mapping(data, "transfer.begin")
        begin = cls(
            text(need(d, "id", str), "id", 64),
            count(need(d, "size", int), "size"),
            count(need(d, "chunk_size", int), "chunk_size", low=1, high=MAX_CHUNK),
            count(need(d, "chunks", int), "chunks"),
            text(need(d, "type", str), "type", 128),
            text(d.get("name", ""), "name", 255),
        )
        ensure(begin.chunks == chunks_for(begin.size, begin.chunk_size), "chunk count != size")
        return begin


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    index: int
    data: bytes

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "data": self.data}

    @classmethod
    def from_data(cls, data: Any) -> Chunk:
        """Raises: DecodeError: a field is missing or of the wrong type."""
        d = mapping(data, "transfer.chunk")
        return cls(
            text(need(d, "id", str), "id", 64),
            count(need(d, "index", int), "index"),
            blob(need(d, "data", bytes), "data"),
        )


@dataclass(frozen=True, slots=True)
class End:
    id: str
    sha256: str

    def to_data(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256}

    @classmethod
    def from_data(cls, data: Any) -> End:
        """Raises: DecodeError: a field is missing or not a hex SHA-256."""
        d = mapping(data, "transfer.end")
        digest = text(need(d, "sha256", str), "sha256", 64)
        ensure(len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), "bad sha256")
        return cls(text(need(d, "id", str), "id", 64), digest)


def chunks_for(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


@dataclass(slots=True)
class Reassembly:
    """Which chunks of one transfer arrived (the bytes themselves live on disk)."""

    begin: Begin
    sender: str
    started: float
    last: float = 0.0
    have: set[int] = field(default_factory=set)

    def accept(self, chunk: Chunk, sender: str, now: float) -> bool:
        """Check ``chunk`` belongs here; returns False for a duplicate.

        Raises:
            DecodeError: another sender, an index out of range, or a wrong size.
        """
        b = self.begin
        ensure(sender == self.sender, f"transfer {b.id} belongs to {self.sender}")
        ensure(chunk.index < b.chunks, f"chunk {chunk.index} of a {b.chunks}-chunk transfer")
        expected = (
            b.chunk_size if chunk.index < b.chunks - 1 else b.size - b.chunk_size * chunk.index
        )
        ensure(len(chunk.data) == expected, f"chunk {chunk.index} is {len(chunk.data)} bytes")
        self.last = now
        if chunk.index in self.have:
            return False
        self.have.add(chunk.index)
        return True

    @property
    def complete(self) -> bool:
        return len(self.have) == self.begin.chunks

    def missing(self, limit: int = 10) -> list[int]:
        """The first ``limit`` missing indexes."""
        out = []
        for i in range(self.begin.chunks):
            if i not in self.have:
                out.append(i)
                if len(out) == limit:
                    break
        return out

    def offset(self, index: int) -> int:
        return index * self.begin.chunk_size

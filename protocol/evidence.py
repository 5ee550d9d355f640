"""Signed statements and equivocation evidence for the consensus protocols.

Everything an agent signs in voting and PBFT is a *statement*::

    domain || msgpack([signer, slot, content])

``domain`` separates protocols (``b"robeing.vote.v1"``, ``b"robeing.pbft.v1"``)
so a signature made for one can never be replayed as the other. ``slot`` names
the one thing a correct agent says at most once (a vote on proposal ``p``; a
PBFT prepare for view ``v`` and sequence number ``n``), ``content`` is what it
said there. Two validly signed statements by one signer for one slot with
different contents are an *equivocation*: proof that the signer is faulty.

An :class:`Equivocation` carries both signed byte strings and both signatures,
so anyone holding the offender's public key can check it without trusting the
reporter (:meth:`Equivocation.verify`). The :class:`EvidenceLog` collects them
for the guardian role.

Invariants:
    * An :class:`Equivocation` can only be built from two statements with the
      same domain, signer and slot and different contents
      (:meth:`Equivocation.from_pair` raises otherwise); ``verify`` re-checks
      this and both signatures, so forged evidence never verifies.
    * :class:`EvidenceLog` holds at most one record per
      ``(offender, domain, slot)``; recording is idempotent.
    * The log is bounded by ``capacity``; records refused for lack of room
      are counted in ``dropped``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing

from .errors import ConfigError, DecodeError

log = logging.getLogger(__name__)

Signer = Callable[[bytes], bytes]
"""Signs the given bytes with the caller's own key and returns the signature."""

SignatureCheck = Callable[[str, bytes, bytes], bool]
"""``check(signer_id, data, signature)``: True iff ``signer_id`` signed ``data``."""


def encode_statement(domain: bytes, signer: str, slot: Sequence[Any], content: Any) -> bytes:
    """Return the canonical bytes an agent signs.

    Args:
        domain: protocol tag, for example ``b"robeing.vote.v1"``.
        signer: id of the signing agent.
        slot: what the statement is about; a correct agent signs one content
            per slot.
        content: msgpack-serialisable value said about the slot.

    Returns:
        ``domain`` followed by ``msgpack([signer, list(slot), content])``.

    Raises:
        TypeError: ``content`` or ``slot`` holds a value msgpack cannot encode.
    """
    body: bytes = msgpack.packb([signer, list(slot), content], use_bin_type=True)
    return domain + body


@dataclass(frozen=True, slots=True)
class Statement:
    """A decoded statement (see the module docstring)."""

    domain: bytes
    signer: str
    slot: tuple[Any, ...]
    content: Any


def decode_statement(data: bytes, domain: bytes) -> Statement:
    """Parse bytes produced by :func:`encode_statement` for ``domain``.

    Args:
        data: the signed bytes.
        domain: the protocol tag the bytes must start with.

    Returns:
        The decoded statement.

    Raises:
        DecodeError: wrong domain or not a well-formed statement.
    """
    if not data.startswith(domain):
        raise DecodeError("statement has the wrong domain", data)
    try:
        body = msgpack.unpackb(data[len(domain) :], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise DecodeError(f"statement is not valid msgpack: {exc}", data) from exc
    if (
        not isinstance(body, list)
        or len(body) != 3
        or not isinstance(body[0], str)
        or not isinstance(body[1], list)
    ):
        raise DecodeError("statement must be [signer, slot, content]", data)
    return Statement(domain, body[0], tuple(body[1]), body[2])


def split_signed(data: bytes, what: str) -> tuple[bytes, bytes]:
    """``(statement, signature)`` of the wire form ``msgpack([statement, signature])``.

    Raises:
        DecodeError: not that shape (the message names ``what``).
    """
    try:
        wire = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=4096)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise DecodeError(f"{what} is not msgpack: {exc}") from None
    if not isinstance(wire, list) or len(wire) != 2:
        raise DecodeError(f"{what} must be [statement, signature]")
    statement, signature = wire
    if not isinstance(statement, bytes) or not isinstance(signature, bytes):
        raise DecodeError(f"{what} must be [statement, signature] bytes")
    return statement, signature


def ed25519_signer(signing_key: nacl.signing.SigningKey | bytes) -> Signer:
    """Build a :data:`Signer` from an Ed25519 signing key or its 32-byte seed.

    Raises:
        ConfigError: the seed is not 32 bytes.
    """
    if isinstance(signing_key, bytes):
        if len(signing_key) != 32:
            raise ConfigError("an Ed25519 seed is 32 bytes")
        signing_key = nacl.signing.SigningKey(signing_key)
    key = signing_key

    def sign(data: bytes) -> bytes:
        return bytes(key.sign(data).signature)

    return sign


def ed25519_check(keys: Mapping[str, bytes], cache_size: int = 4096) -> SignatureCheck:
    """Build a :data:`SignatureCheck` over a directory of Ed25519 public keys.

    Verification results are memoised (bounded by ``cache_size``): replicas see
    the same signed message many times (relays, certificates nested in view
    changes), and one Ed25519 verification costs tens of microseconds.

    Args:
        keys: agent id to raw 32-byte Ed25519 public key.
        cache_size: maximal number of memoised results (0 disables the cache).

    Returns:
        A check that is False for unknown signers and invalid signatures.

    Raises:
        ConfigError: a public key is not 32 bytes.
    """
    verify_keys: dict[str, nacl.signing.VerifyKey] = {}
    for agent, raw in keys.items():
        if len(raw) != 32:
            raise ConfigError(f"public key of {agent!r} is not 32 bytes")
        verify_keys[agent] = nacl.signing.VerifyKey(raw)
    cache: dict[tuple[str, bytes, bytes], bool] = {}

    def check(signer: str, data: bytes, signature: bytes) -> bool:
        key = (signer, data, signature)
        hit = cache.get(key)
        if hit is not None:
            return hit
        verify_key = verify_keys.get(signer)
        ok = False
        if verify_key is not None and len(signature) == 64:
            try:
                verify_key.verify(data, signature)
                ok = True
            except nacl.exceptions.BadSignatureError:
                ok = False
        if cache_size > 0:
            if len(cache) >= cache_size:
                del cache[next(iter(cache))]  # dicts keep insertion order: FIFO eviction
            cache[key] = ok
        return ok

    return check


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """The exact signed bytes and their signature."""

    data: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Proof that ``offender`` signed two different contents for one slot.

    Attributes:
        offender: the signer of both statements.
        domain: protocol tag both statements carry.
        slot: the slot both statements are about.
        first: the statement seen first.
        second: the conflicting statement.
    """

    offender: str
    domain: bytes
    slot: tuple[Any, ...]
    first: SignedStatement
    second: SignedStatement

    @classmethod
    def from_pair(
        cls, domain: bytes, first: SignedStatement, second: SignedStatement
    ) -> Equivocation:
        """Build evidence from two signed statements (signatures are not checked here).

        Args:
            domain: protocol tag of both statements.
            first: the statement seen first.
            second: the conflicting statement.

        Returns:
            The evidence record.

        Raises:
            DecodeError: a statement is malformed.
            ValueError: the statements do not conflict (different signer or
                slot, or identical content).
        """
        a = decode_statement(first.data, domain)
        b = decode_statement(second.data, domain)
        if a.signer != b.signer or a.slot != b.slot:
            raise ValueError("statements by different signers or for different slots")
        if first.data == second.data:
            raise ValueError("identical statements are a duplicate, not an equivocation")
        return cls(a.signer, domain, a.slot, first, second)

    @property
    def key(self) -> tuple[str, bytes, tuple[Any, ...]]:
        """Deduplication key: one record per offender, domain and slot."""
        return (self.offender, self.domain, self.slot)

    def verify(self, check: SignatureCheck) -> bool:
        """Check the evidence independently of whoever reported it.

        Args:
            check: signature check that knows the offender's public key.

        Returns:
            True iff both statements decode for ``domain``, name ``offender``
            and ``slot``, differ, and carry valid signatures by ``offender``.

        Raises:
            Nothing: malformed evidence simply does not verify.
        """
        try:
            a = decode_statement(self.first.data, self.domain)
            b = decode_statement(self.second.data, self.domain)
        except DecodeError:
            return False
        return (
            a.signer == b.signer == self.offender
            and a.slot == b.slot == self.slot
            and self.first.data != self.second.data
            and check(self.offender, self.first.data, self.first.signature)
            and check(self.offender, self.second.data, self.second.signature)
        )

    def to_data(self) -> dict[str, Any]:
        """Plain data for the wire (both signed statements, verbatim).

        Raises:
            Nothing.
        """
        return {
            "offender": self.offender,
            "domain": self.domain,
            "slot": list(self.slot),
            "first": [self.first.data, self.first.signature],
            "second": [self.second.data, self.second.signature],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Equivocation:
        """Rebuild evidence sent by a peer; call :meth:`verify` before trusting it.

        Raises:
            DecodeError: the data is not shaped like :meth:`to_data` output.
        """
        try:
            first, second = data["first"], data["second"]
            ev = cls(
                str(data["offender"]),
                bytes(data["domain"]),
                tuple(data["slot"]),
                SignedStatement(bytes(first[0]), bytes(first[1])),
                SignedStatement(bytes(second[0]), bytes(second[1])),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DecodeError(f"malformed equivocation evidence: {exc}") from exc
        return ev


class EvidenceLog:
    """Bounded, deduplicated record of equivocations, consumed by the guardian.

    Args:
        capacity: maximal number of records held; further new records are
            counted in :attr:`dropped` and discarded.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._records: dict[tuple[str, bytes, tuple[Any, ...]], Equivocation] = {}

    def record(self, evidence: Equivocation) -> bool:
        """Add evidence unless the same offender and slot is already recorded.

        Returns:
            True iff the record is new and was kept.

        Raises:
            Nothing.
        """
        if evidence.key in self._records:
            return False
        if len(self._records) >= self.capacity:
            self.dropped += 1
            return False
        self._records[evidence.key] = evidence
        log.warning(
            "equivocation by %s in %s slot %r",
            evidence.offender,
            evidence.domain.decode(errors="replace"),
            evidence.slot,
        )
        return True

    def offenders(self) -> frozenset[str]:
        """Agents with at least one recorded equivocation.

        Raises:
            Nothing.
        """
        return frozenset(key[0] for key in self._records)

    def drain(self) -> list[Equivocation]:
        """Return all records in recording order and empty the log.

        Deduplication restarts after a drain: the consumer now owns the records.

        Raises:
            Nothing.
        """
        records = list(self._records.values())
        self._records.clear()
        return records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Equivocation]:
        return iter(list(self._records.values()))

"""PBFT messages: the wire form, the canonical signed bytes and the digests.

Every message is a statement (:mod:`robeing.protocol.evidence`) in the domain
``b"robeing.pbft.v1"``, signed by its sender with Ed25519 (or any injected
:data:`~robeing.protocol.evidence.Signer`). The slot of each kind is what a
correct sender says at most once, so conflicting pairs are evidence:

=============  ==================================  ======================
message        slot                                content
=============  ==================================  ======================
Request        ("request", timestamp)              op
PrePrepare     ("pre-prepare", view, seq)          request digest
Prepare        ("prepare", view, seq)              request digest
Commit         ("commit", view, seq)               request digest
Checkpoint     ("checkpoint", seq)                 state digest
ViewChange     ("view-change", new_view)           checkpoint proof, prepared certificates
NewView        ("new-view", view)                  view changes, pre-prepares
Status         ("status",)                         view, active, last executed, stable seq
=============  ==================================  ======================

As in Castro & Liskov, a pre-prepare signs the digest only; the request rides
along and is accepted only if it is validly signed by its client and hashes to
the digest. On the wire a message is ``msgpack([signed_bytes, signature])``
(plus the request for a pre-prepare); :func:`decode_message` rejects any
encoding that is not exactly the canonical one, so the bytes verified are the
bytes received. Whether a message or a certificate is *valid* (signed by the
right replica, a quorum) is decided in :mod:`.certificates`.

Invariants:
    * ``decode_message(encode_message(m)) == m`` and :func:`decode_message`
      raises :class:`~robeing.protocol.errors.DecodeError` on anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack

from ..errors import DecodeError
from ..evidence import (
    SignedStatement,
    Signer,
    Statement,
    decode_statement,
    encode_statement,
)

PBFT_DOMAIN = b"robeing.pbft.v1"
NULL_DIGEST = bytes(32)
"""Digest of the null request a new primary uses to fill sequence-number gaps."""
GENESIS_DIGEST = hashlib.sha256(b"robeing.pbft.genesis.v1").digest()
"""State digest before any request was executed (sequence number 0)."""


class SignedMessage:
    """Behaviour shared by all PBFT messages (each is a frozen dataclass).

    A subclass names the fields that form its slot and its content (see the
    module table) and the field holding its sender; the rest is generic.
    """

    __slots__ = ()
    KIND: ClassVar[str]
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ("view", "seq")
    CONTENT_FIELD: ClassVar[str] = "digest"
    SENDER_FIELD: ClassVar[str] = "replica"
    signature: bytes
    _data: bytes | None

    @property
    def sender(self) -> str:
        """Id of the agent whose signature the message must carry."""
        sender: str = getattr(self, self.SENDER_FIELD)
        return sender

    def slot(self) -> tuple[Any, ...]:
        """The statement slot: the kind followed by the slot fields.

        Raises:
            Nothing.
        """
        return (self.KIND, *(getattr(self, name) for name in self.SLOT_FIELDS))

    def content(self) -> Any:
        """The statement content: what the sender says about the slot.

        Raises:
            Nothing.
        """
        return getattr(self, self.CONTENT_FIELD)

    def signing_bytes(self) -> bytes:
        """The exact bytes the signature covers (computed once per object).

        Raises:
            TypeError: the message holds a value msgpack cannot encode.
        """
        data = self._data
        if data is None:
            data = encode_statement(PBFT_DOMAIN, self.sender, self.slot(), self.content())
            # memoised: certificates nest messages that are re-encoded many times
            object.__setattr__(self, "_data", data)
        return data

    def statement(self) -> SignedStatement:
        """The message as a signed statement (for evidence).

        Raises:
            TypeError: the message holds a value msgpack cannot encode.
        """
        return SignedStatement(self.signing_bytes(), self.signature)


def _memo() -> Any:
    return field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Request(SignedMessage):
    """An operation a client asks the replicas to order; signed by the client."""

    KIND: ClassVar[str] = "request"
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ("timestamp",)
    CONTENT_FIELD: ClassVar[str] = "op"
    SENDER_FIELD: ClassVar[str] = "client"
    client: str
    op: Any
    timestamp: int
    signature: bytes = b""
    _data: bytes | None = _memo()


@dataclass(frozen=True, slots=True)
class PrePrepare(SignedMessage):
    """The primary assigns ``seq`` to the request with ``digest`` in ``view``."""

    KIND: ClassVar[str] = "pre-prepare"
    view: int
    seq: int
    digest: bytes
    request: Request | None
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()


@dataclass(frozen=True, slots=True)
class Prepare(SignedMessage):
    """A backup accepted the pre-prepare for ``(view, seq, digest)``."""

    KIND: ClassVar[str] = "prepare"
    view: int
    seq: int
    digest: bytes
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()


@dataclass(frozen=True, slots=True)
class Commit(SignedMessage):
    """The sender holds a prepared certificate for ``(view, seq, digest)``."""

    KIND: ClassVar[str] = "commit"
    view: int
    seq: int
    digest: bytes
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()


@dataclass(frozen=True, slots=True)
class Checkpoint(SignedMessage):
    """The sender's state after executing ``seq`` has digest ``state_digest``."""

    KIND: ClassVar[str] = "checkpoint"
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ("seq",)
    CONTENT_FIELD: ClassVar[str] = "state_digest"
    seq: int
    state_digest: bytes
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """A pre-prepare plus ``quorum - 1`` matching prepares from distinct backups."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    @property
    def view(self) -> int:
        return self.pre_prepare.view

    @property
    def seq(self) -> int:
        return self.pre_prepare.seq

    @property
    def digest(self) -> bytes:
        return self.pre_prepare.digest


@dataclass(frozen=True, slots=True)
class ViewChange(SignedMessage):
    """The sender leaves its view for ``new_view``, reporting what it prepared."""

    KIND: ClassVar[str] = "view-change"
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ("new_view",)
    new_view: int
    stable_seq: int
    stable_digest: bytes
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCertificate, ...]
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()

    def content(self) -> Any:
        return [
            self.stable_seq,
            self.stable_digest,
            [_wire(cp) for cp in self.checkpoint_proof],
            [[_wire(c.pre_prepare), [_wire(p) for p in c.prepares]] for c in self.prepared],
        ]


@dataclass(frozen=True, slots=True)
class NewView(SignedMessage):
    """The primary of ``view`` starts it from a quorum of view changes."""

    KIND: ClassVar[str] = "new-view"
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ("view",)
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    replica: str
    signature: bytes = b""
    _data: bytes | None = _memo()

    def content(self) -> Any:
        return [[_wire(vc) for vc in self.view_changes], [_wire(pp) for pp in self.pre_prepares]]


@dataclass(frozen=True, slots=True)
class Status(SignedMessage):
    """Periodic progress report; peers answer with what the sender is missing.

    This is the retransmission scheme of Castro's thesis (status messages):
    after lost messages it lets a replica catch up without a view change.
    """

    KIND: ClassVar[str] = "status"
    SLOT_FIELDS: ClassVar[tuple[str, ...]] = ()
    replica: str
    view: int
    active: bool
    last_executed: int
    stable_seq: int
    signature: bytes = b""
    _data: bytes | None = _memo()

    def content(self) -> Any:
        return [self.view, self.active, self.last_executed, self.stable_seq]


Message = Request | PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | Status
M = TypeVar("M", bound=SignedMessage)


def sign(msg: M, signer: Signer) -> M:
    """Return a copy of ``msg`` carrying ``signer``'s signature over its bytes.

    Raises:
        TypeError: the message holds a value msgpack cannot encode.
    """
    data = msg.signing_bytes()
    signed = dataclasses.replace(msg, signature=signer(data))  # type: ignore[type-var]
    object.__setattr__(signed, "_data", data)
    return signed


def request_digest(request: Request | None) -> bytes:
    """SHA-256 of the request's signed bytes; :data:`NULL_DIGEST` for None.

    Raises:
        TypeError: the request's op cannot be encoded by msgpack.
    """
    if request is None:
        return NULL_DIGEST
    return hashlib.sha256(request.signing_bytes()).digest()


def chain_digest(previous: bytes, seq: int, digest: bytes) -> bytes:
    """State digest after executing ``seq``: a hash chain over the decided digests.

    Any replica (or an application doing state transfer) can recompute it
    from the ordered decisions, so a checkpoint certifies the whole history.

    Raises:
        OverflowError: ``seq`` does not fit in 64 bits.
    """
    return hashlib.sha256(previous + seq.to_bytes(8, "big") + digest).digest()


# --- wire form ---------------------------------------------------------------


def _wire(msg: SignedMessage) -> list[Any]:
    if isinstance(msg, PrePrepare):
        req = None if msg.request is None else _wire(msg.request)
        return [msg.signing_bytes(), msg.signature, req]
    return [msg.signing_bytes(), msg.signature]


def encode_message(msg: Message) -> bytes:
    """Serialise a signed message for the wire.

    Raises:
        TypeError: the message holds a value msgpack cannot encode.
    """
    out: bytes = msgpack.packb(_wire(msg), use_bin_type=True)
    return out


def decode_message(raw: bytes) -> Message:
    """Parse bytes produced by :func:`encode_message` (signatures are not checked).

    Raises:
        DecodeError: malformed, unknown kind, or not the canonical encoding.
    """
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}", raw) from exc
    return _from_wire(obj, SignedMessage)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise DecodeError(f"malformed PBFT message: {what}")


def _int(value: Any) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, "integer")
    return int(value)


def _digest(value: Any) -> bytes:
    _need(isinstance(value, bytes) and len(value) == 32, "32-byte digest")
    return bytes(value)


def _list(value: Any, length: int | None = None) -> list[Any]:
    _need(isinstance(value, list) and (length is None or len(value) == length), "list")
    return list(value)


def _from_wire(obj: Any, expect: type[M]) -> Any:
    items = _list(obj)
    _need(len(items) in (2, 3), "wire form is [bytes, signature(, request)]")
    data, signature = items[0], items[1]
    _need(isinstance(data, bytes) and isinstance(signature, bytes), "bytes")
    st = decode_statement(data, PBFT_DOMAIN)
    _need(len(st.slot) >= 1, "slot")
    builder = _BUILDERS.get(st.slot[0])
    _need(builder is not None, f"unknown kind {st.slot[0]!r}")
    assert builder is not None
    extra = items[2] if len(items) == 3 else None
    msg = builder(st, bytes(signature), extra)
    _need(isinstance(msg, expect), f"expected {expect.__name__}")
    _need(msg.signing_bytes() == data, "non-canonical encoding")
    return msg


def _phase(cls: type[Prepare] | type[Commit]) -> Callable[[Statement, bytes, Any], Any]:
    def build(st: Statement, sig: bytes, extra: Any) -> Any:
        _need(len(st.slot) == 3 and extra is None, cls.KIND)
        return cls(_int(st.slot[1]), _int(st.slot[2]), _digest(st.content), st.signer, sig)

    return build


def _build_request(st: Statement, sig: bytes, extra: Any) -> Request:
    _need(len(st.slot) == 2 and extra is None, "request")
    return Request(st.signer, st.content, _int(st.slot[1]), sig)


def _build_pre_prepare(st: Statement, sig: bytes, extra: Any) -> PrePrepare:
    _need(len(st.slot) == 3, "pre-prepare")
    request = None if extra is None else _from_wire(extra, Request)
    return PrePrepare(
        _int(st.slot[1]), _int(st.slot[2]), _digest(st.content), request, st.signer, sig
    )


def _build_checkpoint(st: Statement, sig: bytes, extra: Any) -> Checkpoint:
    _need(len(st.slot) == 2 and extra is None, "checkpoint")
    return Checkpoint(_int(st.slot[1]), _digest(st.content), st.signer, sig)


def _build_view_change(st: Statement, sig: bytes, extra: Any) -> ViewChange:
    _need(len(st.slot) == 2 and extra is None, "view-change")
    stable_seq, stable_digest, proof, prepared = _list(st.content, 4)
    certs = []
    for item in _list(prepared):
        pp, prepares = _list(item, 2)
        certs.append(
            PreparedCertificate(
                _from_wire(pp, PrePrepare),
                tuple(_from_wire(p, Prepare) for p in _list(prepares)),
            )
        )
    return ViewChange(
        _int(st.slot[1]),
        _int(stable_seq),
        _digest(stable_digest),
        tuple(_from_wire(cp, Checkpoint) for cp in _list(proof)),
        tuple(certs),
        st.signer,
        sig,
    )


def _build_new_view(st: Statement, sig: bytes, extra: Any) -> NewView:
    _need(len(st.slot) == 2 and extra is None, "new-view")
    vcs, pps = _list(st.content, 2)
    return NewView(
        _int(st.slot[1]),
        tuple(_from_wire(vc, ViewChange) for vc in _list(vcs)),
        tuple(_from_wire(pp, PrePrepare) for pp in _list(pps)),
        st.signer,
        sig,
    )


def _build_status(st: Statement, sig: bytes, extra: Any) -> Status:
    _need(len(st.slot) == 1 and extra is None, "status")
    view, active, last_executed, stable_seq = _list(st.content, 4)
    _need(isinstance(active, bool), "status.active")
    return Status(st.signer, _int(view), active, _int(last_executed), _int(stable_seq), sig)


_BUILDERS: dict[Any, Callable[[Statement, bytes, Any], Any]] = {
    Request.KIND: _build_request,
    PrePrepare.KIND: _build_pre_prepare,
    Prepare.KIND: _phase(Prepare),
    Commit.KIND: _phase(Commit),
    Checkpoint.KIND: _build_checkpoint,
    ViewChange.KIND: _build_view_change,
    NewView.KIND: _build_new_view,
    Status.KIND: _build_status,
}

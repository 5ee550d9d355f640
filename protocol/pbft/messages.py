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
from ..fields import blob, count, ensure, items

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


def _from_wire(obj: Any, expect: type[M]) -> Any:
    parts = items(obj, "PBFT message")
    ensure(len(parts) in (2, 3), "PBFT wire form is [bytes, signature(, request)]")
    data = blob(parts[0], "PBFT signed bytes")
    signature = blob(parts[1], "PBFT signature")
    st = decode_statement(data, PBFT_DOMAIN)
    kind = st.slot[0] if st.slot else None
    entry = _BUILDERS.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise DecodeError(f"unknown PBFT message kind {kind!r:.40}")
    cls, build = entry
    # Checked before building, so messages nest no deeper than the kinds allow
    # (new-view > view-change > pre-prepare > request): no unbounded recursion.
    ensure(issubclass(cls, expect), f"expected a PBFT {expect.__name__}")
    msg = build(st, signature, parts[2] if len(parts) == 3 else None)
    ensure(msg.signing_bytes() == data, "non-canonical PBFT encoding")
    return msg


def _shape(st: Statement, slot_len: int, extra: Any, may_carry: bool = False) -> None:
    kind = st.slot[0]
    ensure(len(st.slot) == slot_len, f"PBFT {kind} slot must hold {slot_len} items")
    ensure(may_carry or extra is None, f"PBFT {kind} carries nothing beside its bytes")


def _phase(cls: type[Prepare] | type[Commit]) -> Callable[[Statement, bytes, Any], Any]:
    def build(st: Statement, sig: bytes, extra: Any) -> Any:
        _shape(st, 3, extra)
        view, seq = count(st.slot[1], "view"), count(st.slot[2], "seq")
        return cls(view, seq, blob(st.content, "digest", 32), st.signer, sig)

    return build


def _build_request(st: Statement, sig: bytes, extra: Any) -> Request:
    _shape(st, 2, extra)
    return Request(st.signer, st.content, count(st.slot[1], "timestamp"), sig)


def _build_pre_prepare(st: Statement, sig: bytes, extra: Any) -> PrePrepare:
    _shape(st, 3, extra, may_carry=True)
    request = None if extra is None else _from_wire(extra, Request)
    view, seq = count(st.slot[1], "view"), count(st.slot[2], "seq")
    return PrePrepare(view, seq, blob(st.content, "digest", 32), request, st.signer, sig)


def _build_checkpoint(st: Statement, sig: bytes, extra: Any) -> Checkpoint:
    _shape(st, 2, extra)
    return Checkpoint(count(st.slot[1], "seq"), blob(st.content, "digest", 32), st.signer, sig)


def _build_view_change(st: Statement, sig: bytes, extra: Any) -> ViewChange:
    _shape(st, 2, extra)
    stable_seq, stable_digest, proof, prepared = items(st.content, "view-change content", 4)
    certs = []
    for item in items(prepared, "prepared certificates"):
        pp, prepares = items(item, "prepared certificate", 2)
        certs.append(
            PreparedCertificate(
                _from_wire(pp, PrePrepare),
                tuple(_from_wire(p, Prepare) for p in items(prepares, "prepares")),
            )
        )
    return ViewChange(
        count(st.slot[1], "new_view"),
        count(stable_seq, "stable_seq"),
        blob(stable_digest, "stable_digest", 32),
        tuple(_from_wire(cp, Checkpoint) for cp in items(proof, "checkpoint proof")),
        tuple(certs),
        st.signer,
        sig,
    )


def _build_new_view(st: Statement, sig: bytes, extra: Any) -> NewView:
    _shape(st, 2, extra)
    vcs, pps = items(st.content, "new-view content", 2)
    return NewView(
        count(st.slot[1], "view"),
        tuple(_from_wire(vc, ViewChange) for vc in items(vcs, "view changes")),
        tuple(_from_wire(pp, PrePrepare) for pp in items(pps, "pre-prepares")),
        st.signer,
        sig,
    )


def _build_status(st: Statement, sig: bytes, extra: Any) -> Status:
    _shape(st, 1, extra)
    view, active, last_executed, stable_seq = items(st.content, "status content", 4)
    ensure(isinstance(active, bool), "PBFT status: 'active' must be a bool")
    return Status(
        st.signer,
        count(view, "view"),
        active,
        count(last_executed, "last_executed"),
        count(stable_seq, "stable_seq"),
        sig,
    )


_BUILDERS: dict[str, tuple[type[SignedMessage], Callable[[Statement, bytes, Any], Any]]] = {
    Request.KIND: (Request, _build_request),
    PrePrepare.KIND: (PrePrepare, _build_pre_prepare),
    Prepare.KIND: (Prepare, _phase(Prepare)),
    Commit.KIND: (Commit, _phase(Commit)),
    Checkpoint.KIND: (Checkpoint, _build_checkpoint),
    ViewChange.KIND: (ViewChange, _build_view_change),
    NewView.KIND: (NewView, _build_new_view),
    Status.KIND: (Status, _build_status),
}

"""PBFT messages, their canonical signed form, and the certificate checks.

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
bytes received.

Quorums: a certificate needs ``quorum = ceil((n + f + 1) / 2)`` distinct valid
signatures, which is exactly ``2f + 1`` for ``n = 3f + 1`` and keeps any two
quorums intersecting in at least ``f + 1`` replicas for larger ``n``.

Invariants:
    * ``decode_message(encode_message(m)) == m`` and :func:`decode_message`
      raises :class:`~robeing.protocol.errors.DecodeError` on anything else.
    * The ``*_ok`` checks of :class:`Cluster` are pure and verify every
      signature they rely on, including those nested in certificates.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgpack

from .errors import ConfigError, DecodeError
from .evidence import (
    SignatureCheck,
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


# --- certificate checks ------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The replica group and the pure validity checks every replica applies.

    Args:
        replicas: replica ids; the primary of view ``v`` is ``replicas[v % n]``.
        f: number of Byzantine replicas tolerated.
        check: signature check knowing every replica's and client's key.
        checkpoint_interval: a checkpoint is taken every this many sequence numbers.
        log_size: width of the sequence-number window above the stable
            checkpoint (the high watermark is ``stable + log_size``).

    Raises:
        ConfigError: ``n < 3f + 1``, ``f < 0``, duplicate ids, or a window that
            is not a positive multiple of the checkpoint interval.
    """

    replicas: tuple[str, ...]
    f: int
    check: SignatureCheck
    checkpoint_interval: int = 16
    log_size: int = 32
    members: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.replicas)
        if self.f < 0:
            raise ConfigError("f must be >= 0")
        if n < 3 * self.f + 1:
            raise ConfigError(f"PBFT needs n >= 3f + 1 replicas: n={n}, f={self.f}")
        if len(set(self.replicas)) != n:
            raise ConfigError("replica ids must be distinct")
        k = self.checkpoint_interval
        if k < 1 or self.log_size < k or self.log_size % k:
            raise ConfigError("log_size must be a positive multiple of checkpoint_interval")
        object.__setattr__(self, "replicas", tuple(self.replicas))
        object.__setattr__(self, "members", frozenset(self.replicas))

    @property
    def n(self) -> int:
        return len(self.replicas)

    @property
    def quorum(self) -> int:
        """Certificate size: ``2f + 1`` when ``n = 3f + 1``."""
        return (self.n + self.f + 2) // 2

    def primary(self, view: int) -> str:
        """The primary of ``view``.

        Raises:
            Nothing.
        """
        return self.replicas[view % self.n]

    def signed_by_member(self, msg: SignedMessage) -> bool:
        """The sender is a replica and the signature is valid.

        Raises:
            TypeError: the message holds a value msgpack cannot encode.
        """
        return msg.sender in self.members and self.check(
            msg.sender, msg.signing_bytes(), msg.signature
        )

    def valid_request(self, request: Request) -> bool:
        """Signed by its client; replicas cannot originate requests.

        Raises:
            TypeError: the op holds a value msgpack cannot encode.
        """
        return request.client not in self.members and self.check(
            request.client, request.signing_bytes(), request.signature
        )

    def carries(self, digest: bytes, request: Request | None) -> bool:
        """``request`` is the valid request with ``digest`` (None for the null digest).

        Raises:
            TypeError: the op holds a value msgpack cannot encode.
        """
        if digest == NULL_DIGEST:
            return request is None
        return (
            request is not None
            and request_digest(request) == digest
            and self.valid_request(request)
        )

    def valid_pre_prepare(self, pp: PrePrepare) -> bool:
        """Sent and signed by the primary of its view, carrying its request.

        Raises:
            TypeError: the message holds a value msgpack cannot encode.
        """
        return (
            pp.replica == self.primary(pp.view)
            and self.carries(pp.digest, pp.request)
            and self.signed_by_member(pp)
        )

    def checkpoint_certificate_ok(
        self, seq: int, digest: bytes, proof: Sequence[Checkpoint]
    ) -> bool:
        """A quorum of distinct replicas signed checkpoint ``(seq, digest)``.

        Raises:
            Nothing.
        """
        if seq == 0:
            return digest == GENESIS_DIGEST and not proof
        signers: set[str] = set()
        for cp in proof:
            if cp.seq != seq or cp.state_digest != digest or cp.replica in signers:
                return False
            if not self.signed_by_member(cp):
                return False
            signers.add(cp.replica)
        return len(signers) >= self.quorum

    def prepared_certificate_ok(
        self, cert: PreparedCertificate, stable_seq: int, new_view: int
    ) -> bool:
        """A valid pre-prepare plus ``quorum - 1`` matching prepares from backups.

        Raises:
            TypeError: a message holds a value msgpack cannot encode.
        """
        pp = cert.pre_prepare
        if not (pp.view < new_view and stable_seq < pp.seq <= stable_seq + self.log_size):
            return False
        if not self.valid_pre_prepare(pp):
            return False
        primary = self.primary(pp.view)
        signers: set[str] = set()
        for p in cert.prepares:
            if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
                return False
            if p.replica == primary or p.replica in signers or not self.signed_by_member(p):
                return False
            signers.add(p.replica)
        return len(signers) >= self.quorum - 1

    def view_change_ok(self, vc: ViewChange) -> bool:
        """Signature, checkpoint proof and every prepared certificate are valid.

        Raises:
            TypeError: a message holds a value msgpack cannot encode.
        """
        if vc.stable_seq % self.checkpoint_interval or len(vc.prepared) > self.log_size:
            return False
        if len({c.seq for c in vc.prepared}) != len(vc.prepared):
            return False
        if not self.signed_by_member(vc):
            return False
        if not self.checkpoint_certificate_ok(vc.stable_seq, vc.stable_digest, vc.checkpoint_proof):
            return False
        return all(self.prepared_certificate_ok(c, vc.stable_seq, vc.new_view) for c in vc.prepared)

    def new_view_entries(
        self, view_changes: Sequence[ViewChange]
    ) -> tuple[ViewChange, list[tuple[int, bytes, Request | None]]]:
        """Compute what a new view must re-propose (Castro & Liskov, section 4.4).

        ``min_s`` is the highest stable checkpoint among the view changes,
        ``max_s`` the highest prepared sequence number. Every ``seq`` in
        ``(min_s, max_s]`` gets the request of the prepared certificate with
        the highest view, or the null request if none was prepared.

        Returns:
            The view change holding the highest stable checkpoint, and the
            ``(seq, digest, request)`` entries in sequence order.

        Raises:
            ValueError: ``view_changes`` is empty.
        """
        if not view_changes:
            raise ValueError("no view changes")
        stable = view_changes[0]
        for vc in view_changes[1:]:
            if vc.stable_seq > stable.stable_seq:
                stable = vc
        min_s = stable.stable_seq
        best: dict[int, PreparedCertificate] = {}
        for vc in view_changes:
            for cert in vc.prepared:
                held = best.get(cert.seq)
                if cert.seq > min_s and (held is None or cert.view > held.view):
                    best[cert.seq] = cert
        max_s = max(best, default=min_s)
        entries: list[tuple[int, bytes, Request | None]] = []
        for seq in range(min_s + 1, max_s + 1):
            chosen = best.get(seq)
            if chosen is None:
                entries.append((seq, NULL_DIGEST, None))
            else:
                entries.append((seq, chosen.digest, chosen.pre_prepare.request))
        return stable, entries

    def new_view_ok(self, nv: NewView) -> ViewChange | None:
        """Validate a new-view message by recomputing its pre-prepares.

        Returns:
            The view change with the highest stable checkpoint if ``nv`` is
            valid, else None.

        Raises:
            TypeError: a message holds a value msgpack cannot encode.
        """
        if nv.replica != self.primary(nv.view) or not self.signed_by_member(nv):
            return None
        senders: set[str] = set()
        for vc in nv.view_changes:
            if vc.new_view != nv.view or vc.replica in senders or not self.view_change_ok(vc):
                return None
            senders.add(vc.replica)
        if len(senders) < self.quorum:
            return None
        stable, entries = self.new_view_entries(nv.view_changes)
        if len(entries) != len(nv.pre_prepares):
            return None
        for (seq, digest, _), pp in zip(entries, nv.pre_prepares, strict=True):
            if (pp.view, pp.seq, pp.digest, pp.replica) != (nv.view, seq, digest, nv.replica):
                return None
            if not self.valid_pre_prepare(pp):
                return None
        return stable

"""What counts as a valid PBFT message and a valid quorum certificate.

:class:`Cluster` is the replica group together with the pure checks every
replica applies before a message may change its state: signed by a member
(or, for a request, by a client), sent by the primary of its view, and, for
certificates, carrying a quorum of distinct matching signatures.

Quorums: a certificate needs ``quorum = ceil((n + f + 1) / 2)`` distinct valid
signatures, which is exactly ``2f + 1`` for ``n = 3f + 1`` and keeps any two
quorums intersecting in at least ``f + 1`` replicas for larger ``n``.

:class:`~.messages.PreparedCertificate` is defined with the messages, not
here: it is part of a view change's signed content, so decoding a view change
builds it; this module only decides whether one is valid
(:meth:`Cluster.prepared_certificate_ok`).

Invariants:
    * The ``*_ok`` checks are pure and verify every signature they rely on,
      including those nested in certificates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..evidence import SignatureCheck
from .messages import (
    GENESIS_DIGEST,
    NULL_DIGEST,
    Checkpoint,
    NewView,
    PreparedCertificate,
    PrePrepare,
    Request,
    SignedMessage,
    ViewChange,
    request_digest,
)


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

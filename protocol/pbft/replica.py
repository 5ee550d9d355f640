"""A PBFT replica (Castro & Liskov, OSDI 1999) as a pure state machine.

This module is kept in one piece, longer than the others, on purpose: the normal case,
checkpoints, view changes and status retransmission all read and write the
same log, watermarks and timers, and the invariants below hold only across
all of them. One class in one file lets a reader check an invariant in one
place; split into mixins, each part would redeclare the shared state and hide
the interplay (a stable checkpoint moves the window a view change reports).

The replica does no I/O and reads no clock: the host feeds it messages
(:meth:`Replica.on_message`), client requests (:meth:`Replica.on_request`) and
the time (:meth:`Replica.tick`, at the latest when the last :class:`SetTimer`
asked), and carries out the returned actions: :class:`Send`, :class:`Broadcast`
(to every other replica), :class:`Decide` (execute in this order),
:class:`FetchState`, :class:`ReportEvidence`, :class:`EnterView`,
:class:`SetTimer`.

Protocol summary (``quorum`` is ``2f + 1`` for ``n = 3f + 1``): the primary of
view ``v`` (``replicas[v % n]``) assigns a sequence number with a signed
pre-prepare; backups prepare; a replica holding the pre-prepare and
``quorum - 1`` matching prepares is *prepared* and commits; ``quorum`` matching
commits make the request *committed*, and committed requests are decided in
sequence order. Every ``checkpoint_interval`` sequence numbers replicas sign
the state digest (a hash chain over decided digests); ``quorum`` matching
checkpoints make it stable, move the watermarks and garbage-collect the log.
Backups waiting for a request start a timer; when it fires they move to the
next view with a view change carrying their prepared certificates, the new
primary re-proposes them in a new-view message, and each further failed view
change doubles the timeout (up to a cap); a replica also starts that timer
once a quorum asks for its target view or a later one, so replicas whose
earlier view changes were lost still converge. Periodic status messages let
peers retransmit what a replica missed (Castro's thesis): the stable
checkpoint proof, the last new-view, commit quorums of decided requests and
the replica's own part of requests in flight; unstable checkpoints are
re-sent with every status. A replica that fell behind a stable checkpoint asks
the host to fetch the state.

Decisions need ``quorum`` commits for one digest in one view, from any view:
such a set implies ``f + 1`` correct replicas prepared the request, which is
what the view-change protocol preserves, so a replica that missed a view can
still decide from the commits a peer relays. A certificate may count a
signature of an equivocating replica; safety already assumes ``f`` replicas
sign anything.

Invariants (with at most ``f`` faulty replicas):
    * Agreement: correct replicas never decide different digests for one
      sequence number; a decision needs ``quorum`` commits, which implies
      ``f + 1`` correct replicas prepared it, and view changes carry it over.
    * Decisions are emitted in strictly increasing sequence numbers without
      gaps, except that after :class:`FetchState` the next decision follows
      the transferred checkpoint (see :meth:`Replica.on_state_transferred`).
    * A replica accepts at most one pre-prepare per ``(view, seq)``, sends at
      most one prepare and one commit per ``(view, seq)`` and one checkpoint
      per ``seq``; conflicting signed messages from a peer become evidence.
    * Only messages with ``low < seq <= low + log_size`` enter the log, and
      every buffer is bounded, so a flooding peer cannot exhaust memory.
    * Every message's signature is verified before it changes state;
      re-delivered messages are idempotent (counted in ``duplicates``).
    * Requests are decided at least once and may be decided again after a
      view change; executors must skip a request whose timestamp is not
      newer than the last one executed for its client (PBFT's reply cache),
      which is application state and travels with state transfer.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..evidence import Equivocation, EvidenceLog, SignatureCheck, Signer, ed25519_check
from .actions import (
    Action,
    Broadcast,
    Decide,
    EnterView,
    FetchState,
    ReportEvidence,
    Send,
    SetTimer,
)
from .certificates import Cluster
from .messages import (
    GENESIS_DIGEST,
    NULL_DIGEST,
    PBFT_DOMAIN,
    Checkpoint,
    Commit,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    Status,
    ViewChange,
    chain_digest,
    request_digest,
    sign,
)

log = logging.getLogger(__name__)


# Distinct digests kept per sender and slot. A certificate may count an
# equivocator's signature (safety already allows f faulty signers), and a
# lagging replica sometimes needs exactly that signature; the cap bounds floods.
_MAX_CONFLICTS = 4


@dataclass
class _Slot:
    pre_prepares: dict[int, PrePrepare] = field(default_factory=dict)  # accepted, per view
    carriers: dict[bytes, PrePrepare] = field(default_factory=dict)  # any valid one, per digest
    prepares: dict[int, dict[tuple[str, bytes], Prepare]] = field(default_factory=dict)
    commits: dict[int, dict[tuple[str, bytes], Commit]] = field(default_factory=dict)
    prepared: PreparedCertificate | None = None
    committed: tuple[int, bytes, Request | None] | None = None


class Replica:
    """One PBFT replica.

    Args:
        id: this replica's id (must be in ``replicas``).
        replicas: all replica ids, in the order that defines primaries.
        f: number of Byzantine replicas tolerated (``len(replicas) >= 3f + 1``).
        signer: signs bytes with this replica's private key.
        verifiers: raw Ed25519 public keys of replicas and clients, or a
            ready :data:`~robeing.protocol.evidence.SignatureCheck`.
        checkpoint_interval: take a checkpoint every this many sequence numbers.
        log_size: width of the watermark window (default twice the interval).
        view_change_timeout: initial time a backup waits for a pending request.
        max_view_change_timeout: cap for the doubling timeout (default 64x).
        status_interval: period of status messages.
        evidence: log receiving equivocation evidence (private when omitted).

    Raises:
        ConfigError: invalid group (``n < 3f + 1``, duplicates, window), unknown
            ``id`` or non-positive timeouts.
    """

    def __init__(
        self,
        id: str,
        replicas: Sequence[str],
        f: int,
        signer: Signer,
        verifiers: SignatureCheck | Mapping[str, bytes],
        *,
        checkpoint_interval: int = 16,
        log_size: int | None = None,
        view_change_timeout: float = 2.0,
        max_view_change_timeout: float | None = None,
        status_interval: float = 1.0,
        evidence: EvidenceLog | None = None,
    ) -> None:
        check = ed25519_check(verifiers) if isinstance(verifiers, Mapping) else verifiers
        size = log_size if log_size is not None else 2 * checkpoint_interval
        self.cluster = Cluster(tuple(replicas), f, check, checkpoint_interval, size)
        if id not in self.cluster.members:
            raise ConfigError(f"{id!r} is not one of the replicas")
        if view_change_timeout <= 0 or status_interval <= 0:
            raise ConfigError("timeouts and intervals must be positive")
        self.id = id
        self.evidence = evidence if evidence is not None else EvidenceLog()
        self.refused: Counter[str] = Counter()
        self.duplicates = 0
        self.view = 0
        self.active = True
        self.last_executed = 0
        self.low_watermark = 0
        self._sign = signer
        self._base_timeout = view_change_timeout
        self._max_timeout = max_view_change_timeout or 64 * view_change_timeout
        self._timeout = view_change_timeout
        self._status_interval = status_interval
        self._chain = GENESIS_DIGEST
        self._stable_digest = GENESIS_DIGEST
        self._stable_proof: tuple[Checkpoint, ...] = ()
        self._slots: dict[int, _Slot] = {}
        self._checkpoints: dict[int, dict[tuple[str, bytes], Checkpoint]] = {}
        self._far_checkpoints: dict[str, dict[int, Checkpoint]] = {}
        self._view_changes: dict[str, ViewChange] = {}
        self._new_view: NewView | None = None  # the last one installed
        self._pending: dict[str, Request] = {}
        self._last_ts: dict[str, int] = {}
        self._assigned: set[bytes] = set()
        self._next_seq = 1
        self._future: dict[str, deque[Prepare | PrePrepare | Commit]] = {}
        self._buffer_cap = 3 * size + 8
        self._timer: float | None = None
        self._next_status: float | None = None
        self._announced: float | None = None
        self._awaiting: tuple[int, bytes] | None = None
        self._status_replies: dict[str, float] = {}
        self._handlers: dict[type, Callable[[Any, float, list[Action]], None]] = {
            Request: self._on_request,
            PrePrepare: self._on_pre_prepare,
            Prepare: self._on_prepare,
            Commit: self._on_commit,
            Checkpoint: self._on_checkpoint,
            ViewChange: self._on_view_change,
            NewView: self._on_new_view,
            Status: self._on_status,
        }

    # --- public surface -------------------------------------------------------

    @property
    def primary(self) -> str:
        """Primary of the current (or, during a view change, the next) view."""
        return self.cluster.primary(self.view)

    @property
    def high_watermark(self) -> int:
        return self.low_watermark + self.cluster.log_size

    @property
    def state_digest(self) -> bytes:
        """Hash chain over all decided digests up to :attr:`last_executed`."""
        return self._chain

    @property
    def stable_checkpoint(self) -> tuple[int, bytes, tuple[Checkpoint, ...]]:
        """``(seq, state_digest, proof)`` of the last stable checkpoint."""
        return self.low_watermark, self._stable_digest, self._stable_proof

    @property
    def awaiting_state(self) -> tuple[int, bytes] | None:
        """The checkpoint a pending :class:`FetchState` asked for, if any."""
        return self._awaiting

    @property
    def next_deadline(self) -> float | None:
        """Time of the next timer event (as last announced by :class:`SetTimer`)."""
        return self._announced

    def on_message(self, msg: Message, now: float) -> list[Action]:
        """Handle one message from a peer or client.

        Args:
            msg: any PBFT message; its signature is verified here.
            now: current time.

        Returns:
            The actions to carry out, in order.

        Raises:
            Nothing: invalid messages are refused and counted in :attr:`refused`.
        """
        out: list[Action] = []
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.refused["unknown_type"] += 1
        else:
            handler(msg, now, out)
        self._finish(now, out)
        return out

    def on_request(self, request: Request, now: float) -> list[Action]:
        """Handle a client request (same as :meth:`on_message`).

        Raises:
            Nothing: invalid requests are refused and counted.
        """
        return self.on_message(request, now)

    def tick(self, now: float) -> list[Action]:
        """Advance timers: start a view change when the timer expired, send status.

        Raises:
            Nothing.
        """
        out: list[Action] = []
        if self._timer is not None and now >= self._timer:
            self._timer = None
            self._timeout = min(2 * self._timeout, self._max_timeout)
            log.info("%s: timer expired in view %d", self.id, self.view)
            self._start_view_change(self.view + 1, now, out)
        if self._next_status is not None and now >= self._next_status:
            self._next_status = now + self._status_interval
            status = Status(self.id, self.view, self.active, self.last_executed, self.low_watermark)
            out.append(Broadcast(sign(status, self._sign)))
            own = self._view_changes.get(self.id)
            if not self.active and own is not None:
                out.append(Broadcast(own))
            # Checkpoints not yet stable: lost ones would otherwise freeze the window.
            for votes in self._checkpoints.values():
                out.extend(Broadcast(cp) for (r, _), cp in votes.items() if r == self.id)
        self._finish(now, out)
        return out

    def on_state_transferred(
        self,
        seq: int,
        state_digest: bytes,
        now: float,
        client_timestamps: Mapping[str, int] | None = None,
    ) -> list[Action]:
        """Resume after the host installed the state a :class:`FetchState` asked for.

        Args:
            seq: checkpoint sequence number of the installed state.
            state_digest: its digest, as in the :class:`FetchState`.
            now: current time.
            client_timestamps: last executed timestamp per client in the
                installed state, so requests already executed there are no
                longer awaited.

        Returns:
            Further actions (decisions above ``seq`` that were waiting).

        Raises:
            Nothing: a transfer that does not match the awaited checkpoint
            (outdated or wrong) is refused and counted as ``state_transfer``.
        """
        out: list[Action] = []
        if self._awaiting != (seq, state_digest):
            self.refused["state_transfer"] += 1
        else:
            self._awaiting = None
            self.last_executed = seq
            self._chain = state_digest
            for client, ts in (client_timestamps or {}).items():
                self._forget_request(client, ts)
            self._execute(out)
        self._finish(now, out)
        return out

    # --- normal case ----------------------------------------------------------

    def _on_request(self, req: Request, now: float, out: list[Action]) -> None:
        if req.client in self.cluster.members:
            self.refused["not_allowed"] += 1
            return
        current = self._pending.get(req.client)
        if current == req:
            self.duplicates += 1
            return
        if req.timestamp <= self._last_ts.get(req.client, -1) or (
            current is not None and current.timestamp >= req.timestamp
        ):
            self.refused["stale"] += 1
            return
        if not self.cluster.valid_request(req):
            self.refused["signature"] += 1
            return
        self._pending[req.client] = req
        if self.active:
            if self.primary == self.id:
                self._propose(out)
            else:
                out.append(Send(self.primary, req))

    def _propose(self, out: list[Action]) -> None:
        if not self.active or self.primary != self.id:
            return
        for req in list(self._pending.values()):
            digest = request_digest(req)
            if digest in self._assigned:
                continue
            if self._next_seq > self.high_watermark:
                return
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            pp = sign(PrePrepare(self.view, seq, digest, req, self.id), self._sign)
            slot = self._slot(seq)
            slot.pre_prepares[self.view] = slot.carriers[digest] = pp
            self._assigned.add(digest)
            out.append(Broadcast(pp))

    def _on_pre_prepare(self, pp: PrePrepare, now: float, out: list[Action]) -> None:
        if pp.replica != self.cluster.primary(pp.view):
            self.refused["not_primary"] += 1
            return
        if not self._admit(pp, out):
            return
        slot = self._slots.get(pp.seq)
        known = slot.pre_prepares.get(pp.view) if slot else None
        if known == pp or (slot is not None and slot.carriers.get(pp.digest) == pp):
            self.duplicates += 1
            return
        if not self.cluster.carries(pp.digest, pp.request):
            self.refused["digest"] += 1
            return
        if not self._verified(pp):
            return
        slot = self._slot(pp.seq)
        if pp.request is not None and pp.digest not in slot.carriers:
            voted = any(key[1] == pp.digest for votes in slot.commits.values() for key in votes)
            if voted or len(slot.carriers) < _MAX_CONFLICTS:  # replayed requests cannot crowd out
                slot.carriers[pp.digest] = pp
        if known is not None:
            self.refused["equivocation"] += 1
            self._equivocation(known, pp, out)
        elif pp.view == self.view:  # older views' pre-prepares only carry requests
            slot.pre_prepares[pp.view] = pp
            if pp.replica != self.id:
                prepare = sign(Prepare(pp.view, pp.seq, pp.digest, self.id), self._sign)
                slot.prepares.setdefault(pp.view, {})[(self.id, pp.digest)] = prepare
                out.append(Broadcast(prepare))
                self._check_prepared(pp.seq, slot, out)
        self._check_committed(slot, out)

    def _on_prepare(self, p: Prepare, now: float, out: list[Action]) -> None:
        if p.replica not in self.cluster.members or p.replica == self.cluster.primary(p.view):
            self.refused["not_allowed"] += 1
            return
        if not self._admit(p, out):
            return
        if p.view < self.view:
            self.refused["old_view"] += 1
            return
        slot = self._slots.get(p.seq)
        if slot is not None and slot.prepares.get(p.view, {}).get((p.replica, p.digest)) == p:
            self.duplicates += 1
            return
        if not self._verified(p):
            return
        slot = self._slot(p.seq)
        if self._store(slot.prepares.setdefault(p.view, {}), p, out):
            self._check_prepared(p.seq, slot, out)

    def _on_commit(self, c: Commit, now: float, out: list[Action]) -> None:
        if c.replica not in self.cluster.members:
            self.refused["unknown_sender"] += 1
            return
        if not self._admit(c, out):
            return
        slot = self._slots.get(c.seq)
        if slot is not None and slot.commits.get(c.view, {}).get((c.replica, c.digest)) == c:
            self.duplicates += 1
            return
        if not self._verified(c):
            return
        slot = self._slot(c.seq)
        if self._store(slot.commits.setdefault(c.view, {}), c, out):
            self._check_committed(slot, out)

    def _store(
        self,
        votes: dict[tuple[str, bytes], Any],
        msg: Prepare | Commit | Checkpoint,
        out: list[Action],
    ) -> bool:
        """Keep a verified vote keyed by sender and digest; flag a conflicting earlier one."""
        conflicts = [m for (sender, _), m in votes.items() if sender == msg.sender]
        if conflicts:
            if len(conflicts) >= _MAX_CONFLICTS:
                self.refused["flood"] += 1
                return False
            self._equivocation(conflicts[0], msg, out)
        votes[(msg.sender, msg.content())] = msg
        return True

    def _admit(self, msg: PrePrepare | Prepare | Commit, out: list[Action]) -> bool:
        """Watermarks, then buffer messages of a view this replica has not entered."""
        if not self.low_watermark < msg.seq <= self.high_watermark:
            self.refused["watermark"] += 1
            return False
        ahead = msg.view > self.view or (
            msg.view == self.view and not self.active and not isinstance(msg, Commit)
        )
        if not ahead:
            return True
        if msg.view > self.view + 1:
            self.refused["future_view"] += 1
        elif self._verified(msg):
            queue = self._future.setdefault(msg.sender, deque(maxlen=self._buffer_cap))
            if msg in queue:
                self.duplicates += 1
            else:
                if len(queue) == queue.maxlen:
                    self.refused["buffer_full"] += 1
                queue.append(msg)
        return False

    def _check_prepared(self, seq: int, slot: _Slot, out: list[Action]) -> None:
        view = self.view
        pp = slot.pre_prepares.get(view)
        if not self.active or pp is None:
            return
        if slot.prepared is not None and slot.prepared.view >= view:
            return
        matching = [p for p in slot.prepares.get(view, {}).values() if p.digest == pp.digest]
        needed = self.cluster.quorum - 1
        if len(matching) < needed:
            return
        matching.sort(key=lambda p: p.replica)
        slot.prepared = PreparedCertificate(pp, tuple(matching[:needed]))
        commit = sign(Commit(view, seq, pp.digest, self.id), self._sign)
        slot.commits.setdefault(view, {})[(self.id, pp.digest)] = commit
        out.append(Broadcast(commit))
        self._check_committed(slot, out)

    def _check_committed(self, slot: _Slot, out: list[Action]) -> None:
        if slot.committed is None:
            for view, commits in slot.commits.items():
                votes = Counter(c.digest for c in commits.values())
                for digest, count in votes.items():
                    if count >= self.cluster.quorum:
                        found, request = self._carried(slot, digest)
                        if found:
                            slot.committed = (view, digest, request)
                            break
                if slot.committed is not None:
                    break
        self._execute(out)

    def _carried(self, slot: _Slot, digest: bytes) -> tuple[bool, Request | None]:
        if digest == NULL_DIGEST:
            return True, None
        carrier = slot.carriers.get(digest)
        if carrier is not None:
            return True, carrier.request
        for req in self._pending.values():
            if request_digest(req) == digest:
                return True, req
        return False, None

    def _execute(self, out: list[Action]) -> None:
        while self._awaiting is None:
            seq = self.last_executed + 1
            slot = self._slots.get(seq)
            if slot is None or slot.committed is None:
                return
            view, digest, request = slot.committed
            self._chain = chain_digest(self._chain, seq, digest)
            self.last_executed = seq
            out.append(Decide(seq, view, request, digest))
            if request is not None:
                self._forget_request(request.client, request.timestamp)
                if self.active:  # progress in this view: the next wait starts afresh
                    self._timeout = self._base_timeout
                    self._timer = None
            if seq % self.cluster.checkpoint_interval == 0:
                cp = sign(Checkpoint(seq, self._chain, self.id), self._sign)
                self._checkpoints.setdefault(seq, {})[(self.id, cp.state_digest)] = cp
                out.append(Broadcast(cp))
                self._check_stable(seq, out)

    def _forget_request(self, client: str, timestamp: int) -> None:
        self._last_ts[client] = max(self._last_ts.get(client, -1), timestamp)
        pending = self._pending.get(client)
        if pending is not None and pending.timestamp <= timestamp:
            del self._pending[client]

    def _equivocation(self, first: Message, second: Message, out: list[Action]) -> None:
        if first.signing_bytes() == second.signing_bytes():
            self.duplicates += 1
            return
        evidence = Equivocation.from_pair(PBFT_DOMAIN, first.statement(), second.statement())
        if self.evidence.record(evidence):
            out.append(ReportEvidence(evidence))

    def _verified(self, msg: Message) -> bool:
        if self.cluster.signed_by_member(msg):
            return True
        self.refused["signature"] += 1
        return False

    def _slot(self, seq: int) -> _Slot:
        slot = self._slots.get(seq)
        if slot is None:
            slot = self._slots[seq] = _Slot()
        return slot

    # --- checkpoints and state transfer ------------------------------------------

    def _on_checkpoint(self, cp: Checkpoint, now: float, out: list[Action]) -> None:
        if cp.replica not in self.cluster.members:
            self.refused["unknown_sender"] += 1
            return
        if cp.seq % self.cluster.checkpoint_interval or cp.seq <= self.low_watermark:
            self.refused["stale"] += 1
            return
        if cp.seq <= self.high_watermark:
            votes = self._checkpoints.get(cp.seq, {})
            if votes.get((cp.replica, cp.state_digest)) == cp:
                self.duplicates += 1
            elif self._verified(cp):
                if self._store(self._checkpoints.setdefault(cp.seq, {}), cp, out):
                    self._check_stable(cp.seq, out)
            return
        # Beyond the window: keep each replica's few newest, to notice being left behind.
        far = self._far_checkpoints.setdefault(cp.replica, {})
        known = far.get(cp.seq)
        if known == cp:
            self.duplicates += 1
        elif known is not None:
            if self._verified(cp):
                self._equivocation(known, cp, out)
        elif len(far) >= _MAX_CONFLICTS and cp.seq < min(far):
            self.refused["stale"] += 1
        elif self._verified(cp):
            far[cp.seq] = cp
            if len(far) > _MAX_CONFLICTS:
                del far[min(far)]
            groups: dict[tuple[int, bytes], list[Checkpoint]] = {}
            for c in (c for cps in self._far_checkpoints.values() for c in cps.values()):
                groups.setdefault((c.seq, c.state_digest), []).append(c)
            for (seq, digest), proof in sorted(groups.items(), reverse=True):
                if len(proof) >= self.cluster.quorum:
                    self._advance_stable(seq, digest, self._proof(proof), out)
                    return

    def _check_stable(self, seq: int, out: list[Action]) -> None:
        groups: dict[bytes, list[Checkpoint]] = {}
        for cp in self._checkpoints.get(seq, {}).values():
            groups.setdefault(cp.state_digest, []).append(cp)
        for digest, proof in groups.items():
            if len(proof) >= self.cluster.quorum:
                self._advance_stable(seq, digest, self._proof(proof), out)
                return

    def _proof(self, checkpoints: list[Checkpoint]) -> tuple[Checkpoint, ...]:
        return tuple(sorted(checkpoints, key=lambda c: c.replica)[: self.cluster.quorum])

    def _advance_stable(
        self, seq: int, digest: bytes, proof: tuple[Checkpoint, ...], out: list[Action]
    ) -> None:
        if seq <= self.low_watermark:
            return
        self._execute(out)  # run what is committed first: it may reach seq itself
        if seq <= self.low_watermark:  # executing may have made a later checkpoint stable
            return
        own = [cp for (r, d), cp in self._checkpoints.get(seq, {}).items() if r == self.id]
        if own and own[0].state_digest != digest:
            log.error("%s: state diverged from the stable checkpoint at %d", self.id, seq)
        self.low_watermark, self._stable_digest, self._stable_proof = seq, digest, proof
        self._slots = {s: slot for s, slot in self._slots.items() if s > seq}
        self._checkpoints = {s: cps for s, cps in self._checkpoints.items() if s > seq}
        moved = set()
        for replica, far in self._far_checkpoints.items():
            for s in [s for s in far if s <= self.high_watermark]:
                cp = far.pop(s)
                if s > seq:
                    self._checkpoints.setdefault(s, {}).setdefault((replica, cp.state_digest), cp)
                    moved.add(s)
        self._next_seq = max(self._next_seq, seq + 1)
        if self.last_executed < seq:
            self._awaiting = (seq, digest)
            out.append(FetchState(seq, digest, proof))
        for s in sorted(moved):
            self._check_stable(s, out)
        self._propose(out)

    def _on_status(self, st: Status, now: float, out: list[Action]) -> None:
        peer = st.replica
        if peer not in self.cluster.members or peer == self.id:
            self.refused["unknown_sender"] += 1
            return
        last = self._status_replies.get(peer)
        if last is not None and now - last < self._status_interval / 2:
            self.refused["rate_limited"] += 1
            return
        if not self._verified(st):
            return
        self._status_replies[peer] = now
        if st.stable_seq < self.low_watermark and self._stable_proof:
            out.extend(Send(peer, cp) for cp in self._stable_proof)
        nv = self._new_view  # still valid after we left its view: it lets the peer catch up
        if nv is not None and (st.view < nv.view or (st.view == nv.view and not st.active)):
            out.append(Send(peer, nv))
        # Committed requests the peer has not executed: the request and a commit quorum.
        start = max(st.last_executed, self.low_watermark) + 1
        end = min(
            self.last_executed, max(st.stable_seq, self.low_watermark) + self.cluster.log_size
        )
        for seq in range(start, end + 1):
            slot = self._slots.get(seq)
            if slot is None or slot.committed is None:
                continue
            view, digest, _ = slot.committed
            carrier = slot.carriers.get(digest)
            if carrier is not None:
                out.append(Send(peer, carrier))
            commits = slot.commits.get(view, {}).values()
            out.extend(Send(peer, c) for c in commits if c.digest == digest)
        # Requests still in flight in the view both are in: our part of the protocol.
        if self.active and st.active and st.view == self.view:
            for seq in range(max(end, st.last_executed) + 1, self.high_watermark + 1):
                slot = self._slots.get(seq)
                pp = slot.pre_prepares.get(self.view) if slot else None
                if slot is None or pp is None:
                    continue
                out.append(Send(peer, pp))
                for phase in (slot.prepares, slot.commits):
                    own = phase.get(self.view, {}).get((self.id, pp.digest))
                    if own is not None:
                        out.append(Send(peer, own))

    # --- view changes -------------------------------------------------------------

    def _start_view_change(self, target: int, now: float, out: list[Action]) -> None:
        self.view, self.active = target, False
        self._assigned = set()
        self._timer = None
        certs = tuple(
            slot.prepared
            for seq, slot in sorted(self._slots.items())
            if slot.prepared is not None and seq > self.low_watermark
        )
        vc = ViewChange(
            target, self.low_watermark, self._stable_digest, self._stable_proof, certs, self.id
        )
        vc = sign(vc, self._sign)
        self._view_changes[self.id] = vc
        out.append(Broadcast(vc))
        log.info("%s: view change to %d", self.id, target)
        for queue in self._future.values():
            kept = [m for m in queue if m.view >= target]
            queue.clear()
            queue.extend(kept)
        self._view_changes_updated(now, out)

    def _on_view_change(self, vc: ViewChange, now: float, out: list[Action]) -> None:
        if vc.replica not in self.cluster.members or vc.replica == self.id:
            self.refused["unknown_sender"] += 1
            return
        known = self._view_changes.get(vc.replica)
        if known == vc:
            self.duplicates += 1
            return
        if (known is not None and known.new_view >= vc.new_view) or (
            vc.new_view < self.view or (vc.new_view == self.view and self.active)
        ):
            self.refused["stale"] += 1
            return
        if not self.cluster.view_change_ok(vc):
            self.refused["invalid"] += 1
            return
        self._view_changes[vc.replica] = vc
        self._view_changes_updated(now, out)

    def _view_changes_updated(self, now: float, out: list[Action]) -> None:
        higher = sorted(
            (vc.new_view for r, vc in self._view_changes.items() if r != self.id),
            reverse=True,
        )
        higher = [v for v in higher if v > self.view]
        if len(higher) > self.cluster.f:
            # f + 1 peers want a later view: at least one is correct, follow them.
            self._start_view_change(higher[self.cluster.f], now, out)
            return
        if self.active:
            return
        support = [vc for vc in self._view_changes.values() if vc.new_view == self.view]
        if len(support) < self.cluster.quorum or self.primary != self.id:
            # Start waiting once a quorum wants this view or a later one. Counting
            # later ones matters: a peer retransmits only its newest view change,
            # and without it nobody here might ever see a quorum for this view.
            at_least = sum(vc.new_view >= self.view for vc in self._view_changes.values())
            if at_least >= self.cluster.quorum and self._timer is None:
                self._timer = now + self._timeout
        else:
            own = self._view_changes[self.id]
            others = sorted((vc for vc in support if vc is not own), key=lambda v: v.replica)
            chosen = (own, *others[: self.cluster.quorum - 1])
            stable, entries = self.cluster.new_view_entries(chosen)
            pps = tuple(
                sign(PrePrepare(self.view, seq, digest, req, self.id), self._sign)
                for seq, digest, req in entries
            )
            nv = sign(NewView(self.view, chosen, pps, self.id), self._sign)
            out.append(Broadcast(nv))
            self._install(nv, stable, now, out)

    def _on_new_view(self, nv: NewView, now: float, out: list[Action]) -> None:
        if nv.replica != self.cluster.primary(nv.view):
            self.refused["not_primary"] += 1
            return
        if nv.view < self.view or (nv.view == self.view and self.active):
            if nv == self._new_view:
                self.duplicates += 1
            else:
                self.refused["stale"] += 1
            return
        stable = self.cluster.new_view_ok(nv)
        if stable is None:
            self.refused["invalid"] += 1
            return
        self._install(nv, stable, now, out)

    def _install(self, nv: NewView, stable: ViewChange, now: float, out: list[Action]) -> None:
        self.view, self.active = nv.view, False  # no proposals before the new view's own
        self._new_view = nv
        self._timer = None
        self._view_changes = {
            r: vc for r, vc in self._view_changes.items() if vc.new_view > nv.view
        }
        if stable.stable_seq > self.low_watermark:
            self._advance_stable(
                stable.stable_seq, stable.stable_digest, stable.checkpoint_proof, out
            )
        self.active = True
        self._assigned = {pp.digest for pp in nv.pre_prepares}
        top = self.low_watermark
        for pp in nv.pre_prepares:
            top = max(top, pp.seq)
            if not self.low_watermark < pp.seq <= self.high_watermark:
                continue
            slot = self._slot(pp.seq)
            slot.pre_prepares[nv.view] = pp
            if pp.request is not None:
                slot.carriers.setdefault(pp.digest, pp)
            if nv.replica != self.id:
                prepare = sign(Prepare(nv.view, pp.seq, pp.digest, self.id), self._sign)
                slot.prepares.setdefault(nv.view, {})[(self.id, pp.digest)] = prepare
                out.append(Broadcast(prepare))
        self._next_seq = top + 1
        out.append(EnterView(nv.view, nv.replica))
        log.info("%s: entered view %d", self.id, nv.view)
        replay: list[Prepare | PrePrepare | Commit] = []
        for queue in self._future.values():
            replay.extend(m for m in queue if m.view == nv.view)
            kept = [m for m in queue if m.view > nv.view]
            queue.clear()
            queue.extend(kept)
        for msg in replay:
            self._handlers[type(msg)](msg, now, out)
        for seq, slot in sorted(self._slots.items()):
            self._check_prepared(seq, slot, out)
        self._propose(out)

    # --- timers ------------------------------------------------------------------

    def _finish(self, now: float, out: list[Action]) -> None:
        if self._next_status is None:
            self._next_status = now + self._status_interval
        if self.active:
            if not self._pending:
                self._timer = None
            elif self._timer is None:
                self._timer = now + self._timeout
        deadline = self._next_status if self._timer is None else min(self._timer, self._next_status)
        if deadline != self._announced:
            self._announced = deadline
            out.append(SetTimer(deadline))

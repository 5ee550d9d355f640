"""Specification of the PBFT replica, its messages, and the seeded simulations."""

from __future__ import annotations

import contextlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbft_sim import random_scenario, run
from wire_values import JUNK

from robeing.protocol.errors import ConfigError, DecodeError
from robeing.protocol.evidence import Signer, ed25519_check, ed25519_signer
from robeing.protocol.pbft import (
    GENESIS_DIGEST,
    NULL_DIGEST,
    PBFT_DOMAIN,
    Action,
    Broadcast,
    Checkpoint,
    Cluster,
    Commit,
    Decide,
    EnterView,
    FetchState,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Replica,
    ReportEvidence,
    Request,
    Send,
    SetTimer,
    Status,
    ViewChange,
    chain_digest,
    decode_message,
    encode_message,
    request_digest,
    sign,
)

# --- harness -----------------------------------------------------------------------


class Group:
    """n replicas with real Ed25519 keys, one client, and a lossless network.

    ``drop(src, dst, msg)`` filters messages; replicas in ``down`` receive
    nothing and are never ticked.
    """

    def __init__(self, n: int, f: int, **options: Any) -> None:
        self.ids = [f"r{i}" for i in range(n)]
        agents = [*self.ids, "client"]
        self.keys = {a: nacl.signing.SigningKey(bytes([i + 1]) * 32) for i, a in enumerate(agents)}
        self.public = {a: bytes(k.verify_key) for a, k in self.keys.items()}
        self.check = ed25519_check(self.public)
        self.replicas = {
            r: Replica(r, self.ids, f, self.signer(r), self.public, **options) for r in self.ids
        }
        self.queue: deque[tuple[str, str, Message]] = deque()
        self.decided: dict[str, list[Decide]] = {r: [] for r in self.ids}
        self.actions: dict[str, list[Action]] = {r: [] for r in self.ids}
        self.sent: list[tuple[str, Message]] = []
        self.down: set[str] = set()
        self.drop: Callable[[str, str, Message], bool] = lambda src, dst, msg: False

    def signer(self, agent: str) -> Signer:
        return ed25519_signer(self.keys[agent])

    def request(self, ts: int, op: Any = None) -> Request:
        return sign(
            Request("client", op if op is not None else f"op-{ts}", ts), self.signer("client")
        )

    def handle(self, src: str, actions: list[Action]) -> None:
        for a in actions:
            self.actions[src].append(a)
            if isinstance(a, Send):
                self.queue.append((src, a.to, a.msg))
                self.sent.append((src, a.msg))
            elif isinstance(a, Broadcast):
                self.queue.extend((src, dst, a.msg) for dst in self.ids if dst != src)
                self.sent.append((src, a.msg))
            elif isinstance(a, Decide):
                self.decided[src].append(a)

    def submit(self, req: Request, now: float = 0.0) -> None:
        for r in self.ids:
            if r not in self.down:
                self.handle(r, self.replicas[r].on_request(req, now))
        self.settle(now)

    def deliver(self, dst: str, msg: Message, now: float = 0.0) -> list[Action]:
        actions = self.replicas[dst].on_message(msg, now)
        self.handle(dst, actions)
        return actions

    def settle(self, now: float = 0.0) -> None:
        while self.queue:
            src, dst, msg = self.queue.popleft()
            if dst in self.down or self.drop(src, dst, msg):
                continue
            self.deliver(dst, msg, now)

    def tick(self, now: float) -> None:
        for r in self.ids:
            if r not in self.down:
                self.handle(r, self.replicas[r].tick(now))
        self.settle(now)

    def digests(self, r: str) -> list[tuple[int, bytes]]:
        return [(d.seq, d.digest) for d in self.decided[r]]

    def of_type(self, r: str, kind: type) -> list[Any]:
        return [a for a in self.actions[r] if isinstance(a, kind)]


@pytest.fixture
def make_group() -> Callable[..., Group]:
    def make(n: int = 4, f: int = 1, **options: Any) -> Group:
        options.setdefault("view_change_timeout", 10.0)
        options.setdefault("status_interval", 1000.0)
        return Group(n, f, **options)

    return make


# --- configuration and quorums --------------------------------------------------------


@pytest.mark.parametrize(
    "replicas, f, extra",
    [
        (["a", "b", "c"], 1, {}),
        (["a", "b", "c", "d", "e", "f"], 2, {}),
        (["a", "a", "b", "c"], 1, {}),
        (["a", "b", "c", "d"], -1, {}),
        (["a", "b", "c", "d"], 1, {"checkpoint_interval": 4, "log_size": 6}),
    ],
)
def test_invalid_groups_are_refused(replicas: list[str], f: int, extra: dict[str, int]) -> None:
    """Given n < 3f + 1, duplicate ids, negative f or a window that is not a
    multiple of the checkpoint interval, Expect ConfigError."""
    with pytest.raises(ConfigError):
        Replica(replicas[0], replicas, f, lambda data: b"", {}, **extra)


def test_a_replica_must_be_a_member_and_timeouts_positive() -> None:
    """Given an id outside the group or a zero timeout, Expect ConfigError."""
    ids = ["a", "b", "c", "d"]
    with pytest.raises(ConfigError):
        Replica("z", ids, 1, lambda data: b"", {})
    with pytest.raises(ConfigError):
        Replica("a", ids, 1, lambda data: b"", {}, view_change_timeout=0)


@pytest.mark.parametrize("f", range(0, 11))
def test_quorum_is_2f_plus_1_for_3f_plus_1_and_intersects_in_f_plus_1(f: int) -> None:
    """Given n = 3f + 1 (and larger n), Expect quorum 2f + 1 at n = 3f + 1 and any
    two quorums to share at least f + 1 replicas while n - f replicas still
    form one (so f silent replicas cannot block progress)."""
    assert Cluster(tuple(f"r{i}" for i in range(3 * f + 1)), f, lambda *a: True).quorum == 2 * f + 1
    for n in range(3 * f + 1, 3 * f + 6):
        q = Cluster(tuple(f"r{i}" for i in range(n)), f, lambda *a: True).quorum
        assert 2 * q - n >= f + 1 and n - f >= q


# --- normal case ------------------------------------------------------------------------


def test_requests_are_decided_in_order_by_every_replica(make_group) -> None:
    """Given 4 correct replicas, When a client submits three requests one after
    another, Expect every replica to decide seq 1, 2, 3 with the same digests,
    in view 0, with no gaps."""
    g = make_group()
    for ts in (1, 2, 3):
        g.submit(g.request(ts))
    expected = [(ts, request_digest(g.request(ts))) for ts in (1, 2, 3)]
    for r in g.ids:
        assert g.digests(r) == expected
        assert {d.view for d in g.decided[r]} == {0}
        assert [d.request.op for d in g.decided[r] if d.request] == ["op-1", "op-2", "op-3"]
        assert g.replicas[r].last_executed == 3


def test_a_stale_retransmission_is_not_ordered_again(make_group) -> None:
    """Given a decided request, When the client retransmits it, Expect it
    refused as 'stale' and nothing new decided."""
    g = make_group()
    g.submit(g.request(1))
    g.submit(g.request(1))
    assert all(len(g.decided[r]) == 1 for r in g.ids)
    assert g.replicas["r0"].refused["stale"] == 1


def test_replicas_cannot_originate_requests(make_group) -> None:
    """Given a request signed by a replica's own key, Expect it refused as
    'not_allowed', so a faulty replica cannot inject operations."""
    g = make_group()
    req = sign(Request("r1", "evil", 1), g.signer("r1"))
    assert g.replicas["r0"].on_request(req, 0.0) == [SetTimer(1000.0)]
    assert g.replicas["r0"].refused["not_allowed"] == 1


def test_bad_signatures_are_refused_and_counted_without_effect(make_group) -> None:
    """Given a prepare claiming to come from r2 but signed by r3, and a
    pre-prepare whose request is not signed by its client, Expect both refused
    (counted) and no prepare sent in response."""
    g = make_group()
    req = g.request(1)
    forged = sign(Prepare(0, 1, request_digest(req), "r2"), g.signer("r3"))
    assert g.deliver("r1", forged) == [SetTimer(1000.0)]  # only the status timer starts
    assert g.replicas["r1"].refused["signature"] == 1
    bad_request = replace(req, signature=bytes(64))
    pp = sign(PrePrepare(0, 1, request_digest(req), bad_request, "r0"), g.signer("r0"))
    g.deliver("r1", pp)
    assert g.replicas["r1"].refused["digest"] == 1
    assert not g.of_type("r1", Broadcast)


def test_duplicate_messages_are_idempotent(make_group) -> None:
    """Given a backup that accepted a pre-prepare, When the same pre-prepare and
    the same prepare arrive again, Expect no actions and two counted duplicates."""
    g = make_group()
    req = g.request(1)
    pp = sign(PrePrepare(0, 1, request_digest(req), req, "r0"), g.signer("r0"))
    first = g.deliver("r1", pp)
    assert [type(a.msg) for a in first if isinstance(a, Broadcast)] == [Prepare]
    p2 = sign(Prepare(0, 1, pp.digest, "r2"), g.signer("r2"))
    g.deliver("r1", p2)
    assert g.deliver("r1", pp) == [] and g.deliver("r1", p2) == []
    assert g.replicas["r1"].duplicates == 2


def test_primary_equivocation_becomes_third_party_verifiable_evidence(make_group) -> None:
    """Given a backup that accepted the primary's pre-prepare for (0, 1), When
    the primary sends a different one for the same slot, Expect it refused,
    a ReportEvidence action naming the primary, and evidence that verifies
    with public keys alone."""
    g = make_group()
    a, b = g.request(1, "a"), g.request(2, "b")
    first = sign(PrePrepare(0, 1, request_digest(a), a, "r0"), g.signer("r0"))
    second = sign(PrePrepare(0, 1, request_digest(b), b, "r0"), g.signer("r0"))
    g.deliver("r1", first)
    actions = g.deliver("r1", second)
    reports = [x for x in actions if isinstance(x, ReportEvidence)]
    assert len(reports) == 1
    evidence = reports[0].evidence
    assert (evidence.offender, evidence.slot) == ("r0", ("pre-prepare", 0, 1))
    assert evidence.verify(ed25519_check(g.public))
    assert g.replicas["r1"].refused["equivocation"] == 1
    assert not [x for x in actions if isinstance(x, Broadcast)]  # no prepare for the second
    assert list(g.replicas["r1"].evidence) == [evidence]


def test_conflicting_prepares_and_commits_are_reported(make_group) -> None:
    """Given r2's prepare and commit for one digest, When r2 signs another
    digest for the same slots, Expect one evidence record per slot."""
    g = make_group()
    d1, d2 = b"\x01" * 32, b"\x02" * 32
    for kind in (Prepare, Commit):
        g.deliver("r1", sign(kind(0, 1, d1, "r2"), g.signer("r2")))
        g.deliver("r1", sign(kind(0, 1, d2, "r2"), g.signer("r2")))
    slots = sorted(e.slot for e in g.replicas["r1"].evidence)
    assert slots == [("commit", 0, 1), ("prepare", 0, 1)]


def test_messages_outside_the_watermarks_are_refused(make_group) -> None:
    """Given log_size 4, Expect pre-prepares for seq 0 and seq 5 refused as
    'watermark' and the primary to stop assigning at the high watermark."""
    g = make_group(checkpoint_interval=2, log_size=4)
    req = g.request(1)
    for seq in (0, 5):
        g.deliver("r1", sign(PrePrepare(0, seq, request_digest(req), req, "r0"), g.signer("r0")))
    assert g.replicas["r1"].refused["watermark"] == 2


# --- checkpoints, garbage collection, state transfer --------------------------------------


def test_checkpoint_becomes_stable_and_the_log_below_is_collected(make_group) -> None:
    """Given checkpoint interval 2, When two requests are decided, Expect every
    replica to broadcast a checkpoint for seq 2, reach a stable checkpoint with a
    quorum proof, move its low watermark to 2, and refuse messages for seq <= 2."""
    g = make_group(checkpoint_interval=2, log_size=4)
    g.submit(g.request(1))
    g.submit(g.request(2))
    for r in g.ids:
        replica = g.replicas[r]
        seq, digest, proof = replica.stable_checkpoint
        assert seq == 2 == replica.low_watermark and replica.high_watermark == 6
        assert digest == replica.state_digest
        assert len({cp.replica for cp in proof}) == 3
        assert all(cp.seq == 2 and cp.state_digest == digest for cp in proof)
    chain = chain_digest(GENESIS_DIGEST, 1, request_digest(g.request(1)))
    assert g.replicas["r0"].state_digest == chain_digest(chain, 2, request_digest(g.request(2)))
    late = sign(Commit(0, 2, b"\x00" * 32, "r2"), g.signer("r2"))
    g.deliver("r1", late)
    assert g.replicas["r1"].refused["watermark"] == 1


def test_a_replica_left_behind_fetches_state_and_continues(make_group) -> None:
    """Given r3 down while the others decide 3 requests (stable checkpoint at 2),
    When r3 comes back and sends its status, Expect the peers to send it the
    checkpoint proof and the commits for seq 3, r3 to ask for the state at 2,
    and after the transfer to decide seq 3 itself, then follow new requests."""
    g = make_group(checkpoint_interval=2, log_size=4, status_interval=1.0)
    g.down = {"r3"}
    for ts in (1, 2, 3):
        g.submit(g.request(ts))
    assert g.replicas["r0"].low_watermark == 2
    g.down = set()
    r3 = g.replicas["r3"]
    g.handle("r3", r3.tick(5.0))  # first call only starts the status timer
    g.handle("r3", r3.tick(6.0))
    g.settle(6.0)
    fetch = g.of_type("r3", FetchState)
    assert len(fetch) == 1 and fetch[0].seq == 2
    assert fetch[0].state_digest == g.replicas["r0"].stable_checkpoint[1]
    assert g.decided["r3"] == []  # nothing before the state is installed
    assert r3.on_state_transferred(2, b"\x09" * 32, 6.0) == []
    assert r3.refused["state_transfer"] == 1
    g.handle("r3", r3.on_state_transferred(2, fetch[0].state_digest, 6.0, {"client": 2}))
    assert g.digests("r3") == [(3, request_digest(g.request(3)))]
    g.submit(g.request(4), now=7.0)
    assert g.digests("r3")[-1] == g.digests("r0")[-1] == (4, request_digest(g.request(4)))
    assert r3.state_digest == g.replicas["r0"].state_digest


def test_status_lets_a_replica_catch_up_on_lost_commits(make_group) -> None:
    """Given r3 lost every commit for seq 1, When it sends a status, Expect the
    peers to resend the request and a commit quorum, and r3 to decide seq 1."""
    g = make_group(status_interval=1.0)
    g.drop = lambda src, dst, msg: dst == "r3" and isinstance(msg, Commit)
    g.submit(g.request(1))
    assert g.decided["r3"] == [] and all(g.decided[r] for r in ("r0", "r1", "r2"))
    g.drop = lambda src, dst, msg: False
    g.handle("r3", g.replicas["r3"].tick(1.0))
    g.settle(1.0)
    assert g.digests("r3") == g.digests("r0")


def test_lost_checkpoints_are_resent_with_the_status(make_group) -> None:
    """Given log_size == checkpoint_interval == 2 and every checkpoint lost, When
    the window is full, Expect the primary to hold back the third request, and
    after the next status round (which re-sends unstable checkpoints) the
    checkpoint to become stable and the third request to be decided."""
    g = make_group(checkpoint_interval=2, log_size=2, status_interval=1.0)
    g.drop = lambda src, dst, msg: isinstance(msg, Checkpoint)
    g.submit(g.request(1))
    g.submit(g.request(2))
    g.submit(g.request(3))
    assert [len(g.decided[r]) for r in g.ids] == [2, 2, 2, 2]
    assert g.replicas["r0"].low_watermark == 0
    g.drop = lambda src, dst, msg: False
    g.tick(0.5)  # starts the status timers
    g.tick(1.5)
    assert all(g.replicas[r].low_watermark == 2 for r in g.ids)
    assert [len(g.decided[r]) for r in g.ids] == [3, 3, 3, 3]


# --- view changes ----------------------------------------------------------------------


def test_a_silent_primary_is_replaced_and_the_request_decided(make_group) -> None:
    """Given r0 (primary of view 0) down, When a request is submitted and the
    backups' timers expire, Expect view change to view 1, r1 to send the new
    view, and the request decided in view 1 by all correct replicas."""
    g = make_group(view_change_timeout=10.0)
    g.down = {"r0"}
    g.submit(g.request(1), now=0.0)
    assert not any(g.decided.values())
    g.tick(9.9)
    assert not any(g.of_type(r, EnterView) for r in g.ids)
    g.tick(10.0)
    for r in ("r1", "r2", "r3"):
        assert g.replicas[r].view == 1 and g.replicas[r].active
        assert g.of_type(r, EnterView) == [EnterView(1, "r1")]
        assert [(d.seq, d.view) for d in g.decided[r]] == [(1, 1)]
    assert sum(isinstance(m, NewView) for _, m in g.sent) == 1


def test_view_change_timeout_doubles_when_the_next_primary_is_silent_too(make_group) -> None:
    """Given n=7, f=2 with the primaries of views 0 and 1 down, Expect the view
    change to view 1 after T=10, then to view 2 only after a further 2T, and the
    request decided in view 2."""
    g = make_group(n=7, f=2, view_change_timeout=10.0)
    g.down = {"r0", "r1"}
    g.submit(g.request(1), now=0.0)
    g.tick(10.0)
    assert {g.replicas[r].view for r in g.ids[2:]} == {1}
    assert not g.replicas["r2"].active
    g.tick(29.9)
    assert {g.replicas[r].view for r in g.ids[2:]} == {1}
    g.tick(30.0)
    for r in g.ids[2:]:
        assert (g.replicas[r].view, g.replicas[r].active) == (2, True)
        assert [(d.seq, d.view) for d in g.decided[r]] == [(1, 2)]


def test_a_quorum_at_this_view_or_later_starts_the_view_change_timer(make_group) -> None:
    """Given r2 waiting for view 1 with r3's view change for 1 (no quorum), When
    r1 announces view 2, Expect r2 to start its timer (a quorum wants view 1 or
    later, and r1 will not resend its view change for 1) and, when it fires,
    to move on to view 2."""
    g = make_group(view_change_timeout=10.0)
    r2 = g.replicas["r2"]
    g.handle("r2", r2.on_request(g.request(1), 0.0))
    g.handle("r2", r2.tick(10.0))
    assert (r2.view, r2.active) == (1, False)

    def vc(view: int, r: str) -> ViewChange:
        return sign(ViewChange(view, 0, GENESIS_DIGEST, (), (), r), g.signer(r))

    g.deliver("r2", vc(1, "r3"), 11.0)
    assert r2.next_deadline == 1000.0  # only the status timer: no quorum yet
    g.deliver("r2", vc(2, "r1"), 12.0)
    assert r2.next_deadline == 12.0 + 20.0  # the timeout doubled with the first view change
    g.handle("r2", r2.tick(32.0))
    assert (r2.view, r2.active) == (2, False)


def test_a_replica_that_missed_a_new_view_gets_it_from_a_peer(make_group) -> None:
    """Given r3 missed the new view of view 1, When r3 sends its status, Expect
    a peer to resend the new view and r3 to enter view 1."""
    g = make_group(view_change_timeout=10.0, status_interval=5.0)
    g.down = {"r0"}
    g.drop = lambda src, dst, msg: dst == "r3" and isinstance(msg, NewView)
    g.submit(g.request(1), now=0.0)
    g.tick(1.0)  # status timers start
    g.tick(10.0)
    r3 = g.replicas["r3"]
    assert (r3.view, r3.active) == (1, False) and g.replicas["r2"].active
    g.drop = lambda src, dst, msg: False
    g.handle("r3", r3.tick(15.0))  # the next status is due at 10 + 5
    g.settle(15.0)
    assert (r3.view, r3.active) == (1, True)
    assert g.digests("r3") == g.digests("r1")


def _prepared_but_not_committed(g: Group) -> Request:
    """Run view 0 so that every replica prepares seq 1 but no commit arrives."""
    g.drop = lambda src, dst, msg: isinstance(msg, Commit)
    req = g.request(1)
    g.submit(req, now=0.0)
    assert not any(g.decided.values())
    return req


def test_a_prepared_request_keeps_its_sequence_number_across_a_view_change(make_group) -> None:
    """Given seq 1 prepared in view 0 but never committed, When the view changes,
    Expect the new primary to re-propose the same digest at seq 1 (carried by the
    prepared certificates) and every replica to decide it in view 1."""
    g = make_group()
    req = _prepared_but_not_committed(g)
    g.drop = lambda src, dst, msg: False
    g.tick(10.0)
    nv = [m for _, m in g.sent if isinstance(m, NewView)]
    assert len(nv) == 1 and [(p.seq, p.digest) for p in nv[0].pre_prepares] == [
        (1, request_digest(req))
    ]
    for r in g.ids:
        assert [(d.seq, d.view, d.digest) for d in g.decided[r]] == [(1, 1, request_digest(req))]


def test_a_new_view_that_drops_a_prepared_request_is_refused(make_group) -> None:
    """Given seq 1 prepared in view 0, When the new primary's new-view replaces
    its pre-prepare by a null request (validly re-signed), Expect backups to
    refuse it as 'invalid' and to accept the honest new-view afterwards."""
    g = make_group()
    _prepared_but_not_committed(g)
    held: list[NewView] = []

    def hold(src: str, dst: str, msg: Message) -> bool:
        if isinstance(msg, NewView):
            held.append(msg)
            return True
        return False

    g.drop = hold
    g.tick(10.0)
    honest = held[0]
    nulls = tuple(
        sign(replace(pp, digest=NULL_DIGEST, request=None), g.signer("r1"))
        for pp in honest.pre_prepares
    )
    forged = sign(replace(honest, pre_prepares=nulls), g.signer("r1"))
    g.deliver("r2", forged, 10.0)
    assert g.replicas["r2"].refused["invalid"] == 1 and not g.replicas["r2"].active
    g.deliver("r2", honest, 10.0)
    assert g.replicas["r2"].active and g.replicas["r2"].view == 1


def test_view_changes_with_invalid_certificates_are_refused(make_group) -> None:
    """Given a view change whose prepared certificate lacks a quorum, or whose
    checkpoint proof is empty for a non-zero checkpoint, Expect 'invalid'."""
    g = make_group()
    req = g.request(1)
    pp = sign(PrePrepare(0, 1, request_digest(req), req, "r0"), g.signer("r0"))
    one = sign(Prepare(0, 1, pp.digest, "r1"), g.signer("r1"))
    weak = sign(
        ViewChange(1, 0, GENESIS_DIGEST, (), (PreparedCertificate(pp, (one,)),), "r2"),
        g.signer("r2"),
    )
    bogus = sign(ViewChange(1, 16, b"\x05" * 32, (), (), "r3"), g.signer("r3"))
    g.deliver("r1", weak)
    g.deliver("r1", bogus)
    assert g.replicas["r1"].refused["invalid"] == 2 and g.replicas["r1"].active


def test_f_plus_1_view_changes_for_later_views_pull_a_replica_along(make_group) -> None:
    """Given r3 active in view 0, When one peer asks for view 1 it stays; When a
    second (f + 1 = 2) peer asks for view 5, Expect r3 to move to view 1, the
    (f + 1)-th highest view asked for, so f faulty peers cannot inflate views."""
    g = make_group()

    def vc(view: int, r: str) -> ViewChange:
        return sign(ViewChange(view, 0, GENESIS_DIGEST, (), (), r), g.signer(r))

    assert not g.of_type("r3", Broadcast)
    g.deliver("r3", vc(1, "r1"))
    assert g.replicas["r3"].active
    g.deliver("r3", vc(5, "r2"))
    own = [a.msg for a in g.of_type("r3", Broadcast) if isinstance(a.msg, ViewChange)]
    assert [(m.new_view, m.replica) for m in own] == [(1, "r3")]


def test_new_view_entries_take_the_highest_view_certificate_and_fill_gaps_with_null(
    make_group,
) -> None:
    """Given view changes reporting seq 2 prepared in views 0 and 1 with
    different digests and seq 4 prepared in view 0, Expect entries for seq 1..4:
    null, the view-1 digest, null, the seq-4 digest."""
    g = make_group()
    cluster = g.replicas["r0"].cluster
    a, b, c = g.request(1, "a"), g.request(2, "b"), g.request(3, "c")

    def cert(view: int, seq: int, req: Request) -> PreparedCertificate:
        pp = PrePrepare(view, seq, request_digest(req), req, cluster.primary(view))
        return PreparedCertificate(pp, ())

    vcs = [
        ViewChange(2, 0, GENESIS_DIGEST, (), (cert(0, 2, a), cert(0, 4, c)), "r0"),
        ViewChange(2, 0, GENESIS_DIGEST, (), (cert(1, 2, b),), "r1"),
        ViewChange(2, 0, GENESIS_DIGEST, (), (), "r3"),
    ]
    stable, entries = cluster.new_view_entries(vcs)
    assert stable.stable_seq == 0
    assert [(s, d) for s, d, _ in entries] == [
        (1, NULL_DIGEST),
        (2, request_digest(b)),
        (3, NULL_DIGEST),
        (4, request_digest(c)),
    ]


# --- wire format ------------------------------------------------------------------------


def test_every_message_round_trips_through_the_wire_format(make_group) -> None:
    """Given one signed message of every kind (view change and new view with
    nested certificates), Expect decode(encode(m)) == m with a valid signature."""
    g = make_group()
    req = g.request(1, {"k": [1, 2.5, b"x"]})
    pp = sign(PrePrepare(0, 1, request_digest(req), req, "r0"), g.signer("r0"))
    prepares = tuple(sign(Prepare(0, 1, pp.digest, r), g.signer(r)) for r in ("r1", "r2"))
    cps = tuple(sign(Checkpoint(16, b"\x07" * 32, r), g.signer(r)) for r in ("r0", "r1", "r2"))
    vc = sign(
        ViewChange(1, 16, b"\x07" * 32, cps, (PreparedCertificate(pp, prepares),), "r3"),
        g.signer("r3"),
    )
    nv_pp = sign(PrePrepare(1, 17, NULL_DIGEST, None, "r1"), g.signer("r1"))
    messages: list[Message] = [
        req,
        pp,
        *prepares,
        sign(Commit(0, 1, pp.digest, "r2"), g.signer("r2")),
        *cps,
        vc,
        sign(NewView(1, (vc,), (nv_pp,), "r1"), g.signer("r1")),
        sign(Status("r2", 3, False, 17, 16), g.signer("r2")),
    ]
    cluster = g.replicas["r0"].cluster
    for msg in messages:
        decoded = decode_message(encode_message(msg))
        assert decoded == msg and type(decoded) is type(msg)
        assert decoded.signing_bytes() == msg.signing_bytes()
        assert g.check(msg.sender, decoded.signing_bytes(), decoded.signature)
    assert cluster.view_change_ok(vc) is False  # 3 checkpoints are a quorum, but r3 signed
    assert cluster.checkpoint_certificate_ok(16, b"\x07" * 32, cps)
    assert not cluster.checkpoint_certificate_ok(16, b"\x07" * 32, (cps[0], cps[0], cps[1]))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",
        msgpack.packb([b"x"]),
        msgpack.packb(
            [b"robeing.vote.v1" + msgpack.packb(["r0", ["prepare", 0, 1], b"d" * 32]), b""]
        ),
        msgpack.packb([PBFT_DOMAIN + msgpack.packb(["r0", ["nonsense"], 1]), b""]),
        msgpack.packb([PBFT_DOMAIN + msgpack.packb(["r0", ["prepare", 0, 1], b"short"]), b""]),
        msgpack.packb([PBFT_DOMAIN + msgpack.packb(["r0", ["prepare", -1, 1], b"d" * 32]), b""]),
        # view 0 encoded as uint16: decodes to the same value, but is not canonical
        msgpack.packb(
            [PBFT_DOMAIN + b"\x93\xa2r0\x93\xa7prepare\xcd\x00\x00\x01\xc4\x20" + b"d" * 32, b""]
        ),
    ],
)
def test_malformed_or_non_canonical_bytes_are_refused(raw: bytes) -> None:
    """Given garbage, a foreign domain, an unknown kind, a short digest, a
    negative number or a non-canonical encoding, Expect DecodeError."""
    with pytest.raises(DecodeError):
        decode_message(raw)


def _wire_of(signer: str, slot: list[Any], content: Any, *extra: Any) -> list[Any]:
    return [PBFT_DOMAIN + msgpack.packb([signer, slot, content]), b"sig", *extra]


def test_a_kind_that_is_no_string_is_refused() -> None:
    """Given a statement whose kind is a list (unhashable), Expect DecodeError."""
    with pytest.raises(DecodeError, match="unknown PBFT message kind"):
        decode_message(msgpack.packb(_wire_of("r0", [["prepare"], 0, 1], b"d" * 32)))


def test_a_message_nested_where_another_kind_belongs_is_refused_before_it_is_built() -> None:
    """Given new-views nested in each other thousands deep (each where a view
    change belongs), Expect DecodeError at the first level, not a recursion."""
    inner = _wire_of("r0", ["new-view", 1], [[], []])
    for _ in range(5000):
        inner = _wire_of("r0", ["new-view", 1], [[inner], []])
    with pytest.raises(DecodeError, match="expected a PBFT ViewChange"):
        decode_message(msgpack.packb(inner))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "request",
            "pre-prepare",
            "prepare",
            "commit",
            "checkpoint",
            "view-change",
            "new-view",
            "status",
        ]
    ),
    st.lists(JUNK, max_size=3),
    JUNK,
    st.lists(JUNK, max_size=1),
)
def test_junk_in_any_kind_raises_only_decode_error(
    kind: str, slot: list[Any], content: Any, extra: list[Any]
) -> None:
    """Given a statement of a known kind with arbitrary slot values, content and
    carried value, When decoded, Expect a message or DecodeError, nothing else."""
    try:
        raw = msgpack.packb(_wire_of("r0", [kind, *slot], content, *extra))
    except (TypeError, ValueError, OverflowError):
        return  # not encodable by msgpack (e.g. an int key beyond 64 bits)
    with contextlib.suppress(DecodeError):
        decode_message(raw)


# --- seeded simulations ---------------------------------------------------------------


def _simulate(n: int, f: int, runs: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"runs": runs, "unsafe": [], "not_live": [], "vc_by_kind": Counter()}
    counts: Counter[str] = Counter()
    slowest = 0.0
    for seed in range(runs):
        scenario = random_scenario(n, f, seed)
        result = run(scenario)
        if not result.safe:
            stats["unsafe"].append((seed, result.violations[:3]))
        if not result.live:
            stats["not_live"].append(seed)
        slowest = max(slowest, result.finished_at - scenario.gst)
        counts["runs with view change"] += result.view_changes > 0
        counts["runs with state transfer"] += result.state_transfers > 0
        counts["runs with evidence"] += result.evidence > 0
        counts["ed25519 runs"] += scenario.ed25519
        counts["wire runs"] += scenario.wire
        counts[f"kind {scenario.kind}"] += 1
        stats["vc_by_kind"][scenario.kind] += result.view_changes > 0
    stats.update(counts)
    stats["slowest after GST"] = round(slowest, 1)
    print(f"\nPBFT simulation n={n} f={f}: {stats}")
    return stats


@pytest.mark.parametrize("n, f", [(4, 1), (7, 2)])
def test_simulated_runs_keep_agreement_validity_and_liveness(n: int, f: int) -> None:
    """Given 1000 seeded runs with loss, delay, reordering, duplication, healing
    partitions before GST and up to f Byzantine replicas (silent, equivocating,
    forging, wrong digest, replaying, flooding), Expect in every run: no two
    correct replicas decide differently for a seq, every decided request came
    from a client, no correct replica is accused, and every request is decided
    by every correct replica within the bound after GST; Expect view changes
    in every run with a silent primary, and state transfers and evidence in
    some runs."""
    stats = _simulate(n, f, runs=1000)
    assert stats["unsafe"] == []
    assert stats["not_live"] == []
    assert stats["vc_by_kind"]["silent_primary"] == stats["kind silent_primary"] > 0
    assert stats["runs with state transfer"] > 0 and stats["runs with evidence"] > 0
    assert stats["ed25519 runs"] > 0 and stats["wire runs"] > 0


def test_the_simulation_catches_a_replica_that_prepares_two_pre_prepares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given a broken replica that also prepares a conflicting pre-prepare for a
    slot it already accepted, Expect the simulation to report agreement
    violations (the checks above are able to fail)."""
    original = Replica._equivocation

    def broken(self: Replica, first: Message, second: Message, out: list[Action]) -> None:
        original(self, first, second, out)
        if isinstance(second, PrePrepare) and second.view == self.view:
            slot = self._slots[second.seq]
            slot.pre_prepares[second.view] = second
            p = sign(Prepare(second.view, second.seq, second.digest, self.id), self._sign)
            slot.prepares.setdefault(second.view, {})[(self.id, second.digest)] = p
            out.append(Broadcast(p))

    monkeypatch.setattr(Replica, "_equivocation", broken)
    seeds = [s for s in range(400) if random_scenario(7, 2, s).kind == "equivocate"]
    unsafe = sum(not run(random_scenario(7, 2, s)).safe for s in seeds)
    assert unsafe > 0

"""Specification of the pool view and leases (protocol/leases.py)."""

from __future__ import annotations

import pytest

from robeing.protocol.errors import DecodeError
from robeing.protocol.leaserecords import LeaseFold, LeaseRecord
from robeing.protocol.leases import AGENT, LeaseBook, pool_view, shortfall
from robeing.protocol.ledger import Holder, ResourceLedger
from robeing.protocol.resources import InsufficientResources, Resources


def pool(**agents: Resources) -> ResourceLedger:
    ledger = ResourceLedger()
    for agent_id, r in agents.items():
        ledger.contribute(agent_id, r)
    return ledger


def test_the_view_shows_free_total_and_the_largest_on_one_agent() -> None:
    """Given two agents of 4 cpus each, Expect 8 free of 8, and at most 4 on one agent."""
    ledger = pool(a=Resources(cpu=4, memory=2**30), b=Resources(cpu=4))
    view = pool_view(ledger)
    assert (view.free.cpu, view.total.cpu, view.largest.cpu) == (8, 8, 4)
    assert view.largest.memory == 2**30 and view.agents == 2
    assert pool_view(ledger, agents={"b"}).total == Resources(cpu=4)


def test_the_shortfall_is_one_line_naming_what_was_asked() -> None:
    view = pool_view(pool(a=Resources(cpu=4), b=Resources(cpu=4)))
    assert shortfall(Resources(cpu=16), view) == (
        "insufficient resources: asked cpu=16; free cpu=8 (largest on one agent: 4)"
    )
    two = shortfall(Resources(cpu=16, memory=10), view)
    assert two == (
        "insufficient resources: asked cpu=16,memory=10; free cpu=8,memory=0 "
        "(largest on one agent: cpu=4,memory=0)"
    )


def test_a_lease_is_whole_on_one_agent_when_one_has_room_else_spread() -> None:
    """Given 4 + 4 cpus, When 3 are leased, Expect one part; When 6 more, Expect two parts
    short of room on one agent; When 1 more than is free, Expect a refusal."""
    book = LeaseBook(pool(a=Resources(cpu=4), b=Resources(cpu=4)))
    whole = book.request("l1", "me", Resources(cpu=3), now=0, ttl=60)
    assert len(whole.allocation.parts) == 1
    with pytest.raises(InsufficientResources):
        book.request("l2", "me", Resources(cpu=6), now=0, ttl=60)
    book.release("l1", "me")
    spread = book.request("l2", "me", Resources(cpu=6), now=0, ttl=60)
    assert sorted(p.resources.cpu for p in spread.allocation.parts) == [2, 4]


def test_only_the_holder_releases_and_a_release_frees_exactly_once() -> None:
    ledger = pool(a=Resources(cpu=4))
    book = LeaseBook(ledger)
    book.request("l1", "me", Resources(cpu=4), now=0, ttl=60)
    assert book.release("l1", "you") == "not yours"
    assert ledger.available().cpu == 0
    assert book.release("l1", "me") == "released"
    assert book.release("l1", "me") == "released"  # told again why it ended
    assert ledger.available().cpu == 4


def test_leases_end_on_ttl_on_the_holders_death_and_never_silently_on_revocation() -> None:
    """Given a client lease with a TTL, an agent lease and a lease on b, Expect the first to
    end at its TTL, the agent's when its holder is lost, and the one on b kept while b
    shrinks but revoked (told on release) when b is gone."""
    ledger = pool(a=Resources(cpu=4), b=Resources(cpu=4))
    book = LeaseBook(ledger)
    book.request("ttl", "me", Resources(cpu=1), now=0, ttl=10)
    book.request("dies", "other", Resources(cpu=1), now=0, kind=AGENT)
    book.request("on-b", "me", Resources(cpu=4), now=0, ttl=100, agents={"b"})
    assert book.sweep(5) == []
    assert [(lease.lease_id, why) for lease, why in book.sweep(10)] == [("ttl", "expired")]
    assert [lease.lease_id for lease in book.holder_lost("other")] == ["dies"]
    ledger.contribute("b", Resources(cpu=1))  # b shrinks below what it lends: kept
    assert book.sweep(11) == [] and ledger.available("b").cpu == 0
    ledger.withdraw("b")  # b is gone
    ((lease, why),) = book.sweep(12)
    assert lease.lease_id == "on-b" and why.startswith("revoked")
    assert book.release("on-b", "me").startswith("revoked")
    assert ledger.available().cpu == 4 and book.leases == {}


def test_a_renewal_moves_the_expiry_and_only_the_holder_renews() -> None:
    """Given a client lease of TTL 10 at t=0, When renewed at 8, Expect it alive at 15 and
    expired at 18; a renewal by another, or of an ended lease, says why not."""
    book = LeaseBook(pool(a=Resources(cpu=4)))
    book.request("l1", "me", Resources(cpu=1), now=0, ttl=10)
    assert book.renew("l1", "you", 8) == "not yours"
    renewed = book.renew("l1", "me", 8)
    assert not isinstance(renewed, str) and renewed.expires_at == 18
    assert book.sweep(15) == []
    assert [why for _, why in book.sweep(18)] == ["expired"]
    assert book.renew("l1", "me", 19) == "expired"
    assert book.renew("nope", "me", 19) == "unknown"
    with pytest.raises(ValueError, match="has ended"):  # its records keep it ended
        book.request("l1", "me", Resources(cpu=1), now=20, ttl=10)


def test_a_client_lease_needs_a_ttl_and_an_agent_lease_may_have_none() -> None:
    book = LeaseBook(pool(a=Resources(cpu=4)))
    with pytest.raises(ValueError, match="needs a ttl"):
        book.request("l1", "me", Resources(cpu=1), now=0)
    lease = book.request("l2", "w1", Resources(cpu=1), now=0, kind=AGENT)
    assert lease.expires_at is None and book.sweep(10**9) == []


def _fold(*records: LeaseRecord) -> LeaseFold:
    fold = LeaseFold()
    for r in records:
        fold.apply(LeaseRecord.from_data(r.to_data()))  # through the wire form
    return fold


def test_folding_the_records_gives_every_live_lease_as_last_recorded() -> None:
    """Given grant, renew and end records of three leases, Expect the fold to hold the
    renewed terms of the live ones, why the ended one ended, and a restore onto a fresh
    ledger to hold exactly what the original did."""
    ledger = pool(a=Resources(cpu=4), b=Resources(cpu=4))
    book = LeaseBook(ledger)
    l1 = book.request("l1", "me", Resources(cpu=6), now=0, ttl=10)
    l2 = book.request("l2", "w1", Resources(cpu=1), now=0, kind=AGENT)
    l3 = book.request("l3", "me", Resources(cpu=1), now=0, ttl=10)
    renewed = book.renew("l1", "me", 5)
    assert not isinstance(renewed, str)
    book.release("l3", "me")
    fold = _fold(
        LeaseRecord.of("grant", 3, 0, l1),
        LeaseRecord.of("grant", 3, 0, l2),
        LeaseRecord.of("grant", 3, 0, l3),
        LeaseRecord.of("renew", 3, 5, renewed),
        LeaseRecord("end", 3, 6, "l3", why="released"),
    )
    assert fold.live == {"l1": renewed.terms(), "l2": l2.terms()}
    assert fold.ended == {"l3": "released"} and fold.recorded["l1"] == 5
    fresh = LeaseBook(ResourceLedger())
    for terms in fold.live.values():
        fresh.restore(terms)
    fresh.ledger.contribute("a", Resources(cpu=4))
    fresh.ledger.contribute("b", Resources(cpu=4))
    assert fresh.ledger.available() == ledger.available()
    assert len(fresh.ledger.allocations(Holder.LEASE)) == 2
    assert [why for _, why in fresh.sweep(15)] == ["expired"]  # l1, renewed to 15


def test_the_fold_skips_records_of_a_deposed_coordinator_and_never_revives_an_end() -> None:
    """Given records of epoch 4, When a record of epoch 3 follows (a deposed coordinator),
    Expect it skipped and counted; and a grant after an end leaves the lease ended."""
    book = LeaseBook(pool(a=Resources(cpu=4)))
    lease = book.request("l1", "me", Resources(cpu=1), now=0, ttl=10)
    fold = _fold(
        LeaseRecord.of("grant", 4, 0, lease),
        LeaseRecord("end", 4, 1, "l1", why="expired"),
        LeaseRecord.of("grant", 4, 2, lease),
        LeaseRecord.of("grant", 3, 3, lease),
    )
    assert fold.live == {} and fold.ended == {"l1": "expired"} and fold.stale == 1


@pytest.mark.parametrize(
    "data",
    [
        {"op": "seize", "epoch": 1, "at": 0, "lease": "l1"},
        {"op": "grant", "epoch": 1, "at": 0, "lease": "l1"},  # no terms
        {"op": "end", "epoch": -1, "at": 0, "lease": "l1"},
    ],
)
def test_a_malformed_lease_record_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        LeaseRecord.from_data(data)


def test_terms_naming_another_lease_or_kind_are_refused() -> None:
    book = LeaseBook(pool(a=Resources(cpu=4)))
    terms = book.request("l1", "me", Resources(cpu=1), now=0, ttl=10).terms().to_data()
    with pytest.raises(DecodeError, match="another lease"):
        LeaseRecord.from_data({"op": "grant", "epoch": 1, "at": 0, "lease": "l2", "terms": terms})
    with pytest.raises(DecodeError, match="kind"):
        LeaseRecord.from_data(
            {"op": "grant", "epoch": 1, "at": 0, "lease": "l1", "terms": {**terms, "kind": "x"}}
        )


def test_a_ttl_out_of_range_is_refused() -> None:
    book = LeaseBook(pool(a=Resources(cpu=4)))
    with pytest.raises(ValueError, match="ttl"):
        book.request("l1", "me", Resources(cpu=1), now=0, ttl=0)


def test_the_coordinator_never_sweeps_a_lease_as_a_finished_tasks_reservation() -> None:
    """Given a lease on the coordinator's ledger, When the machine sweeps reservations of
    tasks no longer running, Expect the lease kept: it is held as a lease, not a task."""
    from robeing.protocol.coordinator import (
        BecameActive,
        CoordinatorConfig,
        CoordinatorState,
        HeartbeatReceived,
        Tick,
    )
    from robeing.protocol.heartbeat import Heartbeat

    m = CoordinatorState(CoordinatorConfig("coord"))
    m.handle(BecameActive(7), 0.0)
    beat = Heartbeat("worker", "alive", ("a",), resources=Resources(cpu=4), started_at=1.0)
    m.handle(HeartbeatReceived("w1", "worker", beat), 0.0)
    book = LeaseBook(m.fleet.ledger)
    book.request("l1", "me", Resources(cpu=3), now=0, ttl=600)
    for t in (1.0, 30.0, 60.0):
        m.handle(HeartbeatReceived("w1", "worker", beat), t)  # alive throughout
        m.handle(Tick(), t)
    assert m.fleet.ledger.available().cpu == 1 and book.sweep(60.0) == []


def test_an_agent_lease_ends_once_its_holder_is_no_longer_alive() -> None:
    """Given agent leases of w1 (heard alive) and w2 (never heard, as after a failover),
    and a client lease, Expect w1's to end when the detector drops w1, w2's only once
    the takeover grace has passed, and the client's never by this rule."""
    book = LeaseBook(pool(a=Resources(cpu=4)))
    book.request("of-w1", "w1", Resources(cpu=1), now=0, kind=AGENT)
    book.request("of-w2", "w2", Resources(cpu=1), now=0, kind=AGENT)
    book.request("of-c", "c", Resources(cpu=1), now=0, ttl=60)
    alive, heard = {"w1"}, set[str]()
    assert book.agents_gone(alive.__contains__, heard, graced=False) == []
    assert heard == {"w1"}
    alive.clear()  # the coordinator declared w1 dead
    gone = book.agents_gone(alive.__contains__, heard, graced=False)
    assert [lease.lease_id for lease in gone] == ["of-w1"] and heard == set()
    assert book.release("of-w1", "w1") == "holder lost"
    gone = book.agents_gone(alive.__contains__, heard, graced=True)
    assert [lease.lease_id for lease in gone] == ["of-w2"]
    assert list(book.leases) == ["of-c"]


def test_a_contribution_order_is_obeyed_unless_older_than_the_newest_obeyed() -> None:
    """Given an order stamped (3, 5) obeyed, Expect the same order obeyed again (a retry),
    a later one obeyed, and an older one (a deposed coordinator's) refused."""
    from robeing.protocol.contributions import ContributionFence, ContributionOrder

    fence = ContributionFence()
    order = ContributionOrder(Resources(cpu=2), 3, 5)
    assert ContributionOrder.from_data(order.to_data()) == order
    assert fence.admit(order) and fence.admit(order)
    assert fence.admit(ContributionOrder(Resources(cpu=1), 4, 1))
    assert not fence.admit(ContributionOrder(Resources(cpu=8), 3, 9))
    with pytest.raises(DecodeError, match="unknown resource gpu"):
        ContributionOrder.from_data({"resources": {"gpu": 1}, "epoch": 1, "seq": 1})
    with pytest.raises(DecodeError):
        ContributionOrder.from_data({"resources": {"cpu": -1}, "epoch": 1, "seq": 1})

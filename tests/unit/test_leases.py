"""Specification of the pool view and leases (protocol/leases.py)."""

from __future__ import annotations

import pytest

from robeing.protocol.leases import LeaseBook, pool_view, shortfall
from robeing.protocol.ledger import ResourceLedger
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
    whole = book.request("l1", "me", Resources(cpu=3), now=0)
    assert len(whole.allocation.parts) == 1
    with pytest.raises(InsufficientResources):
        book.request("l2", "me", Resources(cpu=6), now=0)
    book.release("l1", "me")
    spread = book.request("l2", "me", Resources(cpu=6), now=0)
    assert sorted(p.resources.cpu for p in spread.allocation.parts) == [2, 4]


def test_only_the_holder_releases_and_a_release_frees_exactly_once() -> None:
    ledger = pool(a=Resources(cpu=4))
    book = LeaseBook(ledger)
    book.request("l1", "me", Resources(cpu=4), now=0)
    assert book.release("l1", "you") == "not yours"
    assert ledger.available().cpu == 0
    assert book.release("l1", "me") == "released"
    assert book.release("l1", "me") == "released"  # told again why it ended
    assert ledger.available().cpu == 4


def test_leases_end_on_ttl_on_the_holders_death_and_never_silently_on_revocation() -> None:
    ledger = pool(a=Resources(cpu=4), b=Resources(cpu=4))
    book = LeaseBook(ledger)
    book.request("ttl", "me", Resources(cpu=1), now=0, ttl=10)
    book.request("dies", "other", Resources(cpu=1), now=0)
    book.request("on-b", "me", Resources(cpu=4), now=0, agents={"b"})
    assert book.sweep(5) == []
    assert [(lease.lease_id, why) for lease, why in book.sweep(10)] == [("ttl", "expired")]
    assert [lease.lease_id for lease in book.holder_lost("other")] == ["dies"]
    ledger.contribute("b", Resources(cpu=1))  # b shrinks below what it lends
    ((lease, why),) = book.sweep(11)
    assert lease.lease_id == "on-b" and why.startswith("revoked")
    assert book.release("on-b", "me").startswith("revoked")
    assert ledger.available().cpu == 5 and book.leases == {}


def test_a_ttl_out_of_range_is_refused() -> None:
    book = LeaseBook(pool(a=Resources(cpu=4)))
    with pytest.raises(ValueError, match="ttl"):
        book.request("l1", "me", Resources(cpu=1), now=0, ttl=0)


def test_the_coordinator_never_sweeps_a_lease_as_a_finished_tasks_reservation() -> None:
    """Given a lease on the coordinator's ledger, When the machine sweeps reservations of
    tasks no longer running, Expect the lease kept; and no task may take a lease's id."""
    from robeing.protocol.coordinator import (
        BecameActive,
        CoordinatorConfig,
        CoordinatorState,
        HeartbeatReceived,
        Tick,
    )
    from robeing.protocol.heartbeat import Heartbeat
    from robeing.protocol.taskmsgs import TaskRequest

    m = CoordinatorState(CoordinatorConfig("coord"))
    m.handle(BecameActive(7), 0.0)
    beat = Heartbeat("worker", "alive", ("a",), resources=Resources(cpu=4), started_at=1.0)
    m.handle(HeartbeatReceived("w1", "worker", beat), 0.0)
    book = LeaseBook(m.fleet.ledger)
    book.request("l1", "me", Resources(cpu=3), now=0)
    for t in (1.0, 30.0, 60.0):
        m.handle(HeartbeatReceived("w1", "worker", beat), t)  # alive throughout
        m.handle(Tick(), t)
    assert m.fleet.ledger.available().cpu == 1 and book.sweep(60.0) == []
    assert any("reserved for pool leases" in p for p in TaskRequest("lease:l1", "x").problems())

"""Specification of the resource pooling ledger."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import RobeingError
from robeing.protocol.ledger import Constraints, Holder, Part, ResourceLedger, Strategy
from robeing.protocol.resources import (
    ConflictingRequest,
    InsufficientResources,
    InvalidResources,
    Resources,
)

GB = 1 << 30
SPLIT = Constraints(allow_split=True)


def ledger_with(**agents: Resources) -> ResourceLedger:
    ledger = ResourceLedger()
    for agent_id, capacity in agents.items():
        ledger.contribute(agent_id, capacity)
    return ledger


def test_best_fit_packs_onto_the_tightest_agent() -> None:
    """Given a big and a small agent, When a small request arrives with
    best-fit, Expect it on the small agent, keeping the big one whole."""
    ledger = ledger_with(big=Resources(16, 64 * GB), small=Resources(2, 4 * GB))
    allocation = ledger.allocate("r1", Resources(1, 2 * GB))
    assert allocation.agents == ("small",)
    assert allocation.parts[0].resources == Resources(1, 2 * GB)


def test_spread_places_onto_the_least_loaded_agent() -> None:
    """Given two equal agents, one half used, When a request arrives with
    spread, Expect it on the idle agent."""
    ledger = ledger_with(a=Resources(4, 8 * GB), b=Resources(4, 8 * GB))
    ledger.allocate("r1", Resources(2, 4 * GB), Constraints(strategy=Strategy.SPREAD))
    second = ledger.allocate("r2", Resources(1, GB), Constraints(strategy=Strategy.SPREAD))
    assert second.agents == ("b",)


def test_never_over_commits() -> None:
    """Given an agent with 4 cores, When 1-core requests keep arriving, Expect
    four placed and the fifth refused with what was free."""
    ledger = ledger_with(a=Resources(4))
    for i in range(4):
        ledger.allocate(f"r{i}", Resources(1))
    with pytest.raises(InsufficientResources) as info:
        ledger.allocate("r4", Resources(1))
    assert isinstance(info.value, RobeingError)
    assert (info.value.request_id, info.value.available) == ("r4", Resources())
    assert ledger.utilization() == {"cpu": 1.0, "memory": 0.0, "storage": 0.0, "bandwidth": 0.0}


def test_fractional_cpu_is_accounted_exactly() -> None:
    """Given an agent with 0.3 cores, When three 0.1-core requests arrive,
    Expect all three to fit (no float drift) and a fourth to be refused."""
    ledger = ledger_with(a=Resources(0.3))
    for i in range(3):
        ledger.allocate(f"r{i}", Resources(0.1))
    assert ledger.available() == Resources()
    with pytest.raises(InsufficientResources):
        ledger.allocate("r3", Resources(0.001))


def test_allocate_is_idempotent_by_request_id() -> None:
    """Given a live allocation, When the same request is retried, Expect the
    same allocation and nothing more reserved; When the id is reused with other
    resources, Expect ConflictingRequest."""
    ledger = ledger_with(a=Resources(4))
    first = ledger.allocate("r1", Resources(1))
    assert ledger.allocate("r1", Resources(1)) is first
    assert ledger.allocated() == Resources(1)
    with pytest.raises(ConflictingRequest):
        ledger.allocate("r1", Resources(2))
    with pytest.raises(ConflictingRequest):
        ledger.allocate("r1", Resources(1), SPLIT)


def test_split_across_agents_only_when_allowed() -> None:
    """Given three agents of 2 cores, When 5 cores are requested, Expect a
    refusal without splitting and, with splitting, parts that add up exactly
    and fit each agent."""
    ledger = ledger_with(**{a: Resources(2, 2 * GB) for a in "abc"})
    with pytest.raises(InsufficientResources):
        ledger.allocate("r1", Resources(5, 5 * GB))
    allocation = ledger.allocate("r1", Resources(5, 5 * GB), SPLIT)
    assert len(allocation.parts) == 3
    total = Resources()
    for part in allocation.parts:
        total += part.resources
    assert total == Resources(5, 5 * GB)
    assert ledger.available() == Resources(1, GB)


def test_split_respects_max_agents() -> None:
    """Given three agents of 2 cores, When 5 cores may span at most 2 agents,
    Expect InsufficientResources; 4 cores on 2 agents fit."""
    ledger = ledger_with(**{a: Resources(2) for a in "abc"})
    with pytest.raises(InsufficientResources):
        ledger.allocate("r1", Resources(5), Constraints(allow_split=True, max_agents=2))
    allocation = ledger.allocate("r2", Resources(4), Constraints(allow_split=True, max_agents=2))
    assert [p.resources for p in allocation.parts] == [Resources(2), Resources(2)]


def test_spread_split_shares_evenly() -> None:
    """Given three idle agents of 4 cores, When 6 cores are requested with
    spread and split, Expect 2 cores on each."""
    ledger = ledger_with(**{a: Resources(4) for a in "abc"})
    constraints = Constraints(strategy=Strategy.SPREAD, allow_split=True)
    allocation = ledger.allocate("r1", Resources(6.0), constraints)
    assert [p.resources.cpu for p in allocation.parts] == [2.0, 2.0, 2.0]


def test_release_restores_availability_and_is_idempotent() -> None:
    """Given an allocation, When it is released, Expect availability exactly as
    before it; When released again, Expect False and no change."""
    ledger = ledger_with(a=Resources(3.7, 10, 20, 30))
    before = ledger.available()
    allocation = ledger.allocate("r1", Resources(1.234, 3, 4, 5))
    assert ledger.release(allocation.allocation_id)
    assert ledger.available() == before
    assert not ledger.release(allocation.allocation_id)
    assert ledger.allocation_for("r1") is None


def test_withdraw_invalidates_the_allocations_touching_the_agent() -> None:
    """Given allocations on a, on b, and split across a and b, When a withdraws,
    Expect the ids of the first and the split one, all their parts freed, and a
    re-placement under a new allocation id the stale id cannot release."""
    ledger = ledger_with(a=Resources(2), b=Resources(2), c=Resources(2))
    on_a = ledger.allocate("ra", Resources(1), Constraints(agents=frozenset({"a"})))
    ledger.allocate("rb", Resources(1), Constraints(agents=frozenset({"b"})))
    split = ledger.allocate(
        "rs", Resources(2), Constraints(allow_split=True, agents=frozenset("ab"))
    )
    assert split.agents == ("a", "b")
    assert ledger.withdraw("a") == [on_a.allocation_id, split.allocation_id]
    assert ledger.available("b") == Resources(1)
    again = ledger.allocate("ra", Resources(1))
    assert again.allocation_id != on_a.allocation_id
    assert not ledger.release(on_a.allocation_id)
    assert ledger.withdraw("a") == []


def test_shrinking_a_contribution_keeps_every_allocation_until_it_ends() -> None:
    """Given an agent with three 1-core allocations, When its contribution shrinks to
    1.5 cores, Expect all three kept, the agent shrinking with nothing free and nothing
    new placed; When two end, Expect the new contribution in effect (0.5 free)."""
    ledger = ledger_with(a=Resources(3))
    ids = [ledger.allocate(f"r{i}", Resources(1)).allocation_id for i in range(3)]
    assert ledger.contribute("a", Resources(1.5)) is True
    assert [a.allocation_id for a in ledger.allocations()] == ids
    assert ledger.shrinking("a") and ledger.available("a") == Resources(0)
    assert ledger.allocated("a") == Resources(3) and ledger.capacity("a") == Resources(1.5)
    with pytest.raises(InsufficientResources):
        ledger.allocate("r9", Resources(0.1))
    ledger.release(ids[0])
    assert ledger.shrinking("a")  # 2 committed, 1.5 contributed
    ledger.release(ids[1])
    assert not ledger.shrinking("a") and ledger.available("a") == Resources(0.5)


def test_offering_nothing_leaves_the_pool_once_nothing_is_committed() -> None:
    """Given an agent with one allocation, When it offers nothing, Expect it kept (shrinking)
    until the allocation ends, then gone from the pool."""
    ledger = ledger_with(a=Resources(2))
    allocation = ledger.allocate("r1", Resources(1))
    ledger.contribute("a", Resources())
    assert ledger.agents() == ["a"] and ledger.shrinking("a")
    ledger.release(allocation.allocation_id)
    assert ledger.agents() == []
    ledger.contribute("b", Resources())
    assert ledger.agents() == []


def test_tasks_and_leases_are_held_apart_by_holder_kind() -> None:
    """Given a task reservation and a lease with the same request id, Expect two
    allocations, each found, listed and released by its own kind only."""
    ledger = ledger_with(a=Resources(4))
    task = ledger.allocate("x", Resources(1))
    lease = ledger.allocate("x", Resources(2), Constraints(allow_split=True), Holder.LEASE)
    assert task.holder is Holder.TASK and lease.holder is Holder.LEASE
    assert ledger.allocations(Holder.TASK) == [task]
    assert ledger.allocations(Holder.LEASE) == [lease]
    assert ledger.allocation_for("x", Holder.LEASE) == lease
    assert ledger.release_request("x")  # the task's
    assert ledger.allocations() == [lease]


def test_restore_installs_recorded_parts_even_before_the_agents_contribute() -> None:
    """Given an empty ledger (a coordinator that just took over), When a recorded lease is
    restored, Expect its parts held on agents that contribute nothing yet (shrinking, none
    free); When they announce their contribution, Expect the rest free."""
    ledger = ResourceLedger()
    parts = (Part("a", Resources(cpu=2)), Part("b", Resources(cpu=1)))
    restored = ledger.restore("l1", Holder.LEASE, parts)
    assert restored.parts == parts and ledger.shrinking("a")
    assert ledger.restore("l1", Holder.LEASE, parts) is restored
    ledger.contribute("a", Resources(cpu=4))
    ledger.contribute("b", Resources(cpu=4))
    assert ledger.available() == Resources(cpu=5) and not ledger.shrinking("a")
    with pytest.raises(InvalidResources):
        ledger.restore("l2", Holder.LEASE, ())


def test_candidate_constraints() -> None:
    """Given agents a and b, Expect ``exclude`` and ``agents`` to limit candidates."""
    ledger = ledger_with(a=Resources(1), b=Resources(8))
    assert ledger.allocate("r1", Resources(1), Constraints(exclude=frozenset("a"))).agents == ("b",)
    with pytest.raises(InsufficientResources):
        ledger.allocate("r2", Resources(2), Constraints(agents=frozenset("a")))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu": -1},
        {"cpu": float("nan")},
        {"cpu": float("inf")},
        {"memory": 1.5},
        {"storage": -1},
        {"bandwidth": True},
    ],
)
def test_invalid_quantities_are_refused(kwargs: dict[str, Any]) -> None:
    """Given a negative, non-finite or non-integral byte quantity, Expect InvalidResources."""
    with pytest.raises(InvalidResources):
        Resources(**kwargs)


def test_empty_requests_and_bad_constraints_are_refused() -> None:
    """Given a zero request, max_agents 0 or a strategy that is not a Strategy
    (such as a misplaced positional flag), Expect InvalidResources."""
    with pytest.raises(InvalidResources):
        ledger_with(a=Resources(1)).allocate("r", Resources())
    with pytest.raises(InvalidResources):
        Constraints(max_agents=0)
    with pytest.raises(InvalidResources):
        Constraints(cast(Any, True))


# --- properties --------------------------------------------------------------

_AGENTS = ["a", "b", "c", "d"]
_quantities = st.builds(
    Resources,
    cpu=st.floats(0, 8, allow_nan=False),
    memory=st.integers(0, 1000),
    storage=st.integers(0, 1000),
    bandwidth=st.integers(0, 1000),
)
_constraints = st.builds(
    Constraints,
    strategy=st.sampled_from(Strategy),
    allow_split=st.booleans(),
    max_agents=st.none() | st.integers(1, 4),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("contribute"), st.sampled_from(_AGENTS), _quantities),
        st.tuples(st.just("withdraw"), st.sampled_from(_AGENTS)),
        st.tuples(st.just("allocate"), st.integers(0, 9), _quantities, _constraints),
        st.tuples(st.just("release"), st.integers(0, 9)),
    ),
    max_size=40,
)


def _vector(r: Resources) -> tuple[int, int, int, int]:
    return (round(r.cpu * 1000), r.memory, r.storage, r.bandwidth)


def _check_invariants(ledger: ResourceLedger) -> None:
    used: dict[str, list[int]] = {a: [0, 0, 0, 0] for a in ledger.agents()}
    for allocation in ledger.allocations():
        total = [0, 0, 0, 0]
        assert len(set(allocation.agents)) == len(allocation.parts)
        for part in allocation.parts:
            v = _vector(part.resources)
            assert any(v)
            for i in range(4):
                used[part.agent_id][i] += v[i]
                total[i] += v[i]
        assert tuple(total) == _vector(allocation.requested)
    for agent, u in used.items():
        capacity = _vector(ledger.capacity(agent))
        over = not all(x <= c for x, c in zip(u, capacity, strict=True))
        assert ledger.shrinking(agent) == over  # only a shrink leaves more committed
        assert tuple(u) == _vector(ledger.allocated(agent))


@settings(max_examples=150, deadline=None)
@given(ops=_ops)
def test_ledger_invariants_hold_under_any_operation_sequence(ops: list[tuple]) -> None:
    """Given any sequence of contributions, withdrawals, allocations and
    releases, Expect after every step: no agent over-committed but by a shrink
    (and nothing placed on a shrinking one), parts adding up
    to their request, the ledger's usage equal to the sum of live parts;
    allocate-then-release restoring availability exactly; and withdraw
    returning exactly the live allocations with a part on the agent."""
    ledger = ResourceLedger()
    for op in ops:
        if op[0] == "contribute":
            ledger.contribute(op[1], op[2])
        elif op[0] == "withdraw":
            touching = [a.allocation_id for a in ledger.allocations() if op[1] in a.agents]
            assert ledger.withdraw(op[1]) == touching
            assert all(op[1] not in a.agents for a in ledger.allocations())
        elif op[0] == "allocate":
            before = ledger.available()
            request_id = f"r{op[1]}"
            live = ledger.allocation_for(request_id)
            try:
                allocation = ledger.allocate(request_id, op[2], op[3])
            except (InsufficientResources, InvalidResources, ConflictingRequest):
                assert ledger.available() == before
                continue
            for part in allocation.parts if live is None else ():
                assert not ledger.shrinking(part.agent_id), "placed beyond what was free"
            if live is None:
                ledger.release(allocation.allocation_id)
                assert ledger.available() == before
                ledger.allocate(request_id, op[2], op[3])
            else:
                assert allocation is live and ledger.available() == before
        else:
            live = ledger.allocation_for(f"r{op[1]}")
            if live is not None:
                assert ledger.release(live.allocation_id)
        _check_invariants(ledger)

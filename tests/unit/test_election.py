"""Specification of cluster leader election and coordinator epoch fencing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.election import (
    ROLE_PRIORITY,
    ClusterMembership,
    EpochFence,
    LeaderChanged,
    StaleEpoch,
    next_epoch,
)
from robeing.protocol.errors import ProtocolError
from robeing.protocol.failure_detector import Health, HealthMonitor


def test_leader_is_lowest_priority_then_lowest_id() -> None:
    """Given members of one cluster, Expect the leader to be the lowest
    priority number, ties broken by the lowest id, in term 1."""
    view = ClusterMembership()
    assert view.join("img", "w-2", priority=ROLE_PRIORITY["worker"]) == [
        LeaderChanged("img", "w-2", 1, None)
    ]
    assert view.join("img", "s-9", priority=ROLE_PRIORITY["specialist"]) == [
        LeaderChanged("img", "s-9", 2, "w-2")
    ]
    assert view.join("img", "s-3", priority=ROLE_PRIORITY["specialist"]) == [
        LeaderChanged("img", "s-3", 3, "s-9")
    ]
    assert view.join("img", "w-1", priority=ROLE_PRIORITY["worker"]) == []
    assert (view.leader("img"), view.term("img")) == ("s-3", 3)


def test_a_dead_leader_is_replaced_and_regains_leadership_in_a_new_term() -> None:
    """Given a leader, When it dies, Expect the runner-up in the next term;
    When it comes back, Expect it to lead again in yet another term."""
    view = ClusterMembership()
    view.join("c", "a", priority=1)
    view.join("c", "b", priority=2)
    assert view.set_health("a", Health.DEAD) == [LeaderChanged("c", "b", 2, "a")]
    assert view.set_health("a", Health.ALIVE) == [LeaderChanged("c", "a", 3, "b")]


def test_only_alive_members_lead_by_default() -> None:
    """Given a leader that becomes SUSPECTED, Expect it to lose leadership; and
    Expect a view configured with BACKUP eligible to let a standby lead."""
    view = ClusterMembership()
    view.join("c", "a", priority=1)
    view.join("c", "b", priority=2, health=Health.BACKUP)
    assert view.set_health("a", Health.SUSPECTED) == [LeaderChanged("c", None, 2, "a")]
    lenient = ClusterMembership(eligible=(Health.ALIVE, Health.BACKUP))
    assert lenient.join("c", "b", priority=2, health=Health.BACKUP)[0].leader == "b"


def test_health_monitor_transitions_drive_the_election() -> None:
    """Given a monitor and a view fed with its transitions, When the leader's
    connection closes, Expect leadership to move at once."""
    monitor, view = HealthMonitor(), ClusterMembership()
    for agent in ("a", "b"):
        for t in monitor.heartbeat(agent, 0.0):
            view.on_transition(t)
        view.join("c", agent, priority=5)
    changes = [c for t in monitor.connection_closed("a", 1.0) for c in view.on_transition(t)]
    assert changes == [LeaderChanged("c", "b", 2, "a")]


def test_terms_survive_a_cluster_emptying() -> None:
    """Given a cluster whose last member leaves, Expect a change to no leader;
    When members return, Expect the term to continue, never to restart."""
    view = ClusterMembership()
    view.join("c", "a")
    assert view.leave("a") == [LeaderChanged("c", None, 2, "a")]
    assert view.clusters() == []
    assert view.join("c", "a") == [LeaderChanged("c", "a", 3, None)]


def test_agents_in_several_clusters() -> None:
    """Given an agent leading two clusters, When it dies, Expect one change per
    cluster, in cluster order; When it leaves one cluster, Expect the other unaffected."""
    view = ClusterMembership()
    for cluster in ("y", "x"):
        view.join(cluster, "a", priority=0)
        view.join(cluster, "b", priority=1)
    assert [(c.cluster, c.leader) for c in view.set_health("a", Health.DEAD)] == [
        ("x", "b"),
        ("y", "b"),
    ]
    view.set_health("a", Health.ALIVE)
    assert view.leave("a", "x") == [LeaderChanged("x", "b", 4, "a")]
    assert view.leader("y") == "a"
    assert view.members("x") == {"b": 1}


def test_restored_terms_only_grow() -> None:
    """Given terms restored from a previous coordinator, Expect new changes to
    continue above them and a lower restore to be ignored."""
    view = ClusterMembership()
    view.restore_term("c", 41)
    view.restore_term("c", 7)
    assert view.join("c", "a") == [LeaderChanged("c", "a", 42, None)]
    with pytest.raises(ValueError):
        view.restore_term("c", -1)


_AGENTS = ["a", "b", "c", "d", "e"]
_CLUSTERS = ["x", "y"]
_HEALTH = list(Health)
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("join"),
            st.sampled_from(_CLUSTERS),
            st.sampled_from(_AGENTS),
            st.integers(0, 3),
            st.none() | st.sampled_from(_HEALTH),
        ),
        st.tuples(
            st.just("leave"), st.sampled_from(_AGENTS), st.none() | st.sampled_from(_CLUSTERS)
        ),
        st.tuples(st.just("health"), st.sampled_from(_AGENTS), st.sampled_from(_HEALTH)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_election_matches_the_rule_with_unique_leaders_per_term(ops: list[tuple]) -> None:
    """Given any sequence of joins, leaves and health changes, Expect after each
    event the leader to equal the rule recomputed from scratch, each reported
    term to be exactly one above the last, and one leader per (cluster, term)."""
    view = ClusterMembership()
    members: dict[str, dict[str, int]] = {c: {} for c in _CLUSTERS}
    health: dict[str, Health] = {}
    leader_of_term: dict[tuple[str, int], str | None] = {}
    last_term = dict.fromkeys(_CLUSTERS, 0)
    for op in ops:
        if op[0] == "join":
            _, cluster, agent, priority, h = op
            changes = view.join(cluster, agent, priority=priority, health=h)
            members[cluster][agent] = priority
            health[agent] = h if h is not None else health.get(agent, Health.ALIVE)
        elif op[0] == "leave":
            _, agent, cluster = op
            changes = view.leave(agent, cluster)
            for c in _CLUSTERS if cluster is None else [cluster]:
                members[c].pop(agent, None)
            if not any(agent in m for m in members.values()):
                health.pop(agent, None)
        else:
            _, agent, h = op
            changes = view.set_health(agent, h)
            health[agent] = h
        for change in changes:
            assert change.term == last_term[change.cluster] + 1
            last_term[change.cluster] = change.term
            key = (change.cluster, change.term)
            assert leader_of_term.setdefault(key, change.leader) == change.leader
        for cluster in _CLUSTERS:
            alive = [(p, a) for a, p in members[cluster].items() if health[a] is Health.ALIVE]
            expected = min(alive)[1] if alive else None
            assert view.leader(cluster) == expected
            assert view.term(cluster) == last_term[cluster]


def test_fence_admits_current_and_newer_epochs_and_refuses_older() -> None:
    """Given a fence that has seen epoch 3, Expect 3 and 4 admitted, and then 3
    refused because 4 superseded it."""
    fence = EpochFence()
    assert fence.observe(3) and not fence.observe(2)
    assert fence.admit(3) and fence.admit(4)
    assert not fence.admit(3)
    assert fence.highest == 4


def test_a_stale_coordinator_cannot_issue_accepted_assignments() -> None:
    """Given coordinator A at epoch 1 and a standby B that takes over, When B
    announces and A, unaware, keeps assigning, Expect A's assignments refused
    with StaleEpoch (a ProtocolError, dead-lettered as 'stale_epoch')."""
    worker = EpochFence()
    epoch_a = next_epoch([])
    worker.check(epoch_a)
    epoch_b = next_epoch([epoch_a])
    worker.observe(epoch_b)
    with pytest.raises(StaleEpoch) as info:
        worker.check(epoch_a)
    assert isinstance(info.value, ProtocolError) and info.value.reason == "stale_epoch"
    assert (info.value.epoch, info.value.highest) == (1, 2)
    worker.check(epoch_b)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_fence_refuses_malformed_epochs(bad: Any) -> None:
    """Given a value that is not a non-negative int, Expect ValueError."""
    with pytest.raises(ValueError):
        EpochFence().admit(bad)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=50),
    start=st.integers(0, 10),
)
def test_fence_epochs_are_monotonic(events: list[tuple[bool, int]], start: int) -> None:
    """Given any mix of observed and stamped epochs, Expect the highest never to
    decrease, admitted epochs never to decrease, and every refused epoch to be
    older than one seen before."""
    fence = EpochFence(start)
    seen_max, admitted = start, []
    for is_message, epoch in events:
        before = fence.highest
        if is_message:
            if fence.admit(epoch):
                admitted.append(epoch)
                assert epoch >= seen_max
            else:
                assert epoch < seen_max
        else:
            fence.observe(epoch)
        seen_max = max(seen_max, epoch)
        assert fence.highest == seen_max >= before
    assert admitted == sorted(admitted)


@settings(max_examples=200, deadline=None)
@given(observed=st.lists(st.integers(0, 1000), max_size=10), stride=st.integers(1, 5))
def test_concurrent_contenders_pick_distinct_newer_epochs(observed: list[int], stride: int) -> None:
    """Given the same observed epochs, When every rank of a stride picks its
    next epoch, Expect all picks newer than everything observed, in the rank's
    residue class, and pairwise distinct."""
    picks = [next_epoch(observed, rank=r, stride=stride) for r in range(stride)]
    assert len(set(picks)) == stride
    for rank, pick in enumerate(picks):
        assert pick > max(observed, default=0)
        assert pick % stride == rank
        assert pick - max(observed, default=0) <= stride


def test_next_epoch_refuses_bad_rank_and_epochs() -> None:
    """Given a rank outside the stride or a negative observed epoch, Expect ValueError."""
    assert next_epoch([4, 9, 2]) == 10
    with pytest.raises(ValueError):
        next_epoch([], rank=2, stride=2)
    with pytest.raises(ValueError):
        next_epoch([-3])

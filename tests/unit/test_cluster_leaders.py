"""Specification of the leader score (protocol/clusters/leaders.py) and membership orders."""

from __future__ import annotations

import random

import pytest

from robeing.protocol.clusters import (
    MembershipOrder,
    MemberView,
    OrderFence,
    choose_leader,
    member_view,
    score_members,
)
from robeing.protocol.errors import DecodeError
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources


def test_each_criterion_is_normalised_within_the_cluster() -> None:
    """Given two members, Expect experience relative to the most experienced, reliability
    from the smoothed success rate over restarts, resources as the share of the pool,
    availability as 1 - load/capacity."""
    s = score_members(
        [
            MemberView("a", succeeded=8, failed=0, load=1, capacity=4,
                       resources=Resources(cpu=3, memory=100)),
            MemberView("b", succeeded=4, failed=2, restarts=1, load=4, capacity=4,
                       resources=Resources(cpu=1)),
        ]
    )  # fmt: skip
    assert s["a"].experience == 1.0 and s["b"].experience == 0.5
    assert s["a"].reliability == pytest.approx(9 / 10)
    assert s["b"].reliability == pytest.approx((5 / 8) / 2)
    assert s["a"].resources == pytest.approx((3 / 4 + 1) / 2)  # cpu and memory
    assert s["b"].resources == pytest.approx((1 / 4 + 0) / 2)
    assert (s["a"].availability, s["b"].availability) == (0.75, 0.0)
    assert s["a"].total == pytest.approx(0.3 * 1 + 0.3 * 0.9 + 0.2 * 0.875 + 0.2 * 0.75)


def test_without_history_or_resources_everyone_scores_alike_but_for_load() -> None:
    s = score_members([MemberView("a", load=1, capacity=2), MemberView("b")])
    assert s["a"].experience == s["b"].experience == 0.0
    assert s["a"].reliability == s["b"].reliability == 0.5
    assert s["a"].resources == s["b"].resources == 0.0
    assert choose_leader(s) == "b"


def test_only_live_members_are_scored_and_lead() -> None:
    s = score_members([MemberView("a", alive=False, succeeded=100), MemberView("b")])
    assert list(s) == ["b"] and choose_leader(s) == "b"
    assert choose_leader(score_members([MemberView("a", alive=False)])) is None


def test_ties_go_to_the_lower_id() -> None:
    assert choose_leader(score_members([MemberView("b"), MemberView("a")])) == "a"


def test_a_sitting_leader_keeps_the_lead_unless_beaten_by_more_than_the_margin() -> None:
    """Given b leading, When a scores slightly better, Expect b to stay; When a scores
    better by more than the margin, Expect a."""
    close = score_members([MemberView("a"), MemberView("b", load=1, capacity=4)])
    assert choose_leader(close) == "a"
    assert choose_leader(close, sitting="b") == "b"  # 0.05 behind: within the margin
    far = score_members([MemberView("a"), MemberView("b", load=4, capacity=4)])
    assert choose_leader(far, sitting="b") == "a"  # 0.2 behind
    assert choose_leader(far, sitting="gone") == "a"


def test_every_observer_with_the_same_view_computes_the_same_leader_in_any_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        views = [
            MemberView(f"m{i}", alive=rng.random() > 0.2, succeeded=rng.randrange(5),
                       failed=rng.randrange(3), restarts=rng.randrange(2),
                       load=rng.randrange(3), capacity=2,
                       resources=Resources(cpu=rng.randrange(3)) if rng.random() > 0.5 else None)
            for i in range(rng.randrange(1, 8))
        ]  # fmt: skip
        shuffled = views[:]
        rng.shuffle(shuffled)
        a, b = score_members(views), score_members(shuffled)
        assert a == b and choose_leader(a) == choose_leader(b)
        for s in a.values():
            assert all(0.0 <= x <= 1.0 for x in (*s.to_data().values(),))


def test_a_member_view_reads_its_heartbeat_and_distrusts_a_malformed_section() -> None:
    beat = Heartbeat("worker", "alive", load=1, capacity=3, resources=Resources(cpu=2),
                     extras={"attempts": {"succeeded": 5, "failed": 1}})  # fmt: skip
    v = member_view("w1", beat, restarts=2)
    assert (v.succeeded, v.failed, v.restarts, v.load, v.capacity) == (5, 1, 2, 1, 3)
    bad = Heartbeat("worker", "alive", extras={"attempts": {"succeeded": -1, "failed": "x"}})
    assert (member_view("w1", bad).succeeded, member_view("w1", bad).failed) == (0, 0)
    assert not member_view("w1", Heartbeat("worker", "leaving")).alive


# --- membership orders ----------------------------------------------------------------


def test_an_order_older_than_the_newest_obeyed_is_refused() -> None:
    fence = OrderFence()
    assert fence.admit(MembershipOrder("c1", epoch=5, seq=3))
    assert fence.admit(MembershipOrder("c1", epoch=5, seq=3))  # the same again: resent
    assert not fence.admit(MembershipOrder("default", epoch=5, seq=2))  # overtaken
    assert not fence.admit(MembershipOrder("default", epoch=4, seq=9))  # a deposed coordinator
    assert fence.admit(MembershipOrder("default", epoch=6, seq=0))  # a newer coordinator


def test_orders_survive_the_wire_and_malformed_ones_are_refused() -> None:
    order = MembershipOrder("c1", 5, 3)
    assert MembershipOrder.from_data(order.to_data()) == order
    for bad in ({"cluster": "a.b", "epoch": 1, "seq": 1}, {"cluster": "c1", "epoch": -1, "seq": 0},
                {"cluster": "c1", "epoch": True, "seq": 0}, {"cluster": "c1"}):  # fmt: skip
        with pytest.raises(DecodeError):
            MembershipOrder.from_data(bad)

"""Leaders' summaries: the wire form, term fencing, and folding into the coordinator (pure)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.clusters.removals import Removals
from robeing.protocol.clusters.summary import (
    MAX_SAMPLES,
    ClusterSummary,
    MemberEntry,
    NotLeader,
    TermBook,
    summarise,
)
from robeing.protocol.coordinator import (
    Assign,
    BecameActive,
    CoordinatorConfig,
    CoordinatorState,
    SubmissionReceived,
    SummaryReceived,
    Tick,
)
from robeing.protocol.election import StaleEpoch
from robeing.protocol.errors import DecodeError
from robeing.protocol.failure_detector import DetectorConfig
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources
from robeing.protocol.taskmsgs import Submission, TaskRequest

DETECTOR = DetectorConfig(heartbeat_interval=1.0, acceptable_pause=1.0, dead_after=2.0)


def entry(agent: str, at: float = 1.0, **beat: object) -> MemberEntry:
    beat.setdefault("specializations", ("math",))
    beat.setdefault("cluster_id", "c1")
    beat.setdefault("capacity", 2)
    hb = Heartbeat("worker", str(beat.pop("state", "alive")), started_at=10.0, **beat)  # type: ignore[arg-type]
    return MemberEntry(agent, "worker", at, hb)


def summary(
    term: int = 5, leader: str = "w1", members: tuple[str, ...] = ("w1", "w2")
) -> ClusterSummary:
    return summarise("c1", term, leader, [entry(m) for m in members], 100.0)


# --- the wire form -----------------------------------------------------------------


def test_a_summary_reads_back_as_written_with_skills_and_pool() -> None:
    """Given members with load and resources, Expect per-skill capacity, the pool's
    total and largest single member, and an identical summary after the wire."""
    members = [
        entry("w1", load=1, resources=Resources(cpu=4, memory=2**30)),
        entry("w2", resources=Resources(cpu=2), specializations=("math", "sort")),
        entry("w3", state="leaving", resources=Resources(cpu=64)),
    ]
    s = summarise("c1", 7, "w1", members, 100.0, lost=[("w9", "dead")], samples=[b"x"])
    assert s.skills == {"math": {"agents": 2, "capacity": 4, "free": 3},
                        "sort": {"agents": 1, "capacity": 2, "free": 2}}  # fmt: skip
    assert s.pool["total"] == {"cpu": 6.0, "memory": 2**30}
    assert s.pool["largest"] == {"cpu": 4.0, "memory": 2**30}
    assert ClusterSummary.from_data(s.to_data()) == s


def test_a_summary_keeps_no_counters_and_only_the_sections_scoring_reads() -> None:
    beat = entry("w1", stats={"sent": 5}, extras={"attempts": {"succeeded": 3}, "x": {"y": 1}})
    (kept,) = summarise("c1", 1, "w1", [beat], 0.0).members
    assert kept.beat.stats == {} and dict(kept.beat.extras) == {"attempts": {"succeeded": 3}}


@pytest.mark.parametrize(
    "change",
    [
        {"term": 0},
        {"term": "5"},
        {"cluster": "a.b"},
        {"members": [{"id": "w1"}]},
        {"samples": [b"x"] * (MAX_SAMPLES + 1)},
        {"samples": ["not bytes"]},
        {"pool": {"total": {"gpu": 1}}},
        {"lost": [{"id": "w1"}]},
    ],
)
def test_a_malformed_summary_is_one_decode_error(change: dict[str, object]) -> None:
    data = {**summary().to_data(), **change}
    with pytest.raises(DecodeError):
        ClusterSummary.from_data(data)


# --- term fencing ------------------------------------------------------------------


def test_a_summary_of_an_older_term_is_refused_and_counted() -> None:
    """Given a summary of term 6 admitted, When the deposed leader's term-5 summary
    arrives, Expect StaleEpoch (dead-lettered as stale_epoch) and a count."""
    book = TermBook()
    book.admit("w2", "c1", summary(6, "w2"), 0.0)
    with pytest.raises(StaleEpoch) as refused:
        book.admit("w1", "c1", summary(5, "w1"), 0.1)
    assert refused.value.reason == "stale_epoch"
    assert book.counters == {"summaries": 1, "summaries_stale_epoch": 1}
    assert book.leader_of("c1", 0.5, silence=3.0) == (6, "w2")


def test_a_summary_from_a_non_member_or_for_another_leader_is_refused() -> None:
    book = TermBook()
    with pytest.raises(NotLeader):
        book.admit("w1", "c2", summary(5, "w1"), 0.0)  # the sender is in another cluster
    with pytest.raises(NotLeader):
        book.admit("w2", "c1", summary(5, "w1"), 0.0)  # it names another leader
    with pytest.raises(NotLeader):
        book.admit("w1", None, summary(5, "w1"), 0.0)  # not a member at all
    assert book.counters == {"summaries_not_leader": 3}
    assert NotLeader("x").reason == "not_leader"


def test_a_silent_or_deposed_leader_leaves_its_cluster_leaderless() -> None:
    book = TermBook()
    book.admit("w1", "c1", summary(5, "w1"), 0.0)
    assert book.leader_of("c1", 2.0, silence=3.0) == (5, "w1")
    assert book.leader_of("c1", 3.5, silence=3.0) is None
    assert book.deposed("w1") == ["c1"] and book.leader_of("c1", 0.0, 3.0) is None
    assert book.term_of("c1") == 5  # the fence outlives the leader


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=30))
def test_the_admitted_term_never_decreases(terms: list[int]) -> None:
    """Property: whatever order summaries arrive in, every admitted one has a term
    at least the highest admitted before it (no two leaders act in one term's past)."""
    book, highest = TermBook(), 0
    for t in terms:
        try:
            book.admit("w1", "c1", summary(t, "w1"), 0.0)
        except StaleEpoch:
            assert t < highest
            continue
        assert t >= highest
        highest = t
    assert book.term_of("c1") == max(terms)


def test_an_entry_is_folded_only_when_newer_than_the_last() -> None:
    book = TermBook()
    assert book.fresh(entry("w2", at=5.0))
    assert not book.fresh(entry("w2", at=5.0))  # a leader repeating a beat refreshes nothing
    assert not book.fresh(entry("w2", at=4.0))
    assert book.fresh(entry("w2", at=6.0))
    assert book.counters == {"summary_entries_stale": 2}


# --- folding into the coordinator ----------------------------------------------------


def machine() -> CoordinatorState:
    m = CoordinatorState(CoordinatorConfig("coord", DETECTOR), rng=random.Random(0))
    m.handle(BecameActive(1000), 0.0)
    return m


def members(*ids: str, **beat: object) -> tuple[tuple[str, str, Heartbeat], ...]:
    return tuple(
        (e.agent_id, e.role, e.beat) for e in (entry(i, incarnation=f"i-{i}", **beat) for i in ids)
    )


def test_members_of_a_summary_are_scheduled_as_if_heard() -> None:
    """Given a summary of two members, When a task for the cluster is submitted,
    Expect it assigned to one of them, as a heartbeat of theirs would allow."""
    m = machine()
    m.handle(SummaryReceived(members("w1", "w2")), 0.5)
    assert {a.id for a in m.fleet.registry} == {"w1", "w2"}
    sub = Submission((TaskRequest("t1", "work", skills=("math",), cluster="c1"),), "q")
    actions = m.handle(SubmissionReceived(1, "client", sub), 0.6)
    (assign,) = [a for a in actions if isinstance(a, Assign)]
    assert assign.agent_id in {"w1", "w2"}


def test_a_member_the_summaries_stop_listing_is_declared_dead_and_its_task_reassigned() -> None:
    """Given w1 and w2 summarised and a task on one of them, When the summaries list only
    the other, Expect the silent one dead (the coordinator's own detector) and the task moved."""
    m = machine()
    m.handle(SummaryReceived(members("w1", "w2")), 0.0)
    sub = Submission((TaskRequest("t1", "work", skills=("math",), cluster="c1"),), "q")
    m.handle(SubmissionReceived(1, "client", sub), 0.1)
    holder = m.graph.get("t1").agent
    other = "w2" if holder == "w1" else "w1"
    moved = []
    for i in range(1, 12):
        moved += [
            a for a in m.handle(SummaryReceived(members(other)), float(i)) if isinstance(a, Assign)
        ]
        moved += [a for a in m.handle(Tick(), float(i) + 0.5) if isinstance(a, Assign)]
    assert [a.agent_id for a in moved] == [other]
    assert m.fleet.is_dead(holder)


def test_a_member_the_leader_reports_lost_is_reassigned_at_once() -> None:
    m = machine()
    m.handle(SummaryReceived(members("w1")), 0.0)
    sub = Submission((TaskRequest("t1", "work", skills=("math",), cluster="c1"),), "q")
    m.handle(SubmissionReceived(1, "client", sub), 0.1)
    m.handle(SummaryReceived(members("w2"), lost=(("w1", "dead"),)), 0.2)
    assert m.fleet.is_dead("w1")
    m.handle(Tick(), 1.5)
    assert m.graph.get("t1").agent == "w2"
    # An unknown agent reported lost changes nothing.
    m.handle(SummaryReceived((), lost=(("nobody", "dead"),)), 0.3)
    assert m.fleet.counters["lost_by_leaders"] == 1


# --- removal after a grace period ----------------------------------------------------


def test_a_dead_member_is_due_for_removal_once_after_the_grace_unless_it_returns() -> None:
    r = Removals(grace=30.0)
    r.lost("w1", "etl", 0.0)
    r.lost("w2", "etl", 5.0)
    r.lost("w1", "etl", 20.0)  # a later report does not restart the grace
    assert r.due(29.0) == []
    r.alive("w2")  # restarted in time: keeps its place
    assert r.due(30.0) == [("w1", "etl")]
    assert r.due(100.0) == [] and len(r) == 0


# --- certificates of members heard only through summaries ------------------------------


def test_members_certificates_travel_and_are_learned_only_when_they_check() -> None:
    """Given members a coordinator never heard directly, Expect their certificates learned
    from the summary (so assignments can be encrypted to them); a certificate of another
    agent, or not from the authority, refused as a bad summary and nothing learned."""
    import time
    from types import SimpleNamespace

    import nacl.signing

    from robeing.agents.roles.coordinator.summaries import BadSummary, Summaries
    from robeing.protocol.identity import Authority, TrustStore

    authority, now = Authority.generate(), time.time()

    def cert(agent: str, by: Authority = authority) -> bytes:
        key = nacl.signing.SigningKey.generate()
        return by.issue(agent, "worker", bytes(key.verify_key), now, 3600).raw

    def with_certs(certs: dict[str, bytes]) -> ClusterSummary:
        members = [replace(entry(m), cert=c) for m, c in certs.items()]
        s = summarise("c1", 5, "w1", members, now)
        assert ClusterSummary.from_data(s.to_data()) == s
        return s

    trust = TrustStore(authority.verify_key)
    host = SimpleNamespace(agent=SimpleNamespace(trust=trust))
    good = with_certs({"w1": cert("w1"), "w2": cert("w2")})
    Summaries._learn_certificates(host, good)  # type: ignore[arg-type]
    assert {trust.peer(m).raw for m in ("w1", "w2")} == {e.cert for e in good.members}

    for bad in ({"w3": cert("w4")}, {"w3": cert("w3", Authority.generate())}):
        with pytest.raises(BadSummary):
            Summaries._learn_certificates(host, with_certs(bad))  # type: ignore[arg-type]
        assert trust.peer("w3") is None
    oversized = with_certs({"w2": cert("w2")}).to_data()
    oversized["members"][0]["cert"] = b"x" * 2000
    with pytest.raises(DecodeError):
        ClusterSummary.from_data(oversized)

"""Specification of the pure cluster modules: names, the directory, forming."""

from __future__ import annotations

from typing import Any

import pytest

from robeing.protocol.clusters import (
    DEFAULT_CLUSTER,
    ClusterDirectory,
    ClusterRecord,
    FormRefused,
    check_cluster_name,
    choose_members,
)
from robeing.protocol.errors import ConfigError, DecodeError
from robeing.protocol.scheduling import AgentInfo


def form(name: str, *members: str, at: float = 1.0) -> ClusterRecord:
    return ClusterRecord("form", name, at, "cli", "p", ("a",), members)


def agent(agent_id: str, *skills: str, **kw: Any) -> AgentInfo:
    kw.setdefault("capacity", 4)
    return AgentInfo(agent_id, kw.pop("role", "worker"), frozenset(skills), **kw)


def neutral(_agent: str) -> float:
    return 0.5


# --- names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c2", "gpu-pool", "A_1", "x" * 64])
def test_valid_cluster_names(name: str) -> None:
    assert check_cluster_name(name) == name


@pytest.mark.parametrize("name", ["", "a.b", "*", "#", "-x", "x" * 65, "a b", 3])
def test_names_that_cannot_be_part_of_a_queue_name_or_routing_key_are_refused(name: Any) -> None:
    with pytest.raises(ConfigError, match="invalid cluster name"):
        check_cluster_name(name)


# --- the directory ------------------------------------------------------------------


def test_a_formed_cluster_assigns_its_members_and_a_dissolve_sends_them_home() -> None:
    """Given a form of c1 with w1 and w2, When it is dissolved,
    Expect both assigned to default, whatever their own CLUSTER_ID."""
    d = ClusterDirectory([form("c1", "w1", "w2")])
    assert d.cluster_of("w1", DEFAULT_CLUSTER) == "c1"
    assert d.cluster_of("w9", "static") == "static"  # never named: its own
    assert d.apply(ClusterRecord("dissolve", "c1", 2.0, "cli"))
    assert d.clusters == {}
    assert d.cluster_of("w1", "static") == DEFAULT_CLUSTER


def test_a_second_form_of_a_defined_name_changes_nothing() -> None:
    d = ClusterDirectory([form("c1", "w1"), form("c1", "w2")])
    assert d.clusters["c1"].members == ("w1",)
    assert d.cluster_of("w2", DEFAULT_CLUSTER) == DEFAULT_CLUSTER
    assert d.ignored == 1


def test_a_name_can_be_formed_again_after_it_was_dissolved() -> None:
    dissolve = ClusterRecord("dissolve", "c1", 2, "x")
    d = ClusterDirectory([form("c1", "w1"), dissolve, form("c1", "w2")])
    assert d.clusters["c1"].members == ("w2",)


def test_leave_takes_one_member_out_and_a_leave_of_a_non_member_is_ignored() -> None:
    d = ClusterDirectory([form("c1", "w1", "w2")])
    assert d.apply(ClusterRecord("leave", "c1", 2, "cli", agent="w1"))
    assert not d.apply(ClusterRecord("leave", "c1", 3, "cli", agent="w7"))
    assert d.clusters["c1"].members == ("w2",)
    assert d.cluster_of("w1", "c1") == DEFAULT_CLUSTER


def test_an_agent_formed_into_a_second_cluster_leaves_the_first() -> None:
    d = ClusterDirectory([form("c1", "w1", "w2"), form("c2", "w1")])
    assert d.clusters["c1"].members == ("w2",)
    assert d.cluster_of("w1", DEFAULT_CLUSTER) == "c2"


def test_folding_is_deterministic_and_records_survive_the_wire() -> None:
    records = [form("c1", "w1", "w2"), ClusterRecord("leave", "c1", 2, "cli", agent="w2")]
    wire = [ClusterRecord.from_data(r.to_data()) for r in records]
    assert wire == records
    a, b = ClusterDirectory(records), ClusterDirectory(wire)
    assert a.clusters == b.clusters and a.assigned == b.assigned


@pytest.mark.parametrize(
    "data",
    [
        {"op": "rename", "name": "c1", "at": 1, "by": "x"},
        {"op": "form", "name": "default", "at": 1, "by": "x"},
        {"op": "form", "name": "a.b", "at": 1, "by": "x"},
        {"op": "form", "name": "c1", "at": float("nan"), "by": "x"},
        {"op": "form", "name": "c1", "at": 1, "by": "x", "members": "w1"},
        [],
    ],
)
def test_malformed_records_are_refused(data: Any) -> None:
    with pytest.raises(DecodeError):
        ClusterRecord.from_data(data)


def test_names_lists_defined_and_static_clusters_but_not_default() -> None:
    d = ClusterDirectory([form("c1", "w1")])
    announced = {"w1": DEFAULT_CLUSTER, "s1": "static", "w2": DEFAULT_CLUSTER}
    assert d.names(announced) == ["c1", "static"]


# --- forming ------------------------------------------------------------------------


def choose(name: str, skills: tuple[str, ...], size: int, *agents: AgentInfo, **kw: Any) -> Any:
    directory = kw.pop("directory", ClusterDirectory())
    announced = kw.pop("announced", {a.id: a.cluster_id or DEFAULT_CLUSTER for a in agents})
    return choose_members(
        name, skills, size, agents, directory, announced, kw.pop("performance", neutral)
    )


def test_forming_takes_the_best_scored_agents_with_a_skill() -> None:
    """Given three analysts of different load and a sorter, When a cluster of 2 analysts
    is formed, Expect the two least loaded analysts (scored as tasks are)."""
    fleet = [
        agent("w1", "analysis", load=3),
        agent("w2", "analysis", load=0),
        agent("w3", "analysis", load=1),
        agent("w4", "sort"),
    ]
    assert choose("c1", ("analysis",), 2, *fleet) == ("w2", "w3")


def test_a_specialist_outranks_a_worker_of_the_same_skill_and_load() -> None:
    fleet = [agent("w1", "analysis"), agent("s1", "analysis", role="specialist", priority=2)]
    assert choose("c1", ("analysis",), 1, *fleet) == ("s1",)


def test_forming_takes_only_agents_of_the_default_cluster() -> None:
    fleet = [agent("w1", "a", cluster_id="static"), agent("w2", "a"), agent("w3", "a")]
    taken = ClusterDirectory([form("other", "w3")])
    assert choose("c1", ("a",), 1, *fleet, directory=taken) == ("w2",)
    with pytest.raises(FormRefused, match="asked for 2 agents with skills a; 1 available"):
        choose("c1", ("a",), 2, *fleet, directory=taken)


def test_an_unknown_skill_is_refused_naming_the_skills_available() -> None:
    fleet = [agent("w1", "analysis"), agent("w2", "analysis", "sort")]
    with pytest.raises(FormRefused) as caught:
        choose("c1", ("analysis", "gpu"), 1, *fleet)
    assert str(caught.value) == (
        "no live agent of the default cluster has skill(s) gpu; "
        "available skills: analysis (2), sort (1)"
    )


def test_a_size_larger_than_available_is_refused_naming_who_is_available() -> None:
    fleet = [agent("w1", "sort"), agent("w2", "sort"), agent("w3", "analysis")]
    with pytest.raises(FormRefused) as caught:
        choose("c1", ("sort",), 5, *fleet)
    assert str(caught.value) == (
        "asked for 5 agents with skills sort; 2 available in the default cluster: w1, w2"
    )


def test_without_skills_any_agent_of_the_default_cluster_qualifies() -> None:
    fleet = [agent("w2", "sort"), agent("w1", "analysis")]
    assert choose("c1", (), 2, *fleet) == ("w1", "w2")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("default", "coordinator's own cluster"),
        ("c.1", "invalid cluster name"),
        ("c1", "exists"),
        ("static", "exists .live agents announce it"),
    ],
)
def test_taken_or_invalid_names_are_refused(name: str, match: str) -> None:
    fleet = [agent("w1", "a"), agent("w2", "a", cluster_id="static"), agent("w3", "a")]
    with pytest.raises(FormRefused, match=match):
        choose(name, ("a",), 1, *fleet, directory=ClusterDirectory([form("c1", "w3")]))


@pytest.mark.parametrize("size", [0, 1001])
def test_a_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(FormRefused, match="size must be 1 to 1000"):
        choose("c1", (), size, agent("w1"))


# --- the cluster of a task on the wire -------------------------------------------------


def test_a_task_request_carries_its_cluster_and_omits_it_when_none() -> None:
    from robeing.protocol.taskmsgs import TaskRequest

    named = TaskRequest("t1", "work", cluster="c2")
    assert TaskRequest.from_data(named.to_data()) == named
    assert "cluster" not in TaskRequest("t1", "work").to_data()
    assert TaskRequest.from_data(TaskRequest("t1", "work").to_data()).cluster is None


def test_a_task_for_an_invalid_cluster_name_has_a_problem() -> None:
    from robeing.protocol.taskmsgs import TaskRequest

    bad = TaskRequest.from_data({"id": "t1", "type": "work", "cluster": "a.b"})
    assert any("invalid cluster name" in p for p in bad.problems())
    with pytest.raises(DecodeError):
        TaskRequest.from_data({"id": "t1", "type": "work", "cluster": 7})

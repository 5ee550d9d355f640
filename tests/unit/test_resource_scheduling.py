"""Tasks that need resources: parsing, the wire form, and placement by dispatch.

Invariant under test: a task asking for resources is assigned only to an
agent whose contribution has that much free, which stays reserved under the
task's id until the caller releases it; without a fit it waits, and it never
blocks tasks that do fit.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import DecodeError
from robeing.protocol.ledger import ResourceLedger
from robeing.protocol.resources import InvalidResources, Resources, parse_resources
from robeing.protocol.scheduling import AgentInfo, AgentRegistry, dispatch
from robeing.protocol.taskgraph import InvalidTask, TaskGraph, TaskSpec
from robeing.protocol.taskmsgs import TaskRequest

GiB = 2**30


# -- parsing and the wire form ------------------------------------------------------


def test_parse_resources_reads_cores_and_byte_units() -> None:
    r = parse_resources("cpu=1.5, memory=4GiB,storage=20GB bandwidth=100MB/s")
    assert r == Resources(cpu=1.5, memory=4 * GiB, storage=20 * 10**9, bandwidth=100 * 10**6)
    assert parse_resources("memory=512Mi") == Resources(memory=512 * 2**20)
    assert parse_resources("memory=1.5k") == Resources(memory=1500)
    assert parse_resources("") == Resources()


def test_parse_resources_reads_the_downward_apis_millicores_and_bytes() -> None:
    """The form deploy/k8s builds from a container's limits (cpu with divisor 1m)."""
    r = parse_resources("cpu=1000m,memory=2147483648")
    assert r == Resources(cpu=1.0, memory=2 * GiB)
    assert parse_resources("cpu=1500m") == Resources(cpu=1.5)
    assert parse_resources("cpu=250m").cpu == 0.25


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gpu=1", "NAME one of cpu, memory, storage, bandwidth"),
        ("cpu", "expected NAME=QUANTITY"),
        ("cpu=2GB", "cpu is a number of cores"),
        ("cpu=500M", "or of millicores"),
        ("cpu=2Mi", "or of millicores"),
        ("memory=-1", "is not a quantity"),
        ("memory=lots", "is not a quantity"),
        ("cpu=1,cpu=2", "cpu given twice"),
    ],
)
def test_parse_resources_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidResources, match=says):
        parse_resources(text)


@given(
    st.builds(
        Resources,
        cpu=st.integers(0, 64_000).map(lambda m: m / 1000),
        memory=st.integers(0, 2**40),
        storage=st.integers(0, 2**44),
        bandwidth=st.integers(0, 2**34),
    )
)
@settings(max_examples=200)
def test_the_wire_form_round_trips(r: Resources) -> None:
    assert Resources.from_mapping(r.to_mapping()) == r
    request = TaskRequest(id="t", type="x", resources=r.to_mapping())
    assert TaskRequest.from_data(request.to_data()).resources == r.to_mapping()


def test_a_task_without_resources_keeps_its_old_wire_form() -> None:
    assert "resources" not in TaskRequest(id="t", type="x").to_data()


@pytest.mark.parametrize(
    "bad", [{"gpu": 1}, {"memory": 1.5}, {"cpu": -1}, {"cpu": True}, ["cpu"], "cpu=1"]
)
def test_bad_resources_on_the_wire_are_decode_errors(bad: object) -> None:
    data = TaskRequest(id="t", type="x").to_data() | {"resources": bad}
    with pytest.raises(DecodeError, match="resources"):
        TaskRequest.from_data(data)


def test_a_task_spec_with_bad_resources_is_refused() -> None:
    with pytest.raises(InvalidTask, match="unknown resource gpu"):
        TaskSpec("t", "x", resources={"gpu": 1})


# -- placement ------------------------------------------------------------------------


def fleet(
    *agents: tuple[str, Resources | None], skill: str = "math"
) -> tuple[AgentRegistry, ResourceLedger]:
    registry, ledger = AgentRegistry(), ResourceLedger()
    for agent_id, offered in agents:
        registry.upsert(AgentInfo(agent_id, "worker", frozenset({skill}), capacity=8))
        if offered is not None:
            ledger.contribute(agent_id, offered)
    return registry, ledger


def submit(graph: TaskGraph, task_id: str, **resources: float) -> None:
    graph.submit(TaskSpec(task_id, "x", skills=frozenset({"math"}), resources=resources), now=0.0)


def test_a_resource_task_goes_only_where_it_fits() -> None:
    """Given a higher-ranked agent offering nothing and one offering 2 cpu, expect
    the cpu task on the latter, and a plain task still free to go anywhere."""
    registry, ledger = fleet(("a-none", None), ("b-cpu", Resources(cpu=2)))
    graph = TaskGraph()
    submit(graph, "needs-cpu", cpu=1)
    made = dispatch(graph, registry, now=0.0, ledger=ledger)
    assert [(a.task_id, a.agent_id) for a in made] == [("needs-cpu", "b-cpu")]
    allocation = ledger.allocation_for("needs-cpu")
    assert allocation is not None and allocation.agents == ("b-cpu",)
    assert ledger.available("b-cpu") == Resources(cpu=1)


def test_reservations_bound_how_many_run_at_once() -> None:
    """Given 3 cpu on the only agent and tasks of 2 cpu each, expect one at a
    time: the next is assigned only once the first's reservation is released."""
    registry, ledger = fleet(("w", Resources(cpu=3, memory=8 * GiB)))
    graph = TaskGraph()
    for i in range(3):
        submit(graph, f"t{i}", cpu=2, memory=GiB)
    first = dispatch(graph, registry, now=0.0, ledger=ledger)
    assert [a.task_id for a in first] == ["t0"]
    assert dispatch(graph, registry, now=0.1, ledger=ledger) == []
    graph.complete("t0", first[0].attempt, "ok", now=0.2)
    allocation = ledger.allocation_for("t0")
    assert allocation is not None
    ledger.release(allocation.allocation_id)
    second = dispatch(graph, registry, now=0.3, ledger=ledger)
    assert [a.task_id for a in second] == ["t1"]
    assert ledger.allocated("w") == Resources(cpu=2, memory=GiB)


def test_a_task_that_fits_nowhere_waits_without_blocking_others() -> None:
    registry, ledger = fleet(("w", Resources(cpu=2)))
    graph = TaskGraph()
    submit(graph, "huge", cpu=8)
    submit(graph, "small", cpu=1)
    submit(graph, "plain")
    made = dispatch(graph, registry, now=0.0, ledger=ledger)
    assert sorted(a.task_id for a in made) == ["plain", "small"]
    assert ledger.allocation_for("huge") is None


def test_without_a_ledger_resource_tasks_wait() -> None:
    registry, _ = fleet(("w", None))
    graph = TaskGraph()
    submit(graph, "needs-cpu", cpu=1)
    submit(graph, "plain")
    assert [a.task_id for a in dispatch(graph, registry, now=0.0)] == ["plain"]


def test_a_reassigned_task_gets_a_fresh_reservation() -> None:
    """Given a task whose agent died while its reservation was still held,
    expect the next attempt to replace it rather than fail on the old one."""
    registry, ledger = fleet(("w1", Resources(cpu=1)), ("w2", Resources(cpu=1)))
    graph = TaskGraph()
    submit(graph, "t", cpu=1)
    (first,) = dispatch(graph, registry, now=0.0, ledger=ledger)
    registry.remove(first.agent_id)  # lost, but its reservation is not released yet
    graph.agent_lost(first.agent_id, now=0.1)
    (second,) = dispatch(graph, registry, now=0.2, ledger=ledger)
    assert second.agent_id != first.agent_id and second.attempt == first.attempt + 1
    allocation = ledger.allocation_for("t")
    assert allocation is not None and allocation.agents == (second.agent_id,)
    assert ledger.allocated(first.agent_id) == Resources()


def test_a_task_spec_parses_its_need_once_and_subtasks_keep_it() -> None:
    from dataclasses import replace

    spec = TaskSpec("t", "x", resources={"cpu": 1, "memory": 2})
    assert spec.need == Resources(cpu=1, memory=2)
    assert replace(spec, id="t/0", parent="t").need == spec.need
    assert TaskSpec("z", "x", resources={"cpu": 0}).need is None
    assert TaskSpec("p", "x").need is None


def test_release_request_frees_a_task_reservation_once() -> None:
    ledger = ResourceLedger()
    ledger.contribute("w", Resources(cpu=2))
    ledger.allocate("t", Resources(cpu=2))
    assert ledger.release_request("t") is True
    assert ledger.available("w") == Resources(cpu=2)
    assert ledger.release_request("t") is False
    assert ledger.release_request("never") is False

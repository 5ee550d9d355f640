"""What `robeing status` says of the agents' heartbeats and of the resource pool."""

from __future__ import annotations

from rich.console import Console

from robeing.agents.cli.status import fleet_rows, pool_note, render
from robeing.agents.heartbeats import status_from_heartbeat
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources


def test_a_heartbeat_becomes_the_agents_status_with_the_certified_role() -> None:
    """Given a standby's heartbeat claiming another role, Expect its status to carry the
    certified role and its priority, its fields, and standby, resources, task types,
    proficiency and sections as extras."""
    hb = Heartbeat(
        "coordinator", "alive", ("nlp",), standby=True, resources=Resources(cpu=2),
        load=1, capacity=3, started_at=90.0, stats={"handled": 4},
        extras={"guardian": {"dead_letters": 0}}, tasks=("sort",), proficiency={"nlp": 0.5},
        priority=1,
    )  # fmt: skip

    status = status_from_heartbeat("w1", "worker", hb, now=100.0)

    assert (status.id, status.role, status.state) == ("w1", "worker", "alive")
    assert (status.specializations, status.load, status.capacity) == (["nlp"], 1, 3)
    assert status.extra == {
        "standby": True, "backup_for": None, "resources": {"cpu": 2},
        "guardian": {"dead_letters": 0}, "priority": 3, "task_types": ["sort"],
        "proficiency": {"nlp": 0.5},
    }  # fmt: skip
    assert fleet_rows({"w1": status}, now=100.0)[0]["health"] == "backup"


def test_status_table_shows_priority_proficiency_and_task_types() -> None:
    """Given a specialist's heartbeat, Expect its row to show priority 2, the proficiency
    with the skill and its task types (abbreviated past six)."""
    from rich.console import Console

    types = ("correlate", "describe", "histogram", "outliers", "sort", "statistics", "trend")
    hb = Heartbeat("specialist", "alive", ("analysis",), tasks=types, proficiency={"analysis": 0.9})
    rows = fleet_rows({"s1": status_from_heartbeat("s1", "specialist", hb, 100.0)}, now=100.0)
    console = Console(width=250, record=True)
    console.print(render(rows, {}))
    text = console.export_text()
    assert "analysis:0.9" in text and "+1" in text
    assert "│ specialist │ 2 " in text


def test_pool_note_shows_free_over_total_per_contributed_dimension() -> None:
    pool = {
        "capacity": {"cpu": 2, "memory": 3 * 2**30, "bandwidth": 1500},
        "available": {"cpu": 0.5, "memory": 2**29},  # zero quantities are left out
        "reservations": 2,
    }
    assert pool_note(pool) == (
        "pool: cpu 0.5/2 free, memory 512.0 MiB/3.0 GiB free, bandwidth 0 B/1.5 KiB free; "
        "2 reserved"
    )


def test_no_pool_no_note() -> None:
    assert pool_note(None) is None
    assert pool_note({"capacity": {}, "available": {}, "reservations": 0}) is None


def _status(agent_id: str, role: str = "worker", **extra: object) -> object:
    hb = Heartbeat(role, "alive", ("data_processing",), load=0, capacity=32, extras=extra)
    return status_from_heartbeat(agent_id, role, hb, now=100.0)


def test_at_80_columns_ids_stay_whole_and_optional_columns_go() -> None:
    """Given a coordinator and two workers with long, similar ids, When the table is drawn 80
    columns wide, Expect every id whole on one line (the two workers told apart), and the
    columns that do not fit dropped rather than every cell cut."""
    agents = {
        "coordinator-prod-eu-west-1": _status(
            "coordinator-prod-eu-west-1", "coordinator", coordinator={"active": True}
        ),
        "worker-prod-eu-west-1-a": _status("worker-prod-eu-west-1-a"),
        "worker-prod-eu-west-1-b": _status("worker-prod-eu-west-1-b"),
    }
    console = Console(width=80, record=True, color_system=None)
    console.print(render(fleet_rows(agents, now=100.0), {}, None, console.width))  # type: ignore[arg-type]
    text = console.export_text()
    lines = text.splitlines()
    for agent_id in agents:
        assert any(agent_id in line for line in lines), text
    assert max(len(line) for line in lines) <= 80
    assert "health" in text and "role" in text and "rejected" not in text


def test_an_agent_that_left_shows_left_with_its_certified_role() -> None:
    """Given the coordinator's report that w9 left (a SIGTERM stop) and its certificate's role,
    Expect a row 'left' with role worker, not 'dead' with role '?'."""
    coordinator = _status(
        "c1", "coordinator", coordinator={"active": True, "health": {"w9": "left", "w8": "dead"}}
    )
    rows = fleet_rows({"c1": coordinator}, now=100.0, role_of={"w9": "worker"}.get)  # type: ignore[dict-item]
    by_id = {r["id"]: (r["health"], r["role"]) for r in rows}
    assert by_id["w9"] == ("left", "worker") and by_id["w8"] == ("dead", "?")

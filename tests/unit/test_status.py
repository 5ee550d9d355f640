"""What `robeing status` says of the agents' heartbeats and of the resource pool."""

from __future__ import annotations

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

"""What `robeing status` says of the agents' heartbeats and of the resource pool."""

from __future__ import annotations

from robeing.agents.cli.status import fleet_rows, pool_note
from robeing.agents.heartbeats import status_from_heartbeat
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources


def test_a_heartbeat_becomes_the_agents_status_with_the_certified_role() -> None:
    """Given a standby's heartbeat claiming another role, Expect its status to carry the
    certified role, its fields, and standby, resources and sections as extras."""
    hb = Heartbeat(
        "coordinator", "alive", ("nlp",), standby=True, resources=Resources(cpu=2),
        load=1, capacity=3, started_at=90.0, stats={"handled": 4},
        extras={"guardian": {"dead_letters": 0}},
    )  # fmt: skip

    status = status_from_heartbeat("w1", "worker", hb, now=100.0)

    assert (status.id, status.role, status.state) == ("w1", "worker", "alive")
    assert (status.specializations, status.load, status.capacity) == (["nlp"], 1, 3)
    assert status.extra == {
        "standby": True, "backup_for": None, "resources": {"cpu": 2},
        "guardian": {"dead_letters": 0},
    }  # fmt: skip
    assert fleet_rows({"w1": status}, now=100.0)[0]["health"] == "backup"


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

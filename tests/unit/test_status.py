"""What `robeing status` says of the resource pool."""

from __future__ import annotations

from robeing.agents.cli.status import pool_note


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

"""`robeing up`'s supervisor: restarts with backoff, gives up on a crash loop, and forgives a
member that ran healthy for a while (real, short-lived processes; no broker)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from robeing.agents.fleet import Member, Supervisor
from robeing.agents.settings import Settings


class Brief(Member):
    """A member whose process lives ``seconds`` and exits with 1."""

    seconds: float = 0.3

    def argv(self) -> list[str]:
        return [sys.executable, "-c", f"import time, sys; time.sleep({self.seconds}); sys.exit(1)"]


async def starts_within(supervisor: Supervisor, member: Member, seconds: float) -> int:
    starts = 0
    original = supervisor._spawn

    async def counted(m: Member) -> None:
        nonlocal starts
        starts += 1
        await original(m)

    supervisor._spawn = counted  # type: ignore[method-assign]
    await supervisor.start()
    await asyncio.sleep(seconds)
    await supervisor.stop(grace=2)
    return starts


async def test_a_member_that_ran_healthy_is_restarted_past_the_limit(tmp_path: Path) -> None:
    """Given at most 2 restarts in a row, When a member dies after running longer than
    healthy_after each time, Expect it restarted again and again (its count starts over)."""
    settings = Settings(role="client", keys_dir=tmp_path)
    member = Brief("w1", "worker")
    sup = Supervisor(settings, [member], "warning", max_restarts=2, healthy_after=0.2)
    assert await starts_within(sup, member, 8.0) >= 4  # one start and 2 restarts at most else


async def test_a_crash_loop_is_given_up_after_its_restarts(tmp_path: Path) -> None:
    """Given at most 2 restarts in a row, When a member dies at once every time, Expect it
    started 3 times and then left alone."""
    settings = Settings(role="client", keys_dir=tmp_path)
    member = Brief("w1", "worker")
    sup = Supervisor(settings, [member], "warning", max_restarts=2, healthy_after=30.0)
    assert await starts_within(sup, member, 5.0) == 3

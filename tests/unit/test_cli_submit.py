"""`robeing submit --wait`: the progress bar shows the task's type and its real number of parts
from the start (the coordinator's answer), not a 1-part bar named by a cut id."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from robeing.agents.cli import tasks
from robeing.agents.client import TaskHandle
from robeing.protocol.taskmsgs import FinalResult


async def test_the_bar_names_the_type_and_counts_the_real_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(
        tasks, "Console", lambda **kw: Console(file=out, force_terminal=True, width=100)
    )
    handle = TaskHandle("wc-123456789012345")
    handle.total = 4  # as the coordinator's answer to the submission says

    async def progress() -> None:
        await asyncio.sleep(0.2)
        handle.done = 2
        assert handle.on_progress is not None
        handle.on_progress(handle)
        await asyncio.sleep(0.2)
        handle._final.set_result(FinalResult(handle.task_id, "succeeded", 1))

    task = asyncio.create_task(progress())
    final = await tasks._follow(handle, "wordcount", 5.0, show=True)
    await task
    assert final.ok
    text = out.getvalue()
    assert "wordcount wc-123456789" in text and "0/4" in text and "2/4" in text


def test_a_final_that_never_ran_names_no_attempts(capsys: pytest.CaptureFixture[str]) -> None:
    """A task refused at submit never ran: its line says why, not 'after 0 attempt(s)'."""
    tasks._print_final(
        FinalResult("t-1", "failed", error="rejected at submit: depends on unknown task 'x'"),
        as_json=False,
    )
    assert capsys.readouterr().err.strip() == (
        "task t-1 failed: rejected at submit: depends on unknown task 'x'"
    )
    tasks._print_final(FinalResult("t-2", "failed", error="boom", attempts=3), as_json=False)
    assert capsys.readouterr().err.strip() == "task t-2 failed after 3 attempt(s): boom"

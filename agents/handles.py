"""What ``Client.submit`` returns: a submitted task's progress and its one final result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..protocol.taskmsgs import FinalResult


class TaskHandle:
    """A submitted task: its progress and, eventually, its one final result.

    Attributes:
        done, total: parts finished and parts in all (``total`` is the real
            number once the coordinator took the task, or from its first progress).
        taken: the coordinator answered the submission (see ``Client.submit(check=)``).
        warning: why the task cannot start soon, as the coordinator saw it on taking it.
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.done = 0
        self.total = 1
        self.note = ""  # why it waits, when the coordinator said (resources taken by others)
        self.taken = False
        self.warning: str | None = None
        self._final: asyncio.Future[FinalResult] = asyncio.get_running_loop().create_future()
        self.on_progress: Callable[[TaskHandle], None] | None = None

    @property
    def finished(self) -> bool:
        return self._final.done()

    async def result(self, timeout: float | None = None) -> FinalResult:
        """Wait for the final result (succeeded, failed, expired, dead_lettered or cancelled).

        Raises:
            TimeoutError: not finished within ``timeout``.
        """
        return await asyncio.wait_for(asyncio.shield(self._final), timeout)

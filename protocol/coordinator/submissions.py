"""Who submitted what, which submissions wait for which finals, and the finals themselves.

:class:`Submissions` is the part of the coordinator's state that answers
submitters; the task graph (what runs where) is the other part.

Rules:
    * A task id belongs to the submitter who first used it: resubmitting it
      is idempotent for that submitter (answered from its final, or added as
      a recipient while it runs); the same id from anyone else is refused
      with a reason, and never answered with the owner's final.
    * A task id names one task (conflict resolution): the same submitter
      reusing an id with another type, payload or dependencies is refused —
      the first submission wins, and the refusal says to use a new id. (A
      final read back from the results stream after a failover carries no
      digest of its task, so there a reuse is answered from the final.)
    * A held submission is acknowledged only once every task it names has
      its final stored (a resubmission waits for an unstored final too).
    * Finals are remembered by task id for idempotent resubmissions; a final
      whose store failed is stored again later.
    * Resource races (conflict resolution): when tasks need more of the pool
      than is free, the higher priority goes first, then the earlier
      submission (the ready queue's order); a task that lost waits for its
      resources and its submitter is told so once, with what it needs and
      what is free, instead of hearing nothing.
    * A task may depend only on its submitter's own tasks; a finished one,
      forgotten by the task graph, is stood in for by its final.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

from ..envelope import pack
from ..ledger import ResourceLedger
from ..resources import Resources
from ..taskgraph import Finished, TaskState
from ..taskmsgs import FinalResult, Submission, TaskRequest
from .actions import AckSubmission, DeliverFinals, Recipient, RefuseTasks, SendProgress

__all__ = ["Intake", "Submissions"]


@dataclass(slots=True)
class _Batch:
    """One held submission and the root tasks it still waits for."""

    token: int
    waiting: set[str]


@dataclass(slots=True)
class Intake:
    """What to do with one submission.

    Attributes:
        new: tasks to submit to the graph.
        known: finals to announce again (``store=False``).
        refused: tasks refused, with the reason, and whom to tell.
        ack: the submission holds nothing that waits: acknowledge it now.
    """

    new: list[TaskRequest] = field(default_factory=list)
    known: list[tuple[FinalResult, tuple[Recipient, ...]]] = field(default_factory=list)
    refused: RefuseTasks | None = None
    ack: bool = False


CONFLICT = "type, payload or dependencies: the first submission wins; use a new id"


def digest(t: TaskRequest) -> bytes:
    """What makes a task the same task: its type, payload and dependencies."""
    return hashlib.sha256(pack([t.type, t.payload, list(t.depends_on)])).digest()


class Submissions:
    """Submitters, held submissions, progress and finals of one coordinator."""

    def __init__(self) -> None:
        self.finals: dict[str, FinalResult] = {}
        self._submitters: dict[str, Recipient] = {}  # root id -> who submitted it (running)
        self._batches: dict[str, list[_Batch]] = {}  # root id -> held submissions naming it
        self._watchers: dict[str, list[Recipient]] = {}  # root id -> resubmitters
        self._progress: dict[str, tuple[int, int]] = {}  # root id -> (done, total)
        self._unstored: dict[str, FinalResult] = {}  # finals whose store failed
        self._storing: set[str] = set()  # finals handed to the shell, not yet confirmed
        self._digests: dict[str, bytes] = {}  # task id -> what it was submitted as
        self._told_waiting: set[str] = set()  # told they wait for resources

    def restore(self, finals: Iterable[FinalResult]) -> None:
        """Remember finals stored by earlier coordinators."""
        for final in finals:
            self.finals[final.task_id] = final

    def intake(
        self, token: int, submitter: str, sub: Submission, running: Callable[[str], bool]
    ) -> Intake:
        """Sort a submission's tasks into new, known and refused; hold what waits.

        Args:
            token: the held delivery.
            submitter: the envelope's (verified) sender.
            sub: the submission.
            running: whether a root task of that id runs now.
        """
        recipient = (submitter, sub.reply_to or "")
        out = Intake()
        refused: list[tuple[str, str]] = []
        pending: set[str] = set()  # known ids whose final is not stored yet
        for t in sub.tasks:
            owner = self.owner(t.id)
            if owner is not None and owner != submitter:
                refused.append((t.id, f"task id {t.id!r} belongs to another submitter"))
            elif self._digests.get(t.id, digest(t)) != digest(t):
                refused.append((t.id, f"task id {t.id!r} was submitted with another {CONFLICT}"))
            elif t.id in self.finals:  # idempotent resubmission: answer from the store
                out.known.append((self.finals[t.id], (recipient,)))
                if t.id in self._storing or t.id in self._unstored:
                    pending.add(t.id)
            elif running(t.id):  # told with its final
                self._watchers.setdefault(t.id, []).append(recipient)
                pending.add(t.id)
            else:
                out.new.append(t)
        if refused:
            out.refused = RefuseTasks(recipient, tuple(refused))
        batch = _Batch(token, pending | {t.id for t in out.new})
        if not batch.waiting:
            out.ack = True
            return out
        for task_id in batch.waiting:
            self._batches.setdefault(task_id, []).append(batch)
        self._submitters.update((t.id, recipient) for t in out.new)
        self._digests.update((t.id, digest(t)) for t in out.new)
        return out

    def owner(self, task_id: str) -> str | None:
        """Who submitted ``task_id`` (running or finished), if anyone."""
        running = self._submitters.get(task_id)
        if running is not None:
            return running[0]
        final = self.finals.get(task_id)
        return final.submitter if final is not None and final.submitter else None

    def foreign_dependencies(self, task: TaskRequest, submitter: str) -> list[str]:
        """Problems of ``task``'s dependencies on tasks of other submitters."""
        return [
            f"depends on task {dep!r} of another submitter"
            for dep in task.depends_on
            if self.owner(dep) not in (None, submitter)
        ]

    def ended(self, tasks: Iterable[TaskRequest], running: Container[str]) -> dict[str, Finished]:
        """Finished tasks, no longer ``running``, that ``tasks`` depend on, from their finals."""
        return {
            dep: Finished(TaskState(final.state), final.result, final.error)
            for t in tasks
            for dep in t.depends_on
            if dep not in running and (final := self.finals.get(dep)) is not None
        }

    def started(self, task_id: str, parts: int) -> None:
        """``task_id`` runs as ``parts`` subtasks (1 when not split)."""
        self._progress[task_id] = (0, max(1, parts))

    def part_done(self, root: str) -> SendProgress | None:
        """One more part of ``root`` succeeded: the notice to its submitter, if any."""
        if root not in self._progress:
            return None
        done, total = self._progress[root]
        self._progress[root] = (done + 1, total)
        recipient = self._submitters.get(root)
        if recipient is None or not recipient[1]:
            return None
        return SendProgress(recipient, root, done + 1, total)

    def waiting(self, task_id: str, need: Resources, ledger: ResourceLedger) -> SendProgress | None:
        """The notice that ``task_id`` (or the task it is part of) waits for resources, once."""
        root = task_id.rpartition(".")[0] if task_id not in self._submitters else task_id
        recipient = self._submitters.get(root)
        if recipient is None or not recipient[1] or root in self._told_waiting:
            return None
        self._told_waiting.add(root)
        done, total = self._progress.get(root, (0, 1))
        note = (
            f"waiting for resources: needs {need.to_mapping()} on one agent, "
            f"{ledger.available().to_mapping() or 'nothing'} free in the pool; tasks of higher "
            "priority go first, then those submitted earlier"
        )
        return SendProgress(recipient, root, done, total, note)

    def submitter(self, task_id: str) -> str:
        return self._submitters.get(task_id, ("", ""))[0]

    def finished(self, finals: list[FinalResult]) -> DeliverFinals:
        """Record ``finals`` and address them to their submitters and resubmitters."""
        items = []
        for final in finals:
            self.finals[final.task_id] = final
            self._storing.add(final.task_id)
            self._progress.pop(final.task_id, None)
            self._told_waiting.discard(final.task_id)
            recipients = [r for r in self._watchers.pop(final.task_id, []) if r[1]]
            own = self._submitters.pop(final.task_id, None)
            if own is not None and own[1]:
                recipients.append(own)
            items.append((final, tuple(recipients)))
        return DeliverFinals(tuple(items))

    def stored(self, task_ids: Iterable[str]) -> list[AckSubmission]:
        """The finals of ``task_ids`` are stored: the submissions no longer waiting."""
        acks = []
        for task_id in task_ids:
            self._storing.discard(task_id)
            for batch in self._batches.pop(task_id, ()):
                batch.waiting.discard(task_id)
                if not batch.waiting:
                    acks.append(AckSubmission(batch.token))
        return acks

    def not_stored(self, task_ids: Iterable[str]) -> None:
        """Storing the finals of ``task_ids`` failed: store them again later."""
        for task_id in task_ids:
            self._storing.discard(task_id)
            final = self.finals.get(task_id)
            if final is not None:
                self._unstored[task_id] = final

    def retry(self) -> DeliverFinals | None:
        """The finals to store again, if any."""
        if not self._unstored:
            return None
        retry = [(final, ()) for final in self._unstored.values()]
        self._storing.update(self._unstored)
        self._unstored.clear()
        return DeliverFinals(tuple(retry))

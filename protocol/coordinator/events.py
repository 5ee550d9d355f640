"""What a coordinator learns: the events fed to :class:`~.state.CoordinatorState`.

Every event is data that the I/O shell has already verified (a signed envelope
opened by the codec, a decoded payload, a broker event it trusts). Time is not
part of an event: :meth:`CoordinatorState.handle` takes ``now`` beside it, so
a simulator can drive the machine with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..heartbeat import Heartbeat
from ..taskmsgs import FinalResult, ResultMsg, Submission

__all__ = [
    "AssignmentFailed",
    "BecameActive",
    "CancelRequested",
    "ConnectionClosed",
    "Event",
    "FinalsNotStored",
    "FinalsStored",
    "HeartbeatReceived",
    "QuarantineChanged",
    "ResultsReceived",
    "SubmissionReceived",
    "SummaryReceived",
    "Tick",
]


@dataclass(frozen=True, slots=True)
class BecameActive:
    """The shell holds the lock and chose ``epoch``; ``finals`` are those already stored.

    Until this event the machine ignores every other event: a standby serves nothing.
    """

    epoch: int
    finals: tuple[FinalResult, ...] = ()


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """A verified heartbeat; ``role`` is the sender's *certified* role."""

    agent_id: str
    role: str
    beat: Heartbeat


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The broker reported the connection of ``agent_id``'s ``incarnation`` closed.

    ``verified``: the broker's own record of that connection names the
    agent's own broker user (per-agent users), so nobody else opened it. An
    unverified close (a shared login could have opened a connection under
    any name) only makes the agent suspected: it is declared dead unless it
    heartbeats again soon.
    """

    agent_id: str
    incarnation: str
    verified: bool = False


@dataclass(frozen=True, slots=True)
class SubmissionReceived:
    """A verified ``task.submit`` delivery, held unacknowledged by the shell.

    ``token`` names the delivery: the machine answers :class:`~.actions.AckSubmission`
    with it once every task of the submission has a stored final result.
    """

    token: int
    submitter: str
    submission: Submission


@dataclass(frozen=True, slots=True)
class ResultsReceived:
    """Results reported by ``sender`` (its certified id) in one message."""

    sender: str
    results: tuple[ResultMsg, ...]


@dataclass(frozen=True, slots=True)
class AssignmentFailed:
    """An :class:`~.actions.Assign` could not be sent: ``(task id, attempt)`` pairs.

    ``permanent``: sending it again cannot work (the assignment alone is
    larger than any agent accepts), so the tasks fail instead of retrying.
    ``undelivered``: the broker returned it unroutable (the agent's work
    queue is gone, e.g. with a lost node): no agent saw it, so it is retried
    without counting as an attempt.
    """

    agent_id: str
    attempts: tuple[tuple[str, int], ...]
    error: str
    permanent: bool = False
    undelivered: bool = False


@dataclass(frozen=True, slots=True)
class FinalsStored:
    """The results stream confirmed the finals of ``task_ids``."""

    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FinalsNotStored:
    """Storing the finals of ``task_ids`` failed; the machine tries again later."""

    task_ids: tuple[str, ...]
    error: str


@dataclass(frozen=True, slots=True)
class QuarantineChanged:
    """A guardian's verified order put ``agent_id`` in quarantine, or released it.

    A quarantined agent gets no work; what it holds is reassigned at once.
    """

    agent_id: str
    quarantined: bool


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """``requester`` (the envelope's verified sender) asks to cancel its task ``task_id``.

    The machine answers with one :class:`~.actions.CancelAnswered`.
    """

    requester: str
    task_id: str


@dataclass(frozen=True, slots=True)
class SummaryReceived:
    """A cluster leader's summary, admitted by the shell (sender and term checked).

    Each ``(agent id, certified role, heartbeat)`` in ``members`` counts as that
    member's heartbeat heard now (the shell passes only entries newer than the
    last folded for the member); each ``(agent id, reason)`` in ``lost`` is a
    member the leader declared lost: its attempts are reassigned at once.
    """

    members: tuple[tuple[str, str, Heartbeat], ...]
    lost: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: detect silent agents, expire tasks, retry, dispatch."""


Event = (
    BecameActive
    | HeartbeatReceived
    | ConnectionClosed
    | SubmissionReceived
    | ResultsReceived
    | AssignmentFailed
    | FinalsStored
    | FinalsNotStored
    | QuarantineChanged
    | CancelRequested
    | SummaryReceived
    | Tick
)

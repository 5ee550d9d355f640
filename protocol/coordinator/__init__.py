"""The coordinator's decisions as a pure state machine (events in, actions out).

* :class:`CoordinatorState` — feed it :mod:`events <.events>` with
  :meth:`~CoordinatorState.handle`, perform the :mod:`actions <.actions>` it returns;
* :class:`FleetView` — health and capacity of the agents it schedules on;
* :mod:`.queries` — what a task waits for, for ``robeing task show|list``.

The I/O shell that hosts it is ``robeing.agents.roles.coordinator``.
"""

from . import queries
from .actions import (
    AckSubmission,
    Action,
    Assign,
    Audit,
    CancelAnswered,
    CancelAttempts,
    DeadLetterTask,
    DeliverFinals,
    PurgeAssignments,
    Recipient,
    RefuseTasks,
    SendProgress,
)
from .events import (
    AssignmentFailed,
    BecameActive,
    CancelRequested,
    ConnectionClosed,
    Event,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    QuarantineChanged,
    ResultsReceived,
    SubmissionReceived,
    SummaryReceived,
    Tick,
)
from .fleet import TASK_ROLES, FleetView, Lost
from .state import CoordinatorConfig, CoordinatorState

__all__ = [
    "TASK_ROLES",
    "AckSubmission",
    "Action",
    "Assign",
    "AssignmentFailed",
    "Audit",
    "BecameActive",
    "CancelAnswered",
    "CancelAttempts",
    "CancelRequested",
    "ConnectionClosed",
    "CoordinatorConfig",
    "CoordinatorState",
    "DeadLetterTask",
    "DeliverFinals",
    "Event",
    "FinalsNotStored",
    "FinalsStored",
    "FleetView",
    "HeartbeatReceived",
    "Lost",
    "PurgeAssignments",
    "QuarantineChanged",
    "Recipient",
    "RefuseTasks",
    "ResultsReceived",
    "SendProgress",
    "SubmissionReceived",
    "SummaryReceived",
    "Tick",
    "queries",
]

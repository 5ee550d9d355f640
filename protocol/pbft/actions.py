"""What a PBFT replica asks its host to do: the actions it returns.

:class:`~.replica.Replica` does no I/O; every handler returns a list of
these, in order, and the host (``agents/bft_replica.py``) carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..evidence import Equivocation
from .messages import Checkpoint, Message, Request


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to replica ``to``."""

    to: str
    msg: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``msg`` to every other replica."""

    msg: Message


@dataclass(frozen=True, slots=True)
class Decide:
    """Execute ``request`` (None: the null request, skip it) as number ``seq``."""

    seq: int
    view: int
    request: Request | None
    digest: bytes


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call :meth:`Replica.tick` at time ``at`` (replaces earlier requests)."""

    at: float


@dataclass(frozen=True, slots=True)
class FetchState:
    """Install the application state at checkpoint ``seq`` from a peer.

    ``proof`` is ``quorum`` signed checkpoints for ``state_digest``; the state
    obtained must reproduce that digest (see :func:`chain_digest`). Then call
    :meth:`Replica.on_state_transferred`.
    """

    seq: int
    state_digest: bytes
    proof: tuple[Checkpoint, ...]


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A peer equivocated; forward the evidence to the guardian."""

    evidence: Equivocation


@dataclass(frozen=True, slots=True)
class EnterView:
    """The replica installed ``view`` whose primary is ``primary``."""

    view: int
    primary: str


Action = Send | Broadcast | Decide | SetTimer | FetchState | ReportEvidence | EnterView

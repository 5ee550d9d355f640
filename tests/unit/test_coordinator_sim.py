"""The coordinator state machine under seeded simulations, and the checks that guard them.

The rules themselves are specified one at a time in ``test_coordinator_state.py``;
the invariants and their tags are listed in ``coordinator_checks.py``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from coordinator_scenarios import random_scenario
from coordinator_sim import run

from robeing.protocol.coordinator import (
    AckSubmission,
    Action,
    BecameActive,
    CancelAnswered,
    CancelRequested,
    CoordinatorState,
    FleetView,
    Lost,
    PurgeAssignments,
)
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.ledger import ResourceLedger
from robeing.protocol.resources import Resources
from robeing.protocol.taskmsgs import FinalResult, ResultMsg

RUNS = 1000
# Share of runs that must exercise each kind of event or fault (each is drawn at
# random per run; the shares seen at 1,000 runs are about twice these).
MIN_SHARE = {
    "submissions": 0.9,
    "splits": 0.5,
    "dag deps": 0.6,
    "deadlines expired": 0.5,
    "resource waits": 0.25,
    "unsatisfiable resources": 0.25,
    "resubmissions in flight": 0.15,
    "resubmissions finished": 0.3,
    "deaths": 0.35,
    "graceful leaves": 0.1,
    "stale-incarnation closes": 0.35,
    "pauses past death": 0.15,
    "zombies": 0.1,
    "rejoins": 0.35,
    "duplicated results": 0.2,
    "forged results": 0.25,
    "stale results": 0.5,
    "old-epoch results": 0.3,
    "assignment failures": 0.15,
    "store failures": 0.2,
    "failovers": 0.3,
    "dead letters": 0.08,
    "contributions changed": 0.1,
    "quarantines": 0.2,
    "unstored finals superseded": 0.02,
    "cancels cancelled": 0.3,
    "cancels refused": 0.1,
    "cancels finished": 0.05,
    "cancelled attempts": 0.1,
}


@pytest.fixture(autouse=True)
def quiet_coordinator_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The machine warns at every simulated fault; formatting that would dominate the run."""
    caplog.set_level(logging.CRITICAL, logger="robeing.protocol.coordinator")


def test_simulated_runs_keep_the_coordinators_promises() -> None:
    """Given 1,000 seeded runs (random fleets, DAGs, splits, deadlines, resources;
    crashes, graceful leaves, stale closes, pauses past death, zombies, duplicated,
    forged and stale-epoch results, refused assignments, failed stores, failovers and
    quarantines),
    Expect no violated invariant after any step and, once the faults stop, every task
    final and every submission acknowledged; Expect each kind of fault exercised in a
    good share of runs."""
    exercised: Counter[str] = Counter()
    failed: list[str] = []
    for seed in range(RUNS):
        result = run(random_scenario(seed))
        failed += result.violations[:1]
        exercised.update(kind for kind, n in result.kinds.items() if n)
    print(f"\ncoordinator simulation, runs exercising each kind (of {RUNS}):")
    for kind in sorted(exercised, key=lambda k: -exercised[k]):
        print(f"  {kind:28} {exercised[kind]:5}")
    assert not failed, f"{len(failed)} of {RUNS} runs broke an invariant; the first:\n{failed[0]}"
    short = {k: exercised[k] for k, share in MIN_SHARE.items() if exercised[k] < share * RUNS}
    assert not short, f"kinds exercised in too few runs: {short}"


# --- the checks can fail ---------------------------------------------------------------------


class AcksEarly(CoordinatorState):
    """Acknowledges every submission as soon as it arrives."""

    def _on_submission(self, event: Any, now: float) -> None:
        super()._on_submission(event, now)
        if AckSubmission(event.token) not in self._out:
            self._out.append(AckSubmission(event.token))


class DropsAFinal(CoordinatorState):
    """Loses the final of every second task of a batch: never told, never stored."""

    def _deliver(self, finals: list[FinalResult]) -> None:
        super()._deliver([f for f in finals if not f.task_id.endswith("t1")])


class ForgetsStoredFinals(CoordinatorState):
    """Ignores the finals stored by earlier coordinators, so runs their tasks again."""

    def _become_active(self, event: BecameActive) -> None:
        super()._become_active(BecameActive(event.epoch))


class TrustsAnySender(CoordinatorState):
    """Takes a result as its holder's whoever sent it."""

    def _on_result(self, res: ResultMsg, sender: str, now: float) -> None:
        if res.task_id in self.graph:
            sender = self.graph.get(res.task_id).agent or sender
        super()._on_result(res, sender, now)


class IgnoresEpochs(CoordinatorState):
    """Takes results of any epoch as its own."""

    def _on_result(self, res: ResultMsg, sender: str, now: float) -> None:
        super()._on_result(replace(res, epoch=self.epoch), sender, now)


class TrustsLateAttempts(CoordinatorState):
    """Lets any result from the holder end the task once its deadline passed."""

    def _on_result(self, res: ResultMsg, sender: str, now: float) -> None:
        rec = self.graph.get(res.task_id) if res.task_id in self.graph else None
        if rec is not None and rec.agent == sender and rec.deadline and now >= rec.deadline:
            res = replace(res, attempt=rec.attempt)
        super()._on_result(res, sender, now)


class KeepsLostAgents(CoordinatorState):
    """Reassigns a lost agent's tasks but keeps scheduling on it."""

    def _agents_lost(self, lost: list[Lost], now: float) -> None:
        for item in lost:
            if self.graph.agent_lost(item.agent_id, now=now):
                self._out.append(PurgeAssignments(item.agent_id))


class TrustsAnyClose(CoordinatorState):
    """Takes the close of any incarnation of an agent as its death."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fleet = self.fleet

        def any_close(
            agent_id: str, incarnation: str, now: float, *, verified: bool = False
        ) -> list[Lost]:
            known = fleet.incarnations.get(agent_id, incarnation)
            return FleetView.connection_closed(fleet, agent_id, known, now, verified=True)

        fleet.connection_closed = any_close  # type: ignore[method-assign]


class TrustsOlderProcesses(CoordinatorState):
    """Takes every heartbeat as the newest process's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fleet = self.fleet

        def any_beat(agent_id: str, role: str, beat: Heartbeat, now: float) -> list[Lost]:
            fleet.started.pop(agent_id, None)
            return FleetView.heartbeat(fleet, agent_id, role, beat, now)

        fleet.heartbeat = any_beat  # type: ignore[method-assign]


class BackupsAlwaysOn(CoordinatorState):
    """Schedules on backups whether or not a primary is dead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet._backup_needed = lambda beat, skills: True  # type: ignore[method-assign]


class OverbooksAgents(CoordinatorState):
    """Places every resource need on the agent it picks, whether it fits or not."""

    class Ledger(ResourceLedger):
        def fits(self, agent_id: str, request: Resources) -> bool:
            return agent_id in self.agents()

        @staticmethod
        def _place_whole(need: Any, candidates: Any, strategy: Any) -> Any:
            return [(candidates[0][0], need)] if candidates else None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet.ledger = self.Ledger()


class IgnoresQuarantine(CoordinatorState):
    """Keeps scheduling on quarantined agents."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fleet.quarantine = lambda agent_id, quarantined: []  # type: ignore[method-assign]


class StaysAtFirstEpoch(CoordinatorState):
    """Stamps epoch 1 whatever epoch it was given."""

    def _become_active(self, event: BecameActive) -> None:
        super()._become_active(BecameActive(1, event.finals))


class CancelsForAnyone(CoordinatorState):
    """Lets anyone cancel a task, as if its submitter asked."""

    def handle(self, event: Any, now: float) -> list[Action]:
        if isinstance(event, CancelRequested):
            owner = self.submissions.owner(event.task_id)
            event = CancelRequested(owner or event.requester, event.task_id)
        return super().handle(event, now)


class AnswersWithoutCancelling(CoordinatorState):
    """Says a task was cancelled, and lets it run on."""

    def handle(self, event: Any, now: float) -> list[Action]:
        if isinstance(event, CancelRequested) and event.task_id in self.graph:
            return [*self._advance(now), CancelAnswered(event.task_id, "cancelled", "")]
        return super().handle(event, now)


BROKEN: dict[str, tuple[Callable[..., CoordinatorState], str]] = {
    "acks early": (AcksEarly, "ack"),
    "drops a final": (DropsAFinal, "liveness"),
    "forgets stored finals": (ForgetsStoredFinals, "final"),
    "trusts any sender": (TrustsAnySender, "stale"),
    "ignores epochs": (IgnoresEpochs, "stale"),
    "trusts late attempts": (TrustsLateAttempts, "stale"),
    "keeps lost agents": (KeepsLostAgents, "assign"),
    "trusts any close": (TrustsAnyClose, "fleet"),
    "trusts older processes": (TrustsOlderProcesses, "fleet"),
    "backups always on": (BackupsAlwaysOn, "assign"),
    "ignores quarantine": (IgnoresQuarantine, "assign"),
    "overbooks agents": (OverbooksAgents, "ledger"),
    "stays at first epoch": (StaysAtFirstEpoch, "epoch"),
    "cancels for anyone": (CancelsForAnyone, "cancel"),
    "answers without cancelling": (AnswersWithoutCancelling, "cancel"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_simulation_catches_a_broken_machine(name: str) -> None:
    """Given a machine broken in one way, When seeded runs drive it, Expect a run to
    report a violation with the matching tag, the seed and a trace (the checks can fail)."""
    machine, tag = BROKEN[name]
    for seed in range(300):
        violations = run(random_scenario(seed), machine).violations
        if violations and violations[0].startswith(f"[{tag}] seed {seed} "):
            assert "last steps:" in violations[0]
            return
    pytest.fail(f"no run caught a machine that {name}")

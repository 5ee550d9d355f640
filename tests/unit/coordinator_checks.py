"""The invariants the coordinator simulator checks after every step.

A :class:`Checker` watches one run of :class:`coordinator_sim.Simulation`: the
simulation tells it what it feeds the machine and what it performs, and the
checker raises :class:`Violation` (with the seed and a trace of the last
steps) at the first broken rule. Each rule has a tag:

* ``final``: a submitter sees one final per task id: a later, different one
  is a violation unless the first was never stored and a failover came in
  between (the shell notifies before it stores, by design, and the task ran
  again); the stream never holds two different finals for an id; a machine
  never changes a final it delivered; finals and progress notices go only to
  submitters of the id; a task expires at or after its deadline and succeeds
  only before it.
* ``stale``: a result that is not the live attempt's, from its holder, under
  the current epoch, is counted stale and has no effect but dispatch; every
  final that succeeded (or was rejected) carries a value that an attempt the
  machine assigned, under its epoch, produced.
* ``assign``: no assignment to an agent declared lost and not heard from
  since, to a role that runs no tasks, to an agent without the task's skill,
  to a backup while no primary it stands in for is lost, or of a split task's
  merge step; an assignment carries the results of exactly its dependencies.
* ``fleet``: a close or a heartbeat of an incarnation older than the newest
  the machine heard of changes nothing; a leaving agent is lost.
* ``ledger``: per agent, reservations exceed the contribution only after it
  shrank, and then none is placed there; each belongs to a task running on
  that agent.
* ``epoch``: a new coordinator takes the strictly higher epoch it is given,
  and every assignment carries it.
* ``ack``: a submission is acknowledged once, after every task in it has a
  stored final.
* ``cancel``: every request gets one answer; only the task's submitter
  cancels it, and only while it is unfinished; a ``cancelled`` answer comes
  with the task's ``cancelled`` final; a refused or unknown one changes
  nothing; agents are told to stop only attempts they hold; a ``cancelled``
  final belongs to a task its submitter cancelled, or names one as the cause.
* ``liveness`` (at the end): every submission is acknowledged and every
  submitter's reply queue got a final for each task it submitted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from coordinator_scenarios import TASK_ROLES, AgentSpec, Batch

from robeing.protocol.coordinator import (
    Action,
    Assign,
    BecameActive,
    CancelAnswered,
    CancelAttempts,
    DeliverFinals,
    Event,
    HeartbeatReceived,
    PurgeAssignments,
    ResultsReceived,
    SendProgress,
    SubmissionReceived,
)
from robeing.protocol.failure_detector import Health
from robeing.protocol.taskgraph import TaskState
from robeing.protocol.taskmsgs import AssignMsg, FinalResult, ResultMsg, TaskRequest

if TYPE_CHECKING:
    from coordinator_sim import Simulation

LIVE = (TaskState.ASSIGNED, TaskState.RUNNING)
Recipient = tuple[str, str]


class Violation(Exception):
    """An invariant broke; the run stops there."""


class Checker:
    """Checks one simulation's steps against the invariants (see the module doc)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.violations: list[str] = []
        self.trace: deque[tuple[float, int, Event, list[Action]]] = deque(maxlen=30)
        self.epoch = 0
        self.placed: set[str] = set()  # ledger allocations at the last check
        # What the submitters know: their tasks, who asked, what they were told.
        self.specs: dict[str, TaskRequest] = {}
        self.owners: dict[str, str] = {}  # task id -> who first submitted it
        self.cancelled: set[str] = set()  # tasks their submitter cancelled
        self.recipients: dict[str, set[Recipient]] = {}
        self.seen: dict[tuple[str, str], tuple[FinalResult, int]] = {}  # first final, machine
        self.got: set[tuple[str, str, str]] = set()  # (submitter, reply queue, task) told
        # What the agents did: attempts handed out, values they produced.
        self.assigned: dict[tuple[str, int, int], str] = {}  # (task, attempt, epoch) -> agent
        self.produced: dict[Any, tuple[str, int, int, str]] = {}  # value -> its attempt
        self.new_machine()

    def new_machine(self) -> None:
        """A new coordinator: what the previous one knew about agents and finals is gone."""
        self.lost: set[str] = set()  # declared lost, not heard from since
        self.monitored: set[str] = set()  # in the machine's health monitor
        self.newest: dict[str, int] = {}  # agent -> newest incarnation the machine heard of
        self.delivered: dict[str, FinalResult] = {}  # finals it delivered to store

    def fail(self, tag: str, message: str) -> NoReturn:
        sim = self.sim
        lines = [f"[{tag}] seed {sim.sc.seed} t={sim.now:.3f}: {message}", "last steps:"]
        for now, gen, event, actions in self.trace:
            lines.append(f"  {now:8.3f} m{gen} {short(event)}")
            lines += [f"{'':18}-> {short(a)}" for a in actions]
        self.violations.append("\n".join(lines))
        raise Violation(message)

    # --- every step --------------------------------------------------------------------

    def step(self, event: Event, actions: list[Action]) -> None:
        """Record the step and track the agents the machine declared lost."""
        sim = self.sim
        self.trace.append((sim.now, sim.gen, event, actions))
        fleet = sim.machine.fleet
        health = fleet.health
        for agent_id in sim.agents:
            monitored = agent_id in health
            if (
                (agent_id in self.monitored and not monitored)
                or fleet.is_dead(agent_id)
                or health.state(agent_id) is Health.DEAD
            ):
                self.declare_lost(agent_id)
            if monitored:
                self.monitored.add(agent_id)
            else:
                self.monitored.discard(agent_id)
        for action in actions:
            if isinstance(action, PurgeAssignments):
                self.declare_lost(action.agent_id)

    def declare_lost(self, agent_id: str) -> None:
        self.lost.add(agent_id)
        agent = self.sim.agents[agent_id]
        if agent.state == "paused":
            agent.lost_while_paused = True

    def heard_from(self, agent_id: str, inc: int) -> bool:
        """A beat of incarnation ``inc`` is fed; False if the machine knows a newer one."""
        if self.newest.get(agent_id, 0) > inc:
            return False
        self.newest[agent_id] = inc
        if agent_id in self.lost:
            self.sim.kinds["rejoins"] += 1
            self.lost.discard(agent_id)
        return True

    def ledger(self) -> None:
        machine = self.sim.machine
        ledger = machine.fleet.ledger
        before, self.placed = self.placed, {a.allocation_id for a in ledger.allocations()}
        for agent_id in ledger.agents():
            used, cap = ledger.allocated(agent_id), ledger.capacity(agent_id)
            if not any(u > c for u, c in zip(_dims(used), _dims(cap), strict=True)):
                continue
            # Only a shrink leaves more held than contributed, and nothing new goes there
            # (a heartbeat's contribution is taken before that step's dispatch).
            fresh = [
                a.request_id
                for a in ledger.allocations()
                if agent_id in a.agents and a.allocation_id not in before
            ]
            if fresh:
                self.fail("ledger", f"{agent_id} holds {used}, contributes {cap}; new: {fresh}")
        for allocation in ledger.allocations():
            task_id = allocation.request_id
            rec = machine.graph.get(task_id) if task_id in machine.graph else None
            if rec is None or rec.state not in LIVE or allocation.agents != (rec.agent,):
                where = None if rec is None else (rec.state, rec.agent)
                self.fail("ledger", f"reservation of {task_id} on {allocation.agents}: {where}")

    # --- the coordinator's life ------------------------------------------------------------

    def became_active(self, epoch: int) -> None:
        taken = self.sim.machine.epoch
        if taken != epoch or epoch <= self.epoch:
            self.fail("epoch", f"machine took epoch {taken}, given {epoch} after {self.epoch}")
        self.epoch = epoch

    def published(self, batch: Batch) -> None:
        for t in batch.tasks:
            self.specs.setdefault(t.id, t)
            self.owners.setdefault(t.id, batch.submitter)
            self.recipients.setdefault(t.id, set()).add((batch.submitter, batch.reply_to))

    # --- assignments --------------------------------------------------------------------

    def assign(self, action: Assign) -> None:
        agent = self.sim.agents.get(action.agent_id)
        if agent is None or agent.spec.role not in TASK_ROLES:
            self.fail("assign", f"assignment to {action.agent_id}, which runs no tasks")
        if action.agent_id in self.lost:
            self.fail("assign", f"assignment to {action.agent_id}, declared lost")
        if action.agent_id in self.sim.quarantined:
            self.fail("assign", f"assignment to {action.agent_id}, in quarantine")
        if agent.spec.standby and not self.backup_needed(agent.spec):
            self.fail("assign", f"assignment to backup {action.agent_id}; no primary is lost")
        for msg in action.messages:
            if msg.epoch != self.epoch:
                self.fail("epoch", f"assignment of {msg.task_id} with epoch {msg.epoch}")
            self.assignment(agent.spec, msg)
            self.assigned[(msg.task_id, msg.attempt, msg.epoch)] = action.agent_id

    def assignment(self, agent: AgentSpec, msg: AssignMsg) -> None:
        root_id = msg.task_id.rpartition(".")[0]
        spec = self.specs.get(msg.task_id) or self.specs.get(root_id)
        if spec is None or (spec.id != msg.task_id) != (spec.agents > 1):
            self.fail("assign", f"assignment of an unknown task or a merge step: {msg.task_id}")
        if spec.skills and not set(spec.skills) & set(agent.skills):
            self.fail("assign", f"{msg.task_id} needs {spec.skills}; {agent.id} has none")
        if set(msg.dep_results) != set(spec.depends_on):
            self.fail("assign", f"{msg.task_id} got results of {sorted(msg.dep_results)}")

    def backup_needed(self, backup: AgentSpec) -> bool:
        if backup.backup_for is not None:
            return backup.backup_for in self.lost
        agents = self.sim.agents
        return any(
            set(agents[a].spec.skills) & set(backup.skills)
            for a in self.lost
            if not agents[a].spec.standby
        )

    # --- finals, stores, acknowledgements ---------------------------------------------------

    def final(self, final: FinalResult, recipients: tuple[Recipient, ...], store: bool) -> None:
        """A final goes out: to whom, whether it contradicts one seen, where it came from."""
        sim, task_id = self.sim, final.task_id
        allowed = self.recipients.get(task_id)
        if allowed is None:
            self.fail("final", f"final for {task_id}, which nobody submitted")
        for submitter, reply_to in recipients:
            if (submitter, reply_to) not in allowed:
                self.fail("final", f"final of {task_id} sent to {submitter}/{reply_to}")
            self.got.add((submitter, reply_to, task_id))
            first, gen = self.seen.setdefault((submitter, task_id), (final, sim.gen))
            if first == final:
                continue
            if sim.stream.get(task_id) == first or gen == sim.gen:
                self.fail("final", f"{submitter} got a second final: {first} / {final}")
            sim.kinds["unstored finals superseded"] += 1  # told, never stored, run again
        if not store:
            return
        if task_id in self.delivered:
            if self.delivered[task_id] != final:
                self.fail("final", f"machine changed the final of {task_id}")
            return
        self.delivered[task_id] = final
        self.deadline(final)
        self.provenance(final)
        if final.state == "cancelled" and not (
            task_id in self.cancelled
            or any(f"'{c}'" in (final.error or "") for c in self.cancelled)
        ):
            self.fail("cancel", f"{task_id} ended cancelled, nobody cancelled it: {final.error}")

    def deadline(self, final: FinalResult) -> None:
        """A task expires at its deadline, not before, and succeeds only before it."""
        kinds, deadline = self.sim.kinds, self.specs[final.task_id].deadline
        if final.state == "expired":
            kinds["deadlines expired"] += 1
            if deadline is None or final.finished_at < deadline:
                self.fail("final", f"{final.task_id} expired; its deadline is {deadline}")
        elif final.state == "succeeded" and deadline is not None and final.finished_at >= deadline:
            self.fail("final", f"{final.task_id} succeeded past its deadline {deadline}")
        elif (final.error or "").startswith("rejected at submit"):
            kinds["rejected at submit"] += 1

    def provenance(self, final: FinalResult) -> None:
        """A final that carries an attempt's outcome must come from an accepted attempt."""
        if final.state == "failed" and (final.error or "").startswith("Reject: "):
            self.produced_by(final.task_id, final.error.removeprefix("Reject: "), final.attempts)
        elif final.state == "succeeded" and self.specs[final.task_id].agents == 1:
            self.produced_by(final.task_id, final.result, final.attempts)
        elif final.state == "succeeded":
            if not isinstance(final.result, dict):
                self.fail("stale", f"merged final of {final.task_id} is {final.result!r}")
            for sub_id, value in final.result.items():
                if sub_id.rpartition(".")[0] != final.task_id:
                    self.fail("stale", f"final of {final.task_id} merges {sub_id}")
                self.produced_by(sub_id, value, None)

    def produced_by(self, task_id: str, value: Any, attempt: int | None) -> None:
        origin = self.produced.get(value)
        if (
            origin is None
            or origin[0] != task_id
            or origin[2] != self.epoch
            or (attempt is not None and origin[1] != attempt)
            or self.assigned.get(origin[:3]) != origin[3]
        ):
            self.fail("stale", f"final of {task_id} carries {value!r}, of no accepted attempt")

    def stored(self, final: FinalResult) -> None:
        old = self.sim.stream.setdefault(final.task_id, final)
        if old != final:
            self.fail("final", f"two finals stored for {final.task_id}: {old} / {final}")

    def ack(self, token: int, batch: Batch | None) -> None:
        if batch is None:
            self.fail("ack", f"token {token} acknowledged twice or never delivered")
        missing = [t.id for t in batch.tasks if t.id not in self.sim.stream]
        if missing:
            self.fail("ack", f"submission acknowledged; no stored final for {missing}")

    def progress(self, action: SendProgress) -> None:
        low = 0 if action.note else 1  # a task told why it waits may have no part done
        if action.recipient not in self.recipients.get(action.task_id, ()) or not (
            low <= action.done <= action.total
        ):
            self.fail("final", f"bad progress notice {action}")

    # --- cancellations ---------------------------------------------------------------------------

    def cancel(self, requester: str, task_id: str, feed: Callable[[], list[Action]]) -> None:
        """Feed a cancel request: one answer, from the owner only, and what it implies."""
        machine, owner = self.sim.machine, self.owners.get(task_id)
        before = machine.graph.get(task_id).state if task_id in machine.graph else None
        asked = owner == requester and task_id not in self.cancelled
        if asked:  # its final may go out in this very step
            self.cancelled.add(task_id)
        actions = feed()
        answers = [a for a in actions if isinstance(a, CancelAnswered)]
        if len(answers) != 1 or answers[0].task_id != task_id:
            self.fail("cancel", f"cancel of {task_id} by {requester} answered {answers}")
        outcome = answers[0].outcome
        if asked and outcome != "cancelled":
            self.cancelled.discard(task_id)
        finals = {
            f.task_id: f for a in actions if isinstance(a, DeliverFinals) for f, _ in a.finals
        }
        if outcome == "cancelled":
            if owner != requester or before is None or before.terminal:
                self.fail("cancel", f"{requester} cancelled {task_id} of {owner} ({before})")
            if finals.get(task_id) is None or finals[task_id].state != "cancelled":
                self.fail("cancel", f"{task_id} cancelled without its cancelled final: {finals}")
        elif outcome in ("refused", "unknown"):
            after = machine.graph.get(task_id).state if task_id in machine.graph else None
            if after != before or task_id in finals:
                self.fail("cancel", f"a {outcome} cancel of {task_id} moved {before} to {after}")
        elif outcome != "finished" or owner != requester:
            self.fail("cancel", f"cancel of {task_id} by {requester} (owner {owner}): {outcome}")

    def cancel_attempts(self, action: CancelAttempts) -> None:
        for task_id, attempt in action.attempts:
            if self.assigned.get((task_id, attempt, self.epoch)) != action.agent_id:
                self.fail("cancel", f"{action.agent_id} told to stop {task_id}#{attempt}")

    # --- what must change nothing ---------------------------------------------------------------

    def result(self, sender: str, res: ResultMsg, feed: Callable[[], list[Action]]) -> None:
        """Feed one result; a stale one must be counted and change nothing but dispatch."""
        machine, kinds = self.sim.machine, self.sim.kinds
        rec = machine.graph.get(res.task_id) if res.task_id in machine.graph else None
        before = None if rec is None else (rec.state, rec.attempt, rec.agent)
        fresh = (
            rec is not None
            and rec.state in LIVE
            and res.epoch == machine.epoch
            and rec.agent == sender
            and rec.attempt == res.attempt
        )
        stale = machine.counters["stale_results"]
        actions = feed()
        if fresh:
            return
        kinds["stale results"] += 1
        kinds["old-epoch results"] += res.epoch != machine.epoch
        if machine.counters["stale_results"] != stale + 1:
            self.fail("stale", f"stale result {res} from {sender} was not counted stale")
        # Dispatch may run on any event: its assignments and its waiting notices are no effect.
        effects = [
            a
            for a in actions
            if not isinstance(a, Assign) and not (isinstance(a, SendProgress) and a.note)
        ]
        if effects:
            self.fail("stale", f"stale result {res} from {sender} caused {effects}")
        if rec is None or before is None:
            return
        after = (rec.state, rec.attempt, rec.agent) if res.task_id in machine.graph else None
        ended = after is None or (after[0].terminal and not before[0].terminal)
        if ended or (before[0] in LIVE and after != before):
            self.fail("stale", f"stale result {res} from {sender} moved {before} to {after}")

    def unchanged(self, agent_id: str, what: str, feed: Callable[[], list[Action]]) -> None:
        """Feed an event about an older incarnation: the machine's view of the agent stays."""
        fleet = self.sim.machine.fleet

        def view() -> tuple[Any, ...]:  # load aside: a dispatch in the same step changes it
            info = next((a for a in fleet.registry if a.id == agent_id), None)
            offer = None if info is None else (info.capacity, info.specializations)
            return (
                offer,
                fleet.is_dead(agent_id),
                fleet.health.state(agent_id),
                fleet.incarnations.get(agent_id),
                fleet.ledger.capacity(agent_id),
            )

        before, deaths = view(), fleet.counters["connection_deaths"]
        purged = [a for a in feed() if isinstance(a, PurgeAssignments)]
        if view() != before or purged or fleet.counters["connection_deaths"] != deaths:
            self.fail("fleet", f"{what} of {agent_id} changed {before} to {view()}")

    def left(self, agent_id: str, known: bool) -> None:
        if known and agent_id not in self.lost:
            self.fail("fleet", f"{agent_id} said it leaves; the machine keeps it")

    # --- the end --------------------------------------------------------------------------------

    def liveness(self) -> None:
        sim = self.sim
        if sim.m is None:
            self.fail("liveness", "no coordinator at the end")
        machine = sim.m
        for index, batch in sorted(sim.held.items()):
            states = {
                t.id: (machine.graph.get(t.id).state if t.id in machine.graph else None)
                for t in batch.tasks
            }
            self.fail("liveness", f"submission {index} never acknowledged: {states}")
        for task_id, recipients in sorted(self.recipients.items()):
            for submitter, reply_to in sorted(recipients):
                if (submitter, reply_to, task_id) not in self.got:
                    self.fail("liveness", f"{submitter}/{reply_to} got no final for {task_id}")

    def settled(self) -> bool:
        """Everything acknowledged and every final told: the run may stop early."""
        sim = self.sim
        told = sum(len(r) for r in self.recipients.values())
        return sim.m is not None and not sim.held and len(self.got) == told


def _dims(r: Any) -> tuple[int, int, int, int]:
    return (round(r.cpu * 1000), r.memory, r.storage, r.bandwidth)


def short(obj: Any) -> str:
    """One readable line per event or action in a trace."""
    if isinstance(obj, Assign):
        tasks = ", ".join(f"{m.task_id}#{m.attempt}@{m.epoch}" for m in obj.messages)
        return f"Assign {obj.agent_id}: {tasks}"
    if isinstance(obj, DeliverFinals):
        items = ", ".join(
            f"{f.task_id}={f.state}" + (" to " + "+".join(q for _, q in r) if r else "")
            for f, r in obj.finals
        )
        return f"DeliverFinals(store={obj.store}) {items}"
    if isinstance(obj, ResultsReceived):
        return f"Results from {obj.sender}: " + ", ".join(
            f"{r.task_id}#{r.attempt}@{r.epoch} {'ok' if r.ok else 'err'} {r.result or r.error}"
            for r in obj.results
        )
    if isinstance(obj, HeartbeatReceived):
        b = obj.beat
        return f"Heartbeat {obj.agent_id} {b.incarnation} {b.state} load={b.load}" + (
            " standby" if b.standby else ""
        )
    if isinstance(obj, SubmissionReceived):
        tasks = ", ".join(
            t.id + (f"<-{'+'.join(t.depends_on)}" if t.depends_on else "")
            for t in obj.submission.tasks
        )
        return f"Submission token={obj.token} {obj.submitter}/{obj.submission.reply_to}: {tasks}"
    if isinstance(obj, BecameActive):
        return f"BecameActive epoch={obj.epoch} finals={len(obj.finals)}"
    return repr(obj)

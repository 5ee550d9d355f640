"""Deterministic, seeded simulator of the coordinator state machine (test support).

:class:`Simulation` plays everything around
:class:`~robeing.protocol.coordinator.CoordinatorState` on its own clock,
as ``robeing.agents.roles.coordinator`` does around it in production:

* the shell: ticks, the lock (a new machine with a strictly higher epoch on
  failover, :class:`BecameActive` with the stored finals), performing every
  action and feeding back the outcomes the shell feeds back
  (:class:`FinalsStored`/:class:`FinalsNotStored` for a stored delivery,
  :class:`AssignmentFailed` for a refused assignment);
* the broker: held submissions (redelivered to a new coordinator until
  acknowledged), the results stream, per-agent work queues (purged, expiring),
  the coordinator's inbox (results sent while no coordinator runs wait there);
* the agents (:mod:`coordinator_scenarios` draws them): they heartbeat every
  second, run what they are assigned for a random time, refuse assignments
  from an epoch older than one they saw, and report success, a transient or a
  permanent failure, or a timeout at the deadline;
* the faults the scenario switches on (see :mod:`coordinator_scenarios`),
  and its submitters' cancellations: an agent told that an attempt was
  cancelled stops it, or (now and then) reports it anyway.

A :class:`~coordinator_checks.Checker` checks every step; :func:`run` returns
a :class:`Result` with the first violation (seed and trace included) and how
many times each kind of event or fault happened.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator_checks import Checker, Violation
from coordinator_scenarios import AgentSpec, Batch, Scenario

from robeing.protocol.coordinator import (
    AckSubmission,
    Action,
    Assign,
    AssignmentFailed,
    BecameActive,
    CancelAnswered,
    CancelAttempts,
    CancelRequested,
    ConnectionClosed,
    CoordinatorConfig,
    CoordinatorState,
    DeadLetterTask,
    DeliverFinals,
    Event,
    FinalsNotStored,
    FinalsStored,
    HeartbeatReceived,
    PurgeAssignments,
    QuarantineChanged,
    ResultsReceived,
    SendProgress,
    SubmissionReceived,
    Tick,
)
from robeing.protocol.failure_detector import DetectorConfig
from robeing.protocol.heartbeat import Heartbeat
from robeing.protocol.resources import Resources
from robeing.protocol.taskgraph import TaskState
from robeing.protocol.taskmsgs import AssignMsg, FinalResult, ResultMsg, Submission

COORDINATOR = "coordinator"  # one id: a restarted coordinator reads the same inbox
EPOCH_S = 1.7e9  # the wall clock at sim time 0 (a process start of 0 means "not sent")
# Death through silence after about 4.5 s: pauses of 5 s or more kill, of 1.5 s or less do not.
DETECTOR = DetectorConfig(heartbeat_interval=1.0, acceptable_pause=1.0, dead_after=2.0)

MachineFactory = Callable[..., CoordinatorState]


@dataclass
class Agent:
    """One agent's process as the simulation runs it."""

    spec: AgentSpec
    cpu: float  # what it contributes now (a restart may change it)
    inc: int = 1
    started_at: float = EPOCH_S - 60.0
    state: str = "up"  # up | leaving | paused | crashed
    resume_at: float = 0.0
    lost_while_paused: bool = False
    highest_epoch: int = 0
    queue: list[tuple[AssignMsg, float | None]] = field(default_factory=list)
    running: set[tuple[str, int, int]] = field(default_factory=set)
    cancelled: set[tuple[str, int]] = field(default_factory=set)  # told to stop these

    @property
    def incarnation(self) -> str:
        return f"{self.spec.id}-i{self.inc}"


@dataclass
class Result:
    """Verdicts and counters of one run."""

    scenario: Scenario
    violations: list[str]
    kinds: Counter[str]
    finished_at: float
    steps: int


class Simulation:
    """Event-driven run of one scenario (use :func:`run`).

    Args:
        sc: the scenario.
        machine: builds the coordinator's machine (a broken subclass checks the checks).
    """

    def __init__(self, sc: Scenario, machine: MachineFactory = CoordinatorState) -> None:
        self.sc = sc
        self.factory = machine
        self.rng = random.Random(sc.seed * 7919 + 1)
        self.queue: list[tuple[float, int, str, Any]] = []
        self.counter = 0
        self.now = 0.0
        self.steps = 0
        self.quiet = False  # faults have stopped
        self.agents = {a.id: Agent(a, a.cpu) for a in sc.agents}
        self.kinds: Counter[str] = Counter()
        self.m: CoordinatorState | None = None
        self.gen = 0  # which machine: outcomes meant for an older one are dropped
        self.held: dict[int, Batch] = {}  # published, not yet acknowledged
        self.tokens: dict[int, int] = {}  # delivery token -> batch index
        self.next_token = 0
        self.stream: dict[str, FinalResult] = {}
        self.storing: dict[int, tuple[FinalResult, ...]] = {}  # stores in flight
        self.inbox: list[tuple[str, ResultMsg]] = []  # results while no coordinator runs
        self.quarantined: set[str] = set()  # by a guardian's order, now
        self.check = Checker(self)

    @property
    def machine(self) -> CoordinatorState:
        assert self.m is not None, "no coordinator is active"
        return self.m

    def push(self, at: float, kind: str, data: Any = None) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, kind, data))

    def handle(self, event: Event) -> list[Action]:
        """Feed the machine one event; check the step and perform its actions."""
        actions = self.machine.handle(event, self.now)
        self.steps += 1
        self.check.step(event, actions)
        for action in actions:
            self.perform(action)
        self.check.ledger()
        return actions

    def run(self) -> Result:
        sc = self.sc
        self.push(0.0, "activate")
        for i, batch in enumerate(sc.batches):
            self.push(batch.at, "publish", i)
        for at, kind, data in sc.faults:
            self.push(at, kind, data)
        for agent in self.agents.values():
            self.push(self.rng.uniform(0.0, 1.0), "beat", (agent.spec.id, agent.inc))
        self.push(sc.tick, "tick")
        self.push(sc.fault_until, "quiet")
        horizon = sc.fault_until + sc.quiet
        try:
            while self.queue:
                at, _, kind, data = heapq.heappop(self.queue)
                if at > horizon or (self.quiet and kind == "tick" and self.check.settled()):
                    break
                self.now = at
                getattr(self, "on_" + kind)(data)
            self.check.liveness()
        except Violation:
            pass
        return Result(sc, self.check.violations, self.kinds, self.now, self.steps)

    def on_tick(self, _: None) -> None:
        self.push(self.now + self.sc.tick, "tick")
        if self.m is None:
            return
        self.handle(Tick())
        graph, registry = self.m.graph, self.m.fleet.registry
        # A task needing resources READY after dispatch while agents have room: the
        # ledger holds it back. (The graph offers no public view of its READY tasks.)
        if registry.has_available() and any(
            rec.state is TaskState.READY and rec.spec.need is not None
            for rec in graph._records.values()
        ):
            self.kinds["resource waits"] += 1

    def on_quiet(self, _: None) -> None:
        """Faults stop; every agent comes back with what it first offered."""
        self.quiet = True
        for agent_id in sorted(self.quarantined):
            self.on_release(agent_id)
        for agent in self.agents.values():
            agent.cpu = agent.spec.cpu
            if agent.state == "crashed":
                self.on_restart(agent.spec.id)
            elif agent.state == "paused":
                self.on_resume((agent.spec.id, agent.inc))

    # --- the coordinator's life -----------------------------------------------------------

    def on_activate(self, _: None) -> None:
        """A coordinator takes the lock: a new machine, the stored finals, the held submissions."""
        epoch = self.check.epoch + self.rng.randint(1, 1000)
        config = CoordinatorConfig(COORDINATOR, DETECTOR, sweep_interval=5.0)
        self.m = self.factory(config, rng=random.Random(self.sc.seed * 31 + self.gen))
        self.check.new_machine()
        self.handle(BecameActive(epoch, tuple(self.stream.values())))
        self.check.became_active(epoch)
        for agent_id in sorted(self.quarantined):  # the shell hands on the orders it holds
            self.handle(QuarantineChanged(agent_id, True))
        for index in sorted(self.held):
            self.deliver(index)
        inbox, self.inbox = self.inbox, []
        for sender, res in inbox:
            self.feed_result(sender, res)

    def on_quarantine(self, data: tuple[str, float]) -> None:
        """A guardian quarantines an agent for a while (its results are refused meanwhile)."""
        agent_id, duration = data
        if agent_id in self.quarantined:
            return
        self.kinds["quarantines"] += 1
        self.quarantined.add(agent_id)
        if self.m is not None:
            self.handle(QuarantineChanged(agent_id, True))
        self.push(self.now + duration, "release", agent_id)

    def on_release(self, agent_id: str) -> None:
        if agent_id in self.quarantined:
            self.quarantined.discard(agent_id)
            if self.m is not None:
                self.handle(QuarantineChanged(agent_id, False))

    def on_failover(self, downtime: float) -> None:
        if self.m is None:
            return
        self.kinds["failovers"] += 1
        # Its stores in flight were confirmed by the broker, or not, before the lock passed on.
        for finals in self.storing.values():
            if self.rng.random() < 0.5:
                for final in finals:
                    self.check.stored(final)
        self.storing.clear()
        self.m, self.tokens = None, {}
        self.gen += 1
        self.push(self.now + downtime, "activate")

    # --- the broker -----------------------------------------------------------------------

    def on_publish(self, index: int) -> None:
        batch = self.sc.batches[index]
        self.kinds["submissions"] += 1
        if not batch.resubmission:
            for t in batch.tasks:
                self.kinds["splits"] += t.agents > 1
                self.kinds["dag deps"] += bool(t.depends_on)
                self.kinds["deadlines"] += t.deadline is not None
                self.kinds["unsatisfiable resources"] += t.resources.get("cpu", 0) > 8
        self.check.published(batch)
        self.held[index] = batch
        if self.m is not None:
            self.deliver(index)

    def deliver(self, index: int) -> None:
        machine, batch = self.machine, self.sc.batches[index]
        if batch.resubmission:
            for t in batch.tasks:
                if t.id in machine.submissions.finals:
                    self.kinds["resubmissions finished"] += 1
                elif t.id in machine.graph:
                    self.kinds["resubmissions in flight"] += 1
        self.next_token += 1
        self.tokens[self.next_token] = index
        sub = Submission(batch.tasks, batch.reply_to)
        self.handle(SubmissionReceived(self.next_token, batch.submitter, sub))

    def on_stored(self, data: tuple[int, int]) -> None:
        gen, key = data
        if gen != self.gen or key not in self.storing:
            return
        finals = self.storing.pop(key)
        ids = tuple(f.task_id for f in finals)
        if not self.quiet and self.rng.random() < self.sc.p_store_fail:
            self.kinds["store failures"] += 1
            self.handle(FinalsNotStored(ids, "stream refused the write"))
            return
        for final in finals:
            self.check.stored(final)
        self.handle(FinalsStored(ids))

    def on_assign_failed(self, data: tuple[int, AssignmentFailed]) -> None:
        gen, event = data
        if gen == self.gen and self.m is not None:
            self.kinds["assignment failures"] += 1
            self.handle(event)

    def on_cancel(self, data: tuple[str, str]) -> None:
        """A submitter asks to cancel a task (lost while no coordinator is active)."""
        if self.m is None:
            return
        requester, task_id = data
        self.check.cancel(requester, task_id, lambda: self.handle(CancelRequested(*data)))

    def on_result(self, data: tuple[str, ResultMsg]) -> None:
        if self.m is None:
            self.inbox.append(data)
        else:
            self.feed_result(*data)

    def feed_result(self, sender: str, res: ResultMsg) -> None:
        self.check.result(sender, res, lambda: self.handle(ResultsReceived(sender, (res,))))

    # --- performing actions -------------------------------------------------------------------

    def perform(self, action: Action) -> None:
        if isinstance(action, Assign):
            self.assign(action)
        elif isinstance(action, DeliverFinals):
            for final, recipients in action.finals:
                self.check.final(final, recipients, action.store)
            if action.store:
                self.counter += 1
                self.storing[self.counter] = tuple(f for f, _ in action.finals)
                delay = self.rng.uniform(0.01, 0.3)
                self.push(self.now + delay, "stored", (self.gen, self.counter))
        elif isinstance(action, AckSubmission):
            index = self.tokens.pop(action.token, None)
            self.check.ack(action.token, None if index is None else self.held.pop(index, None))
        elif isinstance(action, PurgeAssignments):
            self.agents[action.agent_id].queue.clear()
        elif isinstance(action, DeadLetterTask):
            self.kinds["dead letters"] += 1
        elif isinstance(action, SendProgress):
            self.check.progress(action)
        elif isinstance(action, CancelAttempts):
            self.check.cancel_attempts(action)
            self.agents[action.agent_id].cancelled.update(action.attempts)
        elif isinstance(action, CancelAnswered):
            self.kinds[f"cancels {action.outcome}"] += 1

    def assign(self, action: Assign) -> None:
        self.check.assign(action)
        if not self.quiet and self.rng.random() < self.sc.p_assign_fail:
            attempts = tuple((msg.task_id, msg.attempt) for msg in action.messages)
            failed = AssignmentFailed(action.agent_id, attempts, "unroutable")
            self.push(self.now + self.rng.uniform(0.001, 0.05), "assign_failed", (self.gen, failed))
            return
        expires = None if action.expiration_s is None else self.now + action.expiration_s
        self.agents[action.agent_id].queue.extend((msg, expires) for msg in action.messages)
        self.push(self.now + self.rng.uniform(0.002, 0.05), "consume", action.agent_id)

    # --- agents ---------------------------------------------------------------------------------

    def heartbeat(self, agent: Agent, state: str = "alive") -> HeartbeatReceived:
        spec = agent.spec
        beat = Heartbeat(
            role=spec.role,
            state=state,
            specializations=spec.skills,
            standby=spec.standby,
            backup_for=spec.backup_for,
            resources=Resources(cpu=agent.cpu) if agent.cpu else None,
            load=len(agent.running),
            capacity=spec.capacity,
            started_at=agent.started_at,
            incarnation=agent.incarnation,
        )
        return HeartbeatReceived(spec.id, spec.role, beat)

    def on_beat(self, data: tuple[str, int]) -> None:
        agent_id, inc = data
        agent = self.agents[agent_id]
        if agent.inc != inc or agent.state == "crashed":
            return
        self.push(self.now + self.rng.uniform(0.9, 1.1), "beat", data)
        if agent.state == "up" and self.m is not None:
            self.check.heard_from(agent_id, inc)
            self.handle(self.heartbeat(agent))

    def on_consume(self, agent_id: str) -> None:
        agent = self.agents[agent_id]
        if agent.state != "up":
            return  # it waits in the work queue
        queue, agent.queue = agent.queue, []
        for msg, expires in queue:
            if expires is not None and self.now > expires:
                continue  # the broker dropped it
            if msg.epoch < agent.highest_epoch:
                continue  # refused: a deposed coordinator's assignment
            agent.highest_epoch = msg.epoch
            rng = self.rng
            duration = rng.uniform(3.0, 8.0) if rng.random() < 0.1 else rng.uniform(0.1, 2.5)
            end, timeout = self.now + duration, False
            if msg.deadline is not None and end >= msg.deadline:
                end, timeout = max(self.now, msg.deadline), True
            agent.running.add((msg.task_id, msg.attempt, msg.epoch))
            self.push(end, "finish", (agent_id, agent.inc, msg, timeout, end - self.now))

    def on_finish(self, data: tuple[str, int, AssignMsg, bool, float]) -> None:
        agent_id, inc, msg, timeout, duration = data
        agent = self.agents[agent_id]
        if agent.inc != inc or agent.state == "crashed":
            return
        if agent.state == "paused":  # frozen with its process
            self.push(agent.resume_at + self.rng.uniform(0.0, 0.5), "finish", data)
            return
        agent.running.discard((msg.task_id, msg.attempt, msg.epoch))
        key = (msg.task_id, msg.attempt, msg.epoch)
        if (msg.task_id, msg.attempt) in agent.cancelled:
            self.kinds["cancelled attempts"] += 1
            if self.rng.random() < 0.7:
                return  # it stopped: no result
            self.kinds["results of cancelled attempts"] += 1
        value = f"{msg.task_id}#{msg.attempt}@{msg.epoch}/{agent_id}"
        r, sc = self.rng.random(), self.sc
        if timeout:
            res = ResultMsg(*key, False, error=_error("TimeoutError"))
        elif msg.type == "poison" or r < sc.p_transient:
            res = ResultMsg(*key, False, error=_error("Transient", value), transient=True)
        elif r < sc.p_transient + sc.p_permanent:
            self.check.produced[value] = (*key, agent_id)
            res = ResultMsg(*key, False, error=_error("Reject", value))
        else:
            self.check.produced[value] = (*key, agent_id)
            res = ResultMsg(*key, True, value, duration=duration)
        self.push(self.now + self.rng.uniform(0.005, 0.1), "result", (agent_id, res))
        if not self.quiet and self.rng.random() < sc.p_dup:
            self.kinds["duplicated results"] += 1
            self.push(self.now + self.rng.uniform(0.1, 3.0), "result", (agent_id, res))

    # --- agent faults ---------------------------------------------------------------------------

    def on_crash(self, data: tuple[str, float | None, bool]) -> None:
        agent_id, back, graceful = data
        agent = self.agents[agent_id]
        if agent.state in ("crashed", "leaving"):
            return
        if graceful and agent.state == "up":
            agent.state = "leaving"  # takes no more work, lets what runs finish
            self.push(self.now + 2.0, "left", (agent_id, agent.inc, back))
            return
        agent.state, agent.running = "crashed", set()
        self.push(self.now + self.rng.uniform(0.01, 0.2), "closed", (agent_id, agent.inc))
        if back is not None:
            self.push(self.now + back, "restart", agent_id)

    def on_left(self, data: tuple[str, int, float | None]) -> None:
        """After its grace period the agent says it leaves, then closes its connection."""
        agent_id, inc, back = data
        agent = self.agents[agent_id]
        if agent.inc != inc or agent.state != "leaving":
            return
        if self.m is not None:
            self.kinds["graceful leaves"] += 1
            known = agent_id in self.check.monitored
            self.check.heard_from(agent_id, inc)
            self.handle(self.heartbeat(agent, "leaving"))
            self.check.left(agent_id, known)
        agent.state = "up"  # what follows is an ordinary close
        self.on_crash((agent_id, 0.5 if back is None and self.quiet else back, False))

    def on_closed(self, data: tuple[str, int]) -> None:
        """The broker reports an incarnation's connection closed."""
        agent_id, inc = data
        if self.m is None:
            return
        incarnation = f"{agent_id}-i{inc}"
        if 0 < inc >= self.check.newest.get(agent_id, 0):  # the newest the machine knows
            self.kinds["deaths"] += 1
            # Per-agent broker users make the close verified; a shared login
            # leaves it a suspicion that the missing heartbeats confirm.
            verified = self.rng.random() < 0.6
            self.kinds["unconfirmed closes"] += not verified
            self.handle(ConnectionClosed(agent_id, incarnation, verified))
            return
        self.kinds["stale-incarnation closes"] += 1
        verified = self.rng.random() < 0.5
        feed = lambda: self.handle(ConnectionClosed(agent_id, incarnation, verified))  # noqa: E731
        self.check.unchanged(agent_id, f"a close of {incarnation}", feed)

    def on_stale_close(self, agent_id: str) -> None:
        """The broker reports the close of an incarnation the agent no longer is."""
        self.on_closed((agent_id, self.agents[agent_id].inc - 1))

    def on_restart(self, agent_id: str) -> None:
        agent = self.agents[agent_id]
        if agent.state != "crashed":
            return
        agent.inc += 1
        agent.state, agent.started_at, agent.highest_epoch = "up", EPOCH_S + self.now, 0
        if not self.quiet and self.rng.random() < 0.3:
            agent.cpu = self.rng.choice((0.0, 1.0, 2.0, 4.0))
            self.kinds["contributions changed"] += 1
        self.push(self.now + self.rng.uniform(0.05, 0.5), "beat", (agent_id, agent.inc))
        self.push(self.now + 0.05, "consume", agent_id)

    def on_pause(self, data: tuple[str, float]) -> None:
        agent_id, duration = data
        agent = self.agents[agent_id]
        if agent.state != "up":
            return
        agent.state, agent.resume_at, agent.lost_while_paused = "paused", self.now + duration, False
        self.push(agent.resume_at, "resume", (agent_id, agent.inc))

    def on_resume(self, data: tuple[str, int]) -> None:
        agent_id, inc = data
        agent = self.agents[agent_id]
        if agent.inc != inc or agent.state != "paused":
            return
        agent.state, agent.resume_at = "up", min(agent.resume_at, self.now)
        self.kinds["pauses past death"] += agent.lost_while_paused
        self.push(self.now + 0.01, "consume", agent_id)

    def on_zombie(self, data: tuple[str, float]) -> None:
        """The process freezes; a new incarnation replaces it; later the old one wakes briefly."""
        agent_id, frozen = data
        agent = self.agents[agent_id]
        if agent.state != "up":
            return
        ghost = (agent.inc, agent.started_at, sorted(agent.running))
        agent.state = "crashed"  # for the new process; the old connection stays open
        self.on_restart(agent_id)
        self.push(self.now + frozen, "ghost", (agent_id, ghost))

    def on_ghost(self, data: tuple[str, tuple[int, float, list[tuple[str, int, int]]]]) -> None:
        """The frozen process wakes: one heartbeat and its results, then its connection closes."""
        agent_id, (inc, started_at, running) = data
        self.push(self.now + self.rng.uniform(0.05, 0.5), "closed", (agent_id, inc))
        if self.m is None:
            return
        self.kinds["zombies"] += 1
        ghost = Agent(self.agents[agent_id].spec, 0.0, inc, started_at)
        beat = self.heartbeat(ghost)
        if self.check.heard_from(agent_id, inc):
            self.handle(beat)  # the newest process the machine knows
        else:
            what = f"a beat of {ghost.incarnation}"
            self.check.unchanged(agent_id, what, lambda: self.handle(beat))
        for key in running:
            value = f"{key[0]}#{key[1]}@{key[2]}/{agent_id}"
            self.check.produced[value] = (*key, agent_id)
            self.push(self.now, "result", (agent_id, ResultMsg(*key, True, value)))

    def on_forge(self, how: str) -> None:
        """A result for a running task that must not count: wrong sender, epoch or attempt."""
        if self.m is None:
            return
        graph, epoch = self.m.graph, self.check.epoch
        running = []
        for (task_id, attempt, e), holder in self.check.assigned.items():
            rec = graph.get(task_id) if e == epoch and task_id in graph else None
            live = rec is not None and rec.state in (TaskState.ASSIGNED, TaskState.RUNNING)
            if live and (rec.attempt, rec.agent) == (attempt, holder):
                running.append((task_id, attempt, e))
        if how == "attempt":
            running = [key for key in running if key[1] > 1]
            # best with a deadline ahead, to land the holder's late result just past it
            timed = [k for k in running if (graph.get(k[0]).deadline or 0.0) > self.now]
            running = timed or running
        if not running:
            if not self.quiet:  # look again later
                self.push(self.now + 0.5, "forge", how)
            return
        task_id, attempt, epoch = self.rng.choice(sorted(running))
        holder = self.check.assigned[(task_id, attempt, epoch)]
        sender, at = holder, self.now
        if how == "holder":
            sender = self.rng.choice(sorted(a for a in self.agents if a != holder))
        elif how == "epoch":
            epoch -= 1
        else:  # an earlier attempt's late result, from the agent running the task again
            attempt -= 1
            deadline = graph.get(task_id).deadline
            if deadline is not None and deadline > at:
                at = deadline + self.rng.uniform(0.0, 0.005)  # before the agent's own timeout
        self.kinds["forged results"] += 1
        forged = ResultMsg(task_id, attempt, epoch, True, f"forged:{task_id}")
        self.push(at, "result", (sender, forged))


def run(scenario: Scenario, machine: MachineFactory = CoordinatorState) -> Result:
    """Run one scenario until everything settled after the faults, or its horizon."""
    return Simulation(scenario, machine).run()


def _error(kind: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "message": message}

"""Seeded scenarios for the coordinator simulator (:mod:`coordinator_sim`).

A scenario fixes everything random that is known before a run starts:

* the fleet: two to four primaries (workers and specialists, one or two skills,
  a capacity, sometimes contributed cpu), up to two standbys backing a named
  primary or a skill, sometimes a guardian (a role that runs no tasks);
* the submissions: batches at random times with random DAGs (dependencies on
  earlier tasks of the batch and of earlier batches), splits over 2-3 agents,
  deadlines (some tight), priorities, cpu needs (some more than anyone
  offers, always with a deadline), poison tasks, custom attempt limits, a
  rare cycle, and resubmissions of known ids (same or new reply queue, now
  and then with a new task);
* the faults, each switched on at random: crashes (some graceful) with or
  without restart, closes of stale incarnations, pauses (most past death),
  zombies (a frozen process replaced, that wakes later), forged results
  (from a non-holder, of an old epoch, of an earlier attempt), coordinator
  failovers, and rates of duplicated results, refused assignments and failed
  stores;
* cancellations: by the task's submitter (mostly while it runs), by another
  submitter (refused), of a part of a split task (refused) and of ids nobody
  submitted.

Tasks only ask for skills some primary has and for cpu some primary offers
(or for more than anyone, with a deadline), so that once the faults stop every
task can end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from robeing.protocol.taskmsgs import TaskRequest

SKILLS = ("a", "b", "c")
TASK_ROLES = ("worker", "specialist")
UNSATISFIABLE_CPU = 64.0


@dataclass(frozen=True)
class AgentSpec:
    id: str
    role: str
    skills: tuple[str, ...]
    capacity: int
    cpu: float  # contributed cores, 0: contributes nothing
    standby: bool = False
    backup_for: str | None = None


@dataclass(frozen=True)
class Batch:
    """One ``task.submit`` as its submitter publishes it."""

    at: float
    submitter: str
    reply_to: str
    tasks: tuple[TaskRequest, ...]
    resubmission: bool = False


@dataclass
class Scenario:
    """Everything one run depends on.

    ``faults`` are ``(time, kind, data)``; each kind is a handler of the
    simulation (``on_<kind>``). Faults happen before ``fault_until``; the run
    then has ``quiet`` seconds with a healthy fleet to settle everything.
    """

    seed: int
    agents: list[AgentSpec]
    batches: list[Batch]
    faults: list[tuple[float, str, Any]]
    fault_until: float
    quiet: float = 45.0
    tick: float = 0.25
    p_dup: float = 0.0
    p_assign_fail: float = 0.0
    p_store_fail: float = 0.0
    p_transient: float = 0.08
    p_permanent: float = 0.04


def random_scenario(seed: int) -> Scenario:
    """Draw a scenario; each fault kind is switched on at random."""
    rng = random.Random(seed * 1_000_003 + 17)
    agents = _fleet(rng)
    primaries = [a for a in agents if a.role in TASK_ROLES and not a.standby]
    skills = sorted({s for a in primaries for s in a.skills})
    max_cpu = max(a.cpu for a in primaries)
    fault_until = rng.uniform(14.0, 22.0)

    def maybe(p: float, lo: float, hi: float) -> float:
        return rng.uniform(lo, hi) if rng.random() < p else 0.0

    scenario = Scenario(
        seed=seed,
        agents=agents,
        batches=_batches(rng, skills, max_cpu, fault_until),
        faults=_faults(rng, agents, fault_until),
        fault_until=fault_until,
        p_dup=maybe(0.6, 0.1, 0.3),
        p_assign_fail=maybe(0.5, 0.05, 0.2),
        p_store_fail=maybe(0.5, 0.1, 0.4),
    )
    # Drawn last, so the draws above (and the runs they make) stay as they were.
    scenario.faults += _cancels(rng, scenario.batches, fault_until)
    return scenario


def _cancels(
    rng: random.Random, batches: list[Batch], until: float
) -> list[tuple[float, str, Any]]:
    """``(time, "cancel", (requester, task id))``; see the module doc."""
    own = [b for b in batches if not b.resubmission]
    if not own or rng.random() < 0.4:
        return []
    out: list[tuple[float, str, Any]] = []
    for _ in range(rng.randint(1, 3)):
        batch = rng.choice(own)
        task = rng.choice(batch.tasks)
        at = min(batch.at + rng.uniform(0.0, 4.0), until)
        r = rng.random()
        requester, task_id = batch.submitter, task.id
        if r < 0.15:
            requester = "c1" if batch.submitter == "c0" else "c0"
        elif r < 0.25 and task.agents > 1:
            task_id = f"{task.id}.0"
        elif r < 0.3:
            task_id = f"nosuch{len(out)}"
        out.append((at, "cancel", (requester, task_id)))
    return out


def _fleet(rng: random.Random) -> list[AgentSpec]:
    agents = [
        AgentSpec(
            f"w{i}",
            rng.choice(TASK_ROLES),
            tuple(sorted(rng.sample(SKILLS, rng.randint(1, 2)))),
            rng.randint(1, 3),
            rng.choice((0.0, 0.0, 1.0, 2.0, 4.0)),
        )
        for i in range(rng.randint(2, 4))
    ]
    if all(a.cpu == 0 for a in agents) and rng.random() < 0.7:
        agents[0] = replace(agents[0], cpu=2.0)
    for i in range(rng.choice((0, 1, 1, 2))):
        primary = rng.choice(agents[: len(agents) - i])
        named = rng.random() < 0.6
        agents.append(
            AgentSpec(
                f"s{i}",
                "worker",
                primary.skills if named else (rng.choice(SKILLS),),
                rng.randint(1, 2),
                rng.choice((0.0, 2.0)),
                standby=True,
                backup_for=primary.id if named else None,
            )
        )
    if rng.random() < 0.3:
        agents.append(AgentSpec("g0", "guardian", (), 1, 0.0))
    return agents


def _batches(rng: random.Random, skills: list[str], max_cpu: float, until: float) -> list[Batch]:
    batches: list[Batch] = []
    known: list[str] = []
    times = sorted(rng.uniform(0.2, until * 0.85) for _ in range(rng.randint(2, 6)))
    for i, at in enumerate(times):
        if batches and rng.random() < 0.3:
            old = rng.choice([b for b in batches if not b.resubmission] or batches)
            tasks = tuple(rng.sample(old.tasks, rng.randint(1, len(old.tasks))))
            if rng.random() < 0.3:
                tasks += (_task(rng, f"b{i}t0", at, [], known, skills, max_cpu),)
                known.append(tasks[-1].id)
            reply = old.reply_to if rng.random() < 0.4 else f"{old.submitter}.q{i}"
            batches.append(Batch(at, old.submitter, reply, tasks, resubmission=True))
            continue
        submitter = rng.choice(("c0", "c1"))
        tasks = ()
        for j in range(rng.randint(1, 4)):
            batch_ids = [t.id for t in tasks]
            tasks += (_task(rng, f"b{i}t{j}", at, batch_ids, known, skills, max_cpu),)
        if len(tasks) > 1 and rng.random() < 0.05:  # a cycle: the whole batch is refused
            first, last = tasks[0], tasks[-1]
            tasks = (
                replace(first, depends_on=(*first.depends_on, last.id)),
                *tasks[1:-1],
                replace(last, depends_on=(*last.depends_on, first.id)),
            )
        known.extend(t.id for t in tasks)
        batches.append(Batch(at, submitter, f"{submitter}.q{i}", tasks))
    return batches


def _task(
    rng: random.Random,
    task_id: str,
    at: float,
    batch_ids: list[str],
    known: list[str],
    skills: list[str],
    max_cpu: float,
) -> TaskRequest:
    deps = [d for d in batch_ids if rng.random() < 0.35]
    if known and rng.random() < 0.2:
        deps.append(rng.choice(known))
    agents = rng.randint(2, 3) if rng.random() < 0.2 else 1
    r = rng.random()
    deadline = None
    if r > 0.55:
        deadline = at + (rng.uniform(0.3, 2.5) if r < 0.75 else rng.uniform(6.0, 20.0))
    resources: dict[str, Any] = {}
    r = rng.random()
    if max_cpu and r < 0.2:
        resources = {"cpu": rng.choice([c for c in (0.5, 1.0, 2.0, 4.0) if c <= max_cpu])}
    elif r < 0.27:  # more than anyone offers: only its deadline ends it
        resources = {"cpu": UNSATISFIABLE_CPU}
        deadline = deadline or at + rng.uniform(2.0, 10.0)
    use_skill = skills and not resources and rng.random() < 0.5
    return TaskRequest(
        id=task_id,
        type="poison" if rng.random() < 0.05 else "work",
        payload=list(range(rng.randint(1, 4))) if agents > 1 else task_id,
        skills=(rng.choice(skills),) if use_skill else (),
        agents=agents,
        priority=rng.randint(0, 9),
        deadline=deadline,
        depends_on=tuple(deps),
        max_attempts=rng.randint(1, 4) if rng.random() < 0.1 else None,
        resources=resources,
    )


def _faults(
    rng: random.Random, agents: list[AgentSpec], until: float
) -> list[tuple[float, str, Any]]:
    faults: list[tuple[float, str, Any]] = []
    workers = [a.id for a in agents if a.role in TASK_ROLES]

    def at() -> float:
        return rng.uniform(1.0, until)

    if rng.random() < 0.6:
        for _ in range(rng.randint(1, 2)):
            back = rng.uniform(0.5, 8.0) if rng.random() < 0.8 else None
            graceful = rng.random() < 0.3  # SIGTERM: drain, a "leaving" heartbeat, then close
            faults.append((at(), "crash", (rng.choice(workers), back, graceful)))
    if rng.random() < 0.5:
        faults += [(at(), "stale_close", rng.choice(workers)) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.6:
        for _ in range(rng.randint(1, 2)):
            pause = rng.uniform(5.0, 9.0) if rng.random() < 0.7 else rng.uniform(0.3, 1.5)
            faults.append((at(), "pause", (rng.choice(workers), pause)))
    if rng.random() < 0.3:
        faults.append((at(), "zombie", (rng.choice(workers), rng.uniform(1.0, 8.0))))
    if rng.random() < 0.5:
        faults += [(at(), "forge", rng.choice(("holder", "epoch", "attempt"))) for _ in range(4)]
    if rng.random() < 0.5:
        for _ in range(rng.randint(1, 2)):
            faults.append((rng.uniform(2.0, until), "failover", rng.uniform(0.2, 3.0)))
    if rng.random() < 0.4:
        faults.append((at(), "quarantine", (rng.choice(workers), rng.uniform(1.0, 8.0))))
    return faults

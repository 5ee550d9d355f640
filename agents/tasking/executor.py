"""Executing task assignments on an agent.

Every agent that takes work consumes ``robeing.work.<id>``. An assignment
that keeps crashing its agents is bounded by the coordinator: an agent lost
during an attempt counts as a failed attempt, and the coordinator purges a
dead agent's work queue before the agent can pick the poison up again.

For each ``task.assign``:

1. the runtime's checks (signed by a coordinator-role identity, DESIGN §2);
2. epoch fencing: an assignment from an older coordinator epoch than one
   already seen is refused (``stale_epoch``), so a deposed coordinator cannot
   make us work;
3. run the app's handler for the task type — sync handlers in a worker
   thread so heartbeats keep flowing — until the deadline; transient errors
   (the type's ``transient`` exceptions, or :class:`Retry`) are retried here
   with jittered backoff (tenacity), bounded by attempts and the deadline;
4. report a signed, encrypted ``task.result`` to the assigning coordinator
   with the fencing token ``(epoch, attempt)``, confirmed by the broker;
5. only then acknowledge the assignment. A crash before this point means the
   assignment is redelivered (at-least-once); the coordinator discards
   results of stale attempts, so the submitter still gets one result.

A ``task.cancel`` from a coordinator (of our epoch or newer) names attempts
whose task was cancelled: a running async handler is cancelled
(``asyncio.CancelledError`` inside it), one not started yet is skipped, and
no result is reported for them. A sync handler already running in its
worker thread cannot be interrupted: it runs to its end and its result is
dropped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import Counter, OrderedDict
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ...broker import topology as topo
from ...protocol.election import EpochFence, StaleEpoch
from ...protocol.envelope import DEFAULT_LIMITS, pack
from ...protocol.errors import Reject, Retry, TooLarge, Unroutable, error_to_data
from ...protocol.evidence import ed25519_signer
from ...protocol.fields import count, items, need, text
from ...protocol.taskmsgs import AssignMsg, ResultMsg
from ...protocol.validation import Claim
from ..app import TaskContext, TaskDef
from ..batching import Coalescer
from ..context import AgentContext, Message
from ..logs import task_id_var
from ..stats import MAX_TYPES, Latency

log = logging.getLogger(__name__)

LOCAL_ATTEMPTS = 3
CANCELLED_MEMORY = 10_000  # cancelled attempts remembered, to skip their late assignments
# A result must fit in one message with room for the envelope around it.
MAX_RESULT_BYTES = DEFAULT_LIMITS.max_message_bytes - (64 << 10)


class TaskExecutor:
    """Runs the assignments handed to one agent."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.fence = EpochFence()
        self.executed = 0
        self.stale = 0
        self.cancelled = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (task type, outcome)
        self.durations: dict[str, Latency] = {}  # by task type
        self.reporter = ResultReporter(agent)
        self.sign = ed25519_signer(agent.identity.signing_key)
        self._running: dict[tuple[str, int], asyncio.Future[ResultMsg]] = {}
        self._stopped: OrderedDict[tuple[str, int], None] = OrderedDict()

    async def start(self, agent: AgentContext) -> None:
        """Consume our work queue (an ``on_start`` hook)."""
        await agent.consume(
            topo.work_spec(agent.id, agent.settings.topology),
            {"task.assign": self.on_assignment},
            prefetch=agent.settings.concurrency,
            unknown_reason="not_allowed",
            load=False,  # each task counts itself, a batch is many units
        )

    async def on_assignment(self, msg: Message) -> None:
        """Run a ``task.assign`` (one or a batch) and report before it is acknowledged.

        Raises:
            DecodeError: a malformed assignment (dead-lettered).
            StaleEpoch: every assignment came from a deposed coordinator.
            Retry: the report was not confirmed; the assignments run again.
        """
        payload = msg.payload
        # One assignment, or a batch (the coordinator groups a dispatch round per agent).
        msgs = [
            AssignMsg.from_data(p) for p in (payload if isinstance(payload, list) else [payload])
        ]
        fresh = []
        for assign in msgs:
            if self.fence.admit(assign.epoch):
                self.fence.observe(assign.epoch)
                fresh.append(assign)
            else:
                self.stale += 1
        if not fresh:
            raise StaleEpoch(msgs[0].epoch, self.fence.highest)
        runs = {
            (a.task_id, a.attempt): asyncio.ensure_future(self._run(a))
            for a in fresh
            if (a.task_id, a.attempt) not in self._stopped
        }
        self._running.update(runs)
        try:
            outcomes = await asyncio.gather(*runs.values(), return_exceptions=True)
        finally:
            for key in runs:
                self._running.pop(key, None)
        reports = [r for r in outcomes if isinstance(r, ResultMsg)]  # cancelled: none
        self.cancelled += len(fresh) - len(reports)
        if not reports:
            return
        coordinator = fresh[0].coordinator
        try:
            await self.reporter.report(coordinator, list(reports))
        except Unroutable:
            log.info("coordinator %s is gone; its successor re-runs its tasks", coordinator)
        except Exception as exc:
            # Not confirmed: hand the assignments back so no result is lost.
            log.warning("could not report to %s (%s); the tasks will run again", coordinator, exc)
            raise Retry(f"report to {coordinator} not confirmed", delay=0.0) from exc
        self.executed += len(fresh)

    def on_cancel(self, msg: Message) -> int:
        """``task.cancel``: stop the attempts it names; returns how many were running.

        Raises:
            DecodeError: a malformed payload (dead-lettered).
        """
        epoch = count(need(msg.payload, "epoch", int), "epoch")
        if not self.fence.admit(epoch):
            return 0  # a deposed coordinator's
        attempts = items(need(msg.payload, "attempts", list), "attempts")
        stopped = 0
        for pair in attempts[:CANCELLED_MEMORY]:
            task_id, attempt = items(pair, "attempt", 2)
            key = (text(task_id, "task_id", 256), count(attempt, "attempt"))
            self._stopped[key] = None
            if len(self._stopped) > CANCELLED_MEMORY:
                self._stopped.popitem(last=False)
            run = self._running.get(key)
            if run is not None and run.cancel():
                stopped += 1
        if stopped:
            log.info("stopped %d cancelled task attempt(s)", stopped)
        return stopped

    async def _run(self, msg: AssignMsg) -> ResultMsg:
        token = task_id_var.set(msg.task_id)
        try:
            async with self.agent.working():
                res = await self.execute(msg)
        finally:
            task_id_var.reset(token)
        self._record(msg.type, res)
        return res

    def announce(self) -> dict[str, Any]:
        """The ``attempts`` heartbeat section: attempts completed and failed (cluster leaders
        are scored on them, see :mod:`robeing.protocol.clusters.leaders`)."""
        ok = sum(n for (_, outcome), n in self.outcomes.items() if outcome == "succeeded")
        return {"attempts": {"succeeded": ok, "failed": sum(self.outcomes.values()) - ok}}

    def _record(self, task_type: str, res: ResultMsg) -> None:
        """Count an attempt's outcome and time it (served as metrics)."""
        if task_type not in self.durations and len(self.durations) >= MAX_TYPES:
            task_type = "other"
        outcome = "succeeded" if res.ok else "retry" if res.transient else "failed"
        self.outcomes[(task_type, outcome)] += 1
        self.durations.setdefault(task_type, Latency()).observe(res.duration)

    async def execute(self, msg: AssignMsg) -> ResultMsg:
        """Run one attempt and describe its outcome (never raises)."""
        started = time.monotonic()

        def result(
            ok: bool, value: Any = None, exc: BaseException | None = None, transient: bool = False
        ) -> ResultMsg:
            return ResultMsg(
                msg.task_id,
                msg.attempt,
                msg.epoch,
                ok,
                value,
                error_to_data(exc) if exc is not None else None,
                transient,
                time.monotonic() - started,
            )

        tdef = self.agent.task_defs.get(msg.type)
        if tdef is None:
            return result(False, exc=Reject(f"agent {self.agent.id!r} has no task {msg.type!r}"))
        remaining = None if msg.deadline is None else msg.deadline - self.agent.clock()
        if remaining is not None and remaining <= 0:
            return result(False, exc=TimeoutError("deadline passed before the task started"))
        ctx = TaskContext(
            msg.task_id,
            msg.attempt,
            msg.epoch,
            msg.payload,
            dict(msg.dep_results),
            msg.deadline,
            self.agent,
        )
        try:
            # asyncio.timeout, not wait_for: no extra task per execution.
            async with asyncio.timeout(remaining):
                value = await self._run_with_retries(tdef, ctx, remaining)
        except Reject as exc:
            return result(False, exc=exc)
        except TimeoutError as exc:
            past = msg.deadline is not None and self.agent.clock() >= msg.deadline
            return result(
                False, exc=TimeoutError("deadline reached") if past else exc, transient=not past
            )
        except Exception as exc:
            transient = isinstance(exc, (Retry, *tdef.transient))
            if not transient:
                log.warning(
                    "task %s (%s) failed: %s: %s", msg.task_id, msg.type, type(exc).__name__, exc
                )
            return result(False, exc=exc, transient=transient)
        try:
            size = len(pack(value))
        except (TypeError, ValueError, OverflowError) as exc:
            return result(False, exc=Reject(f"the result cannot be sent: {exc}"))
        if size > MAX_RESULT_BYTES:
            # No coordinator would accept the report: say so instead (the task fails).
            limit = MAX_RESULT_BYTES
            return result(
                False, exc=Reject(f"the result is {size} bytes, over the {limit} allowed")
            )
        return result(True, value)

    async def _run_with_retries(
        self, tdef: TaskDef, ctx: TaskContext, remaining: float | None
    ) -> Any:
        def is_transient(exc: BaseException) -> bool:
            return isinstance(exc, (Retry, *tdef.transient)) and not isinstance(exc, Reject)

        # The first try runs straight: tenacity's machinery (~30 µs) only for retries.
        started = time.monotonic()
        try:
            return await _call(tdef, ctx)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if remaining is not None:
                remaining -= time.monotonic() - started
                if remaining <= 0:
                    raise  # no time left to retry: the transient error is the outcome
        await asyncio.sleep(random.uniform(0, 0.05))  # the first of the jittered waits
        stop: Any = stop_after_attempt(LOCAL_ATTEMPTS - 1)
        if remaining is not None:
            stop = stop | stop_after_delay(remaining)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop,
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                return await _call(tdef, ctx)
        raise AssertionError("unreachable")  # pragma: no cover


class ResultReporter:
    """Sends results to coordinators, batched per coordinator (see :mod:`.batching`).

    :meth:`report` returns once the message holding its results was
    confirmed by the broker, so the caller acknowledges assignments only then.
    Results are transient: a coordinator that loses its broker runs the tasks
    again anyway.
    """

    def __init__(self, agent: AgentContext, max_batch: int = 256) -> None:
        self.agent = agent
        self._batches: Coalescer[str, ResultMsg] = Coalescer(self._send, max_batch)

    async def report(self, coordinator: str, results: list[ResultMsg]) -> None:
        """Deliver ``results`` to ``coordinator``; returns once confirmed.

        Raises:
            Unroutable: the coordinator's queue is gone.
            BrokerError: the broker did not confirm the message.
        """
        await self._batches.put(coordinator, results)

    async def _send(self, coordinator: str, results: list[ResultMsg]) -> None:
        try:
            await self.agent.send(
                coordinator,
                "task.result",
                [res.to_data() for res in results],
                priority=8,
                persistent=False,
            )
        except TooLarge:
            if len(results) == 1:
                raise
            # Each result fits (execute checks), a batch of them may not: halve it.
            half = len(results) // 2
            await self._send(coordinator, results[:half])
            await self._send(coordinator, results[half:])


async def _call(tdef: TaskDef, ctx: TaskContext) -> Any:
    if inspect.iscoroutinefunction(tdef.fn):
        return await tdef.fn(ctx)
    if tdef.inline:
        return tdef.fn(ctx)
    # Sync handlers run in a thread so a CPU-heavy task cannot stop heartbeats.
    value = await asyncio.to_thread(tdef.fn, ctx)
    if inspect.isawaitable(value):
        value = await value
    return value


async def rerun(executor: TaskExecutor, msg: Message) -> dict[str, Any]:
    """``guardian.rerun`` (guardians only): run a finished task again and sign what came out.

    Returns:
        ``{"ok", "claim"}``: the claim (:class:`~robeing.protocol.validation.Claim`)
        that this agent computed that result (or that error) for the task's input.

    Raises:
        Reject: malformed, or a task type this agent does not run.
    """
    p = msg.payload if isinstance(msg.payload, dict) else {}
    task_id, task_type, payload = p.get("task_id"), p.get("type"), p.get("payload")
    if not isinstance(task_id, str) or not isinstance(task_type, str):
        raise Reject("guardian.rerun needs {'task_id', 'type', 'payload'}")
    if task_type not in executor.agent.task_defs:
        raise Reject(f"agent {executor.agent.id!r} has no task {task_type!r}")
    assign = AssignMsg(task_id, 0, 0, task_type, payload, {}, None, msg.sender)
    async with executor.agent.working():
        res = await executor.execute(assign)
    outcome = res.result if res.ok else {"error": (res.error or {}).get("type", "Error")}
    agent = executor.agent
    claim = Claim.make(agent.id, task_id, agent.id, task_type, payload, outcome, executor.sign)
    return {"ok": res.ok, "claim": claim.raw}


def install(agent: AgentContext) -> TaskExecutor:
    """Make ``agent`` run task assignments: its work queue, built-in task types, and the
    guardians' re-runs of finished tasks.

    The app's own task types win over built-ins of the same name.
    """
    executor = TaskExecutor(agent)
    agent.on_start(executor.start)
    agent.add_heartbeat_extra(executor.announce)
    agent.handle("guardian.rerun", lambda msg: rerun(executor, msg))
    agent.handle("task.cancel", executor.on_cancel)
    return executor

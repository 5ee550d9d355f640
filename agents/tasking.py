"""Executing task assignments on an agent.

Every agent that takes work consumes ``robeing.work.<id>``. An assignment
that keeps crashing its agents is bounded by the coordinator: an agent lost
during an attempt counts as a failed attempt, and the coordinator purges a
dead agent's work queue before the agent can pick the poison up again.

For each ``task.assign``:

1. the codec's checks (signed by a coordinator-role identity, DESIGN §2);
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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ..broker import topology as topo
from ..broker.base import Delivery
from ..protocol.election import EpochFence
from ..protocol.errors import ProtocolError, Reject, Retry, Unroutable, error_to_data
from ..protocol.taskmsgs import AssignMsg, ResultMsg
from .app import TaskContext, TaskDef
from .batching import Coalescer
from .logs import task_id_var

if TYPE_CHECKING:
    from .runtime import Agent

log = logging.getLogger(__name__)

LOCAL_ATTEMPTS = 3


class TaskExecutor:
    """Runs the assignments handed to one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.fence = EpochFence()
        self.executed = 0
        self.stale = 0
        self.reporter = ResultReporter(agent)

    async def start(self) -> None:
        agent = self.agent
        spec = topo.work_spec(agent.id, agent.settings.topology)
        consumer = await agent.transport.consume(
            spec, self._on_assignment, agent.settings.concurrency
        )
        agent.add_work_consumer(consumer)

    async def _on_assignment(self, delivery: Delivery) -> None:
        agent = self.agent
        opened = await agent.open_delivery(delivery)
        if opened is None:
            return
        if opened.envelope.type != "task.assign":
            await agent.reject(
                delivery, "not_allowed", f"{opened.envelope.type!r} sent to a work queue"
            )
            return
        payload = opened.envelope.payload
        try:
            # One assignment, or a batch (the coordinator groups a dispatch round per agent).
            msgs = [
                AssignMsg.from_data(p)
                for p in (payload if isinstance(payload, list) else [payload])
            ]
        except ProtocolError as exc:
            await agent.reject(delivery, exc.reason, str(exc))
            return
        fresh = []
        for msg in msgs:
            if self.fence.admit(msg.epoch):
                self.fence.observe(msg.epoch)
                fresh.append(msg)
            else:
                self.stale += 1
        if not fresh:
            await agent.reject(
                delivery, "stale_epoch", f"epoch {msgs[0].epoch} < {self.fence.highest}"
            )
            return
        reports = await asyncio.gather(*(self._run(msg) for msg in fresh))
        coordinator = fresh[0].coordinator
        try:
            await self.reporter.report(coordinator, list(reports))
        except Unroutable:
            log.info("coordinator %s is gone; its successor re-runs its tasks", coordinator)
        except Exception as exc:
            # Not confirmed: hand the assignments back so no result is lost.
            log.warning("could not report to %s (%s); the tasks will run again", coordinator, exc)
            await delivery.requeue()
            return
        self.executed += len(fresh)
        await delivery.ack()

    async def _run(self, msg: AssignMsg) -> ResultMsg:
        token = task_id_var.set(msg.task_id)
        try:
            async with self.agent.working():
                return await self.execute(msg)
        finally:
            task_id_var.reset(token)

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

        tdef = self.agent.app.tasks.get(msg.type)
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
            value = await asyncio.wait_for(self._run_with_retries(tdef, ctx, remaining), remaining)
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
        return result(True, value)

    async def _run_with_retries(
        self, tdef: TaskDef, ctx: TaskContext, remaining: float | None
    ) -> Any:
        def is_transient(exc: BaseException) -> bool:
            return isinstance(exc, (Retry, *tdef.transient)) and not isinstance(exc, Reject)

        stop: Any = stop_after_attempt(LOCAL_ATTEMPTS)
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

    def __init__(self, agent: Agent, max_batch: int = 256) -> None:
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
        await self.agent.send_message(
            coordinator,
            "task.result",
            [res.to_data() for res in results],
            priority=8,
            persistent=False,
        )


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

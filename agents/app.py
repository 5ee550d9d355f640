"""User applications: handlers, middleware and lifecycle hooks.

A module passed with ``--app`` (like ``celery -A``) exposes an :class:`App`::

    from robeing.agents import App

    app = App()

    @app.handler("greet")
    async def greet(msg):
        return {"hello": msg.sender}     # becomes the reply to a request

Handlers run at least once per accepted message; make them idempotent.
A handler steers the outcome by raising ``Retry(delay=...)`` (the message is
handed back and delivered again later) or ``Reject(reason)`` (it is
dead-lettered with that reason). Any other exception is dead-lettered as
``handler_error`` and, for requests and ACKs, reported to the sender as data.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol.errors import ConfigError
from .context import AgentContext, Handler, Hook, Message

__all__ = ["App", "Handler", "Hook", "Middleware", "TaskContext", "TaskDef", "load_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a task handler receives.

    Attributes:
        task_id: the task (or subtask) id.
        attempt: the attempt number; with ``epoch`` the fencing token.
        epoch: the assigning coordinator's epoch.
        payload: the task's input.
        dep_results: results of the tasks this one depends on, by id.
        deadline: absolute time after which the result is useless, or None.
        agent: the executing agent's context.
    """

    task_id: str
    attempt: int
    epoch: int
    payload: Any
    dep_results: dict[str, Any]
    deadline: float | None
    agent: AgentContext


TaskFn = Callable[[TaskContext], Any]
Splitter = Callable[[Any, int], Sequence[Any]]
Merger = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class TaskDef:
    """A task type: its handler and how to split and merge it.

    Attributes:
        type: the task type name, e.g. ``"wordcount"``.
        fn: the handler, sync or async, taking a :class:`TaskContext`.
        specialization: the skill an agent needs to run it (None: any worker).
        split: ``split(payload, n)`` → subtask payloads (default: list chunks).
        merge: ``merge({subtask_id: result})`` → the task's result
            (default: concatenate lists, sum numbers, else a map).
        transient: exception types retried with backoff; others fail the task.
        inline: run a sync handler on the event loop instead of a worker
            thread — for handlers that finish in well under the heartbeat
            interval (the thread handoff costs ~0.2 ms per task, measured).
        verify: a guardian may re-run a sample of its finished tasks on other
            agents and compare the results; False for non-deterministic handlers.
    """

    type: str
    fn: TaskFn
    specialization: str | None = None
    split: Splitter | None = None
    merge: Merger | None = None
    transient: tuple[builtins.type[BaseException], ...] = (TimeoutError, ConnectionError)
    inline: bool = False
    verify: bool = True


class Middleware:
    """No-op hooks around message handling (dramatiq-style).

    Subclass and override what you need. A middleware that raises is logged
    and skipped; it never breaks message handling.
    """

    def before_handle(self, agent: AgentContext, message: Message) -> None:
        """Called before the handler runs."""

    def after_handle(
        self, agent: AgentContext, message: Message, result: Any, error: BaseException | None
    ) -> None:
        """Called after the handler returned (``error`` is None) or raised."""

    def on_rejected(self, agent: AgentContext, reason: str, detail: str) -> None:
        """Called when an incoming message is refused and dead-lettered."""


@dataclass
class App:
    """A registry of handlers, middleware and hooks for agents."""

    name: str = "app"
    handlers: dict[str, Handler] = field(default_factory=dict)
    tasks: dict[str, TaskDef] = field(default_factory=dict)
    middleware: list[Middleware] = field(default_factory=list)
    start_hooks: list[Hook] = field(default_factory=list)
    stop_hooks: list[Hook] = field(default_factory=list)

    def handler(self, message_type: str) -> Callable[[Handler], Handler]:
        """Register the decorated function for ``message_type``.

        The function takes a :class:`Message` and may be sync or async; its
        return value is the reply to a request.

        Raises:
            ConfigError: a handler for the type is already registered.
        """

        def register(fn: Handler) -> Handler:
            if message_type in self.handlers:
                raise ConfigError(f"a handler for {message_type!r} is already registered")
            self.handlers[message_type] = fn
            return fn

        return register

    def task(
        self,
        task_type: str,
        *,
        specialization: str | None = None,
        split: Splitter | None = None,
        merge: Merger | None = None,
        transient: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError),
        inline: bool = False,
        verify: bool = True,
    ) -> Callable[[TaskFn], TaskFn]:
        """Register the decorated function as the handler of tasks of ``task_type``.

        The coordinator needs the same registration (start it with the same
        ``--app``) to know the type's specialization, split and merge, and
        whether guardians may validate it (``verify=False``: results differ
        from run to run, so comparing them proves nothing).

        Raises:
            ConfigError: a task of that type is already registered.
        """

        def register(fn: TaskFn) -> TaskFn:
            if task_type in self.tasks:
                raise ConfigError(f"a task {task_type!r} is already registered")
            self.tasks[task_type] = TaskDef(
                task_type, fn, specialization, split, merge, transient, inline, verify
            )
            return fn

        return register

    def on_start(self, fn: Hook) -> Hook:
        """Run ``fn(agent)`` once the agent is connected, before it consumes.

        If it raises, the agent does not start (the error is reported).
        """
        self.start_hooks.append(fn)
        return fn

    def on_stop(self, fn: Hook) -> Hook:
        """Run ``fn(agent)`` during shutdown, after in-flight work finished.

        Errors are logged; shutdown continues.
        """
        self.stop_hooks.append(fn)
        return fn

    def include(self, other: App) -> None:
        """Merge another app's handlers, middleware and hooks into this one.

        Raises:
            ConfigError: both register a handler for the same type.
        """
        for message_type, fn in other.handlers.items():
            self.handler(message_type)(fn)
        for task_type, tdef in other.tasks.items():
            if task_type in self.tasks:
                raise ConfigError(f"a task {task_type!r} is already registered")
            self.tasks[task_type] = tdef
        self.middleware.extend(other.middleware)
        self.start_hooks.extend(other.start_hooks)
        self.stop_hooks.extend(other.stop_hooks)


async def call_handler(fn: Handler, message: Message) -> Any:
    """Call a sync or async handler."""
    result = fn(message)
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_hook(fn: Hook, agent: AgentContext) -> None:
    result = fn(agent)
    if inspect.isawaitable(result):
        await result


def load_app(spec: str) -> App:
    """Import ``module`` or ``module:attribute`` and return its :class:`App`.

    Without an attribute, the module's ``app`` is used.

    Raises:
        ConfigError: the module cannot be imported or has no App there.
    """
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from exc
    obj = getattr(module, attr or "app", None)
    if not isinstance(obj, App):
        raise ConfigError(f"{spec!r} has no robeing App (expected an `app = App()` attribute)")
    return obj

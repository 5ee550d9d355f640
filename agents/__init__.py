"""robeing agents: the runtime, the roles, the client API and the CLI.

What an app author needs, in one import::

    from robeing.agents import App, Client, Message, Settings, TaskContext, Retry, Reject

* :class:`App` — handlers (``@app.handler``), tasks (``@app.task``),
  :class:`Middleware` and start/stop hooks, loaded with ``--app``;
* :class:`Message` / :class:`TaskContext` — what handlers receive; their
  ``agent`` is the :class:`AgentContext` (send, request, broadcast…);
* :class:`Retry` / :class:`Reject` — raised by handlers to steer the outcome;
* :class:`Client` and :class:`TaskRequest` — submit tasks and talk to agents
  from a program; :class:`Settings` configures both;
* :func:`build_agent` / :func:`serve` — run an agent from Python as the CLI does.
"""

from ..protocol.errors import Reject, Retry
from ..protocol.taskmsgs import TaskRequest
from .app import App, Middleware, TaskContext
from .assembly import build_agent, serve
from .client import Client, TaskHandle
from .context import AgentContext, Message
from .heartbeats import AgentStatus
from .settings import Settings

__all__ = [
    "AgentContext",
    "AgentStatus",
    "App",
    "Client",
    "Message",
    "Middleware",
    "Reject",
    "Retry",
    "Settings",
    "TaskContext",
    "TaskHandle",
    "TaskRequest",
    "build_agent",
    "serve",
]

"""robeing agents: the runtime, the roles, the client API and the CLI.

Public API::

    from robeing.agents import Agent, App, Client, Message, Middleware, Settings
"""

from .app import App, Message, Middleware
from .client import AgentStatus, Client
from .runtime import Agent
from .settings import Settings

__all__ = ["Agent", "AgentStatus", "App", "Client", "Message", "Middleware", "Settings"]

"""Putting an agent together, once, at the edge (the CLI and :class:`~robeing.agents.Client`).

:func:`build_agent` makes the runtime and installs, through its context, in
this order: the built-in handlers, the enforcement of the guardians'
quarantine orders, the role's behaviour, consensus (votes and the PBFT
groups listing the agent), the user's app, then — for agents that
take work — the built-in task types the app does not define, the
executor of assignments and the obedience to membership orders; with
``--metrics-port``, the metrics server.
Nothing below this module imports a role or the runtime's concrete class,
so the layering stays one way:
``cli/client → assembly → runtime + roles + consensus + tasking → context``.
"""

from __future__ import annotations

import asyncio
import time

from ..protocol.errors import ConfigError
from ..protocol.identity import Authority, Identity
from . import builtins, leading, membership, metrics
from .app import App
from .consensus import install_consensus
from .keystore import Keystore
from .roles import install_role
from .roles.guardian import enforce
from .roles.messenger import accept_blobs, accept_relayed, receive_transfers
from .runtime import Agent
from .settings import Settings
from .tasking import executor
from .tasking.builtin_tasks import tasks as builtin_tasks

__all__ = ["build_agent", "serve"]


def build_agent(
    settings: Settings, app: App | None = None, *, throwaway_identity: bool = False
) -> Agent:
    """An agent for ``settings`` with everything its role does, plus ``app``.

    Args:
        settings: the typed settings (role, id, broker, keys…).
        app: the user's handlers, tasks, middleware and hooks.
        throwaway_identity: use an in-memory identity from a throwaway
            authority: enough to verify heartbeats and read results (status,
            probes), needs no key files and writes none, but nobody accepts
            its messages.

    Raises:
        ConfigError: keys missing or invalid, or a handler registered twice.
    """
    return assemble(runtime_from_keys(settings, throwaway_identity), app)


def runtime_from_keys(settings: Settings, throwaway_identity: bool = False) -> Agent:
    """A bare runtime (no role installed) with its identity and login from the keys dir.

    A coordinator also loads the coordinators' group key.

    Raises:
        ConfigError: keys missing or invalid.
    """
    store = Keystore(settings.keys_dir)
    settings = store.with_broker_login(settings)
    if throwaway_identity:
        identity = Identity.create(
            Authority.generate(), settings.agent_id, settings.role, time.time()
        )
        return Agent(settings, identity, store.trust_store())
    identity = store.load_identity(settings.agent_id, settings.role, settings.auto_issue)
    group = None
    if settings.role == "coordinator":
        group = store.group_identity(issue=settings.auto_issue)
        if group is None:
            raise ConfigError(
                f"no coordinators' group key in {settings.keys_dir} (coordinators.key): "
                "copy it from where `robeing keys init` ran"
            )
    return Agent(
        settings,
        identity,
        store.trust_store(),
        lookup_peer=store.peer_certificate,
        cluster_key=store.cluster_key(),
        group=group,
    )


def assemble(agent: Agent, app: App | None = None) -> Agent:
    """Install what ``agent``'s role does on an existing runtime (see :func:`build_agent`).

    Raises:
        ConfigError: a handler or task type registered twice.
    """
    builtins.install(agent)
    if agent.role.takes_work:
        enforce(agent)  # every agent keeps and enforces the guardians' quarantine orders
        receive_transfers(agent)  # takes payloads larger than a message in chunks,
        accept_relayed(agent)  # messages a messenger held for it,
        accept_blobs(agent)  # and task inputs a messenger holds
    install_role(agent)
    install_consensus(agent, agent.settings.bft_groups)
    if app is not None:
        agent.include(app)
    tasks = None
    if agent.role.takes_work:
        for tdef in builtin_tasks.tasks.values():
            agent.add_task(tdef, default=True)
        if agent.settings.role != "coordinator":
            tasks = executor.install(agent)
            membership.install(agent)  # the coordinator's orders move it between clusters
            leading.install(agent)  # it may lead its named cluster (one leader per term)
    if agent.settings.metrics_port is not None:
        metrics.install(agent, tasks, port=agent.settings.metrics_port)
    return agent


async def serve(settings: Settings, app: App | None = None) -> None:
    """Run an agent until stopped; a coordinator that lost the lead starts over.

    Crash-only failover: rather than repair in-memory state after losing its
    lock, a coordinator throws it all away and competes again as a new
    incarnation, rebuilding from the durable queues if it wins.
    """
    while True:
        agent = build_agent(settings, app)
        await agent.run()
        if agent.exit_reason != "lost_lead":
            return
        await asyncio.sleep(1.0)

"""``robeing agent`` and ``robeing coordinator``: run an agent process, or probe one.

Both build the process's :class:`~robeing.agents.settings.Settings` from
options and environment variables (what Compose and Kubernetes set) and
serve it until SIGTERM or Ctrl-C; ``agent --check`` instead reports whether
an agent with the given id is heartbeating, as a health probe's exit code.

The original deployment's values work: ``AGENT_ROLE=WORKER`` or
``ROLE=COORDINATOR`` (any case), ``SPECIALIZATION``, ``CLUSTER_ID``;
``COORDINATOR_URL`` and ``AGENT_COUNT`` are accepted and logged as not
needed (agents reach the coordinator through the broker; ``AGENT_COUNT`` is
the number of workers ``robeing up`` starts).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from ...broker.topology import TopologySettings
from ...protocol.errors import ConfigError
from ...protocol.pbft import GroupSpec, parse_groups
from ...protocol.resources import Resources
from ...protocol.roles import AGENT_ROLES
from ..settings import Settings
from .common import EXIT_CODES_HELP, Common, pass_common, run, split_list
from .options import (
    RESOURCES,
    agent_id_option,
    app_option,
    cluster_id_option,
    coordinator_options,
    default_of,
    env_option,
    heartbeat_interval_option,
    metrics_port_option,
    queue_expiry_option,
)
from .roles import RoleHelpCommand

log = logging.getLogger(__name__)

# The original deployment's variables that robeing does not need, and why.
_NOT_NEEDED = {
    "COORDINATOR_URL": "agents reach the coordinator through the broker (AMQP_URL)",
    "AGENT_COUNT": "it is the number of workers `robeing up` starts",
}


@click.command(cls=RoleHelpCommand, epilog=EXIT_CODES_HELP)
@click.option(
    "--role",
    envvar=["AGENT_ROLE", "ROLE"],
    show_envvar=True,
    default=None,
    is_eager=True,  # read before --help, which then describes the role
    type=click.Choice(AGENT_ROLES, case_sensitive=False),
    help="What this agent does (required, except with --check).",
)
@agent_id_option("Unique id (default: <role>-<host>-<pid>).")
@env_option(
    "--specialization",
    "specializations",
    envvar="SPECIALIZATION",
    multiple=True,
    default=default_of(Settings, "specializations"),
    help="Skill offered, optionally with a proficiency in [0, 1] (analysis:0.9); "
    "repeat or comma-separate.",
)
@cluster_id_option()
@app_option("Module (or module:attr) holding your App with handlers.")
@env_option(
    "--concurrency",
    envvar="ROBEING_CONCURRENCY",
    default=default_of(Settings, "concurrency"),
    type=click.IntRange(min=1),
    show_default=True,
)
@heartbeat_interval_option()
@env_option(
    "--grace-period",
    envvar="ROBEING_GRACE_PERIOD",
    default=default_of(Settings, "grace_period"),
    type=click.FloatRange(min=0),
    show_default=True,
    help="Seconds to finish in-flight work on SIGTERM.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Probe: exit 0 if an agent with this id is heartbeating, 1 if not.",
)
@env_option(
    "--standby",
    envvar="ROBEING_STANDBY",
    is_flag=True,
    default=default_of(Settings, "standby"),
    help="Join the standby pool: take work only while a primary with a shared "
    "specialization is dead.",
)
@env_option(
    "--backup-for",
    envvar="ROBEING_BACKUP_FOR",
    default=default_of(Settings, "backup_for"),
    help="Back up this agent id: take work only while it is dead.",
)
@env_option(
    "--bft-group",
    "bft_groups",
    envvar="ROBEING_BFT_GROUP",
    default=None,
    help="PBFT groups: NAME=ID,ID,...[/F], ';'-separated; hosts those listing this agent.",
)
@env_option(
    "--bft-timeout",
    envvar="ROBEING_BFT_TIMEOUT",
    default=default_of(GroupSpec, "view_change_timeout"),
    type=click.FloatRange(min=0.05),
    show_default=True,
    help="PBFT view-change timeout (s).",
)
@env_option(
    "--resources",
    envvar="ROBEING_RESOURCES",
    type=RESOURCES,
    default=default_of(Settings, "resources"),
    help="What this agent contributes to the resource pool, e.g. "
    "cpu=2,memory=4GiB,storage=20GB,bandwidth=100MB (bytes; bandwidth per second).",
)
@env_option(
    "--state-dir",
    envvar="ROBEING_STATE_DIR",
    type=click.Path(path_type=Path),
    default=default_of(Settings, "state_dir"),
    help="Where the agent keeps what outlives it (quarantine orders); "
    "default: 'state' beside the keys directory.",
)
@env_option(
    "--quarantine-after",
    envvar="ROBEING_QUARANTINE_AFTER",
    type=click.IntRange(min=1),
    default=default_of(Settings, "quarantine_after"),
    show_default=True,
    help="(guardian) Verified refusals of one sender within a minute, from two "
    "reporters or more, that quarantine it.",
)
@env_option(
    "--verify-rate",
    envvar="ROBEING_VERIFY_RATE",
    type=click.FloatRange(0.0, 1.0),
    default=default_of(Settings, "verify_rate"),
    show_default=True,
    help="(guardian) Fraction of finished tasks re-run on another agent to validate them.",
)
@env_option(
    "--anomaly-factor",
    envvar="ROBEING_ANOMALY_FACTOR",
    type=click.FloatRange(min=1.0),
    default=default_of(Settings, "anomaly_factor"),
    show_default=True,
    help="(guardian) Alert when a sender sends this many times its usual rate...",
)
@env_option(
    "--anomaly-floor",
    envvar="ROBEING_ANOMALY_FLOOR",
    type=click.FloatRange(min=0.0),
    default=default_of(Settings, "anomaly_floor"),
    show_default=True,
    help="(guardian) ...and at least this many messages per second.",
)
@env_option(
    "--anomaly-fanout",
    envvar="ROBEING_ANOMALY_FANOUT",
    type=click.IntRange(min=1),
    default=default_of(Settings, "anomaly_fanout"),
    show_default=True,
    help="(guardian) Alert when a sender reaches more distinct receivers at once.",
)
@env_option(
    "--http",
    envvar="ROBEING_HTTP",
    default=default_of(Settings, "http"),
    help="(messenger) Serve the HTTP/JSON gateway on HOST:PORT (e.g. 127.0.0.1:8080).",
)
@env_option(
    "--http-rate",
    envvar="ROBEING_HTTP_RATE",
    type=click.FloatRange(min=0.01),
    default=default_of(Settings, "http_rate"),
    show_default=True,
    help="(messenger) Requests per second per gateway client (twice that in a burst).",
)
@metrics_port_option()
@queue_expiry_option()
@coordinator_options
@pass_common
def agent(
    common: Common,
    role: str | None,
    agent_id: str,
    specializations: tuple[str, ...],
    cluster_id: str,
    app: str | None,
    concurrency: int,
    heartbeat_interval: float,
    grace_period: float,
    check: bool,
    standby: bool,
    backup_for: str | None,
    bft_groups: str | None,
    bft_timeout: float,
    resources: Resources | None,
    state_dir: Path | None,
    quarantine_after: int,
    verify_rate: float,
    anomaly_factor: float,
    anomaly_floor: float,
    anomaly_fanout: int,
    http: str | None,
    http_rate: float,
    metrics_port: int | None,
    queue_expiry: float,
    **coordinator: Any,
) -> None:
    """Run an agent process until SIGTERM or Ctrl-C."""
    if role is None:
        if not check:
            raise click.UsageError("Missing option '--role' (or AGENT_ROLE, or ROLE).")
        role = "worker"  # a probe needs only the id
    settings = common.settings(
        role=role,
        agent_id=agent_id,
        specializations=split_list(specializations),
        cluster_id=cluster_id,
        app=app,
        concurrency=concurrency,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        standby=standby,
        backup_for=backup_for,
        bft_groups=parse_groups(bft_groups, view_change_timeout=bft_timeout),
        resources=resources,
        state_dir=state_dir,
        quarantine_after=quarantine_after,
        verify_rate=verify_rate,
        anomaly_factor=anomaly_factor,
        anomaly_floor=anomaly_floor,
        anomaly_fanout=anomaly_fanout,
        http=http,
        http_rate=http_rate,
        metrics_port=metrics_port,
        topology=TopologySettings(agent_queue_expiry_s=queue_expiry),
        **coordinator,  # the Settings fields of the same names
    )
    if check:
        sys.exit(run(_probe(common, settings)))
    _serve(common, settings)


@click.command(epilog=EXIT_CODES_HELP)
@app_option("Module with your App (needed for its tasks' split and merge).")
@agent_id_option("Unique id (default: coordinator-<host>-<pid>).")
@cluster_id_option()
@env_option(
    "--standby",
    envvar="ROBEING_STANDBY",
    is_flag=True,
    default=default_of(Settings, "standby"),
    help="Start as a standby: leave the lead to coordinators started with it (a standby "
    "first tries for the lock after a 2 s head start), then take over as soon as none is active.",
)
@heartbeat_interval_option("The agents' heartbeat interval (and ours).")
@metrics_port_option()
@queue_expiry_option()
@coordinator_options
@pass_common
def coordinator(
    common: Common,
    app: str | None,
    agent_id: str,
    cluster_id: str,
    standby: bool,
    heartbeat_interval: float,
    metrics_port: int | None,
    queue_expiry: float,
    **coordinator: Any,
) -> None:
    """Run a coordinator (same as `robeing agent --role coordinator`)."""
    settings = common.settings(
        role="coordinator",
        agent_id=agent_id,
        cluster_id=cluster_id,
        standby=standby,
        app=app,
        heartbeat_interval=heartbeat_interval,
        metrics_port=metrics_port,
        topology=TopologySettings(agent_queue_expiry_s=queue_expiry),
        **coordinator,  # the Settings fields of the same names
    )
    _serve(common, settings)


def _serve(common: Common, settings: Settings) -> None:
    """Run ``settings``' agent (with its ``--app``) until SIGTERM or Ctrl-C."""
    common.configure_logging(settings.agent_id, settings.role)
    for name, why in _NOT_NEEDED.items():
        if os.environ.get(name):
            log.info("%s is set but not needed: %s", name, why)
    from ..app import load_app
    from ..assembly import serve

    # Like `celery -A`: an --app module next to where the command runs is found.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    run(serve(settings, load_app(settings.app) if settings.app else None))


async def _probe(common: Common, target: Settings) -> int:
    from ..client import Client

    if target.generated_id:
        raise ConfigError("--check needs --id of the agent to probe")
    # As the agent itself: its broker user owns listener queues named after it,
    # where a client id of the probe's own would need a broker user of its own.
    async with Client(common.client_settings(target.agent_id), listen_only=True) as client:
        live = await client.live_agents(max(3 * target.heartbeat_interval, 1.5))
    ok = target.agent_id in live
    click.echo(f"{target.agent_id}: {'alive' if ok else 'not seen'}")
    return 0 if ok else 1

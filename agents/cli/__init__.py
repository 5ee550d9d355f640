"""The ``robeing`` command: parse, configure logging, call the library.

Every option is also an environment variable (shown in ``--help``); the
seed's names ``AGENT_ROLE``, ``SPECIALIZATION``, ``CLUSTER_ID``,
``AGENT_COUNT`` and ``AMQP_URL`` keep working. Errors are one line on stderr
and a non-zero exit: 2 for wrong usage or configuration, 3 for broker
trouble, 1 for anything else robeing reports; never a traceback
(:mod:`.common`).

This module builds the top-level group and its global options and adds each
verb group's commands: :mod:`.keys`, :mod:`.agent` (``agent``,
``coordinator``), :mod:`.messaging` (``send``, ``broadcast``), :mod:`.tasks`
(``submit``, ``result``), :mod:`.tasks_admin` (``task show|list|cancel``,
``cancel``), :mod:`.dead_letters` (``dead-letters list|show|replay|purge``),
:mod:`.status`, :mod:`.up`, :mod:`.consensus` (``propose``, ``bft``),
:mod:`.broker` (``broker users``, ``broker setup``), :mod:`.clusters`
(``cluster form|list|show|dissolve|leave``), :mod:`.pool` (``pool show|request|release``).
It is the only module that imports them; they import :mod:`.common` and
:mod:`.options`, never this one.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import logs
from ..loop import CHOICES
from ..settings import Settings
from . import (
    agent,
    broker,
    clusters,
    consensus,
    dead_letters,
    guardian,
    keys,
    messaging,
    pool,
    roles,
    status,
    tasks,
    tasks_admin,
    up,
)
from .common import EXIT_CODES_HELP, Common, RobeingGroup
from .options import default_of

__all__ = ["cli", "main"]


@click.group(
    cls=RobeingGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "--amqp-url",
    envvar="AMQP_URL",
    default=default_of(Settings, "amqp_url"),
    show_default=True,
    show_envvar=True,
    help="Broker URL; the path selects the vhost. A cluster's nodes as a comma-separated list "
    "(same vhost and login): each process fails over between them in its own order.",
)
@click.option(
    "--management-url",
    envvar="ROBEING_MANAGEMENT_URL",
    default=None,
    show_envvar=True,
    help="Management API (comma-separated for a cluster), if not http://<each AMQP host>:15672.",
)
@click.option(
    "--keys-dir",
    envvar="ROBEING_KEYS",
    default=default_of(Settings, "keys_dir"),
    show_default=True,
    show_envvar=True,
    type=click.Path(path_type=Path),
    help="Authority key, certificates and agent keys.",
)
@click.option(
    "--log-level",
    envvar="ROBEING_LOG_LEVEL",
    default="info",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    envvar="ROBEING_LOG_FORMAT",
    default="auto",
    show_envvar=True,
    type=click.Choice(["auto", "text", "json"]),
)
@click.option(
    "--loop",
    envvar="ROBEING_LOOP",
    default="auto",
    show_default=True,
    show_envvar=True,
    type=click.Choice(CHOICES),
    help="Event loop: auto = uvloop when installed (robeing[fast]), else asyncio's.",
)
@click.version_option(package_name="robeing")
@click.pass_context
def cli(
    ctx: click.Context,
    amqp_url: str,
    management_url: str | None,
    keys_dir: Path,
    log_level: str,
    log_format: str,
    loop: str,
) -> None:
    """robeing: a multi-agent runtime on RabbitMQ."""
    ctx.obj = Common(amqp_url, keys_dir, log_level, log_format, loop, management_url)
    # One-shot commands only show problems; `agent` and `up` reconfigure.
    quiet = log_level if log_level in ("debug", "warning", "error") else "warning"
    logs.configure(
        quiet,
        log_format,
        "cli",
        "client",
        library_level="warning" if log_level == "debug" else "critical",
    )


cli.add_command(keys.keys)
cli.add_command(agent.agent)
cli.add_command(agent.coordinator)
cli.add_command(messaging.send)
cli.add_command(messaging.broadcast)
cli.add_command(tasks.submit)
cli.add_command(tasks.result)
cli.add_command(tasks_admin.task)
cli.add_command(tasks_admin.cancel)
cli.add_command(dead_letters.dead_letters)
cli.add_command(status.status)
cli.add_command(up.up)
cli.add_command(consensus.propose)
cli.add_command(consensus.bft)
cli.add_command(broker.broker)
cli.add_command(roles.roles)
cli.add_command(guardian.guardian)
cli.add_command(clusters.cluster)
cli.add_command(pool.pool)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``robeing`` console script."""
    cli.main(args=argv, prog_name="robeing")

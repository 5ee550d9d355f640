"""Options shared by several ``robeing`` commands, each defined once.

Every option that configures an agent process is also an environment
variable (DESIGN §5), shown in ``--help``: deployments (Compose, Kubernetes)
configure agents through the environment, so an option that exists only on
one of two commands running the same role would be silently ignored there.

An option that sets a :class:`~robeing.agents.settings.Settings` field takes
its default from that field (:func:`default_of`): ``--help`` shows the
library's default, and changing it there cannot leave the CLI overriding it
with the old value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

import click

from ...broker.topology import TopologySettings
from ...protocol.resources import InvalidResources, Resources, parse_resources
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def env_option(*decls: str, envvar: str, **kw: Any) -> Callable[[F], F]:
    """A ``click.option`` also read from ``envvar`` (and saying so in ``--help``)."""
    return click.option(*decls, envvar=envvar, show_envvar=True, **kw)


def default_of(owner: type[Any], name: str) -> Any:
    """The default of the dataclass ``owner``'s field ``name`` (e.g. of ``Settings``).

    Raises:
        KeyError: ``owner`` has no field ``name`` with a plain default; raised
            when the option is declared, so at import.
    """
    for f in fields(owner):
        if f.name == name and f.default is not MISSING:
            return f.default
    raise KeyError(f"{owner.__name__} has no field {name!r} with a default")


def stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply ``decorators`` as if written one above the other, top first."""

    def apply(f: F) -> F:
        for decorate in reversed(decorators):
            f = decorate(f)
        return f

    return apply


class ResourcesParam(click.ParamType):
    """``cpu=2,memory=4GiB,storage=20GB,bandwidth=100MB`` (see ``parse_resources``)."""

    name = "resources"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Resources):
            return value
        try:
            return parse_resources(str(value))
        except InvalidResources as exc:
            self.fail(str(exc), param, ctx)


RESOURCES = ResourcesParam()


def json_option() -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def as_option() -> Callable[[F], F]:
    """The identity a client command acts as (default: the machine's ``cli-<host>``)."""
    return click.option(
        "--as",
        "as_id",
        envvar="ROBEING_CLIENT_ID",
        default=default_of(Settings, "agent_id"),
        help="Client identity.",
    )


def question_options() -> Callable[[F], F]:
    """``--timeout``, ``--json`` and ``--as`` of a command that asks the active coordinator."""
    return stack(
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds to wait for the coordinator's answer.",
        ),
        json_option(),
        as_option(),
    )


def admin_url_option(help: str) -> Callable[[F], F]:
    """The broker admin's AMQP URL (``ROBEING_ADMIN_URL``; None: use ``AMQP_URL``)."""
    return env_option("--admin-url", envvar="ROBEING_ADMIN_URL", default=None, help=help)


def payload_option() -> Callable[[F], F]:
    return click.option("--payload", default=None, help="JSON, or @file with JSON.")


def priority_option() -> Callable[[F], F]:
    return click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True)


def app_option(help: str) -> Callable[[F], F]:
    return env_option("--app", envvar="ROBEING_APP", default=default_of(Settings, "app"), help=help)


def agent_id_option(help: str) -> Callable[[F], F]:
    return env_option(
        "--id", "agent_id", envvar="AGENT_ID", default=default_of(Settings, "agent_id"), help=help
    )


def cluster_id_option() -> Callable[[F], F]:
    return env_option(
        "--cluster-id",
        envvar="CLUSTER_ID",
        default=default_of(Settings, "cluster_id"),
        show_default=True,
        help="The cluster this agent belongs to.",
    )


def heartbeat_interval_option(help: str | None = None) -> Callable[[F], F]:
    return env_option(
        "--heartbeat-interval",
        envvar="ROBEING_HEARTBEAT_INTERVAL",
        default=default_of(Settings, "heartbeat_interval"),
        type=click.FloatRange(min=0.05),
        show_default=True,
        help=help,
    )


def queue_expiry_option() -> Callable[[F], F]:
    """Sets ``Settings.topology`` (its agent queue expiry; the rest stays as it is)."""
    return env_option(
        "--queue-expiry",
        envvar="ROBEING_QUEUE_EXPIRY",
        type=click.FloatRange(min=0),
        default=default_of(TopologySettings, "agent_queue_expiry_s"),
        show_default=True,
        help="Seconds an agent's inbox and work queue outlive it unused before the broker "
        "deletes them, messages and all (0: never).",
    )


def metrics_port_option() -> Callable[[F], F]:
    return env_option(
        "--metrics-port",
        envvar="ROBEING_METRICS_PORT",
        type=click.IntRange(0, 65535),
        default=default_of(Settings, "metrics_port"),
        help="Serve Prometheus metrics on this port at /metrics (0: any free port).",
    )


# What only a coordinator uses; `robeing agent --role coordinator` and
# `robeing coordinator` both take them. Each parameter is named after the
# Settings field it sets.
coordinator_options = stack(
    env_option(
        "--acceptable-pause",
        envvar="ROBEING_ACCEPTABLE_PAUSE",
        default=default_of(Settings, "acceptable_pause"),
        type=click.FloatRange(min=0),
        show_default=True,
        help="(coordinator) Silence beyond the interval that never makes an agent suspected.",
    ),
    env_option(
        "--dead-after",
        envvar="ROBEING_DEAD_AFTER",
        default=default_of(Settings, "dead_after"),
        type=click.FloatRange(min=0),
        show_default=True,
        help="(coordinator) Seconds suspected before an agent is declared dead.",
    ),
    env_option(
        "--max-attempts",
        envvar="ROBEING_MAX_ATTEMPTS",
        default=default_of(Settings, "max_attempts"),
        type=click.IntRange(min=1),
        show_default=True,
        help="(coordinator) Executions of a task before it is dead-lettered.",
    ),
    env_option(
        "--attempt-timeout",
        envvar="ROBEING_ATTEMPT_TIMEOUT",
        default=default_of(Settings, "attempt_timeout"),
        type=click.FloatRange(min=1),
        show_default=True,
        help="(coordinator) Seconds an attempt may go without a result before it is "
        "failed and retried (tasks without a deadline end too).",
    ),
    env_option(
        "--events-vhost",
        envvar="ROBEING_EVENTS_VHOST",
        default=default_of(Settings, "events_vhost"),
        show_default=True,
        help="(coordinator) Vhost of the broker's event exchange "
        "(rabbitmq_event_exchange.vhost), for connection events.",
    ),
)

"""The ``robeing`` command: parse, configure logging, call the library.

Every option is also an environment variable (shown in ``--help``); the
seed's names ``AGENT_ROLE``, ``SPECIALIZATION``, ``CLUSTER_ID``,
``AGENT_COUNT`` and ``AMQP_URL`` keep working. Errors are one line on stderr
and a non-zero exit: 2 for wrong usage or configuration, 3 for broker
trouble, 1 for anything else robeing reports; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..protocol.errors import AckTimeout, BrokerError, ConfigError, RobeingError
from ..protocol.pbft import parse_groups
from ..protocol.resources import Resources
from ..protocol.roles import AGENT_ROLES, ROLES
from . import logs
from .cli_consensus import register as register_consensus_commands
from .cli_options import (
    RESOURCES,
    agent_id_option,
    app_option,
    coordinator_options,
    env_option,
    heartbeat_interval_option,
)
from .settings import DEFAULT_AMQP_URL, Settings

T = TypeVar("T")


class CliError(click.ClickException):
    """A robeing error shown as one line (exit code 1)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"robeing: error: {self.format_message()}", err=True)


class ConfigFailure(CliError):
    exit_code = 2


class BrokerFailure(CliError):
    exit_code = 3


def _cli_error(exc: RobeingError) -> CliError:
    if isinstance(exc, ConfigError):
        return ConfigFailure(str(exc))
    if isinstance(exc, BrokerError | AckTimeout):
        return BrokerFailure(str(exc))
    return CliError(str(exc))


class RobeingGroup(click.Group):
    """Turns robeing's errors into one-line messages with meaningful exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RobeingError as exc:
            raise _cli_error(exc) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@dataclass
class Common:
    amqp_url: str
    keys_dir: Path
    log_level: str
    log_format: str

    def settings(self, **kw: Any) -> Settings:
        return Settings(amqp_url=self.amqp_url, keys_dir=self.keys_dir, **kw)

    def configure_logging(self, agent_id: str = "-", role: str = "-") -> None:
        logs.configure(self.log_level, self.log_format, agent_id, role)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _split(values: tuple[str, ...] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or ():
        out.extend(s.strip() for s in v.replace(",", " ").split() if s.strip())
    return tuple(dict.fromkeys(out))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(
    cls=RobeingGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--amqp-url",
    envvar="AMQP_URL",
    default=DEFAULT_AMQP_URL,
    show_default=True,
    show_envvar=True,
    help="Broker URL; the path selects the vhost.",
)
@click.option(
    "--keys-dir",
    envvar="ROBEING_KEYS",
    default=".robeing/keys",
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
@click.version_option(package_name="robeing")
@click.pass_context
def cli(ctx: click.Context, amqp_url: str, keys_dir: Path, log_level: str, log_format: str) -> None:
    """robeing: a multi-agent runtime on RabbitMQ."""
    ctx.obj = Common(amqp_url, keys_dir, log_level, log_format)
    # One-shot commands only show problems; `agent` and `up` reconfigure.
    quiet = log_level if log_level in ("debug", "warning", "error") else "warning"
    logs.configure(
        quiet,
        log_format,
        "cli",
        "client",
        library_level="warning" if log_level == "debug" else "critical",
    )


pass_common = click.make_pass_decorator(Common)


# -- keys ----------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Create the cluster authority and issue or revoke agent identities."""


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace an existing authority.")
@click.option("--cluster-key", is_flag=True, help="Also create a key that encrypts broadcasts.")
@pass_common
def keys_init(common: Common, force: bool, cluster_key: bool) -> None:
    """Create the cluster authority in the keys directory."""
    from .keystore import Keystore

    pub = Keystore(common.keys_dir).init(force=force, cluster_key=cluster_key)
    click.echo(f"authority created in {common.keys_dir} (public key {pub.hex()[:16]}…)")


@keys.command("issue")
@click.option("--id", "agent_id", required=True, help="The agent id to certify.")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--ttl-days", type=click.FloatRange(min=0.001), default=365.0, show_default=True)
@pass_common
def keys_issue(common: Common, agent_id: str, role: str, ttl_days: float) -> None:
    """Issue a key pair and certificate for an agent."""
    from .keystore import Keystore

    ident = Keystore(common.keys_dir).issue(agent_id, role, ttl_days * 86400)
    click.echo(
        f"issued {role} identity {agent_id!r} (key {ident.certificate.key_id}, "
        f"expires {time.strftime('%Y-%m-%d', time.gmtime(ident.certificate.expires_at))})"
    )


@keys.command("revoke")
@click.option("--id", "agent_id", required=True)
@click.option(
    "--announce/--no-announce",
    default=True,
    help="Broadcast the new revocation list to live agents.",
)
@pass_common
def keys_revoke(common: Common, agent_id: str, announce: bool) -> None:
    """Revoke an agent everywhere: add it to the signed revocation list."""
    from .keystore import Keystore

    crl = Keystore(common.keys_dir).revoke(agent_id)
    click.echo(f"revoked {agent_id!r} (revocation list version {crl.version})")
    if announce:
        from .client import Client

        async def go() -> None:
            async with Client(common.settings(role="client")) as client:
                await client.broadcast("crl.update", crl.raw, priority=9)

        run(go())
        click.echo("announced to live agents")


@keys.command("list")
@pass_common
def keys_list(common: Common) -> None:
    """List issued identities."""
    from .keystore import Keystore

    store = Keystore(common.keys_dir)
    revoked = store.revocations()
    for cert in store.list_agents():
        flag = " REVOKED" if revoked.revokes(cert) else ""
        click.echo(f"{cert.agent_id}\t{cert.role}\t{cert.key_id}{flag}")


# -- agent -----------------------------------------------------------------------


@cli.command()
@click.option(
    "--role",
    envvar="AGENT_ROLE",
    show_envvar=True,
    default=None,
    type=click.Choice(AGENT_ROLES),
    help="What this agent does (required, except with --check).",
)
@agent_id_option("Unique id (default: <role>-<host>-<pid>).")
@env_option(
    "--specialization",
    "specializations",
    envvar="SPECIALIZATION",
    multiple=True,
    help="Skill offered; repeat or comma-separate.",
)
@env_option("--cluster-id", envvar="CLUSTER_ID", default="default", show_default=True)
@app_option("Module (or module:attr) holding your App with handlers.")
@env_option(
    "--concurrency",
    envvar="ROBEING_CONCURRENCY",
    default=32,
    type=click.IntRange(min=1),
    show_default=True,
)
@heartbeat_interval_option()
@env_option(
    "--grace-period",
    envvar="ROBEING_GRACE_PERIOD",
    default=30.0,
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
    help="Join the standby pool: take work only while a primary with a shared "
    "specialization is dead.",
)
@env_option(
    "--backup-for",
    envvar="ROBEING_BACKUP_FOR",
    default=None,
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
    default=2.0,
    type=click.FloatRange(min=0.05),
    show_default=True,
    help="PBFT view-change timeout (s).",
)
@env_option(
    "--resources",
    envvar="ROBEING_RESOURCES",
    type=RESOURCES,
    default=None,
    help="What this agent contributes to the resource pool, e.g. "
    "cpu=2,memory=4GiB,storage=20GB,bandwidth=100MB (bytes; bandwidth per second).",
)
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
    **coordinator: Any,
) -> None:
    """Run an agent process until SIGTERM or Ctrl-C."""
    if role is None:
        if not check:
            raise click.UsageError("Missing option '--role' (or AGENT_ROLE).")
        role = "worker"  # a probe needs only the id
    settings = common.settings(
        role=role,
        agent_id=agent_id,
        specializations=_split(specializations),
        cluster_id=cluster_id,
        app=app,
        concurrency=concurrency,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        standby=standby,
        backup_for=backup_for,
        bft_groups=parse_groups(bft_groups, view_change_timeout=bft_timeout),
        resources=resources,
        **coordinator,  # the Settings fields of the same names
    )
    if check:
        sys.exit(run(_probe(common, settings)))
    _serve(common, settings)


def _serve(common: Common, settings: Settings) -> None:
    """Run ``settings``' agent (with its ``--app``) until SIGTERM or Ctrl-C."""
    common.configure_logging(settings.agent_id, settings.role)
    from .app import load_app
    from .assembly import serve

    run(serve(settings, load_app(settings.app) if settings.app else None))


async def _probe(common: Common, target: Settings) -> int:
    from .client import Client

    if target.generated_id:
        raise ConfigError("--check needs --id of the agent to probe")
    async with Client(common.settings(role="client"), listen_only=True) as client:
        live = await client.live_agents(max(3 * target.heartbeat_interval, 1.5))
    ok = target.agent_id in live
    click.echo(f"{target.agent_id}: {'alive' if ok else 'not seen'}")
    return 0 if ok else 1


# -- messaging -------------------------------------------------------------------


def _client_settings(common: Common, as_id: str) -> Settings:
    return common.settings(role="client", agent_id=as_id)


@cli.command()
@click.option("--to", "receiver", required=True, help="Receiving agent id.")
@click.option("--type", "message_type", required=True, help="Message type.")
@click.option("--payload", default=None, help="JSON, or @file with JSON.")
@click.option("--ack", is_flag=True, help="Wait for the receiver's signed ACK.")
@click.option("--request", "is_request", is_flag=True, help="Wait for and print the reply.")
@click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--as", "as_id", envvar="ROBEING_CLIENT_ID", default="", help="Client identity.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_common
def send(
    common: Common,
    receiver: str,
    message_type: str,
    payload: str | None,
    ack: bool,
    is_request: bool,
    priority: int,
    timeout: float,
    as_id: str,
    as_json: bool,
) -> None:
    """Send a signed, encrypted point-to-point message."""
    from .client import Client, parse_payload

    body = parse_payload(payload)

    async def go() -> dict[str, Any]:
        async with Client(_client_settings(common, as_id)) as client:
            started = time.perf_counter()
            if is_request:
                result = await client.request(
                    receiver, message_type, body, priority=priority, timeout=timeout
                )
                return {
                    "to": receiver,
                    "reply": result,
                    "rtt_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            opened = await client.send(
                receiver, message_type, body, priority=priority, requires_ack=ack, timeout=timeout
            )
            out: dict[str, Any] = {"to": receiver, "type": message_type, "confirmed": True}
            if opened is not None:
                out["ack"] = {"from": opened.envelope.sender, "id": opened.envelope.in_reply_to}
                out["rtt_ms"] = round((time.perf_counter() - started) * 1000, 2)
            return out

    out = run(go())
    if as_json:
        emit_json(out)
    elif "reply" in out:
        click.echo(json.dumps(out["reply"], default=str))
    elif "ack" in out:
        click.echo(f"acknowledged by {out['ack']['from']} in {out['rtt_ms']} ms")
    else:
        click.echo(f"sent to {receiver} (broker confirmed)")


@cli.command()
@click.option("--type", "message_type", required=True, help="Message type.")
@click.option("--payload", default=None, help="JSON, or @file with JSON.")
@click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True)
@click.option("--as", "as_id", envvar="ROBEING_CLIENT_ID", default="", help="Client identity.")
@pass_common
def broadcast(
    common: Common, message_type: str, payload: str | None, priority: int, as_id: str
) -> None:
    """Send a signed broadcast to every live agent."""
    from .client import Client, parse_payload

    body = parse_payload(payload)

    async def go() -> str:
        async with Client(_client_settings(common, as_id)) as client:
            return await client.broadcast(message_type, body, priority=priority)

    click.echo(f"broadcast {run(go())}")


# -- tasks -------------------------------------------------------------------------


@cli.command()
@app_option("Module with your App (needed for its tasks' split and merge).")
@agent_id_option("Unique id (default: coordinator-<host>-<pid>).")
@click.option(
    "--standby",
    is_flag=True,
    help="Label this coordinator a standby; every coordinator waits for the "
    "lead anyway and takes over when the active one dies.",
)
@heartbeat_interval_option("The agents' heartbeat interval (and ours).")
@coordinator_options
@pass_common
def coordinator(
    common: Common,
    app: str | None,
    agent_id: str,
    standby: bool,
    heartbeat_interval: float,
    **coordinator: Any,
) -> None:
    """Run a coordinator (same as `robeing agent --role coordinator`)."""
    settings = common.settings(
        role="coordinator",
        agent_id=agent_id,
        app=app,
        heartbeat_interval=heartbeat_interval,
        **coordinator,  # the Settings fields of the same names
    )
    _serve(common, settings)


@cli.command()
@click.argument("task_type")
@click.option("--payload", default=None, help="JSON, or @file with JSON.")
@click.option("--skills", default="", help="Comma-separated specializations needed.")
@click.option(
    "--agents",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    help="Split across this many agents.",
)
@click.option("--priority", type=click.IntRange(0, 9), default=5, show_default=True)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0.001),
    default=None,
    help="Seconds until the task expires.",
)
@click.option("--depends-on", multiple=True, help="Task id whose result it needs (repeat).")
@click.option("--id", "task_id", default=None, help="Your task id (resubmission is idempotent).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None)
@click.option(
    "--resources",
    type=RESOURCES,
    default=None,
    help="What one execution needs from the pool, e.g. cpu=1,memory=512MiB.",
)
@click.option("--wait", is_flag=True, help="Show progress and print the result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="With --wait: give up after this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--as", "as_id", envvar="ROBEING_CLIENT_ID", default="", help="Client identity.")
@pass_common
def submit(
    common: Common,
    task_type: str,
    payload: str | None,
    skills: str,
    agents: int,
    priority: int,
    deadline: float | None,
    depends_on: tuple[str, ...],
    task_id: str | None,
    max_attempts: int | None,
    resources: Resources | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    as_id: str,
) -> None:
    """Submit a task; with --wait, follow it to its result."""
    from .client import parse_payload
    from .submit import run_submit

    code = run(
        run_submit(
            _client_settings(common, as_id),
            task_type,
            parse_payload(payload),
            skills=_split((skills,)),
            agents=agents,
            priority=priority,
            deadline=deadline,
            depends_on=_split(depends_on),
            task_id=task_id,
            max_attempts=max_attempts,
            resources=resources,
            wait=wait,
            timeout=timeout,
            as_json=as_json,
        )
    )
    sys.exit(code)


@cli.command()
@click.argument("task_id")
@click.option(
    "--since",
    "since_h",
    type=click.FloatRange(min=0.01),
    default=24.0,
    show_default=True,
    help="Look this many hours back.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_common
def result(common: Common, task_id: str, since_h: float, as_json: bool) -> None:
    """Fetch a finished task's result from the results stream."""
    from .submit import print_final, run_fetch

    final = run(run_fetch(common.settings(role="client"), task_id, since_h * 3600))
    if final is None:
        raise ConfigFailure(
            f"no result for task {task_id!r} in the last {since_h:g} h "
            "(unknown id, still running, or older)"
        )
    print_final(final, as_json)
    sys.exit(0 if final.ok else 1)


# -- status ----------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--listen",
    type=click.FloatRange(min=0.2),
    default=2.5,
    show_default=True,
    help="Seconds to listen for heartbeats.",
)
@pass_common
def status(common: Common, as_json: bool, watch: bool, listen: float) -> None:
    """Live agents from their heartbeats: id, role, specializations, load, last seen."""
    from .status import show_status

    run(show_status(common.settings(role="client"), as_json, watch, listen))


# -- fleet -------------------------------------------------------------------------


@cli.command()
@click.option(
    "--workers",
    envvar="AGENT_COUNT",
    show_envvar=True,
    default=2,
    type=click.IntRange(min=1, max=64),
    show_default=True,
)
@click.option("--once", is_flag=True, help="Run the demo workload, print the report, stop.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Stop after this many seconds (0: until Ctrl-C).",
)
@pass_common
def up(common: Common, workers: int, once: bool, duration: float) -> None:
    """Start a local fleet against the broker and run a demo workload."""
    from .fleet import run_fleet

    common.configure_logging("fleet", "supervisor")
    code = run(run_fleet(common.settings(role="client"), workers, once, duration, common.log_level))
    sys.exit(code)


register_consensus_commands(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``robeing`` console script."""
    cli.main(args=argv, prog_name="robeing")

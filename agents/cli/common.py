"""What every ``robeing`` verb needs: errors and exit codes, the global options, output.

Errors are one line on stderr and a non-zero exit (:data:`EXIT_CODES`,
shown at the end of ``robeing --help``); never a traceback.
:class:`RobeingGroup` turns robeing's exceptions into those; a command raises
:class:`ConfigFailure` (or another :class:`CliError`) itself when it finds
the problem.

Verb modules import this module and :mod:`.options`, never the package's
``__init__``, which is the one module that imports them.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ...protocol.errors import AckTimeout, BrokerError, ConfigError, RobeingError
from .. import logs, loop
from ..settings import Settings

T = TypeVar("T")


EXIT_CODES = (
    (0, "done (a task: it succeeded; a query: found)"),
    (1, "a task failed, expired, was cancelled or dead-lettered; not found; refused"),
    (2, "wrong usage or configuration"),
    (3, "broker trouble (unreachable, refused login, refused operation)"),
    (4, "gave up waiting: --timeout passed, or no coordinator or agent answered in time"),
    (130, "interrupted (Ctrl-C)"),
)
EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {c:<4} {what}" for c, what in EXIT_CODES)
"""For a command's ``epilog`` (``\\b`` keeps click from rewrapping it)."""


class CliError(click.ClickException):
    """A robeing error shown as one line (exit code 1)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"robeing: error: {self.format_message()}", err=True)


class ConfigFailure(CliError):
    exit_code = 2


class BrokerFailure(CliError):
    exit_code = 3


class GaveUp(CliError):
    """Nothing came in time: a --timeout, or no coordinator or agent answered."""

    exit_code = 4


def _cli_error(exc: RobeingError) -> CliError:
    if isinstance(exc, ConfigError):
        return ConfigFailure(str(exc))
    if isinstance(exc, AckTimeout):
        return GaveUp(str(exc))
    if isinstance(exc, BrokerError):
        return BrokerFailure(str(exc))
    return CliError(str(exc))


class RobeingGroup(click.Group):
    """Turns robeing's errors into one-line messages with meaningful exit codes.

    Every command added to it (and to its subgroups) shows the exit codes in ``--help``.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _with_exit_codes(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RobeingError as exc:
            raise _cli_error(exc) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


def _with_exit_codes(cmd: click.Command) -> None:
    if not cmd.epilog:
        cmd.epilog = EXIT_CODES_HELP
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _with_exit_codes(sub)


@dataclass
class Common:
    """The global options, shared by every command through the click context."""

    amqp_url: str
    keys_dir: Path
    log_level: str
    log_format: str
    loop: str = "auto"

    def settings(self, **kw: Any) -> Settings:
        return Settings(amqp_url=self.amqp_url, keys_dir=self.keys_dir, **kw)

    def client_settings(self, as_id: str = "") -> Settings:
        """A client's settings: identity ``as_id``, or the machine's ``cli-<host>``."""
        return self.settings(role="client", agent_id=as_id)

    def configure_logging(self, agent_id: str = "-", role: str = "-") -> None:
        logs.configure(self.log_level, self.log_format, agent_id, role)


pass_common = click.make_pass_decorator(Common)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a verb's coroutine on the event loop ``--loop``/``ROBEING_LOOP`` chose."""
    ctx = click.get_current_context(silent=True)
    common = ctx.find_object(Common) if ctx is not None else None
    return loop.run(coro, common.loop if common is not None else "auto")


def split_list(values: Iterable[str] | None) -> tuple[str, ...]:
    """Values given repeated and/or comma- or space-separated, once each, in order."""
    out: list[str] = []
    for v in values or ():
        out.extend(v.replace(",", " ").split())
    return tuple(dict.fromkeys(out))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))

"""``robeing roles``: the role table — priorities, responsibilities, capabilities, task types.

Also the text ``robeing agent --role X --help`` ends with (:func:`role_text`)
and the :class:`RoleHelpCommand` that puts it there.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ...protocol.roles import AGENT_ROLES, ROLES, TYPE_CAPABILITY, Role
from .options import json_option


def default_task_types(role: str) -> list[str]:
    """The built-in task types an agent of ``role`` offers (before its app's own)."""
    from ..tasking.analysis_tasks import tasks as analysis
    from ..tasking.builtin_tasks import tasks as builtin

    if role in ("coordinator", "guardian", "client"):
        return []  # the coordinator places tasks on specialists, workers and messengers only
    types = set(builtin.tasks)
    if role == "specialist":
        types |= set(analysis.tasks)
    return sorted(types)


def may_send(role: Role) -> list[str]:
    """The message types (or prefixes) reserved to a permission ``role`` has."""
    return sorted(t for t, cap in TYPE_CAPABILITY.items() if cap in role.capabilities)


def describe_role(name: str) -> dict[str, Any]:
    """One role's row, as data."""
    role = ROLES[name]
    return {
        "role": name,
        "priority": role.priority,
        "responsibilities": dict(role.responsibilities),
        "capabilities": dict(role.abilities),
        "permissions": sorted(role.capabilities),
        "task_types": default_task_types(name),
    }


def role_text(name: str) -> str:
    """What ``robeing agent --role NAME --help`` says about the role."""
    row = describe_role(name)
    lines = [f"Role {name} (priority {row['priority']}; 1 is the most important)", ""]
    lines.append("Responsibilities:")
    lines += [f"  {k}: {v}" for k, v in row["responsibilities"].items()]
    lines.append("Capabilities:")
    lines += [f"  {k}: {v}" for k, v in row["capabilities"].items()]
    lines.append(f"Reserved message types it may send: {', '.join(may_send(ROLES[name]))}")
    if row["task_types"]:
        lines.append(f"Built-in task types: {', '.join(row['task_types'])}")
    return "\n".join(lines)


class RoleHelpCommand(click.Command):
    """A command whose ``--help`` ends with the chosen role's responsibilities.

    ``--role`` must be eager and come before ``--help`` (``--role X --help``),
    or be set in the environment; without it, every role is listed.
    """

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        role = ctx.params.get("role")
        if role is None:  # --help came first, or the role is in the environment
            param = next((p for p in self.params if p.name == "role"), None)
            role = param.resolve_envvar_value(ctx) if param is not None else None
        role = role.lower() if isinstance(role, str) else role
        formatter.write_paragraph()
        if role in ROLES:
            for line in role_text(role).splitlines():
                formatter.write_text(line) if line else formatter.write_paragraph()
        else:
            formatter.write_text(
                "Roles: "
                + ", ".join(f"{n} (priority {ROLES[n].priority})" for n in AGENT_ROLES)
                + ". `robeing agent --role ROLE --help` or `robeing roles` says what each does."
            )


@click.command()
@json_option()
def roles(as_json: bool) -> None:
    """The roles: priority, responsibilities, capabilities and built-in task types."""
    rows = [describe_role(name) for name in AGENT_ROLES]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="robeing roles", title_justify="left", show_lines=True)
    for col in ("role", "priority", "responsibilities", "capabilities", "task types"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["role"],
            str(r["priority"]),
            "\n".join(f"{k}: {v}" for k, v in r["responsibilities"].items()),
            "\n".join(f"{k}: {v}" for k, v in r["capabilities"].items()),
            ", ".join(r["task_types"]) or "-",
        )
    Console(width=160).print(table)

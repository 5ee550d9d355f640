"""`robeing roles` and `robeing agent --role X --help`: what each role is for."""

from __future__ import annotations

import json

from click.testing import CliRunner

from robeing.agents.cli import cli
from robeing.protocol.roles import AGENT_ROLES


def test_roles_lists_every_role_with_priority_responsibilities_capabilities_and_tasks() -> None:
    result = CliRunner().invoke(cli, ["roles", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["role"]: r for r in json.loads(result.output)}
    assert list(rows) == list(AGENT_ROLES)
    assert rows["specialist"]["priority"] == 2
    assert "deep_analysis" in rows["specialist"]["responsibilities"]
    assert "expert_knowledge" in rows["specialist"]["capabilities"]
    assert "describe" in rows["specialist"]["task_types"]
    assert "describe" not in rows["worker"]["task_types"]
    assert "protocol_handling" in rows["messenger"]["capabilities"]


def test_agent_help_describes_the_chosen_role() -> None:
    """Given --role before --help (or AGENT_ROLE), Expect that role's responsibilities;
    without a role, Expect the list of roles with their priorities."""
    out = CliRunner().invoke(cli, ["agent", "--role", "guardian", "--help"]).output
    assert "Role guardian (priority 2" in out and "threat_detection" in out
    env = CliRunner(env={"AGENT_ROLE": "messenger"}).invoke(cli, ["agent", "--help"]).output
    assert "Role messenger (priority 4" in env and "data_transfer" in env
    plain = CliRunner(env={"AGENT_ROLE": None}).invoke(cli, ["agent", "--help"]).output
    assert "worker (priority 3)" in plain

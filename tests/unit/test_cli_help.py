"""The command line documents itself: exit codes in every group's --help, shell completion."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from robeing.agents.cli import cli
from robeing.agents.cli.common import EXIT_CODES


def _groups(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _groups(command, (*path, name))
    return found


@pytest.mark.parametrize("path", _groups(cli), ids=lambda p: " ".join(p) or "robeing")
def test_every_groups_help_ends_with_the_exit_codes(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    tail = result.output[result.output.index("Exit codes:") :]
    for code, _ in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+\S", tail, re.MULTILINE), (code, tail)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_prints_a_script(shell: str) -> None:
    """What the README's completion line runs: click's completion for the robeing program."""
    result = CliRunner().invoke(
        cli, [], prog_name="robeing", env={"_ROBEING_COMPLETE": f"{shell}_source"}
    )
    assert result.exit_code == 0, result.output
    assert "_ROBEING_COMPLETE" in result.output and "robeing" in result.output

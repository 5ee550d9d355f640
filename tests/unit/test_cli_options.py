"""The CLI turns options and environment variables into the agent's Settings.

Compose and Kubernetes run the coordinator as ``robeing agent`` with
``AGENT_ROLE=coordinator``; its options must work there exactly as on
``robeing coordinator``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from robeing.agents.cli import agent as agent_commands
from robeing.agents.cli import cli
from robeing.agents.settings import Settings
from robeing.protocol.pbft import GroupSpec

COORDINATOR_ENV = {
    "ROBEING_ACCEPTABLE_PAUSE": "1.5",
    "ROBEING_DEAD_AFTER": "0.7",
    "ROBEING_MAX_ATTEMPTS": "5",
    "ROBEING_EVENTS_VHOST": "events",
}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings each invocation would have served an agent with."""
    calls: list[Settings] = []
    monkeypatch.setattr(agent_commands, "_serve", lambda common, settings: calls.append(settings))
    return calls


def invoke(args: list[str], env: dict[str, str], tmp_path: Path) -> str:
    result = CliRunner().invoke(
        cli, ["--keys-dir", str(tmp_path), *args], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_agent_role_coordinator_reads_the_coordinator_environment(
    served: list[Settings], tmp_path: Path
) -> None:
    """Given the coordinator's variables, when `robeing agent` runs with
    AGENT_ROLE=coordinator, expect them in its settings."""
    invoke(["agent", "--id", "coord-1"], {"AGENT_ROLE": "coordinator", **COORDINATOR_ENV}, tmp_path)
    (s,) = served
    assert (s.role, s.agent_id) == ("coordinator", "coord-1")
    assert (s.acceptable_pause, s.dead_after, s.max_attempts, s.events_vhost) == (
        1.5,
        0.7,
        5,
        "events",
    )


def test_coordinator_command_takes_the_same_options(served: list[Settings], tmp_path: Path) -> None:
    """Given options on the command line, expect `robeing coordinator` to set them,
    command-line values winning over the environment."""
    invoke(
        [
            "coordinator",
            "--dead-after",
            "0.9",
            "--max-attempts",
            "2",
            "--heartbeat-interval",
            "0.5",
        ],
        COORDINATOR_ENV,
        tmp_path,
    )
    (s,) = served
    assert s.role == "coordinator"
    assert (s.dead_after, s.max_attempts, s.heartbeat_interval) == (0.9, 2, 0.5)
    assert (s.acceptable_pause, s.events_vhost) == (1.5, "events")


def test_defaults_match_the_settings_defaults(served: list[Settings], tmp_path: Path) -> None:
    """Given no option at all, expect the CLI to leave Settings' own defaults."""
    invoke(["agent", "--role", "worker", "--id", "w-1"], {}, tmp_path)
    invoke(["coordinator", "--id", "c-1"], {}, tmp_path)
    reference = Settings(role="coordinator", agent_id="c-1")
    for s in served:
        for name in ("acceptable_pause", "dead_after", "max_attempts", "events_vhost"):
            assert getattr(s, name) == getattr(reference, name), name


def test_both_commands_share_every_coordinator_option() -> None:
    """Expect each coordinator option of `robeing coordinator` on `robeing agent` too."""

    def options(name: str) -> dict[str, tuple[str | None, object]]:
        command = cli.commands[name]
        return {p.name or "": (getattr(p, "envvar", None), p.default) for p in command.params}

    agent, coordinator = options("agent"), options("coordinator")
    shared = {"acceptable_pause", "dead_after", "max_attempts", "events_vhost"}
    assert shared <= set(coordinator)
    for name in shared:
        assert agent[name] == coordinator[name], name


def test_an_invalid_value_is_one_clear_usage_error(tmp_path: Path) -> None:
    """Given --max-attempts 0, expect exit 2 naming the option, no traceback."""
    result = CliRunner().invoke(
        cli,
        ["--keys-dir", str(tmp_path), "agent", "--role", "coordinator", "--max-attempts", "0"],
    )
    assert result.exit_code == 2
    assert "--max-attempts" in result.output
    assert "Traceback" not in result.output


def test_agent_resources_from_option_or_environment(served: list[Settings], tmp_path: Path) -> None:
    """Given --resources or ROBEING_RESOURCES, expect the parsed contribution."""
    from robeing.protocol.resources import Resources

    invoke(
        ["agent", "--role", "worker", "--id", "w-1", "--resources", "cpu=2,memory=1GiB"],
        {},
        tmp_path,
    )
    invoke(
        ["agent", "--role", "worker", "--id", "w-2"], {"ROBEING_RESOURCES": "storage=5GB"}, tmp_path
    )
    invoke(["agent", "--role", "worker", "--id", "w-3"], {}, tmp_path)
    assert [s.resources for s in served] == [
        Resources(cpu=2, memory=2**30),
        Resources(storage=5 * 10**9),
        None,
    ]


def test_bad_resources_are_a_usage_error_naming_the_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--keys-dir", str(tmp_path), "agent", "--role", "worker", "--resources", "gpu=1"],
    )
    assert result.exit_code == 2
    assert "--resources" in result.output and "gpu=1" in result.output


def test_the_probe_listens_as_the_probed_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Given `agent --check --id w-1`, expect the probe's client to be w-1 itself: under
    per-agent broker users only w-1's own login may make queues named after w-1."""
    import robeing.agents.client as client_module

    seen: list[Settings] = []

    class FakeClient:
        def __init__(self, settings: Settings, listen_only: bool = False) -> None:
            seen.append(settings)

        async def __aenter__(self) -> FakeClient:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def live_agents(self, seconds: float) -> dict[str, object]:
            return {"w-1": object()}

    monkeypatch.setattr(client_module, "Client", FakeClient)
    result = CliRunner().invoke(
        cli, ["--keys-dir", str(tmp_path), "agent", "--id", "w-1", "--check"]
    )

    assert result.exit_code == 0, result.output
    assert [(s.role, s.agent_id) for s in seen] == [("client", "w-1")]


# Every option whose value becomes a Settings field, by command path: option → field.
# Written out by hand so the test checks each of them, not whatever it happens to find.
_COORDINATOR = ("acceptable_pause", "dead_after", "max_attempts", "attempt_timeout", "events_vhost")
_CLIENTS = [("send",), ("broadcast",), ("submit",), ("propose",), ("bft", "commit"), ("bft", "log")]
MIRRORED: dict[tuple[str, ...], dict[str, str]] = {
    (): {"amqp_url": "amqp_url", "keys_dir": "keys_dir", "management_url": "management_url"},
    ("agent",): {
        name: name
        for name in (
            "agent_id",
            "specializations",
            "cluster_id",
            "app",
            "concurrency",
            "heartbeat_interval",
            "grace_period",
            "standby",
            "backup_for",
            "resources",
            "state_dir",
            "quarantine_after",
            "verify_rate",
            "http",
            "http_rate",
            "anomaly_factor",
            "anomaly_floor",
            "anomaly_fanout",
            "metrics_port",
            *_COORDINATOR,
        )
    },
    ("coordinator",): {
        name: name
        for name in (
            "agent_id",
            "app",
            "cluster_id",
            "standby",
            "heartbeat_interval",
            "metrics_port",
            *_COORDINATOR,
        )
    },
    **{client: {"as_id": "agent_id"} for client in _CLIENTS},
    ("broker", "users"): {"events_vhost": "events_vhost"},
}

# Options named after a Settings field that deliberately do not take its default.
NOT_MIRRORED: dict[tuple[str, ...], str] = {
    ("agent", "role"): "required (except with --check): there is no default role",
    ("agent", "bft_groups"): "text, parsed into Settings.bft_groups",
    ("submit", "max_attempts"): "per task; unset leaves the coordinator's own",
    ("submit", "resources"): "what a task needs, not what an agent contributes",
    ("keys", "issue", "agent_id"): "required: the identity to issue",
    ("keys", "issue", "role"): "required: the identity's role",
    ("keys", "revoke", "agent_id"): "required: the identity to revoke",
    ("guardian", "quarantine", "agent_id"): "required: the agent to quarantine",
    ("keys", "token", "agent_id"): "required: the client the token speaks for",
    ("guardian", "release", "agent_id"): "required: the agent to release",
    ("broker", "users", "management_url"): "the admin's API; unset falls back to the global one",
    ("broker", "setup", "management_url"): "the admin's API; unset falls back to the global one",
    ("cluster", "leave", "agent_id"): "required: the agent that leaves its cluster",
    ("pool", "request", "resources"): "what a lease asks for, not what an agent contributes",
    ("pool", "contribute", "resources"): "another agent's new contribution, not our own",
    ("pool", "contribute", "agent_id"): "required: the agent whose contribution changes",
}


def commands(
    group: click.Command = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree with its path, the top group first as ``()``."""
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from commands(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> click.Command:
    return dict(commands())[path]


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No option of the CLI is set from the environment."""
    for _, command in commands():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            for name in [envvar] if isinstance(envvar, str) else envvar or []:
                monkeypatch.delenv(name, raising=False)


def unset_values(path: tuple[str, ...]) -> dict[str, object]:
    """What the command at ``path`` gets for each option when none is given."""
    command = command_at(path)
    return command.make_context(" ".join(path) or "robeing", [], resilient_parsing=True).params


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("path", sorted(MIRRORED), ids=lambda p: " ".join(p) or "robeing")
def test_each_mirrored_default_is_the_settings_default(path: tuple[str, ...]) -> None:
    """Given no option and no environment variable, expect every listed option of the command
    to take exactly the default of the Settings field it sets."""
    values = unset_values(path)
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}

    for option, field in MIRRORED[path].items():
        assert option in values, f"{' '.join(path)}: no option {option!r}"
        assert values[option] == defaults[field], f"{' '.join(path)} {option} ≠ Settings.{field}"


@pytest.mark.usefixtures("no_env")
def test_the_bft_timeout_default_is_the_groups_default() -> None:
    """Expect `robeing agent --bft-timeout` to default to GroupSpec's view-change timeout."""
    (field,) = (f for f in dataclasses.fields(GroupSpec) if f.name == "view_change_timeout")

    assert unset_values(("agent",))["bft_timeout"] == field.default


def test_every_option_named_after_a_settings_field_is_classified() -> None:
    """Given any option of any command named like a Settings field, expect it listed as
    mirroring that field or as deliberately not, so a new one cannot slip past the test above."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    unlisted = [
        (*path, param.name)
        for path, command in commands()
        for param in command.params
        if param.name in fields
        and param.name not in MIRRORED.get(path, {})
        and (*path, param.name) not in NOT_MIRRORED
    ]

    assert unlisted == []

"""Settings from the environment: the same variables for Python programs as for the CLI,
and the original deployment's values (issue: a newcomer's first run)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from robeing.agents import Client
from robeing.agents.cli import agent as agent_commands
from robeing.agents.cli import cli
from robeing.agents.keystore import Keystore
from robeing.agents.settings import ENVIRONMENT, Settings
from robeing.protocol.errors import ConfigError
from robeing.protocol.resources import Resources

# CLI variables that set no Settings field of an agent (what they set instead).
NOT_SETTINGS = {
    "ROBEING_LOG_LEVEL": "logging",
    "ROBEING_LOG_FORMAT": "logging",
    "ROBEING_BFT_TIMEOUT": "each PBFT group's view-change timeout",
    "ROBEING_CLIENT_ID": "a client's id (read by from_env for role client)",
    "ROBEING_LOOP": "the event loop a process runs on (robeing.agents.loop), not a setting",
}


def cli_variables(command: click.Command, parents: tuple[click.Command, ...] = ()) -> set[str]:
    out: set[str] = set()
    for c in (*parents, command):
        for param in c.params:
            envvar = getattr(param, "envvar", None)
            out |= {envvar} if isinstance(envvar, str) else set(envvar or ())
    return out


def test_from_env_reads_every_variable_the_agent_commands_read() -> None:
    """Expect the variables of `robeing agent` and `robeing coordinator` (and the global
    options) to be exactly those Settings.from_env reads, but for the few that set no field."""
    read = cli_variables(cli.commands["agent"], (cli,)) | cli_variables(
        cli.commands["coordinator"], (cli,)
    )
    assert read - set(NOT_SETTINGS) == set(ENVIRONMENT)


def test_from_env_builds_the_settings_the_cli_would() -> None:
    """Given the seed's and robeing's variables, Expect each in its field (role in any case)."""
    env = {
        "AMQP_URL": "amqp://u:p@rabbit:5672/prod",
        "ROBEING_KEYS": "/keys",
        "AGENT_ROLE": "WORKER",
        "AGENT_ID": "w-7",
        "SPECIALIZATION": "data_processing, analysis",
        "CLUSTER_ID": "c1",
        "ROBEING_RESOURCES": "cpu=2",
        "ROBEING_STANDBY": "true",
        "ROBEING_METRICS_PORT": "9400",
    }
    s = Settings.from_env(env)
    assert (s.amqp_url, s.keys_dir, s.role, s.agent_id) == (
        "amqp://u:p@rabbit:5672/prod",
        Path("/keys"),
        "worker",
        "w-7",
    )
    assert s.specializations == ("data_processing", "analysis") and s.cluster_id == "c1"
    assert (s.resources, s.standby, s.metrics_port) == (Resources(cpu=2), True, 9400)
    assert Settings.from_env({"ROLE": "COORDINATOR"}).role == "coordinator"
    client = Settings.from_env({**env, "ROBEING_CLIENT_ID": "me"}, role="client")
    assert (client.role, client.agent_id, client.amqp_url) == ("client", "me", env["AMQP_URL"])


def test_a_bad_variable_is_one_clear_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="ROBEING_CONCURRENCY='lots'"):
        Settings.from_env({"ROBEING_CONCURRENCY": "lots"})
    with pytest.raises(ConfigError, match="separates several URLs with ',', not ';'"):
        Settings.from_env({"AMQP_URL": "amqp://a:5672/;amqp://b:5672/"})


def test_a_client_without_settings_uses_amqp_url_and_robeing_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Given AMQP_URL and ROBEING_KEYS, When a Client is made without settings, Expect both."""
    Keystore(tmp_path).init()
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@rabbit.example:5672/v1")
    monkeypatch.setenv("ROBEING_KEYS", str(tmp_path))
    monkeypatch.setenv("ROBEING_CLIENT_ID", "py-client")
    client = Client()
    assert client.settings.amqp_url == "amqp://guest:guest@rabbit.example:5672/v1"
    assert (client.settings.keys_dir, client.settings.agent_id) == (tmp_path, "py-client")


@pytest.mark.parametrize(
    ("env", "role"),
    [
        ({"AGENT_ROLE": "WORKER"}, "worker"),
        ({"ROLE": "COORDINATOR", "AGENT_COUNT": "5"}, "coordinator"),
    ],
)
def test_the_original_deployments_values_start_an_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], role: str
) -> None:
    """Given the original Compose file's variables (upper-case roles, ROLE, COORDINATOR_URL,
    AGENT_COUNT), When `robeing agent` runs, Expect an agent of that role."""
    served: list[Settings] = []
    monkeypatch.setattr(agent_commands, "_serve", lambda common, settings: served.append(settings))
    full = {
        "SPECIALIZATION": "data_processing",
        "COORDINATOR_URL": "http://coordinator:8080",
        **env,
    }
    result = CliRunner().invoke(cli, ["--keys-dir", str(tmp_path), "agent"], env=full)
    assert result.exit_code == 0, result.output
    assert [s.role for s in served] == [role]


def test_the_coordinator_reads_its_cluster_and_standby(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served: list[Settings] = []
    monkeypatch.setattr(agent_commands, "_serve", lambda common, settings: served.append(settings))
    env = {"CLUSTER_ID": "default"}
    result = CliRunner().invoke(
        cli, ["--keys-dir", str(tmp_path), "coordinator", "--standby"], env=env
    )
    assert result.exit_code == 0, result.output
    assert [(s.cluster_id, s.standby) for s in served] == [("default", True)]


@pytest.mark.parametrize(
    ("argv", "env", "error"),
    [
        # A coordinator in cluster c2 would take the one lock and lead everyone.
        (["coordinator"], {"CLUSTER_ID": "c2"}, "leads the default cluster, not 'c2'"),
        (["agent", "--role", "worker", "--cluster-id", "a.b"], {}, "invalid cluster name 'a.b'"),
    ],
)
def test_a_cluster_id_an_agent_cannot_have_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    error: str,
) -> None:
    """Given a cluster id the agent may not have, When it starts,
    Expect a usage error saying why, and nothing served."""
    served: list[Settings] = []
    monkeypatch.setattr(agent_commands, "_serve", lambda common, settings: served.append(settings))
    result = CliRunner().invoke(cli, ["--keys-dir", str(tmp_path), *argv], env=env)
    assert result.exit_code == 2
    assert error in result.output
    assert served == []

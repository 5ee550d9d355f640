"""Specification of ``robeing broker users`` without a broker (printing definitions).

Applying them (``--apply``) and ``broker setup`` talk to the management API and
are specified in tests/integration/test_broker_users.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from robeing.agents.cli import cli
from robeing.agents.keystore import Keystore


@pytest.fixture
def keys(tmp_path: Path) -> Keystore:
    """An authority with a coordinator, a worker, a client, and a revoked worker."""
    store = Keystore(tmp_path / "keys")
    store.init()
    for agent_id, role in [
        ("coordinator-1", "coordinator"),
        ("worker-1", "worker"),
        ("worker-2", "worker"),
        ("cli-host", "client"),
    ]:
        store.issue(agent_id, role)
    store.revoke("worker-2")
    return store


def broker_users(keys: Keystore, *args: str, url: str = "amqp://rabbit:5672/prod") -> Result:
    return CliRunner().invoke(
        cli, ["--keys-dir", str(keys.root), "--amqp-url", url, "broker", "users", *args]
    )


def test_definitions_have_a_user_per_identity_and_no_password(keys: Keystore) -> None:
    """Given three live identities and a revoked one, When definitions are printed,
    Expect a user for each live identity (none for the revoked), passwords made in
    the keys directory, and no password in the output."""
    result = broker_users(keys)

    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [u["name"] for u in doc["users"]] == ["cli-host", "coordinator-1", "worker-1"]
    assert {p["vhost"] for p in doc["permissions"]} == {"prod", "/"}
    for name in ("cli-host", "coordinator-1", "worker-1"):
        password = keys.broker_password(name)
        assert password is not None and password not in result.output
    assert keys.broker_password("worker-2") is None


def test_the_admin_is_in_the_definitions_only_when_named(keys: Keystore) -> None:
    """Given --admin-url with a password, Expect that admin with full permissions; given
    only an AMQP_URL with a login, Expect no admin (guest must not become one at boot)."""
    result = broker_users(keys, "--admin-url", "amqp://ops:s3cret@rabbit/")
    plain = broker_users(keys, url="amqp://guest:guest@rabbit/prod")

    doc = json.loads(result.output)
    admin = next(u for u in doc["users"] if u["name"] == "ops")
    assert admin["tags"] == ["administrator"]
    assert "s3cret" not in result.output
    assert "guest" not in [u["name"] for u in json.loads(plain.output)["users"]]


def test_out_writes_a_private_file_and_reports_the_passwords_it_made(
    keys: Keystore, tmp_path: Path
) -> None:
    out = tmp_path / "users.json"

    first = broker_users(keys, "--out", str(out), "--json")
    second = broker_users(keys, "--out", str(out), "--json")

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["users"]
    made = {r["user"]: r["password"] for r in json.loads(first.output)["users"]}
    kept = {r["user"]: r["password"] for r in json.loads(second.output)["users"]}
    assert set(made.values()) == {"created"} and set(kept.values()) == {"kept"}


def test_a_pool_gets_one_user(keys: Keystore) -> None:
    result = broker_users(keys, "--pool", "worker=wk-", "--events-vhost", "events")

    doc = json.loads(result.output)
    assert "pool.wk" in [u["name"] for u in doc["users"]]
    assert {p["vhost"] for p in doc["permissions"]} == {"prod", "events"}
    assert keys.broker_password("pool.wk") is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pool", "worker=worker-"], "covers the agent 'worker-1'"),
        (["--pool", "worker"], "expected ROLE=PREFIX"),
    ],
)
def test_configuration_errors_are_one_line_and_exit_2(
    keys: Keystore, args: list[str], message: str
) -> None:
    result = broker_users(keys, *args)

    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_no_identities_says_what_to_run(tmp_path: Path) -> None:
    store = Keystore(tmp_path / "empty")
    store.init()

    result = broker_users(store)

    assert result.exit_code == 2
    assert "robeing keys issue" in result.output


def test_keys_issue_help_mentions_the_broker_user() -> None:
    result = CliRunner().invoke(cli, ["keys", "issue", "--help"])
    assert "robeing broker users" in result.output

"""Specification of typed settings and of the keys directory (``robeing keys …``)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from robeing.agents.keystore import Keystore
from robeing.agents.settings import Settings, check_agent_id, default_agent_id
from robeing.protocol.errors import ConfigError
from robeing.protocol.identity import Identity


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def empty_store(tmp_path: Path) -> Keystore:
    """A keys directory with nothing in it."""
    return Keystore(tmp_path / "keys")


@pytest.fixture
def store(empty_store: Keystore) -> Keystore:
    """A keys directory with a fresh authority."""
    empty_store.init()
    return empty_store


@pytest.fixture
def agent_only_store(store: Keystore, tmp_path: Path) -> Keystore:
    """A copy of ``store`` without the authority's private key (a production agent's view)."""
    root = tmp_path / "agent-keys"
    shutil.copytree(store.root, root)
    (root / "authority.key").unlink()
    return Keystore(root)


# -- settings ---------------------------------------------------------------------


def test_settings_defaults() -> None:
    """Given no arguments, Expect a worker with a generated id on the default local broker."""
    s = Settings()

    assert s.role == "worker"
    assert s.agent_id == default_agent_id("worker")
    assert s.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert s.auto_issue is True


def test_default_agent_id_is_role_host_pid() -> None:
    """Expect the default id to be <role>-<short host>-<pid>, itself a valid id."""
    host = socket.gethostname().split(".")[0] or "host"

    assert default_agent_id("guardian") == f"guardian-{host}-{os.getpid()}"
    assert check_agent_id(default_agent_id("guardian"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "wizard"}, "unknown role 'wizard'; choose one of coordinator"),
        ({"agent_id": "has space"}, "invalid agent id 'has space'"),
        ({"agent_id": "*"}, "invalid agent id '*'"),
        ({"agent_id": "-leading-dash"}, "invalid agent id"),
        ({"agent_id": "x" * 129}, "max 128"),
        ({"agent_id": "a/b"}, "invalid agent id"),
        ({"heartbeat_interval": 0}, "heartbeat interval must be positive"),
        ({"heartbeat_interval": -1.0}, "heartbeat interval must be positive"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"amqp_url": "http://localhost:15672/"}, "AMQP_URL must start with amqp://"),
        ({"amqp_url": "localhost"}, "AMQP_URL must start with amqp://"),
        ({"specializations": ("ok", "not ok")}, "invalid specialization 'not ok'"),
    ],
)
def test_invalid_settings_raise_config_error_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    """Given an invalid setting, When building Settings, Expect ConfigError saying what is
    wrong and, where it helps, what is allowed."""
    with pytest.raises(ConfigError) as exc:
        Settings(**kwargs)

    assert message in str(exc.value)


@pytest.mark.parametrize("agent_id", ["w1", "worker-host-1234", "a.b:c_d-e", "X" * 128])
def test_valid_agent_ids(agent_id: str) -> None:
    """Given ids of letters, digits, '_', '.', ':' and '-' up to 128 chars, Expect them accepted."""
    assert check_agent_id(agent_id) == agent_id
    assert Settings(agent_id=agent_id).agent_id == agent_id


def test_client_role_is_accepted_for_submitters() -> None:
    """Given role 'client' (the CLI and Python submitters), Expect valid settings."""
    assert Settings(role="client", agent_id="cli-1").role == "client"


def test_amqps_urls_are_accepted() -> None:
    """Given an amqps:// URL, Expect it accepted."""
    assert Settings(amqp_url="amqps://u:p@broker:5671/prod").amqp_url.startswith("amqps://")


def test_connection_name_is_readable() -> None:
    """Expect the connection name to show role, id, specializations and cluster."""
    s = Settings(role="specialist", agent_id="s1", specializations=("nlp", "vision"))

    assert s.connection_name == "robeing specialist s1 [nlp,vision] cluster=default vhost=/"
    assert "[-]" in Settings(agent_id="w").connection_name


# -- keystore: authority ----------------------------------------------------------


def test_init_creates_the_authority(empty_store: Keystore) -> None:
    """Given an empty directory, When init runs, Expect the public key returned and written,
    the private key written with mode 0600, and an empty signed revocation list."""
    pub = empty_store.init()

    assert empty_store.authority_pub.read_text() == pub.hex()
    assert bytes(empty_store.authority().verify_key) == pub
    assert mode(empty_store.authority_key) == 0o600
    assert empty_store.revocations().version == 0
    assert empty_store.cluster_key() is None


def test_init_refuses_to_replace_an_authority(store: Keystore) -> None:
    """Given an existing authority, When init runs again, Expect ConfigError pointing at --force;
    with force, Expect a new authority."""
    before = store.authority_pub.read_text()

    with pytest.raises(ConfigError, match="--force"):
        store.init()
    assert store.authority_pub.read_text() == before

    store.init(force=True)
    assert store.authority_pub.read_text() != before


def test_init_with_cluster_key(empty_store: Keystore) -> None:
    """Given init with a cluster key, Expect a 32-byte key readable back, stored with mode 0600."""
    empty_store.init(cluster_key=True)

    key = empty_store.cluster_key()
    assert key is not None and len(key) == 32
    assert mode(empty_store.cluster_key_path) == 0o600


def test_cluster_key_of_the_wrong_size_is_refused(store: Keystore) -> None:
    """Given a cluster key file holding 16 bytes, When read, Expect ConfigError."""
    store.cluster_key_path.write_text("00" * 16)

    with pytest.raises(ConfigError, match="32 bytes"):
        store.cluster_key()


def test_missing_authority_says_what_to_run(empty_store: Keystore) -> None:
    """Given no authority, When anything needs it, Expect ConfigError telling to run keys init."""
    with pytest.raises(ConfigError, match="robeing keys init"):
        empty_store.authority()
    with pytest.raises(ConfigError, match="robeing keys init"):
        empty_store.authority_verify_key()
    with pytest.raises(ConfigError, match="robeing keys init"):
        empty_store.issue("w1", "worker")


def test_corrupt_authority_files_are_config_errors(store: Keystore) -> None:
    """Given authority files that are not hex, When read, Expect ConfigError naming the file."""
    store.authority_key.write_text("not hex")
    store.authority_pub.write_text("zz")

    with pytest.raises(ConfigError, match=r"authority\.key"):
        store.authority()
    with pytest.raises(ConfigError, match=r"authority\.pub"):
        store.authority_verify_key()


# -- keystore: agents -------------------------------------------------------------


def test_issue_writes_key_and_certificate(store: Keystore) -> None:
    """Given an authority, When an identity is issued, Expect the key file with mode 0600,
    the certificate verifying against the authority, and load_identity returning the same."""
    ident = store.issue("w1", "worker", ttl=3600)

    key_file = store.root / "agents" / "w1.key"
    assert mode(key_file) == 0o600
    assert (store.root / "agents" / "w1.cert").read_bytes() == ident.certificate.raw
    loaded = store.load_identity("w1", "worker", auto_issue=False)
    assert loaded.certificate == ident.certificate
    assert bytes(loaded.signing_key) == bytes(ident.signing_key)
    assert store.peer_certificate("w1") == ident.certificate.raw


def test_issue_refuses_invalid_ids(store: Keystore) -> None:
    """Given an id with a path separator, When issuing, Expect ConfigError and nothing written
    outside the agents directory."""
    with pytest.raises(ConfigError, match="invalid agent id"):
        store.issue("../evil", "worker")
    assert not (store.root / "evil.key").exists()


def test_rewritten_secret_is_mode_0600_even_if_the_file_was_looser(store: Keystore) -> None:
    """Given an agent key file whose mode was loosened to 0644, When the identity is issued
    again, Expect the new secret written with mode 0600."""
    store.issue("w1", "worker")
    key_file = store.root / "agents" / "w1.key"
    key_file.chmod(0o644)

    store.issue("w1", "worker")

    assert mode(key_file) == 0o600


def test_load_identity_auto_issues_where_the_authority_key_is(store: Keystore) -> None:
    """Given no identity for w1 but the authority key at hand, When loaded with auto_issue,
    Expect a new identity issued and written."""
    ident = store.load_identity("w1", "worker")

    assert isinstance(ident, Identity)
    assert (ident.agent_id, ident.role) == ("w1", "worker")
    assert (store.root / "agents" / "w1.cert").exists()


def test_load_identity_without_auto_issue_says_what_to_run(store: Keystore) -> None:
    """Given no identity and auto_issue off, When loaded, Expect ConfigError with the exact
    keys issue command."""
    with pytest.raises(ConfigError, match="robeing keys issue --id w1 --role worker"):
        store.load_identity("w1", "worker", auto_issue=False)


def test_load_identity_cannot_auto_issue_without_the_authority_key(
    agent_only_store: Keystore,
) -> None:
    """Given a keys dir without the authority's private key, When an unknown identity is
    loaded, Expect ConfigError with the command to run where the authority lives."""
    with pytest.raises(ConfigError, match="robeing keys issue --id w9 --role worker"):
        agent_only_store.load_identity("w9", "worker")


def test_role_mismatch_is_refused_without_the_authority(
    store: Keystore, agent_only_store: Keystore
) -> None:
    """Given w1 certified as worker, When loaded as guardian where no authority key is at hand,
    Expect ConfigError naming both roles."""
    ident = store.issue("w1", "worker")
    shutil.copytree(store.root / "agents", agent_only_store.root / "agents", dirs_exist_ok=True)

    with pytest.raises(ConfigError, match="certified as 'worker', not 'guardian'"):
        agent_only_store.load_identity("w1", "guardian")
    with pytest.raises(ConfigError, match="certified as 'worker', not 'guardian'"):
        store.load_identity("w1", "guardian", auto_issue=False)
    assert agent_only_store.load_identity("w1", "worker").certificate == ident.certificate


def test_role_mismatch_is_reissued_with_auto_issue(store: Keystore) -> None:
    """Given w1 certified as worker and the authority at hand, When loaded as guardian with
    auto_issue, Expect a fresh guardian identity."""
    store.issue("w1", "worker")

    ident = store.load_identity("w1", "guardian")

    assert ident.role == "guardian"
    assert store.load_identity("w1", "guardian", auto_issue=False).role == "guardian"


def write_expired_identity(store: Keystore, agent_id: str, role: str) -> Identity:
    key = nacl.signing.SigningKey.generate()
    cert = store.authority().issue(agent_id, role, bytes(key.verify_key), time.time() - 100, 10)
    agents = store.root / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / f"{agent_id}.key").write_text(key.encode().hex())
    (agents / f"{agent_id}.cert").write_bytes(cert.raw)
    return Identity(key, cert)


def test_expired_identity(store: Keystore) -> None:
    """Given w1's certificate expired, When loaded without auto_issue, Expect ConfigError saying
    so; with auto_issue, Expect a new valid certificate."""
    old = write_expired_identity(store, "w1", "worker")

    with pytest.raises(ConfigError, match="expired"):
        store.load_identity("w1", "worker", auto_issue=False)
    fresh = store.load_identity("w1", "worker")
    assert fresh.certificate.serial != old.certificate.serial
    assert fresh.certificate.expires_at > time.time()


def test_corrupt_identity_files_are_config_errors(store: Keystore) -> None:
    """Given a key file that is not hex, or a certificate that does not verify, When loaded,
    Expect ConfigError saying the identity files are invalid."""
    store.issue("w1", "worker")
    store.issue("w2", "worker")
    (store.root / "agents" / "w1.key").write_text("nonsense")
    cert = bytearray((store.root / "agents" / "w2.cert").read_bytes())
    cert[-1] ^= 1
    (store.root / "agents" / "w2.cert").write_bytes(bytes(cert))

    for agent_id in ("w1", "w2"):
        with pytest.raises(ConfigError, match="invalid"):
            store.load_identity(agent_id, "worker", auto_issue=False)


def test_key_that_does_not_match_the_certificate(store: Keystore) -> None:
    """Given w1's key file replaced by w2's key, When w1 is loaded, Expect ConfigError."""
    store.issue("w1", "worker")
    store.issue("w2", "worker")
    shutil.copy(store.root / "agents" / "w2.key", store.root / "agents" / "w1.key")

    with pytest.raises(ConfigError):
        store.load_identity("w1", "worker", auto_issue=False)


# -- keystore: revocation and listing --------------------------------------------------


def test_revoke_grows_the_signed_list(store: Keystore) -> None:
    """Given w1 and w2 issued, When both are revoked one after the other, Expect versions 1 and 2,
    both ids listed, and a trust store that refuses them."""
    w1 = store.issue("w1", "worker")
    store.issue("w3", "worker")

    assert store.revoke("w1").version == 1
    crl = store.revoke("w2")

    assert crl.version == 2
    assert crl.agent_ids == {"w1", "w2"}
    assert store.revocations() == crl
    trust = store.trust_store()
    assert trust.revocations.version == 2
    assert trust.revocations.revokes(w1.certificate)


def test_revoke_needs_the_authority_and_a_valid_id(
    store: Keystore, agent_only_store: Keystore
) -> None:
    """Given no authority key, When revoking, Expect ConfigError; given an invalid id,
    Expect ConfigError."""
    with pytest.raises(ConfigError, match="no authority key"):
        agent_only_store.revoke("w1")
    with pytest.raises(ConfigError, match="invalid agent id"):
        store.revoke("bad id")


def test_forged_revocation_file_is_a_config_error(store: Keystore) -> None:
    """Given a revocation file that does not verify, When read, Expect ConfigError naming it."""
    raw = bytearray(store.crl_path.read_bytes())
    raw[0] ^= 1
    store.crl_path.write_bytes(bytes(raw))

    with pytest.raises(ConfigError, match=r"revoked\.crl"):
        store.revocations()


def test_missing_revocation_file_means_nothing_revoked(store: Keystore) -> None:
    """Given no revocation file, Expect an empty list (version 0)."""
    store.crl_path.unlink()

    assert store.revocations().version == 0


def test_list_agents_shows_issued_ids_sorted_and_skips_foreign_files(store: Keystore) -> None:
    """Given identities issued for b and a and a certificate file that does not verify,
    When listed, Expect a and b in order with their roles, and the bad file skipped."""
    store.issue("b", "guardian")
    store.issue("a", "worker")
    (store.root / "agents" / "zz.cert").write_bytes(b"\x00" * 100)

    listed = [(c.agent_id, c.role) for c in store.list_agents()]

    assert listed == [("a", "worker"), ("b", "guardian")]


def test_list_agents_of_an_empty_store(store: Keystore) -> None:
    """Given an authority and no agents, Expect an empty list."""
    assert store.list_agents() == []


def test_peer_certificate_of_unknown_or_invalid_id(store: Keystore) -> None:
    """Given no such agent, or an invalid id, Expect None rather than an error."""
    assert store.peer_certificate("ghost") is None
    assert store.peer_certificate("bad id") is None


# -- broker passwords and the login an agent connects with -------------------------


def test_a_broker_password_is_made_once_private_and_never_replaced(store: Keystore) -> None:
    """Given no password for worker-1, When ensured twice, Expect one random password in
    broker/worker-1.password, mode 0600, made the first time and kept the second."""
    first, made = store.ensure_broker_password("worker-1")
    again, made_again = store.ensure_broker_password("worker-1")

    assert (made, made_again) == (True, False)
    assert first == again and len(first) >= 40
    path = store.root / "broker" / "worker-1.password"
    assert mode(path) == 0o600
    assert store.ensure_broker_password("worker-2")[0] != first


def test_an_empty_password_file_is_a_config_error(store: Keystore) -> None:
    path = store.broker_password_path("worker-1")
    path.parent.mkdir(parents=True)
    path.write_text("\n")

    with pytest.raises(ConfigError, match="empty"):
        store.broker_password("worker-1")


@pytest.mark.parametrize(
    "url, expect",
    [
        # a URL that names a user is used as given
        ("amqp://guest:guest@rabbit:5672/prod", "amqp://guest:guest@rabbit:5672/prod"),
        ("amqp://someone@rabbit/", "amqp://someone@rabbit/"),
        # no user: the agent logs in as itself
        ("amqp://rabbit:5672/prod", "amqp://node%3A1:PW@rabbit:5672/prod"),
    ],
)
def test_broker_url_uses_the_agents_own_login_only_when_the_url_names_none(
    store: Keystore, url: str, expect: str
) -> None:
    password, _ = store.ensure_broker_password("node:1")

    assert store.broker_url(url, "node:1") == expect.replace("PW", password)


def test_broker_url_without_a_password_file_is_the_url_as_given(store: Keystore) -> None:
    assert store.broker_url("amqp://rabbit/", "worker-1") == "amqp://rabbit/"


def test_settings_with_the_broker_login_and_errors_without_the_password(store: Keystore) -> None:
    """Given worker-1's password and an AMQP_URL without a user, Expect its settings to
    log in as worker-1, and the broker's error messages to leave the password out."""
    from robeing.broker.addresses import safe as _safe

    password, _ = store.ensure_broker_password("worker-1")
    settings = Settings(agent_id="worker-1", amqp_url="amqp://rabbit/prod", keys_dir=store.root)

    url = store.with_broker_login(settings).amqp_url

    assert url == f"amqp://worker-1:{password}@rabbit/prod"
    assert password not in _safe(url) and "worker-1@rabbit" in _safe(url)
    other = Settings(agent_id="worker-2", amqp_url="amqp://rabbit/prod", keys_dir=store.root)
    assert store.with_broker_login(other) is other


def test_an_agent_connects_with_its_own_login(store: Keystore) -> None:
    """Given worker-1's identity and broker password and an AMQP_URL without a user,
    When the runtime is built from settings, Expect its transport to log in as worker-1."""
    from robeing.agents.assembly import runtime_from_keys

    store.issue("worker-1", "worker")
    password, _ = store.ensure_broker_password("worker-1")

    agent = runtime_from_keys(
        Settings(agent_id="worker-1", amqp_url="amqp://rabbit:5672/prod", keys_dir=store.root)
    )

    assert agent.transport.url == f"amqp://worker-1:{password}@rabbit:5672/prod"  # type: ignore[attr-defined]

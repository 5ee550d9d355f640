"""One fleet per setup, each in a vhost of its own, for the adversarial suite.

``least_privilege``
    ``robeing broker setup`` and ``robeing broker users --apply`` have run (as
    the CLI, with the guest login as the admin); every agent and honest client
    connects with an ``AMQP_URL`` that names no user, so it logs in as itself
    with the password in the keys directory. The attacker holds the broker
    login of one compromised agent: a worker's (``mallory``) or a client's
    (``mallory-c``); which one each test says.
``default``
    Everyone, attacker included, on the shared ``guest`` login.

Each fleet is a coordinator, two workers and a guardian (real ``robeing``
processes running ``apps.adversarial_app``), started once per setup and
checked healthy before every test; a test that breaks a member restarts it.
The test's own observers (the heartbeat watcher, queue depths, a tap on the
dead-letter exchange) use the guest login in both setups: they are the
operator's eyes, not the attacker's.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from agentproc import HeartbeatWatcher

from robeing.agents.keystore import Keystore
from robeing.broker.management import Management, with_vhost

from .setups import FLEET, ROLES, SETUPS, Fleet, cli


# Package scope: the fleets stop when this folder's tests are done, not at the session's end.
@pytest.fixture(scope="package", params=SETUPS)
async def fleet_of_setup(
    request: pytest.FixtureRequest,
    broker_url: str,
    management: Management,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    setup: str = request.param
    tag = uuid.uuid4().hex[:6]
    vhost = f"robeing-adv-{setup.replace('_', '-')}-{tag}"
    ids = {who: f"adv{tag}-{who}" for who in ROLES}
    root = tmp_path_factory.mktemp(f"adv-{setup}")
    keys = Keystore(root / "keys")
    keys.init()
    for who, role in ROLES.items():
        keys.issue(ids[who], role)
    admin_url = with_vhost(broker_url, vhost)
    bare = with_vhost("amqp://127.0.0.1:5672/", vhost)
    await management.create_vhost(vhost)
    out, logs = root / "out", root / "logs"
    out.mkdir()
    logs.mkdir()
    watcher = HeartbeatWatcher(admin_url, keys.root)
    fleet = Fleet(
        setup=setup,
        vhost=vhost,
        agent_url=bare if setup == "least_privilege" else admin_url,
        admin_url=admin_url,
        keys=keys,
        ids=ids,
        watcher=watcher,
        management=management,
        log_dir=logs,
        out=out,
    )
    try:
        if fleet.least_privilege:
            cli(keys, bare, admin_url, "broker", "setup")
            cli(keys, bare, admin_url, "broker", "users", "--apply")
        await watcher.start()
        await fleet.start("coordinator")
        await fleet.wait_serving("coordinator")
        for who in FLEET[1:]:
            await fleet.start(who)
        await fleet.healthy()
        yield fleet
    finally:
        for who in list(fleet.procs):
            fleet.procs.pop(who).kill_sync()
        with contextlib.suppress(Exception):
            await watcher.stop()
        await management.delete_vhost(vhost)
        if setup == "least_privilege":
            for name in ids.values():
                await management.delete_user(name)


@pytest.fixture
async def fleet(fleet_of_setup: Fleet) -> Fleet:
    """The fleet of the setup under test, healthy."""
    await fleet_of_setup.healthy()
    return fleet_of_setup


# -- findings: attack -> setup -> who refused -> what the attacker observed ----------------

FINDINGS: list[dict[str, str]] = []
REPORT = Path("bench-results/adversarial.json")


@pytest.fixture
def finding(request: pytest.FixtureRequest, fleet_of_setup: Fleet) -> Callable[..., None]:
    """Record one row of the suite's report (printed at the end, and in ``bench-results/``)."""

    def record(attack: str, refused_by: str, observed: str) -> None:
        FINDINGS.append(
            {
                "attack": attack,
                "setup": fleet_of_setup.setup,
                "refused_by": refused_by,
                "observed": observed,
                "test": request.node.name,
            }
        )

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FINDINGS:
        return
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(FINDINGS, indent=2))
    terminalreporter.section("adversarial findings")
    for row in sorted(FINDINGS, key=lambda r: (r["attack"], r["setup"])):
        terminalreporter.write_line(
            f"{row['attack']} | {row['setup']} | {row['refused_by']} | {row['observed']}"
        )

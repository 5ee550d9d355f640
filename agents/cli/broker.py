"""``robeing broker``: least privilege on the broker (DESIGN §8).

``users`` makes one broker user per identity issued in the keys directory
(and one per role pool), each with a random password kept in
``<keys>/broker/<user>.password``, and prints the RabbitMQ definitions or,
with ``--apply``, creates the users through the management API. ``setup``
declares the shared topology in a fresh vhost, as the definitions do. The
rules are :mod:`robeing.broker.permissions`; ``deploy/README.md`` has them
as a table per role.

Both log in to the management API as the admin named by ``--admin-url``
(default: ``AMQP_URL``). Exit codes as for every verb: 2 for configuration
(no authority, a bad pool), 3 when the management API is unreachable or
refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import click

from ...broker import topology as topo
from ...broker.management import Management, ManagementSettings, vhost_of
from ...broker.permissions import (
    AGENT_TAG,
    BrokerUser,
    Pool,
    definitions,
    hash_password,
    plan_users,
)
from ...protocol.errors import ConfigError
from ..keystore import Keystore
from ..settings import Settings
from .common import Common, emit_json, pass_common, run
from .options import admin_url_option, default_of, env_option, json_option, stack

F = TypeVar("F", bound=Callable[..., Any])


def admin_options() -> Callable[[F], F]:
    return stack(
        admin_url_option(
            "AMQP URL with the broker admin's user and password (default: AMQP_URL); "
            "the management API is on its host, port 15672."
        ),
        env_option(
            "--management-url",
            envvar="ROBEING_MANAGEMENT_URL",
            default=None,
            help="Where the management API is (comma-separated for a cluster), "
            "if not http://<each admin host>:15672.",
        ),
    )


def _management(admin_url: str, management_url: str | None) -> Management:
    return Management(ManagementSettings.from_amqp_url(admin_url, override=management_url))


@click.group()
def broker() -> None:
    """Broker users with least privilege, and the shared topology."""


@broker.command("users")
@click.option(
    "--apply",
    is_flag=True,
    help="Create or update the users through the management API (and delete those of "
    "revoked identities) instead of printing definitions.",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="ROLE=PREFIX",
    help="One user for every agent of ROLE whose id starts with PREFIX, for ids not known "
    "in advance (pods of a Deployment); repeatable. Its members can read each other's queues.",
)
@env_option(
    "--events-vhost",
    envvar="ROBEING_EVENTS_VHOST",
    default=default_of(Settings, "events_vhost"),
    show_default=True,
    help="Vhost of the broker's event exchange, where coordinators watch connections.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the definitions to this file (mode 0600) instead of printing them.",
)
@json_option()
@admin_options()
@pass_common
def users(
    common: Common,
    apply: bool,
    pools: tuple[str, ...],
    events_vhost: str,
    out: Path | None,
    as_json: bool,
    admin_url: str | None,
    management_url: str | None,
) -> None:
    """Make a broker user for every identity issued in the keys directory.

    Each agent then logs in as itself (user = its id; password in
    <keys>/broker/<id>.password, made here when missing and never replaced)
    and may touch only what it owns. Without --apply, prints RabbitMQ
    definitions to import (users, permissions, topic permissions, the shared
    topology, and the admin of --admin-url if given with a password). Revoked
    identities get no user. The vhost is AMQP_URL's.
    """
    store = Keystore(common.keys_dir)
    revoked = store.revocations()
    issued = store.list_agents()
    agents = [(c.agent_id, c.role) for c in issued if not revoked.revokes(c)]
    gone = sorted({c.agent_id for c in issued if revoked.revokes(c)} - {a for a, _ in agents})
    pool_list = [Pool.parse(p) for p in pools]
    if not agents and not pool_list:
        raise ConfigError(
            f"no identities in {common.keys_dir}: issue them with `robeing keys issue` "
            "(or give --pool ROLE=PREFIX)"
        )
    vhost = vhost_of(common.amqp_url)
    api = management_url or common.management_url
    # The admin is in the definitions only when named on purpose: AMQP_URL's
    # login (guest:guest by default) must not become a boot-time administrator.
    explicit_admin = admin_url is not None
    admin_url = admin_url or common.amqp_url
    admin = urlsplit(admin_url)
    admin_name = unquote(admin.username) if admin.username else None
    if not (apply or explicit_admin):
        admin_name = None
    plan = plan_users(agents, vhost, events_vhost, pool_list, admin_name)
    passwords: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for user in plan:
        if user.role == "admin":
            if explicit_admin and admin.password:
                passwords[user.name] = unquote(admin.password)
            continue
        password, made = store.ensure_broker_password(user.name)
        passwords[user.name] = password
        rows.append(
            {
                "user": user.name,
                "role": user.role,
                "covers": user.covers,
                "password": "created" if made else "kept",
            }
        )
    hashes = {name: hash_password(pw) for name, pw in passwords.items()}
    documented = [u for u in plan if u.name in hashes]
    summary: dict[str, Any] = {"vhost": vhost, "users": rows}
    if out is not None or not apply:
        doc = definitions(documented, hashes, vhost, events_vhost)
        if out is None:
            emit_json(doc)
            return
        _write_private(out, json.dumps(doc, indent=2) + "\n")
        summary["definitions"] = str(out)
    if apply:
        agent_users = [u for u in plan if u.role != "admin"]
        summary.update(run(_apply(_management(admin_url, api), agent_users, hashes, gone)))
        by_name = dict(summary.pop("applied"))
        for row in rows:
            row["broker"] = by_name[row["user"]]
    if as_json:
        emit_json(summary)
        return
    for row in rows:
        state = f", {row['broker']} on the broker" if "broker" in row else ""
        click.echo(f"{row['user']}\t{row['role']}\tpassword {row['password']}{state}")
    for name in summary.get("removed", []):
        click.echo(f"{name}\trevoked: user deleted, connections closed")
    if out is not None:
        click.echo(f"definitions for {len(documented)} users written to {out}")


async def _apply(
    mgmt: Management, users: list[BrokerUser], hashes: dict[str, str], revoked: list[str]
) -> dict[str, Any]:
    applied, removed = [], []
    async with mgmt:
        for user in users:
            existed = await mgmt.user(user.name) is not None
            await mgmt.put_user(user, hashes[user.name])
            applied.append((user.name, "updated" if existed else "created"))
        for name in revoked:
            info = await mgmt.user(name)
            tags = (info or {}).get("tags") or []
            if AGENT_TAG in (tags.split(",") if isinstance(tags, str) else tags):
                await mgmt.delete_user(name, reason="identity revoked")
                removed.append(name)
    return {"applied": applied, "removed": removed}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@broker.command("setup")
@json_option()
@admin_options()
@pass_common
def setup(common: Common, as_json: bool, admin_url: str | None, management_url: str | None) -> None:
    """Declare the shared topology in AMQP_URL's vhost, as the definitions do.

    Exchanges, the coordinator's queues (with the arguments robeing declares),
    the results stream, the dead-letter queue and their bindings: what agents
    that may not configure them need to find. For a fresh vhost (first runs,
    tests); idempotent.
    """
    vhost = vhost_of(common.amqp_url)
    api = management_url or common.management_url
    settings = topo.TopologySettings()

    async def go() -> None:
        async with _management(admin_url or common.amqp_url, api) as mgmt:
            for name, kind in topo.EXCHANGES:
                await mgmt.declare_exchange(vhost, name, kind)
            for spec in topo.shared_queues(settings):
                await mgmt.declare_queue(vhost, spec)
            for exchange, queue, key in topo.SHARED_BINDINGS:
                await mgmt.bind_queue(vhost, exchange, queue, key)

    run(go())
    counts = {
        "vhost": vhost,
        "exchanges": len(topo.EXCHANGES),
        "queues": len(topo.shared_queues(settings)),
        "bindings": len(topo.SHARED_BINDINGS),
    }
    if as_json:
        emit_json(counts)
    else:
        click.echo(
            f"vhost {vhost!r}: {counts['exchanges']} exchanges, {counts['queues']} queues and "
            f"{counts['bindings']} bindings declared"
        )

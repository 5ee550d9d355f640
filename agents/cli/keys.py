"""``robeing keys``: the cluster authority and the agent identities it certifies.

``init`` creates the authority in the keys directory (and the coordinators'
group identity), ``issue`` certifies an agent, ``group`` (re)creates the
coordinators' group identity, ``revoke`` adds one to the signed revocation
list (and announces the new list to live agents), ``list`` shows what was
issued.
"""

from __future__ import annotations

import time

import click

from ...protocol.roles import ROLES
from .common import Common, emit_json, pass_common, run
from .options import json_option


@click.group()
def keys() -> None:
    """Create the cluster authority and issue or revoke agent identities."""


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace an existing authority.")
@click.option("--cluster-key", is_flag=True, help="Also create a key that encrypts broadcasts.")
@pass_common
def keys_init(common: Common, force: bool, cluster_key: bool) -> None:
    """Create the cluster authority in the keys directory."""
    from ..keystore import Keystore

    pub = Keystore(common.keys_dir).init(force=force, cluster_key=cluster_key)
    click.echo(f"authority created in {common.keys_dir} (public key {pub.hex()[:16]}…)")


@keys.command("group")
@click.option("--force", is_flag=True, help="Replace an existing one (rotate it).")
@pass_common
def keys_group(common: Common, force: bool) -> None:
    """Create the coordinators' group identity (coordinators.key / .cert).

    Submissions are encrypted to it and results records readable with it:
    give coordinators.key to coordinators only, coordinators.cert to everyone.
    """
    from ..keystore import Keystore

    store = Keystore(common.keys_dir)
    if store.group_cert.exists() and not force:
        click.echo(f"the coordinators' group identity exists in {common.keys_dir}")
        return
    cert = store.issue_group().certificate
    click.echo(f"coordinators' group identity created (key {cert.key_id})")


@keys.command("issue")
@click.option("--id", "agent_id", required=True, help="The agent id to certify.")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--ttl-days", type=click.FloatRange(min=0.001), default=365.0, show_default=True)
@pass_common
def keys_issue(common: Common, agent_id: str, role: str, ttl_days: float) -> None:
    """Issue a key pair and certificate for an agent.

    `robeing broker users` then makes the matching broker user, which lets
    the agent touch only what it owns on the broker.
    """
    from ..keystore import Keystore

    ident = Keystore(common.keys_dir).issue(agent_id, role, ttl_days * 86400)
    click.echo(
        f"issued {role} identity {agent_id!r} (key {ident.certificate.key_id}, "
        f"expires {time.strftime('%Y-%m-%d', time.gmtime(ident.certificate.expires_at))})"
    )


@keys.command("revoke")
@click.option("--id", "agent_id", required=True)
@click.option(
    "--announce/--no-announce",
    default=True,
    help="Broadcast the new revocation list to live agents.",
)
@pass_common
def keys_revoke(common: Common, agent_id: str, announce: bool) -> None:
    """Revoke an agent everywhere: add it to the signed revocation list."""
    from ..keystore import Keystore

    crl = Keystore(common.keys_dir).revoke(agent_id)
    click.echo(f"revoked {agent_id!r} (revocation list version {crl.version})")
    if announce:
        from ..client import Client

        async def go() -> None:
            async with Client(common.client_settings()) as client:
                await client.broadcast("crl.update", crl.raw, priority=9)

        run(go())
        click.echo("announced to live agents")


@keys.command("token")
@click.option("--id", "agent_id", required=True, help="The client identity the token speaks for.")
@click.option(
    "--ttl-days", type=click.FloatRange(min=0.001, max=366), default=30.0, show_default=True
)
@pass_common
def keys_token(common: Common, agent_id: str, ttl_days: float) -> None:
    """Issue a bearer token for the HTTP gateway, bound to a client's certificate.

    The client's identity is issued first if this keys directory can (it holds
    the authority key) and has none. The token is signed with the client's
    key and carries its certificate: it is valid only while the certificate is
    (revoking the client ends its tokens).
    """
    from ...protocol.evidence import ed25519_signer
    from ...protocol.tokens import issue_token
    from ..keystore import Keystore

    ident = Keystore(common.keys_dir).load_identity(agent_id, "client")
    token = issue_token(
        ident.certificate.raw, ed25519_signer(ident.signing_key), time.time(), ttl_days * 86400
    )
    click.echo(token)


@keys.command("list")
@json_option()
@pass_common
def keys_list(common: Common, as_json: bool) -> None:
    """List issued identities."""
    from ..keystore import Keystore

    store = Keystore(common.keys_dir)
    revoked = store.revocations()
    rows = [
        {
            "id": cert.agent_id,
            "role": cert.role,
            "key_id": cert.key_id,
            "expires_at": cert.expires_at,
            "revoked": revoked.revokes(cert),
        }
        for cert in store.list_agents()
    ]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        flag = " REVOKED" if r["revoked"] else ""
        click.echo(f"{r['id']}\t{r['role']}\t{r['key_id']}{flag}")

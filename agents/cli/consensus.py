"""``robeing propose`` and ``robeing bft``: votes and Byzantine-fault-tolerant commits.

::

    robeing propose --payload JSON [--participants ID,…] [--threshold 2/3]
                    [--deadline S] [--json]
    robeing propose --bft --payload JSON [--group NAME|SPEC] [--json]
    robeing bft commit --payload JSON [--group NAME|SPEC] [--json]
    robeing bft log [--group NAME|SPEC] [--json]

A group is given inline (``--group orders=a,b,c,d[/F]``) or by name among
those defined in ``ROBEING_BFT_GROUP`` (``NAME=ID,…[/F]``, ``;``-separated),
the same variable that tells agents which groups to host.

Exit codes: 0 approved or committed, 1 rejected, 2 wrong usage or
configuration (including ``n < 3f + 1``), 3 broker trouble or no decision in time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click

from ...protocol.errors import ConfigError
from ...protocol.pbft import GroupSpec, parse_groups
from .common import Common, emit_json, pass_common, run, split_list
from .options import as_option, json_option, stack


def resolve_group(group: str | None, defined: str | None) -> GroupSpec:
    """The group named or spelled out by ``--group`` (among ``ROBEING_BFT_GROUP``).

    Raises:
        ConfigError: malformed or unknown group, ``n < 3f + 1``, or no group
            named while several are defined.
    """
    if group and "=" in group:
        specs = parse_groups(group)
        if len(specs) != 1:
            raise ConfigError("--group takes one group: NAME=ID,ID,...[/F]")
        return specs[0]
    specs = parse_groups(defined)
    if group is None:
        if len(specs) == 1:
            return specs[0]
        raise ConfigError(
            "name the BFT group: --group NAME=ID,ID,...[/F], or a name defined in ROBEING_BFT_GROUP"
        )
    for spec in specs:
        if spec.name == group:
            return spec
    raise ConfigError(f"unknown BFT group {group!r}: define it in ROBEING_BFT_GROUP")


_group_options = stack(
    click.option(
        "--group", default=None, help="Group name, or NAME=ID,ID,...[/F] (default: the only one)."
    ),
    click.option(
        "--groups",
        envvar="ROBEING_BFT_GROUP",
        show_envvar=True,
        default=None,
        help="Known groups: NAME=ID,ID,...[/F], separated by ';'.",
    ),
)

_common_options = stack(as_option(), json_option())


@click.command()
@click.option("--payload", required=True, help="What is proposed: JSON, or @file with JSON.")
@click.option(
    "--participants",
    multiple=True,
    help="Agent ids that vote (repeat or comma-separate; default: the live agents).",
)
@click.option("--threshold", default="2/3", show_default=True, help="Approvals needed, e.g. 3/4.")
@click.option(
    "--deadline",
    type=click.FloatRange(min=0.01),
    default=30.0,
    show_default=True,
    help="Seconds to wait for votes.",
)
@click.option(
    "--listen",
    type=click.FloatRange(min=0.2),
    default=None,
    help="Seconds to listen for live agents when --participants is not given.",
)
@click.option("--bft", is_flag=True, help="Commit through a PBFT group instead of voting.")
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="(--bft)"
)
@_group_options
@_common_options
@pass_common
def propose(
    common: Common,
    payload: str,
    participants: tuple[str, ...],
    threshold: str,
    deadline: float,
    listen: float | None,
    bft: bool,
    timeout: float,
    group: str | None,
    groups: str | None,
    as_id: str,
    as_json: bool,
) -> None:
    """Put a proposal to a signed 2/3-majority vote (or, with --bft, commit it via PBFT)."""
    if bft:
        _commit(common, payload, group, groups, timeout, as_id, as_json)
        return
    from ...protocol.ballots import AnnouncedOutcome
    from ..client import Client, parse_payload
    from ..consensus import propose as propose_api
    from ..consensus.votes import parse_threshold

    body, fraction, voters = (
        parse_payload(payload),
        parse_threshold(threshold),
        list(split_list(participants)) or None,
    )

    async def go() -> tuple[AnnouncedOutcome, float]:
        async with Client(common.client_settings(as_id)) as client:
            started = time.perf_counter()
            decision = await propose_api(client, body, voters, fraction, deadline, listen)
            outcome = _outcome(client, decision.proposal_id)
            return outcome, time.perf_counter() - started

    outcome, took = run(go())
    if as_json:
        emit_json(
            {**outcome_json(outcome), "required": outcome.required, "seconds": round(took, 4)}
        )
    else:
        verdict = "APPROVED" if outcome.approved else "REJECTED"
        approvals = sum(v.choice.value == "approve" for v in outcome.votes)
        n = len(outcome.participants)
        click.echo(
            f"{verdict}: {approvals} of {n} approve (needs {outcome.required}, threshold "
            f"{outcome.threshold}); {outcome.reason.replace('_', ' ')} after {took * 1000:.1f} ms"
        )
        for v in outcome.votes:
            click.echo(f"  {v.voter:24s} {v.choice.value}")
        if outcome.refusals:
            refused = ", ".join(f"{k}={n}" for k, n in sorted(outcome.refusals.items()))
            click.echo(f"refused votes: {refused}")
    sys.exit(0 if outcome.approved else 1)


def _outcome(client: Any, proposal_id: str) -> Any:
    from ..consensus import consensus_of

    consensus = consensus_of(client.agent)
    assert consensus is not None
    return consensus.voting.outcomes[proposal_id]


def outcome_json(outcome: Any) -> dict[str, Any]:
    """An outcome as JSON-ready data (fractions as text, signatures as hex).

    Raises:
        Nothing.
    """
    data = outcome.to_data()
    data["threshold"] = str(outcome.threshold)
    data["approval_rate"] = str(outcome.approval_rate)
    data["votes"] = [
        {"voter": v.voter, "choice": v.choice.value, "signature": v.signature.hex()}
        for v in outcome.votes
    ]
    return dict(data)


def _commit(
    common: Common,
    payload: str,
    group: str | None,
    groups: str | None,
    timeout: float,
    as_id: str,
    as_json: bool,
) -> None:
    from ..client import Client, parse_payload
    from ..consensus import bft_commit

    spec, value = resolve_group(group, groups), parse_payload(payload)

    async def go() -> Any:
        async with Client(common.client_settings(as_id)) as client:
            return await bft_commit(client, spec, value, timeout=timeout)

    result = run(go())
    if as_json:
        emit_json(
            {
                "group": result.group,
                "seq": result.seq,
                "value": result.value,
                "digest": result.digest.hex(),
                "replicas": list(result.replicas),
                "seconds": round(result.latency_s, 4),
            }
        )
    else:
        click.echo(
            f"committed #{result.seq} in group {result.group} (confirmed by "
            f"{', '.join(result.replicas)}) in {result.latency_s * 1000:.1f} ms"
        )


@click.group()
def bft() -> None:
    """Byzantine-fault-tolerant agreement among a group of n >= 3f + 1 agents."""


@bft.command("commit")
@click.option("--payload", required=True, help="The value to commit: JSON, or @file with JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@_group_options
@_common_options
@pass_common
def bft_commit_cmd(
    common: Common,
    payload: str,
    timeout: float,
    group: str | None,
    groups: str | None,
    as_id: str,
    as_json: bool,
) -> None:
    """Commit a value; returns once f + 1 members confirm it (same as propose --bft)."""
    _commit(common, payload, group, groups, timeout, as_id, as_json)


@bft.command("log")
@click.option("--entries", type=click.IntRange(min=0), default=10, show_default=True)
@_group_options
@_common_options
@pass_common
def bft_log(
    common: Common,
    entries: int,
    group: str | None,
    groups: str | None,
    as_id: str,
    as_json: bool,
) -> None:
    """Each member's view, progress and state digest, and the last decided entries."""
    from ..client import Client

    spec = resolve_group(group, groups)

    async def ask(client: Client, member: str) -> dict[str, Any]:
        try:
            got = await client.request(
                member, "pbft.log", {"g": spec.name, "entries": entries}, timeout=5.0
            )
            return dict(got)
        except Exception as exc:
            return {"error": str(exc)}

    async def go() -> dict[str, dict[str, Any]]:
        async with Client(common.client_settings(as_id)) as client:
            answers = await asyncio.gather(*(ask(client, m) for m in spec.members))
            return dict(zip(spec.members, answers, strict=True))

    reports = run(go())
    for r in reports.values():
        r["log"] = [[*e[:2], bytes(e[2]).hex(), *e[3:]] for e in r.get("log", [])]
    if as_json:
        emit_json(reports)
        return
    click.echo(f"group {spec} (quorum {(len(spec.members) + spec.f + 2) // 2})")
    for member, r in reports.items():
        if "error" in r:
            click.echo(f"  {member:24s} unreachable: {r['error']}")
        else:
            click.echo(
                f"  {member:24s} view {r['view']:<3d} primary {r['primary']:16s} "
                f"executed {r['last_executed']:<6d} state {r['state_digest'][:16]}"
            )
    first = next((r for r in reports.values() if "log" in r), None)
    for seq, view, digest, client_id, _ts, value, executed in (first or {}).get("log", []):
        shown = value if executed else "(not executed)"
        click.echo(f"  #{seq:<6d} view {view:<3d} {digest[:12]} {client_id}: {shown}")

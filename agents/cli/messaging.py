"""``robeing send`` and ``robeing broadcast``: messages from the command line.

``send`` is point-to-point (signed and encrypted to the receiver), optionally
waiting for the receiver's signed ACK or, with ``--request``, for its reply;
``broadcast`` reaches every live agent (signed).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import click

from .common import Common, emit_json, pass_common, run
from .options import as_option, json_option, payload_option, priority_option


@click.command()
@click.option("--to", "receiver", required=True, help="Receiving agent id.")
@click.option("--type", "message_type", required=True, help="Message type.")
@payload_option()
@click.option(
    "--file",
    "file_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Send this file, of any size, in signed and encrypted chunks; the receiver's "
    "handler gets where it stored it.",
)
@click.option(
    "--via",
    default=None,
    help="A messenger that holds the message until the receiver is back (store and forward).",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0.1, max=7 * 86400),
    default=3600.0,
    show_default=True,
    help="With --via: seconds the messenger holds it before giving up.",
)
@click.option("--wait", is_flag=True, help="With --via: wait until delivered or expired.")
@click.option("--ack", is_flag=True, help="Wait for the receiver's signed ACK.")
@click.option("--request", "is_request", is_flag=True, help="Wait for and print the reply.")
@priority_option()
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@as_option()
@json_option()
@pass_common
def send(
    common: Common,
    receiver: str,
    message_type: str,
    payload: str | None,
    file_path: Path | None,
    via: str | None,
    ttl: float,
    wait: bool,
    ack: bool,
    is_request: bool,
    priority: int,
    timeout: float,
    as_id: str,
    as_json: bool,
) -> None:
    """Send a signed, encrypted point-to-point message."""
    from ..client import Client, parse_payload

    body = parse_payload(payload)
    if file_path is not None and payload is not None:
        raise click.UsageError("--file and --payload exclude each other")

    async def go() -> dict[str, Any]:
        async with Client(common.client_settings(as_id)) as client:
            started = time.perf_counter()
            if file_path is not None:
                done = await client.send_file(receiver, message_type, file_path, timeout=timeout)
                seconds = time.perf_counter() - started
                return {
                    "to": receiver,
                    "type": message_type,
                    "transfer": done,
                    "seconds": round(seconds, 3),
                    "mib_per_s": round(done["size"] / (1 << 20) / max(seconds, 1e-9), 1),
                }
            if via is not None:
                held = await client.send_via(via, receiver, message_type, body, ttl=ttl)
                relayed = {"to": receiver, "via": via, "id": held["id"], "state": "pending"}
                while wait and relayed["state"] == "pending":
                    await asyncio.sleep(0.5)
                    relayed["state"] = (await client.relay_status(via, held["id"]))["state"]
                return relayed
            if is_request:
                result = await client.request(
                    receiver, message_type, body, priority=priority, timeout=timeout
                )
                return {
                    "to": receiver,
                    "reply": result,
                    "rtt_ms": round((time.perf_counter() - started) * 1000, 2),
                }
            opened = await client.send(
                receiver, message_type, body, priority=priority, requires_ack=ack, timeout=timeout
            )
            out: dict[str, Any] = {"to": receiver, "type": message_type, "confirmed": True}
            if opened is not None:
                out["ack"] = {"from": opened.envelope.sender, "id": opened.envelope.in_reply_to}
                out["rtt_ms"] = round((time.perf_counter() - started) * 1000, 2)
            return out

    out = run(go())
    if as_json:
        emit_json(out)
    elif "via" in out:
        click.echo(f"{out['state']}: message {out['id']} for {receiver}, held by {via}")
        if out["state"] not in ("pending", "delivered"):
            raise SystemExit(1)
    elif "transfer" in out:
        t = out["transfer"]
        click.echo(
            f"sent {t['size']} bytes to {receiver} in {out['seconds']} s "
            f"({out['mib_per_s']} MiB/s), sha256 {t['sha256'][:16]}… checked"
        )
    elif "reply" in out:
        click.echo(json.dumps(out["reply"], default=str))
    elif "ack" in out:
        click.echo(f"acknowledged by {out['ack']['from']} in {out['rtt_ms']} ms")
    else:
        click.echo(f"sent to {receiver} (broker confirmed)")


@click.command()
@click.option("--type", "message_type", required=True, help="Message type.")
@payload_option()
@priority_option()
@as_option()
@json_option()
@pass_common
def broadcast(
    common: Common,
    message_type: str,
    payload: str | None,
    priority: int,
    as_id: str,
    as_json: bool,
) -> None:
    """Send a signed broadcast to every live agent (those without a handler for its type
    count it and let it go)."""
    from ..client import Client, parse_payload

    body = parse_payload(payload)

    async def go() -> str:
        async with Client(common.client_settings(as_id)) as client:
            return await client.broadcast(message_type, body, priority=priority)

    message_id = run(go())
    if as_json:
        emit_json({"id": message_id, "type": message_type, "broadcast": True})
    else:
        click.echo(f"broadcast {message_id}")

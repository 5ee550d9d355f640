"""``robeing dead-letters list|show|replay|purge``: dead letters an operator can act on.

Every refused message and every task that used up its attempts waits in
``robeing.dead-letters`` with its reason (see :mod:`robeing.protocol.deadletters`).
These commands read that queue as the broker's admin (``--admin-url``,
``ROBEING_ADMIN_URL``; by default ``AMQP_URL``): they take the letters
without settling them, remove the ones acted on, and the broker puts the
others back where they were.

The queue is bounded (100,000 letters or 256 MiB): past either limit the
oldest letters are dropped, so a flood of garbage cannot fill the broker's disk.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ...broker import topology as topo
from ...broker.base import Held, HeldMessage
from ...protocol.deadletters import Headers, Letter, describe, replay_problem
from ...protocol.errors import ProtocolError, Unroutable
from ...protocol.replay import ReplayWindow
from ..client import Client
from ..keystore import Keystore
from ..settings import Settings
from .common import EXIT_CODES_HELP, CliError, Common, emit_json, pass_common, run
from .options import admin_url_option, json_option

NAMES = Headers(
    task_queue=topo.TASK_QUEUE,
    reason=topo.REASON_HEADER,
    detail=topo.DETAIL_HEADER,
    source=topo.SOURCE_HEADER,
    size=topo.SIZE_HEADER,
    report=topo.REPORT_HEADER,
    at=topo.AT_HEADER,
)
SCAN_MAX = topo.DEAD_LETTERS_MAX_LENGTH  # the queue never holds more
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` → seconds.

    Raises:
        click.BadParameter: anything else.
    """
    m = _DURATION.match(text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


class Box:
    """The dead-letter queue, held open for one command (as a listen-only client)."""

    def __init__(self, common: Common, admin_url: str | None) -> None:
        settings = common.client_settings(f"dead-letters-{os.getpid()}")
        settings = replace(settings, amqp_url=admin_url or common.amqp_url)
        self.client = Client(settings, listen_only=True)
        self.broker = self.client.agent.broker
        store = Keystore(common.keys_dir)
        self.trust = store.trust_store()
        self._peer = store.peer_certificate
        st = Settings()
        self.window = ReplayWindow(st.max_age, st.max_skew)

    def check_report(self, signer: str, data: bytes, signature: bytes) -> bool:
        raw = self._peer(signer)
        try:
            if raw is None:
                return False
            cert = self.trust.check_certificate(raw, time.time())
            self.trust.verify(cert, data, signature)
        except ProtocolError:
            return False
        return cert.agent_id == signer

    def read(self, message: HeldMessage) -> Letter:
        return describe(message.body, message.headers, NAMES, self.check_report)

    async def open(self) -> None:
        await self.client.__aenter__()

    async def scan(self, limit: int = SCAN_MAX) -> Held:
        await self.open()
        return await self.broker.hold(topo.DEAD_LETTER_QUEUE, limit)

    async def close(self) -> None:
        if self.client.agent.state == "alive":
            await self.client.__aexit__(None, None, None)


def _box_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    return admin_url_option("AMQP URL of a user that may read robeing.dead-letters "
                            "(the broker admin; default: AMQP_URL).")(fn)  # fmt: skip


@click.group("dead-letters", epilog=EXIT_CODES_HELP)
def dead_letters() -> None:
    """List, show, replay and purge dead letters (as the broker admin)."""


def _matches(letter: Letter, reasons: Sequence[str], older_than: float | None, now: float) -> bool:
    if reasons and letter.reason not in reasons:
        return False
    if older_than is not None:
        return letter.at is not None and now - letter.at >= older_than
    return True


@dead_letters.command("list", epilog=EXIT_CODES_HELP)
@click.option("--reason", "reasons", multiple=True, help="Only letters with this reason (repeat).")
@click.option("--limit", type=click.IntRange(1, SCAN_MAX), default=100, show_default=True)
@json_option()
@_box_command
@pass_common
def list_(
    common: Common, reasons: tuple[str, ...], limit: int, as_json: bool, admin_url: str | None
) -> None:
    """Dead letters, oldest first: id, reason, source queue, sender, type, age."""

    async def go() -> tuple[list[Letter], int]:
        box = Box(common, admin_url)
        try:
            async with await box.scan() as held:
                letters = [box.read(m) for m in held.messages]
        finally:
            await box.close()
        kept = [x for x in letters if _matches(x, reasons, None, 0.0)]
        return kept[:limit], len(letters)

    letters, total = run(go())
    if as_json:
        emit_json([x.to_data() for x in letters])
        return
    now = time.time()
    table = Table(title=f"{len(letters)} of {total} dead letter(s)", title_justify="left")
    table.add_column("id", no_wrap=True)
    for col in ("reason", "source", "sender", "type", "age"):
        table.add_column(col, overflow="fold")
    for x in letters:
        age = "-" if x.at is None else f"{now - x.at:.0f}s"
        kind = x.type or (f"task {x.task.get('type')}" if x.task else "-")
        table.add_row(x.id, x.reason, x.source, x.sender or "-", kind, age)
    Console().print(table)


async def _find(box: Box, ids: Sequence[str]) -> tuple[Held, dict[str, list[HeldMessage]]]:
    """Hold the whole queue; the messages whose id starts with each of ``ids``."""
    held = await box.scan()
    found: dict[str, list[HeldMessage]] = {i: [] for i in ids}
    for message in held.messages:
        letter_id = box.read(message).id
        for wanted in ids:
            if letter_id.startswith(wanted):
                found[wanted].append(message)
    return held, found


@dead_letters.command("show", epilog=EXIT_CODES_HELP)
@click.argument("letter_id")
@json_option()
@_box_command
@pass_common
def show(common: Common, letter_id: str, as_json: bool, admin_url: str | None) -> None:
    """One dead letter: why, where from, who refused it, what the envelope says."""

    async def go() -> Letter | None:
        box = Box(common, admin_url)
        try:
            held, found = await _find(box, [letter_id])
            async with held:
                return box.read(found[letter_id][0]) if found[letter_id] else None
        finally:
            await box.close()

    letter = run(go())
    if letter is None:
        raise CliError(f"no dead letter {letter_id!r} (robeing dead-letters list)")
    data = letter.to_data()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if value not in (None, "", {}):
            click.echo(f"{key:12} {value}")


@dead_letters.command("replay", epilog=EXIT_CODES_HELP)
@click.argument("letter_ids", nargs=-1, required=True)
@json_option()
@_box_command
@pass_common
def replay(
    common: Common, letter_ids: tuple[str, ...], as_json: bool, admin_url: str | None
) -> None:
    """Publish dead letters again to the queue they were refused from (after fixing the cause).

    A letter that its receiver would refuse again whatever was fixed (truncated, not a signed
    envelope, bad signature or certificate, older than receivers accept) is kept, saying why.
    """

    async def go() -> list[dict[str, Any]]:
        box = Box(common, admin_url)
        outcomes: list[dict[str, Any]] = []
        try:
            held, found = await _find(box, letter_ids)
            async with held:
                for wanted, messages in found.items():
                    if len(messages) != 1:
                        why = "no such dead letter" if not messages else "ambiguous: give more"
                        outcomes.append({"id": wanted, "replayed": False, "why": why})
                        continue
                    outcomes.append(await _replay_one(box, held, messages[0]))
        finally:
            await box.close()
        return outcomes

    outcomes = run(go())
    if as_json:
        emit_json(outcomes)
    for o in outcomes if not as_json else []:
        if o["replayed"]:
            click.echo(f"{o['id']}: replayed to {o['to']}")
        else:
            click.echo(f"robeing: {o['id']}: not replayed: {o['why']}", err=True)
    raise SystemExit(0 if all(o["replayed"] for o in outcomes) else 1)


async def _replay_one(box: Box, held: Held, message: HeldMessage) -> dict[str, Any]:
    letter = box.read(message)
    problem = replay_problem(letter, message.body, box.trust, box.window, time.time())
    if problem is not None:
        return {"id": letter.id, "replayed": False, "why": problem}
    exchange, key = topo.route_to_queue(letter.source)
    try:
        await box.broker.publish(exchange, key, message.body, priority=letter.priority)
    except Unroutable:
        return {"id": letter.id, "replayed": False, "why": f"queue {letter.source} is gone"}
    await held.remove(message)  # only once the broker confirmed the copy
    return {"id": letter.id, "replayed": True, "to": letter.source}


@dead_letters.command("purge", epilog=EXIT_CODES_HELP)
@click.option("--reason", "reasons", multiple=True, help="Only letters with this reason (repeat).")
@click.option("--older-than", default=None, help="Only letters older than this (90s, 15m, 2h, 7d).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter (no filter given).")
@json_option()
@_box_command
@pass_common
def purge(
    common: Common,
    reasons: tuple[str, ...],
    older_than: str | None,
    everything: bool,
    as_json: bool,
    admin_url: str | None,
) -> None:
    """Delete dead letters: by reason, by age, or --all."""
    age = parse_duration(older_than) if older_than is not None else None
    if not reasons and age is None and not everything:
        raise click.UsageError("say which letters: --reason, --older-than, or --all for every one")

    async def go() -> int:
        box = Box(common, admin_url)
        try:
            if everything and not reasons and age is None:
                await box.open()
                return await box.broker.purge(topo.DEAD_LETTER_QUEUE)
            now, removed = time.time(), 0
            async with await box.scan() as held:
                for message in held.messages:
                    if _matches(box.read(message), reasons, age, now):
                        await held.remove(message)
                        removed += 1
            return removed
        finally:
            await box.close()

    removed = run(go())
    if as_json:
        emit_json({"purged": removed})
    else:
        click.echo(f"purged {removed} dead letter(s)")

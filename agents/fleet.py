"""``robeing up``: a supervised local fleet and a demo workload.

The supervisor starts one coordinator, ``workers`` workers
(data_processing), a specialist (analysis), a messenger (communication) and
a guardian as separate processes, restarts any that dies (with backoff; a
member that keeps dying is given up, and one that ran healthy for a while
starts its count afresh, as supervisord's ``startsecs`` does), and drives a
demo through a client identity: signed and encrypted requests with ACKs to
every agent, format conversion by the messenger, a broadcast, and a tampered
message that is dead-lettered and reported by the guardian.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from ..broker import topology as topo
from .client import Client
from .keystore import Keystore
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One supervised agent process."""

    agent_id: str
    role: str
    specializations: tuple[str, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    extra_args: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "robeing.agents",
            "agent",
            "--role",
            self.role,
            "--id",
            self.agent_id,
        ]
        for spec in self.specializations:
            args += ["--specialization", spec]
        return args + self.extra_args


def default_fleet(workers: int) -> list[Member]:
    members = [Member("coordinator-1", "coordinator")]
    members += [
        Member(f"worker-{i}", "worker", ("data_processing",)) for i in range(1, workers + 1)
    ]
    members += [
        Member("specialist-1", "specialist", ("analysis",)),
        Member("messenger-1", "messenger", ("communication",)),
        Member("guardian-1", "guardian", ("security",)),
    ]
    return members


class Supervisor:
    """Starts member processes and restarts the ones that die.

    Args:
        settings: the broker and keys the members use.
        members: the processes.
        log_level: theirs.
        max_restarts: restarts in a row after which a member is given up.
        healthy_after: a member that ran this long before dying was healthy:
            its restarts count from zero again (one crash a day is not a crash loop).
    """

    def __init__(
        self,
        settings: Settings,
        members: list[Member],
        log_level: str,
        max_restarts: int = 10,
        healthy_after: float = 60.0,
    ) -> None:
        self.settings = settings
        self.members = members
        self.log_level = log_level
        self.max_restarts = max_restarts
        self.healthy_after = healthy_after
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AMQP_URL": self.settings.amqp_url,
                "ROBEING_KEYS": str(self.settings.keys_dir),
                "ROBEING_LOG_LEVEL": self.log_level,
                "ROBEING_LOG_FORMAT": "text",
            }
        )
        return env

    async def _spawn(self, m: Member) -> None:
        m.proc = await asyncio.create_subprocess_exec(
            *m.argv(), env=self._env(), stdin=asyncio.subprocess.DEVNULL
        )
        m.started = time.monotonic()

    async def start(self) -> None:
        for m in self.members:
            await self._spawn(m)
            self._watchers.append(asyncio.create_task(self._watch(m)))

    async def _watch(self, m: Member) -> None:
        while not self._stopping:
            assert m.proc is not None
            code = await m.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - m.started >= self.healthy_after:
                m.restarts = 0
            if m.restarts >= self.max_restarts:
                log.error("%s exited (%s) too often; giving up on it", m.agent_id, code)
                return
            m.restarts += 1
            delay = min(2**m.restarts * 0.25, 10.0)
            log.warning("%s exited with %s; restarting in %.1fs", m.agent_id, code, delay)
            await asyncio.sleep(delay)
            if not self._stopping:
                await self._spawn(m)

    async def stop(self, grace: float = 15.0) -> None:
        self._stopping = True
        for m in self.members:
            if m.proc and m.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.proc is None:
                continue
            try:
                await asyncio.wait_for(m.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
                await m.proc.wait()
        for w in self._watchers:
            w.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


async def wait_for_agents(client: Client, ids: set[str], timeout: float = 30.0) -> set[str]:
    """Listen to heartbeats until every id in ``ids`` is alive (or time is up)."""
    deadline = time.monotonic() + timeout
    alive: set[str] = set()
    while time.monotonic() < deadline and not ids <= alive:
        alive |= set(await client.live_agents(1.2))
    return alive & ids


Step = tuple[str, Callable[[], Awaitable[Any]]]


async def demo_steps(client: Client, members: list[Member]) -> list[tuple[str, bool, str, float]]:
    """Run the demo workload; returns (step, ok, detail, ms) rows."""
    rows: list[tuple[str, bool, str, float]] = []
    workers = [m for m in members if m.role == "worker"]

    async def step(name: str, fn: Callable[[], Awaitable[str]]) -> None:
        started = time.perf_counter()
        try:
            detail, ok = await fn(), True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        rows.append((name, ok, detail, (time.perf_counter() - started) * 1000))

    for m in members:

        async def ping(m: Member = m) -> str:
            reply = await client.request(m.agent_id, "ping", {"hello": m.agent_id}, timeout=10)
            return f"signed reply from {reply['pong']} ({reply['role']})"

        await step(f"ping {m.agent_id} (encrypted, ACK)", ping)

    csv_text = "name,score\nada,91\nalan,88\ngrace,95\n"

    async def convert_csv() -> str:
        out = await client.request(
            "messenger-1", "messenger.convert", {"data": csv_text, "from": "csv", "to": "json"}
        )
        return f"csv → json: {out}"

    await step("messenger converts CSV to JSON", convert_csv)

    async def send_with_ack() -> str:
        opened = await client.send("worker-1", "ping", {"n": 1}, requires_ack=True, priority=9)
        assert opened is not None
        return f"ACK signed by {opened.envelope.sender} (certified {opened.certificate.role})"

    await step("priority-9 message with ACK", send_with_ack)

    async def bcast() -> str:
        msg_id = await client.broadcast("ping", {"to": "everyone"})
        return f"broadcast {msg_id[:8]}… published"

    await step("signed broadcast", bcast)

    async def tampered() -> str:
        from ..protocol.envelope import Envelope

        body = bytearray(client.agent.seal(Envelope("ping", {"x": 1}, receiver="worker-1")))
        body[-3] ^= 0xFF  # flip bits in the signed body
        await client.agent.broker.publish(topo.DIRECT_EXCHANGE, "worker-1", bytes(body))
        await asyncio.sleep(1.0)
        report = await client.request("guardian-1", "guardian.report", None)
        return f"dead-lettered; guardian counts {report['by_reason']}"

    await step("tampered message is refused", tampered)

    text = [
        "robeing runs fleets of cooperating agents on RabbitMQ",
        "every message is signed and every point to point payload is encrypted",
        "the coordinator splits tasks across workers and merges their results",
        "workers report results and the coordinator fences stale attempts",
    ] * 25

    async def wordcount_split() -> str:
        handle = await client.submit(
            "wordcount",
            text,
            agents=len(workers),
            deadline=60,
            task_id=f"demo-wc-{os.getpid()}-{time.time_ns()}",
        )
        final = await handle.result(60)
        if not final.ok:
            raise RuntimeError(f"{final.state}: {final.error}")
        top = ", ".join(f"{w} {c}" for w, c in final.result["top"][:3])
        return f"{final.result['words']} words over {handle.total} subtasks; top: {top}"

    await step(f"wordcount split across {len(workers)} workers", wordcount_split)

    async def dag() -> str:
        from ..protocol.taskmsgs import TaskRequest

        stamp = f"{os.getpid()}-{time.time_ns()}"
        deadline = time.time() + 60
        numbers = [float(x % 97) for x in range(2_000)]
        reqs = [
            TaskRequest(
                id=f"demo-stats-{stamp}",
                type="statistics",
                payload=numbers,
                agents=2,
                deadline=deadline,
            ),
            TaskRequest(
                id=f"demo-sort-{stamp}",
                type="sort",
                payload=numbers[:50],
                deadline=deadline,
                depends_on=(f"demo-stats-{stamp}",),
            ),
            TaskRequest(
                id=f"demo-hash-{stamp}",
                type="sha256",
                payload=text[:4],
                deadline=deadline,
                depends_on=(f"demo-sort-{stamp}",),
            ),
            TaskRequest(
                id=f"demo-csv-{stamp}",
                type="convert",
                deadline=deadline,
                payload={"data": csv_text, "from": "csv", "to": "msgpack"},
            ),
        ]
        finals = [await h.result(60) for h in await client.submit_many(reqs)]
        bad = [f for f in finals if not f.ok]
        if bad:
            raise RuntimeError(f"{bad[0].task_id} {bad[0].state}: {bad[0].error}")
        stats, ordered, hashes, packed = (f.result for f in finals)
        return (
            f"stats mean {stats['mean']:.2f} stdev {stats['stdev']:.2f} → sort "
            f"{ordered[:3]}… → sha256 {hashes[0][:12]}…; csv→msgpack {len(packed)} bytes"
        )

    await step("task DAG: statistics → sort → sha256, plus convert", dag)
    return rows


def report_table(rows: list[tuple[str, bool, str, float]]) -> Table:
    table = Table(title="robeing demo", title_justify="left")
    table.add_column("step")
    table.add_column("ok")
    table.add_column("ms", justify="right")
    table.add_column("detail", overflow="fold")
    for name, ok, detail, ms in rows:
        table.add_row(name, "[green]yes[/]" if ok else "[red]NO[/]", f"{ms:.1f}", detail)
    return table


async def run_fleet(
    settings: Settings, workers: int, once: bool, duration: float, log_level: str
) -> int:
    """Run the fleet; returns the process exit code."""
    console = Console()
    store = Keystore(settings.keys_dir)
    if not store.authority_pub.exists():
        store.init()
        console.print(f"created a development authority in {settings.keys_dir}")
    members = default_fleet(workers)
    sup = Supervisor(settings, members, "warning" if once else log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sup.start()
    code = 0
    try:
        async with Client(settings) as client:
            ids = {m.agent_id for m in members}
            alive = await wait_for_agents(client, ids)
            console.print(f"{len(alive)}/{len(ids)} agents alive: {', '.join(sorted(alive))}")
            if alive != ids:
                console.print(f"[red]not started: {', '.join(sorted(ids - alive))}[/]")
                return 1
            rows = await demo_steps(client, members)
            console.print(report_table(rows))
            code = 0 if all(ok for _, ok, _, _ in rows) else 1
            if once:
                return code
            console.print("fleet running — `robeing status` in another terminal; Ctrl-C stops")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration or None)
    finally:
        await sup.stop()
    return code

"""Fleets of the adversarial suite: one per setup, and what tests do with them.

See ``conftest.py`` for the two setups; the attacker is :mod:`.attacker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from agentproc import AgentProcess, HeartbeatWatcher

from robeing.agents import Client, Settings
from robeing.agents.client import TaskHandle
from robeing.agents.keystore import Keystore
from robeing.broker import topology as topo
from robeing.broker.management import Management
from robeing.protocol.envelope import Envelope
from robeing.protocol.taskmsgs import FinalResult, Submission, TaskRequest

SETUPS = ("least_privilege", "default")
ATTEMPT_TIMEOUT = 5.0  # an attempt whose assignment was swallowed ends this fast
DETECTION = ("--acceptable-pause", "1.0", "--dead-after", "1.0")
APP = ("--app", "apps.adversarial_app")
WORKER_ARGS = (*APP, "--specialization", "math", "--concurrency", "8")
COORDINATOR_ARGS = (*APP, *DETECTION, "--attempt-timeout", str(ATTEMPT_TIMEOUT))

# Who is who, by the name tests use; ids get a per-run tag (broker users are global).
ROLES = {
    "coordinator": "coordinator",
    "w1": "worker",
    "w2": "worker",
    "guardian": "guardian",
    "alice": "client",  # an honest submitter, the usual victim
    "bob": "client",  # another honest submitter (steady streams)
    "mallory": "worker",  # the compromised worker: its login (and, where said, its keys)
    "mallory-c": "client",  # the compromised client
}
FLEET = ("coordinator", "w1", "w2", "guardian")


@dataclass
class Fleet:
    """A running fleet in one setup, and what the tests need to attack and observe it."""

    setup: str
    vhost: str
    agent_url: str  # AMQP_URL of agents and honest clients
    admin_url: str  # guest in this vhost: the test's observer
    keys: Keystore
    ids: dict[str, str]
    watcher: HeartbeatWatcher
    management: Management
    log_dir: Path
    out: Path  # SAMPLE_OUT of the app
    procs: dict[str, AgentProcess] = field(default_factory=dict)
    _log_start: dict[str, int] = field(default_factory=dict)

    @property
    def least_privilege(self) -> bool:
        return self.setup == "least_privilege"

    def login(self, who: str) -> str:
        """The AMQP URL the attacker connects with, holding ``who``'s login."""
        if not self.least_privilege:
            return self.admin_url  # guest: the one login everyone shares
        return self.keys.broker_url(self.agent_url, self.ids[who])

    def client(self, who: str) -> Client:
        """An honest robeing ``Client`` with the identity (and login) of ``who``."""
        settings = Settings(
            role="client", agent_id=self.ids[who], amqp_url=self.agent_url, keys_dir=self.keys.root
        )
        return Client(settings)

    async def start(self, who: str) -> AgentProcess:
        role = ROLES[who]
        args = {"coordinator": COORDINATOR_ARGS, "worker": WORKER_ARGS}.get(role, ())
        proc = AgentProcess(
            self.agent_url,
            self.keys.root,
            role,
            self.ids[who],
            list(args),
            self.log_dir,
            {"SAMPLE_OUT": str(self.out)},
        )
        self.procs[who] = proc
        self._log_start[who] = proc.log_path.stat().st_size if proc.log_path.exists() else 0
        await proc.start()
        return proc

    def log(self, who: str) -> str:
        """What the current process of ``who`` logged (its log file is shared by restarts)."""
        with open(self.procs[who].log_path, "rb") as fh:
            fh.seek(self._log_start.get(who, 0))
            return fh.read().decode(errors="replace")

    async def stop(self, who: str) -> None:
        proc = self.procs.pop(who, None)
        if proc is None:
            return
        with contextlib.suppress(TimeoutError):
            await proc.terminate(timeout=10)
        proc.kill_sync()

    async def restart(self, who: str) -> None:
        """Stop ``who`` and start it again; returns once its new process serves."""
        await self.stop(who)
        since = time.time()
        await self.start(who)
        await self.wait_serving(who, since)

    async def wait_serving(self, who: str, since: float = 0.0, timeout: float = 30.0) -> None:
        """Until ``who``'s process started after ``since`` heartbeats (a coordinator: active)."""
        agent_id, deadline = self.ids[who], time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.watcher.latest.get(agent_id)
            proc = self.procs.get(who)
            if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"{agent_id} exited:\n{proc.log()[-3000:]}")
            fresh = st is not None and st.started_at > since and st.state == "alive"
            if fresh and (who != "coordinator" or self.coordinator_report().get("active")):
                return
            await asyncio.sleep(0.1)
        log = self.procs[who].log()[-3000:] if who in self.procs else ""
        raise TimeoutError(f"{agent_id} not serving within {timeout}s\n{log}")

    async def healthy(self) -> None:
        """Every member runs and serves: what a test may assume when it starts."""
        for who in FLEET:
            proc = self.procs.get(who)
            if proc is None or proc.proc is None or proc.proc.poll() is not None:
                await self.stop(who)
                await self.start(who)
        for who in FLEET:
            await self.wait_serving(who)
        # The coordinator schedules on both workers (it has seen their heartbeats).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            health = self.coordinator_report().get("health", {})
            if all(health.get(self.ids[w]) == "alive" for w in ("w1", "w2")):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the coordinator does not see both workers: {health}")

    def coordinator_report(self) -> dict[str, Any]:
        st = self.watcher.latest.get(self.ids["coordinator"])
        return st.extra.get("coordinator", {}) if st else {}

    async def queue(self, name: str) -> dict[str, Any]:
        """The management API's view of queue ``name`` in this vhost."""
        return await self.management.queue(self.vhost, name)

    async def settled(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """Queue ``name`` once it holds nothing, ready or unacknowledged (or the last view)."""
        deadline = time.monotonic() + timeout
        while True:
            info = await self.queue(name)
            held = (info.get("messages_ready") or 0) + (info.get("messages_unacknowledged") or 0)
            if held == 0 or time.monotonic() > deadline:
                return info
            await asyncio.sleep(0.5)  # the API refreshes its counts every few seconds

    @contextlib.asynccontextmanager
    async def tap(
        self, exchange: str, key: str = ""
    ) -> AsyncIterator[list[aio_pika.abc.AbstractIncomingMessage]]:
        """Copies of what ``exchange`` routes under ``key`` while open (the operator's view)."""
        seen: list[aio_pika.abc.AbstractIncomingMessage] = []
        conn = await aio_pika.connect(self.admin_url)
        try:
            ch = await conn.channel()
            q = await ch.declare_queue(exclusive=True, auto_delete=True)
            await q.bind(exchange, routing_key=key)

            async def keep(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
                seen.append(msg)
                await msg.ack()

            await q.consume(keep)
            yield seen
        finally:
            await conn.close()

    def guardian_report(self) -> dict[str, Any]:
        st = self.watcher.latest.get(self.ids["guardian"])
        return st.extra.get("guardian", {}) if st else {}

    def stats(self, who: str) -> dict[str, Any]:
        st = self.watcher.latest.get(self.ids[who])
        return st.stats if st else {}


def cli(keys: Keystore, url: str, admin_url: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBEING_", "AMQP_URL"))}
    cmd = [sys.executable, "-m", "robeing.agents", "--keys-dir", str(keys.root)]
    cmd += ["--amqp-url", url, *args, "--admin-url", admin_url]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr


async def finals_within(handles: Sequence[TaskHandle], timeout: float) -> list[FinalResult | None]:
    """Each handle's final, or None for those without one ``timeout`` seconds from now."""
    deadline = time.monotonic() + timeout
    out: list[FinalResult | None] = []
    for h in handles:
        try:
            out.append(await h.result(max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            out.append(None)
    return out


async def submit_unchecked(client: Client, requests: Sequence[TaskRequest]) -> list[TaskHandle]:
    """Submit ``requests`` through the client's lower layer, past its local checks.

    ``Client.submit_many`` refuses out-of-bounds fields before sending; this
    publishes the same signed ``task.submit`` the client would, so that the
    coordinator receives them. The handles are registered with the client
    (its private table) so the finals reach them.
    """
    handles = []
    for r in requests:
        handle = TaskHandle(r.id)
        client._handles[r.id] = handle
        handles.append(handle)
    submission = Submission(tuple(requests), client.agent.reply_queue)
    await client.agent.publish_event(
        topo.task_routing_key(None), Envelope("task.submit", submission.to_data())
    )
    return handles

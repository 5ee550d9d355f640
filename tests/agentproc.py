"""Test helpers: real agent processes and a heartbeat watcher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TypeVar

from robeing.agents.assembly import build_agent
from robeing.agents.context import Message
from robeing.agents.heartbeats import AgentStatus, status_from_heartbeat, statuses_from_summary
from robeing.agents.settings import Settings
from robeing.broker import topology as topo
from robeing.protocol.clusters.summary import SUMMARY_TYPE
from robeing.protocol.errors import DecodeError
from robeing.protocol.heartbeat import Heartbeat

T = TypeVar("T")


class AgentProcess:
    """A ``robeing agent`` subprocess, started exactly as a user would."""

    def __init__(
        self,
        amqp_url: str,
        keys_dir: Path,
        role: str,
        agent_id: str,
        args: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.cwd = cwd
        command = ["coordinator"] if role == "coordinator" else ["agent", "--role", role]
        self.argv = [
            sys.executable, "-m", "robeing.agents", *command, "--id", agent_id,
            "--heartbeat-interval", "0.5", *args,
        ]  # fmt: skip
        self.env = dict(os.environ)
        self.env.update(
            {
                "AMQP_URL": amqp_url,
                "ROBEING_KEYS": str(keys_dir),
                "ROBEING_LOG_FORMAT": "text",
                "ROBEING_LOG_LEVEL": "info",
            }
        )
        tests_dir = str(Path(__file__).parent)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (tests_dir, self.env.get("PYTHONPATH")) if p
        )
        self.env.update(env or {})
        self.log_path = log_dir / f"{agent_id}.log"
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.agent_id} still running after {timeout}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def terminate(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return await self.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill_sync(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


class HeartbeatWatcher:
    """Consumes every heartbeat of the vhost and remembers the latest per agent."""

    def __init__(self, amqp_url: str, keys_dir: Path) -> None:
        self.agent = build_agent(
            Settings(
                role="client",
                agent_id=f"watcher-{os.getpid()}",
                amqp_url=amqp_url,
                keys_dir=keys_dir,
            )
        )
        self.latest: dict[str, AgentStatus] = {}
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.agent.start()
        spec = topo.QueueSpec(
            f"robeing.test-watcher.{os.getpid()}", durable=False, exclusive=True, auto_delete=True
        )
        await self.agent.consume(
            spec,
            # Named clusters' members are heard through their leaders' summaries.
            {"heartbeat": self._on_heartbeat, SUMMARY_TYPE: self._on_summary},
            prefetch=1000,
            bindings=[
                (topo.EVENTS_EXCHANGE, topo.HEARTBEAT_BINDING),
                (topo.EVENTS_EXCHANGE, topo.SUMMARY_BINDING),
            ],
            work=False,
            load=False,
            observer=True,
        )

    def _on_heartbeat(self, msg: Message) -> None:
        try:
            beat = Heartbeat.from_data(msg.payload)
        except DecodeError:
            return
        status = status_from_heartbeat(msg.sender, msg.sender_role, beat, time.time())
        self.latest[status.id] = status
        self._changed.set()

    def _on_summary(self, msg: Message) -> None:
        for status in statuses_from_summary(msg, time.time()):
            self.latest[status.id] = status
        self._changed.set()

    async def wait_alive(
        self,
        agent_id: str,
        timeout: float = 20.0,
        process: AgentProcess | None = None,
        since: float = 0.0,
    ) -> AgentStatus:
        """Wait for a heartbeat of ``agent_id`` in state alive, newer than ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.latest.get(agent_id)
            if st is not None and st.state == "alive" and st.last_seen > since:
                return st
            if process is not None and process.proc is not None and process.proc.poll() is not None:
                raise AssertionError(f"{agent_id} exited early:\n{process.log()[-3000:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log = process.log()[-3000:] if process else ""
                raise TimeoutError(f"no heartbeat from {agent_id} within {timeout}s\n{log}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def wait_coordinator(self, agent_id: str, timeout: float = 20.0) -> dict:
        """Wait until coordinator ``agent_id`` reports itself active; returns its report."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.latest.get(agent_id)
            report = st.extra.get("coordinator") if st else None
            if report and report.get("active"):
                return report
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.5)
        raise TimeoutError(f"coordinator {agent_id} not active within {timeout}s")

    async def stop(self) -> None:
        await self.agent.stop()


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 15.0, every: float = 0.2
) -> T:
    """Call ``check`` until it returns something true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


# -- metrics -------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    """A TCP port free on this machine now (for an agent's --metrics-port or --http)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape_metrics(port: int, timeout: float = 10.0) -> Samples:
    """An agent's Prometheus series at ``port``, keyed by (name, sorted labels).

    Raises:
        AssertionError: the answer is not a 200 with Prometheus' text format.
    """
    import httpx

    async with httpx.AsyncClient() as http:
        resp = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return parse_metrics(resp.text)


def parse_metrics(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

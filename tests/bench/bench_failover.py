"""Failover benchmark: failure detection, false deaths, takeover, broker restart.

Usage::

    python tests/bench/bench_failover.py [--kills 50] [--pauses 10]
        [--false-death-seconds 600] [--takeovers 10] [--no-broker-restart]
        [--only kills,pauses,...] [--keep-logs]

Every measurement runs real ``robeing`` processes in a vhost of its own. The
coordinator's view is read two ways: from its signed heartbeats, whose
``extra["coordinator"]["health"]`` maps agent ids to alive, suspected, dead,
backup or recovering (stamped with the coordinator's send time; resolution:
its heartbeat interval), and by polling ``coordinator.status`` (the same
report; resolution: the poll interval plus a few ms of round trip). A change
is bracketed by the last answer without it and the first answer with it.

1. ``kills``: a worker is SIGKILLed; time until the coordinator says ``dead``
   (from the broker's ``connection.closed`` event, see connwatch). Coordinator
   and workers beat every 0.2 s; polled every 0.02 s. Fresh worker ids.
2. ``pauses``: a worker is SIGSTOPped under the detector's defaults (1 s
   heartbeats for agents and coordinator, acceptable pause 3 s, dead after
   2 s); time to ``suspected`` and ``dead``: from the 1 s reports, polled
   every 0.05 s, and (suspected only) from the coordinator's own log line.
3. ``false_deaths``: 4 workers under the same defaults; a nemesis SIGSTOPs a
   random one for 0.2-2.5 s (under the 3 s acceptable pause) every 1-4 s.
   Counts ``suspected``/``dead`` states in the reports and suspicions in the
   coordinator's log. The target is zero.
4. ``takeover``: an active and a standby coordinator (0.2 s heartbeats);
   SIGKILL the active; time until the standby won the lock (its new epoch is
   the wall clock in ms), says it is active (polled every 0.02 s, and in its
   reports), logs "active" (its consumers started) and reports the worker
   alive. A fresh standby is started for each repetition.
5. ``broker_restart``: 3 workers; ``rabbitmqctl stop_app; start_app``; time
   from start_app's return until ``/api/consumers`` lists each worker's
   consumers again (agent, broadcast, work and reply queues), polled every
   0.1 s. The management API's view can lag the broker by a few seconds, so
   these are upper bounds. The restart disrupts every user of the broker on
   the machine: it runs once, last (``--no-broker-restart`` skips it).

Percentiles are nearest-rank over the samples (p99 of fewer than 100 samples
is their maximum). Results are printed and written to
``bench-results/failover.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from robeing.agents import Settings
from robeing.agents.keystore import Keystore
from robeing.agents.runtime import Agent
from robeing.broker import topology as topo
from robeing.broker.base import Delivery
from robeing.broker.management import Management, ManagementSettings, with_vhost
from robeing.protocol.errors import BrokerError, ProtocolError
from robeing.protocol.failure_detector import DetectorConfig

BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
FAST_HEARTBEAT = 0.2  # coordinator (and worker) heartbeat where resolution matters
KILL_POLL_S = 0.02  # coordinator.status polling around a SIGKILL
PAUSE_POLL_S = 0.05  # and around a SIGSTOP
DEFAULTS = DetectorConfig(heartbeat_interval=1.0, acceptable_pause=3.0, dead_after=2.0)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50, p99, min, max and mean of the non-missing values, in seconds."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50": round(pct(xs, 0.5), 4),
        "p99": round(pct(xs, 0.99), 4),
        "min": round(min(xs), 4),
        "max": round(max(xs), 4),
        "mean": round(statistics.fmean(xs), 4),
    }


def rnd(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# -- processes --------------------------------------------------------------------


class Proc:
    """One ``robeing`` process, its output in a JSON-lines log file."""

    def __init__(self, agent_id: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.agent_id = agent_id
        self.log_path = log
        self._log: IO[bytes] | None = log.open("ab")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL (stopped or not) and reap."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def records(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        out.append(rec)
        return out

    def first_log(self, predicate: Callable[[str], bool]) -> float | None:
        """Timestamp of the first log line whose message matches."""
        for rec in self.records():
            if predicate(str(rec.get("msg", ""))):
                return float(rec["ts"])
        return None

    def tail(self, n: int = 2000) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


async def until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def stop_procs(procs: list[Proc], timeout: float = 20.0) -> None:
    """SIGCONT + SIGTERM everyone, wait, SIGKILL whoever is left; reap all."""
    for p in procs:
        p.signal(signal.SIGCONT)
        p.signal(signal.SIGTERM)
    await until(lambda: not any(p.running for p in procs), timeout)
    for p in procs:
        p.kill()


# -- heartbeats ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Beat:
    """One verified heartbeat: sender's send time and our receive time (wall clock)."""

    sender: str
    sent: float
    received: float
    payload: dict[str, Any]
    previous_sent: float | None

    @property
    def report(self) -> dict[str, Any]:
        rep = self.payload.get("coordinator")
        return rep if isinstance(rep, dict) else {}

    def health(self, agent_id: str) -> str | None:
        h = self.report.get("health")
        return h.get(agent_id) if isinstance(h, dict) else None


class Watcher:
    """Consumes every heartbeat of a vhost; resolves waiters on the beat that matches."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.latest: dict[str, Beat] = {}
        self.listeners: list[Callable[[Beat], None]] = []
        self._waiters: list[tuple[Callable[[Beat], bool], asyncio.Future[Beat]]] = []

    async def start(self) -> None:
        spec = topo.QueueSpec(
            f"robeing.bench-watch.{os.getpid()}.{os.urandom(3).hex()}",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": 100_000},
        )
        await self.agent.transport.consume(
            spec,
            self._on_delivery,
            prefetch=1000,
            bindings=[(topo.EVENTS_EXCHANGE, "heartbeat.#")],
            no_ack=True,
        )

    async def _on_delivery(self, delivery: Delivery) -> None:
        received = time.time()
        try:
            opened = self.agent.codec.open(delivery.body, received)
        except ProtocolError:
            return
        env = opened.envelope
        if env.type != "heartbeat" or not isinstance(env.payload, dict):
            return
        prev = self.latest.get(env.sender)
        beat = Beat(env.sender, env.timestamp, received, env.payload, prev.sent if prev else None)
        self.latest[env.sender] = beat
        for listener in self.listeners:
            listener(beat)
        if self._waiters:
            for pred, fut in self._waiters:
                if not fut.done() and pred(beat):
                    fut.set_result(beat)
            self._waiters = [w for w in self._waiters if not w[1].done()]

    def expect(self, pred: Callable[[Beat], bool]) -> asyncio.Future[Beat]:
        """A future for the first beat from now on that matches ``pred``."""
        fut: asyncio.Future[Beat] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return fut

    async def wait(
        self, pred: Callable[[Beat], bool], timeout: float, procs: Iterable[Proc] = ()
    ) -> Beat:
        """The latest beat matching ``pred``, or the next one."""
        for beat in list(self.latest.values()):
            if pred(beat):
                return beat
        return await self.result(self.expect(pred), timeout, procs)

    @staticmethod
    async def result(fut: asyncio.Future[Beat], timeout: float, procs: Iterable[Proc] = ()) -> Beat:
        """Await ``fut``; fail early if one of ``procs`` exited."""
        procs = list(procs)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(fut), 0.5)
            for p in procs:
                if not p.running:
                    fut.cancel()
                    raise RuntimeError(f"{p.agent_id} exited early:\n{p.tail()}")
            if time.monotonic() > deadline:
                fut.cancel()
                raise TimeoutError(f"condition not met within {timeout}s")


# -- the bench and its parts ------------------------------------------------------------


class Poller:
    """Asks a coordinator for its report (``coordinator.status``) every ``interval``.

    Each answer reflects the coordinator's state at some moment between the
    request's send and the answer's receipt, so a change is bracketed by the
    send time of the last answer without it and the receipt of the first with it.
    """

    def __init__(self, agent: Agent, coordinator: str, interval: float) -> None:
        self.agent = agent
        self.coordinator = coordinator
        self.interval = interval
        self.answers: list[tuple[float, float, dict[str, Any]]] = []  # (sent, received, report)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _run(self) -> None:
        # The flag, not only cancel(): asyncio.wait_for (3.11) can swallow a
        # cancellation that arrives as the awaited answer does.
        while not self._stopping:
            t0 = time.time()
            with contextlib.suppress(Exception):
                rep = await self.agent.request(
                    self.coordinator, "coordinator.status", None, timeout=2.0
                )
                if isinstance(rep, dict) and isinstance(rep.get("coordinator"), dict):
                    self.answers.append((t0, time.time(), rep["coordinator"]))
            await asyncio.sleep(max(0.0, self.interval - (time.time() - t0)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5.0)

    def seen(self, pred: Callable[[dict[str, Any]], bool]) -> bool:
        return any(pred(rep) for _, _, rep in self.answers)

    def bracket(
        self, pred: Callable[[dict[str, Any]], bool], since: float
    ) -> tuple[float | None, float | None]:
        """(lower, upper) seconds after ``since`` of the first answer matching ``pred``."""
        lower = None
        for sent, received, rep in self.answers:
            if pred(rep):
                if lower is None or received < since:
                    return None, None  # no answer before the change, or it predates ``since``
                return max(0.0, lower - since), received - since
            lower = sent
        return None, None


def health_is(agent_id: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda rep: (rep.get("health") or {}).get(agent_id) == state


class Bench:
    """Keys, logs and everything started, for cleanup whatever happens."""

    def __init__(self, keep_logs: bool) -> None:
        self.keep_logs = keep_logs
        self.tmp = Path(tempfile.mkdtemp(prefix="robeing-bench-failover-"))
        self.keys = self.tmp / "keys"
        self.keystore = Keystore(self.keys)
        self.keystore.init()
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.procs: list[Proc] = []
        self.vhosts: list[str] = []
        self.broker_stopped = False
        self.mgmt_settings = ManagementSettings.from_amqp_url(BASE_URL)
        self.mgmt: Management | None = None
        self.http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self.mgmt = Management(self.mgmt_settings, timeout=30)
        ms = self.mgmt_settings
        self.http = httpx.AsyncClient(
            base_url=ms.base_url + "/api", auth=(ms.username, ms.password), timeout=30
        )

    async def close(self) -> None:
        for p in self.procs:
            p.signal(signal.SIGCONT)
        await stop_procs([p for p in self.procs if p.running], timeout=10)
        if self.broker_stopped:
            await rabbitmqctl("start_app")
            self.broker_stopped = False
        if self.mgmt is not None:
            for vh in list(self.vhosts):
                with contextlib.suppress(BrokerError):
                    await self.mgmt.delete_vhost(vh)
                    self.vhosts.remove(vh)
            await self.mgmt.aclose()
        if self.http is not None:
            await self.http.aclose()

    async def delete_queue(self, vhost: str, name: str) -> None:
        assert self.http is not None
        with contextlib.suppress(httpx.HTTPError):
            await self.http.delete(f"/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")

    def cleanup_sync(self) -> None:
        """Last resort, outside the event loop: nothing of ours may outlive the run."""
        for p in self.procs:
            p.signal(signal.SIGCONT)
            p.kill()
        if self.broker_stopped:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=False, timeout=300)
            self.broker_stopped = False
        if self.vhosts:
            ms = self.mgmt_settings
            with httpx.Client(auth=(ms.username, ms.password), timeout=30) as http:
                for vh in list(self.vhosts):
                    with contextlib.suppress(httpx.HTTPError):
                        http.delete(f"{ms.base_url}/api/vhosts/{quote(vh, safe='')}")
                    self.vhosts.remove(vh)
        if self.keep_logs:
            print(f"logs kept in {self.logs}", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Part:
    """One measurement: a fresh vhost, a probe watching heartbeats, processes.

    The probe is a client-role agent (no heartbeats, no queue of its own but
    its reply queue) whose certificate says ``coordinator``: ``coordinator.*``
    messages, ``coordinator.status`` included, are accepted from that role
    only. It never competes for the lead.
    """

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self.vhost = f"robeing-bench-failover-{name}-{uuid.uuid4().hex[:6]}"
        self.url = with_vhost(BASE_URL, self.vhost)
        self.procs: list[Proc] = []
        self.probe: Agent | None = None

    @property
    def mgmt(self) -> Management:
        assert self.bench.mgmt is not None
        return self.bench.mgmt

    async def __aenter__(self) -> Part:
        await self.mgmt.create_vhost(self.vhost)
        self.bench.vhosts.append(self.vhost)
        store = self.bench.keystore
        identity = store.issue("bench-probe", "coordinator")
        settings = Settings(
            role="client", agent_id="bench-probe", amqp_url=self.url, keys_dir=self.bench.keys
        )
        self.probe = Agent(
            settings, identity, store.trust_store(), lookup_peer=store.peer_certificate
        )
        await self.probe.start()
        self.watcher = Watcher(self.probe)
        await self.watcher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await stop_procs(self.procs)
        finally:
            if self.probe is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.probe.stop(), 30)
            await self.mgmt.delete_vhost(self.vhost)
            self.bench.vhosts.remove(self.vhost)

    def start(self, role: str, agent_id: str, *args: str) -> Proc:
        command = ["coordinator"] if role == "coordinator" else ["agent", "--role", role]
        argv = [sys.executable, "-m", "robeing.agents", *command, "--id", agent_id, *args]
        env = {
            **os.environ,
            "AMQP_URL": self.url,
            "ROBEING_KEYS": str(self.bench.keys),
            "ROBEING_LOG_FORMAT": "json",
            "ROBEING_LOG_LEVEL": "info" if role == "coordinator" else "warning",
        }
        proc = Proc(agent_id, argv, env, self.bench.logs / f"{self.name}-{agent_id}.log")
        self.procs.append(proc)
        self.bench.procs.append(proc)
        return proc

    def poller(self, coordinator: str, interval: float) -> Poller:
        assert self.probe is not None
        return Poller(self.probe, coordinator, interval)

    async def coordinator_active(self, coord: Proc, timeout: float = 60) -> Beat:
        cid = coord.agent_id
        return await self.watcher.wait(
            lambda b: b.sender == cid and bool(b.report.get("active")), timeout, [coord]
        )

    async def reported(
        self, coord: Proc, agent: Proc, state: str = "alive", timeout: float = 60
    ) -> Beat:
        cid, aid = coord.agent_id, agent.agent_id
        return await self.watcher.wait(
            lambda b: b.sender == cid and b.health(aid) == state, timeout, [coord, agent]
        )

    async def drop_queues(self, agent_id: str) -> None:
        """Delete a gone agent's durable queues (the vhost deletion would, later)."""
        for queue in (topo.agent_queue(agent_id), topo.work_queue(agent_id)):
            await self.bench.delete_queue(self.vhost, queue)


# -- 1. SIGKILL detection ---------------------------------------------------------------


async def bench_kills(bench: Bench, n: int, rng: random.Random, batch: int = 5) -> dict[str, Any]:
    hb = ("--heartbeat-interval", str(FAST_HEARTBEAT))
    samples: list[dict[str, Any]] = []
    async with Part(bench, "kill") as part:
        coord = part.start("coordinator", "fo-k-coord", *hb)
        cid = coord.agent_id
        await part.coordinator_active(coord)
        while len(samples) < n:
            k = len(samples)
            count = min(batch, n - k)
            workers = [part.start("worker", f"fo-k-w{k + j}", *hb) for j in range(count)]
            for w in workers:
                await part.reported(coord, w)
            await asyncio.sleep(1.5)  # let the start-up CPU burst pass
            for w in workers:
                wid = w.agent_id
                poller = part.poller(cid, KILL_POLL_S)
                poller.start()
                # A random phase against the coordinator's 0.2 s reports.
                await asyncio.sleep(rng.uniform(0.3, 0.5))
                fut = part.watcher.expect(
                    lambda b, w=wid: b.sender == cid and b.health(w) == "dead"
                )
                killed = time.time()
                w.signal(signal.SIGKILL)
                beat = await part.watcher.result(fut, 30, [coord])
                await until(lambda p=poller, w=wid: p.seen(health_is(w, "dead")), 3.0, 0.02)
                await poller.stop()
                w.kill()
                lower = (
                    None if beat.previous_sent is None else max(0.0, beat.previous_sent - killed)
                )
                p_lower, p_upper = poller.bracket(health_is(wid, "dead"), killed)
                sample = {
                    "agent": wid,
                    "polled": rnd(p_upper),
                    "polled_lower_bound": rnd(p_lower),
                    "report": rnd(beat.sent - killed),
                    "report_lower_bound": rnd(lower),
                    "observed": rnd(beat.received - killed),
                    # Death through silence is always preceded by a logged suspicion.
                    "by_connection_event": coord.first_log(
                        lambda m, w=wid: m.startswith(f"agent {w} suspected")
                    )
                    is None,
                }
                samples.append(sample)
                print(
                    f"  kill {len(samples):3d}/{n}: dead polled in "
                    f"({sample['polled_lower_bound']}, {sample['polled']}]s, "
                    f"in report after {sample['report']:.3f}s",
                    flush=True,
                )
                await asyncio.sleep(0.2)
            for w in workers:
                await part.drop_queues(w.agent_id)
        final = part.watcher.latest[cid].report
    return {
        "kills": n,
        "coordinator_heartbeat_interval_s": FAST_HEARTBEAT,
        "worker_heartbeat_interval_s": FAST_HEARTBEAT,
        "resolution_s": {"polled": KILL_POLL_S, "report": FAST_HEARTBEAT},
        "time_to_dead_polled_s": summary(s["polled"] for s in samples),
        "time_to_dead_polled_lower_bound_s": summary(s["polled_lower_bound"] for s in samples),
        "time_to_dead_report_s": summary(s["report"] for s in samples),
        "time_to_dead_report_lower_bound_s": summary(s["report_lower_bound"] for s in samples),
        "time_to_dead_observed_s": summary(s["observed"] for s in samples),
        "detected_by_connection_event": sum(s["by_connection_event"] for s in samples),
        "connection_deaths_counter": final.get("connection_deaths", 0),
        "samples": samples,
    }


# -- 2. SIGSTOP detection ---------------------------------------------------------------


async def bench_pauses(bench: Bench, n: int, rng: random.Random) -> dict[str, Any]:
    cfg = DEFAULTS
    samples: list[dict[str, Any]] = []
    async with Part(bench, "pause") as part:
        coord = part.start(
            "coordinator", "fo-p-coord",
            "--heartbeat-interval", str(cfg.heartbeat_interval),
            "--acceptable-pause", str(cfg.acceptable_pause),
            "--dead-after", str(cfg.dead_after),
        )  # fmt: skip
        cid = coord.agent_id
        await part.coordinator_active(coord)
        for i in range(n):
            w = part.start("worker", f"fo-p-w{i}", "--heartbeat-interval", "1.0")
            wid = w.agent_id
            await part.reported(coord, w)
            await asyncio.sleep(rng.uniform(5.0, 6.0))  # regular beats first; random phase
            sus = part.watcher.expect(
                lambda b, w=wid: b.sender == cid and b.health(w) == "suspected"
            )
            dead = part.watcher.expect(lambda b, w=wid: b.sender == cid and b.health(w) == "dead")
            poller = part.poller(cid, PAUSE_POLL_S)
            poller.start()
            await asyncio.sleep(0.3)
            last_beat = part.watcher.latest[wid].sent
            stopped = time.time()
            w.signal(signal.SIGSTOP)
            dead_beat = await part.watcher.result(dead, 30, [coord])
            await until(lambda p=poller, w=wid: p.seen(health_is(w, "dead")), 3.0, 0.05)
            await poller.stop()
            sus_beat = sus.result() if sus.done() else None
            sus.cancel()
            w.kill()
            logged = coord.first_log(lambda m, w=wid: m.startswith(f"agent {w} suspected"))
            s_lower, s_upper = poller.bracket(health_is(wid, "suspected"), stopped)
            d_lower, d_upper = poller.bracket(health_is(wid, "dead"), stopped)
            sample = {
                "agent": wid,
                "since_last_beat_at_stop": rnd(stopped - last_beat),
                "suspected_logged": rnd(logged - stopped) if logged else None,
                "suspected_polled": rnd(s_upper),
                "suspected_polled_lower_bound": rnd(s_lower),
                "suspected_report": rnd(sus_beat.sent - stopped) if sus_beat else None,
                "dead_polled": rnd(d_upper),
                "dead_polled_lower_bound": rnd(d_lower),
                "dead_report": rnd(dead_beat.sent - stopped),
                "silence_at_suspicion_logged": rnd(logged - last_beat) if logged else None,
            }
            samples.append(sample)
            print(
                f"  pause {i + 1:2d}/{n}: suspected logged {sample['suspected_logged']}s, "
                f"polled {sample['suspected_polled']}s, report {sample['suspected_report']}s; "
                f"dead polled {sample['dead_polled']}s, report {sample['dead_report']}s",
                flush=True,
            )
            await part.drop_queues(wid)
    return {
        "pauses": n,
        "detector": {
            "agent_heartbeat_interval_s": cfg.heartbeat_interval,
            "coordinator_heartbeat_interval_s": cfg.heartbeat_interval,
            "acceptable_pause_s": cfg.acceptable_pause,
            "dead_after_s": cfg.dead_after,
            "suspect_threshold_phi": cfg.suspect_threshold,
            "model_silence_to_suspected_s": round(cfg.steady_suspect_silence(), 3),
            "model_silence_to_dead_s": round(cfg.steady_dead_silence(), 3),
        },
        "resolution_s": {
            "logged": 0.001,
            "polled": PAUSE_POLL_S,
            "report": cfg.heartbeat_interval,
            "coordinator_tick": 0.1,
        },
        "time_to_suspected_logged_s": summary(s["suspected_logged"] for s in samples),
        "time_to_suspected_polled_s": summary(s["suspected_polled"] for s in samples),
        "time_to_suspected_report_s": summary(s["suspected_report"] for s in samples),
        "time_to_dead_polled_s": summary(s["dead_polled"] for s in samples),
        "time_to_dead_report_s": summary(s["dead_report"] for s in samples),
        "since_last_beat_at_stop_s": summary(s["since_last_beat_at_stop"] for s in samples),
        "silence_at_suspicion_logged_s": summary(s["silence_at_suspicion_logged"] for s in samples),
        "samples": samples,
    }


# -- 3. false deaths under tolerated pauses ---------------------------------------------


async def bench_false_deaths(
    bench: Bench, seconds: float, n_workers: int, rng: random.Random
) -> dict[str, Any]:
    cfg = DEFAULTS
    max_pause = 2.5
    async with Part(bench, "nemesis") as part:
        coord = part.start(
            "coordinator", "fo-f-coord",
            "--heartbeat-interval", str(cfg.heartbeat_interval),
            "--acceptable-pause", str(cfg.acceptable_pause),
            "--dead-after", str(cfg.dead_after),
        )  # fmt: skip
        cid = coord.agent_id
        await part.coordinator_active(coord)
        workers = [part.start("worker", f"fo-f-w{i}") for i in range(n_workers)]
        for w in workers:
            await part.reported(coord, w)
        ids = [w.agent_id for w in workers]
        states = dict.fromkeys(ids, "alive")
        transitions: Counter[str] = Counter()
        events: list[dict[str, Any]] = []
        last_sent: dict[str, float] = {}
        max_gap = dict.fromkeys(ids, 0.0)
        reports = 0
        began = time.time()

        def on_beat(b: Beat) -> None:
            nonlocal reports
            if b.sender == cid:
                reports += 1
                for wid in ids:
                    st = b.health(wid) or "missing"
                    if st != states[wid]:
                        transitions[st] += 1
                        events.append(
                            {
                                "t": round(b.sent - began, 3),
                                "agent": wid,
                                "from": states[wid],
                                "to": st,
                            }
                        )
                        print(
                            f"  ! {wid}: {states[wid]} -> {st} at {b.sent - began:.1f}s", flush=True
                        )
                        states[wid] = st
            elif b.sender in max_gap:
                if b.sender in last_sent:
                    max_gap[b.sender] = max(max_gap[b.sender], b.sent - last_sent[b.sender])
                last_sent[b.sender] = b.sent

        part.watcher.listeners.append(on_beat)
        paused: set[str] = set()
        pauses: list[float] = []

        async def pause(w: Proc, d: float) -> None:
            paused.add(w.agent_id)
            t0 = time.monotonic()
            w.signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(d)
            finally:
                w.signal(signal.SIGCONT)
                pauses.append(time.monotonic() - t0)
                paused.discard(w.agent_id)

        tasks: set[asyncio.Task[None]] = set()
        end = time.monotonic() + seconds
        next_progress = time.monotonic() + 60
        try:
            while True:
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                now = time.monotonic()
                if now >= end:
                    break
                if now >= next_progress:
                    next_progress += 60
                    print(
                        f"  nemesis: {now - end + seconds:.0f}s, {len(pauses)} pauses, "
                        f"suspected {transitions['suspected']}, dead {transitions['dead']}",
                        flush=True,
                    )
                free = [w for w in workers if w.agent_id not in paused]
                if free:
                    t = asyncio.create_task(pause(rng.choice(free), rng.uniform(0.2, max_pause)))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        # A suspicion needs > 4 s of silence and a death 2 s more: look a bit longer.
        await asyncio.sleep(cfg.steady_dead_silence() + 1.0)
        part.watcher.listeners.remove(on_beat)
        suspicions_logged = [
            rec
            for rec in coord.records()
            if "suspected" in str(rec.get("msg", ""))
            and any(str(rec.get("msg", "")).startswith(f"agent {wid} ") for wid in ids)
        ]
        final = part.watcher.latest[cid].report
        crashed = [w.agent_id for w in workers if not w.running]
    return {
        "seconds": seconds,
        "workers": n_workers,
        "detector": {
            "agent_heartbeat_interval_s": cfg.heartbeat_interval,
            "acceptable_pause_s": cfg.acceptable_pause,
            "dead_after_s": cfg.dead_after,
        },
        "pauses": len(pauses),
        "pause_s": summary(pauses),
        "pauses_at_or_over_acceptable": sum(p >= cfg.acceptable_pause for p in pauses),
        "paused_fraction_of_worker_time": round(sum(pauses) / (seconds * n_workers), 4),
        "coordinator_reports_seen": reports,
        "suspected_transitions": transitions["suspected"],
        "dead_transitions": transitions["dead"],
        "other_transitions": {
            k: v for k, v in transitions.items() if k not in ("suspected", "dead")
        },
        "suspicions_logged": len(suspicions_logged),
        "connection_deaths": final.get("connection_deaths", 0),
        "max_heartbeat_gap_s": {k: round(v, 3) for k, v in max_gap.items()},
        "workers_exited": crashed,
        "events": events,
        "logged": [{"ts": r.get("ts"), "msg": r.get("msg")} for r in suspicions_logged][:50],
    }


# -- 4. coordinator takeover --------------------------------------------------------------


async def bench_takeover(bench: Bench, n: int, rng: random.Random) -> dict[str, Any]:
    hb = ("--heartbeat-interval", str(FAST_HEARTBEAT))
    samples: list[dict[str, Any]] = []
    async with Part(bench, "takeover") as part:
        worker = part.start("worker", "fo-t-w", *hb)
        wid = worker.agent_id
        active = part.start("coordinator", "fo-t-c0", *hb)
        await part.coordinator_active(active)
        await part.reported(active, worker)
        serial = 1

        def start_standby() -> Proc:
            nonlocal serial
            proc = part.start("coordinator", f"fo-t-c{serial}", *hb, "--standby")
            serial += 1
            return proc

        async def reporting_standby(proc: Proc) -> None:
            sid = proc.agent_id
            await part.watcher.wait(
                lambda b: b.sender == sid and "active" in b.report and not b.report["active"],
                60,
                [proc],
            )

        standby = start_standby()
        await reporting_standby(standby)
        for i in range(n):
            sid = standby.agent_id
            poller = part.poller(sid, KILL_POLL_S)
            poller.start()
            await asyncio.sleep(rng.uniform(0.8, 1.2))  # random phase against the reports
            old_epoch = part.watcher.latest[active.agent_id].report.get("epoch", 0)
            fut_active = part.watcher.expect(
                lambda b, s=sid: b.sender == s and bool(b.report.get("active"))
            )
            fut_serving = part.watcher.expect(
                lambda b, s=sid: (
                    b.sender == s and bool(b.report.get("active")) and b.health(wid) == "alive"
                )
            )
            killed = time.time()
            active.signal(signal.SIGKILL)
            beat = await part.watcher.result(fut_active, 60, [standby])
            serving = await part.watcher.result(fut_serving, 60, [standby])
            await until(lambda p=poller: p.seen(lambda r: bool(r.get("active"))), 3.0, 0.02)
            await poller.stop()
            active.kill()
            logged = None
            deadline = time.monotonic() + 5
            while logged is None and time.monotonic() < deadline:
                logged = standby.first_log(lambda m, s=sid: m.startswith(f"coordinator {s} active"))
                if logged is None:
                    await asyncio.sleep(0.1)
            lower = None if beat.previous_sent is None else max(0.0, beat.previous_sent - killed)
            p_lower, p_upper = poller.bracket(lambda r: bool(r.get("active")), killed)
            epoch = int(beat.report.get("epoch", 0))
            sample = {
                "new_active": sid,
                # The epoch is the wall clock in ms when the lock was won (if above the last).
                "lock_won": rnd(epoch / 1000 - killed) if epoch > old_epoch + 1 else None,
                "active_polled": rnd(p_upper),
                "active_polled_lower_bound": rnd(p_lower),
                "active_report": rnd(beat.sent - killed),
                "active_report_lower_bound": rnd(lower),
                "active_logged": rnd(logged - killed) if logged else None,
                "serving_report": rnd(serving.sent - killed),
                "epoch_increased": epoch > old_epoch,
            }
            samples.append(sample)
            print(
                f"  takeover {i + 1:2d}/{n}: lock won {sample['lock_won']}s, active polled "
                f"{sample['active_polled']}s, report {sample['active_report']:.3f}s, "
                f"logged active {sample['active_logged']}s, "
                f"serving {sample['serving_report']:.3f}s",
                flush=True,
            )
            active = standby
            standby = start_standby()
            await reporting_standby(standby)
    return {
        "takeovers": n,
        "coordinator_heartbeat_interval_s": FAST_HEARTBEAT,
        "resolution_s": {"polled": KILL_POLL_S, "report": FAST_HEARTBEAT, "logged": 0.001},
        "lock_retry_s": 0.25,
        "time_to_lock_won_s": summary(s["lock_won"] for s in samples),
        "time_to_active_polled_s": summary(s["active_polled"] for s in samples),
        "time_to_active_report_s": summary(s["active_report"] for s in samples),
        "time_to_active_logged_s": summary(s["active_logged"] for s in samples),
        "time_to_serving_report_s": summary(s["serving_report"] for s in samples),
        "epoch_always_increased": all(s["epoch_increased"] for s in samples),
        "samples": samples,
    }


# -- 5. broker restart ---------------------------------------------------------------------


async def rabbitmqctl(*args: str) -> float:
    t = time.monotonic()
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "-q", *args], check=True, timeout=300, capture_output=True
    )
    return time.monotonic() - t


def consumers_complete(agent_id: str, queues: list[str]) -> bool:
    fixed = {topo.agent_queue(agent_id), topo.broadcast_queue(agent_id), topo.work_queue(agent_id)}
    reply = f"robeing.reply.{agent_id}."
    return fixed <= set(queues) and any(q.startswith(reply) for q in queues)


async def consumer_queues(part: Part) -> list[str] | None:
    """The queue of every consumer in the vhost (one entry per consumer)."""
    try:
        cons = await part.mgmt.consumers(part.vhost)
    except BrokerError:
        return None
    return [str(c.get("queue", {}).get("name")) for c in cons or []]


def consumers_of(agent_id: str, queues: list[str]) -> int:
    own = (
        topo.agent_queue(agent_id),
        topo.broadcast_queue(agent_id),
        topo.work_queue(agent_id),
        f"robeing.reply.{agent_id}.",
    )
    return sum(q == own[0] or q == own[1] or q == own[2] or q.startswith(own[3]) for q in queues)


async def bench_broker_restart(bench: Bench, n_workers: int = 3) -> dict[str, Any]:
    async with Part(bench, "restart") as part:
        workers = [part.start("worker", f"fo-r-w{i}") for i in range(n_workers)]
        ids = [w.agent_id for w in workers]
        for w in workers:
            aid = w.agent_id
            await part.watcher.wait(lambda b, a=aid: b.sender == a, 60, [w])
        deadline = time.monotonic() + 60
        while True:
            queues = await consumer_queues(part)
            if queues is not None and all(consumers_complete(a, queues) for a in ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumers never complete before the restart: {queues}")
            await asyncio.sleep(0.5)
        before = {a: consumers_of(a, queues) for a in ids}
        beats_back: dict[str, float] = {}
        started = 0.0

        def on_beat(b: Beat) -> None:
            if started and b.sender in ids and b.sender not in beats_back and b.sent > started:
                beats_back[b.sender] = b.received - started

        part.watcher.listeners.append(on_beat)
        bench.broker_stopped = True
        stop_s = await rabbitmqctl("stop_app")
        start_s = await rabbitmqctl("start_app")
        bench.broker_stopped = False
        started = time.time()
        back: dict[str, float] = {}
        api_up: float | None = None
        deadline = time.monotonic() + 180
        while len(back) < len(ids) and time.monotonic() < deadline:
            queues = await consumer_queues(part)
            now = time.time() - started
            if queues is not None:
                api_up = now if api_up is None else api_up
                for a in ids:
                    if a not in back and consumers_complete(a, queues):
                        back[a] = now
            await asyncio.sleep(0.1)
        await until(lambda: len(beats_back) == len(ids), 30.0)
        part.watcher.listeners.remove(on_beat)
        await asyncio.sleep(5.0)  # the management view settles; then count again
        queues = await consumer_queues(part) or []
        after = {a: consumers_of(a, queues) for a in ids}
        exited = [w.agent_id for w in workers if not w.running]
    print(
        f"  stop_app {stop_s:.2f}s, start_app {start_s:.2f}s; consumers back "
        + ", ".join(f"{a} {v:.2f}s" for a, v in sorted(back.items())),
        flush=True,
    )
    return {
        "workers": n_workers,
        "stop_app_s": round(stop_s, 3),
        "start_app_s": round(start_s, 3),
        "management_api_answered_s": rnd(api_up),
        "consumers_back_s": {a: rnd(back.get(a)) for a in ids},
        "all_consumers_back_s": rnd(max(back.values())) if len(back) == len(ids) else None,
        "poll_interval_s": 0.1,
        "heartbeat_seen_again_s": {a: rnd(beats_back.get(a)) for a in ids},
        "consumers_per_worker_before": before,
        "consumers_per_worker_5s_after": after,
        "workers_exited": exited,
        "note": (
            "measured from start_app's return; the management API's consumer list can lag "
            "the broker by a few seconds, so these are upper bounds; heartbeats are seen only "
            "once the watcher's own connection (1 s reconnect interval) is back"
        ),
    }


# -- main ----------------------------------------------------------------------------------


PARTS = ("kills", "pauses", "false_deaths", "takeover", "broker_restart")


def git_head() -> str | None:
    """The checked-out commit, with ``+dirty`` if the tree has changes (read-only git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


async def run(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    terms = 0

    def on_term() -> None:
        # First SIGTERM: unwind and clean up; a second one: clean up now and leave.
        nonlocal terms
        terms += 1
        if terms == 1:
            main_task.cancel()
        else:
            bench.cleanup_sync()
            os._exit(143)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    rng = random.Random(args.seed)
    parts = [p for p in PARTS if p in args.only]
    if args.no_broker_restart and "broker_restart" in parts:
        parts.remove("broker_restart")
    await bench.open()
    assert bench.mgmt is not None
    overview = await bench.mgmt.overview()
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_head(),
        "cpus": os.cpu_count(),
        "rabbitmq_version": overview.get("rabbitmq_version"),
        "seed": args.seed,
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
    }
    try:
        for name in parts:
            print(f"\n== {name}", flush=True)
            t = time.monotonic()
            if name == "kills":
                res = await bench_kills(bench, args.kills, rng)
            elif name == "pauses":
                res = await bench_pauses(bench, args.pauses, rng)
            elif name == "false_deaths":
                res = await bench_false_deaths(bench, args.false_death_seconds, args.workers, rng)
            elif name == "takeover":
                res = await bench_takeover(bench, args.takeovers, rng)
            else:
                res = await bench_broker_restart(bench)
            res["wall_s"] = round(time.monotonic() - t, 1)
            res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            result[name] = res
            write(result, args.out)
    finally:
        await bench.close()
    result["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def fmt(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "n=0"
    return f"p50 {s['p50']:.3f}s  p99 {s['p99']:.3f}s  max {s['max']:.3f}s  (n={s['n']})"


def report(r: dict[str, Any]) -> None:
    print(f"\nfailover benchmark, {r['cpus']} CPUs, RabbitMQ {r['rabbitmq_version']}")
    print("each line: time from the fault; upper bounds unless marked 'lower bound'")
    if k := r.get("kills"):
        res = k["resolution_s"]
        print(f"\n1. SIGKILL -> dead ({k['kills']} kills)")
        print(f"   polled every {res['polled']}s        {fmt(k['time_to_dead_polled_s'])}")
        print(f"     lower bound              {fmt(k['time_to_dead_polled_lower_bound_s'])}")
        print(f"   reports every {res['report']}s        {fmt(k['time_to_dead_report_s'])}")
        print(f"     received by the watcher  {fmt(k['time_to_dead_observed_s'])}")
        print(f"   by connection event: {k['detected_by_connection_event']}/{k['kills']}")
    if p := r.get("pauses"):
        d, res = p["detector"], p["resolution_s"]
        print(
            f"\n2. SIGSTOP -> suspected / dead ({p['pauses']} pauses; heartbeat "
            f"{d['agent_heartbeat_interval_s']}s, acceptable pause {d['acceptable_pause_s']}s, "
            f"dead after {d['dead_after_s']}s; model: suspected after "
            f"{d['model_silence_to_suspected_s']}s of silence)"
        )
        print(f"   suspected, coordinator log      {fmt(p['time_to_suspected_logged_s'])}")
        print(
            f"   suspected, polled every {res['polled']}s  {fmt(p['time_to_suspected_polled_s'])}"
        )
        print(
            f"   suspected, reports every {res['report']}s {fmt(p['time_to_suspected_report_s'])}"
        )
        print(f"   dead, polled every {res['polled']}s       {fmt(p['time_to_dead_polled_s'])}")
        print(f"   dead, reports every {res['report']}s      {fmt(p['time_to_dead_report_s'])}")
        print(f"   silence at suspicion (log)      {fmt(p['silence_at_suspicion_logged_s'])}")
    if f := r.get("false_deaths"):
        print(
            f"\n3. false deaths: {f['seconds']:.0f}s, {f['workers']} workers, {f['pauses']} pauses "
            f"({fmt(f['pause_s'])}), {f['pauses_at_or_over_acceptable']} at or over 3 s"
        )
        print(
            f"   suspected {f['suspected_transitions']}, dead {f['dead_transitions']}, "
            f"suspicions logged {f['suspicions_logged']}, connection deaths "
            f"{f['connection_deaths']} (target 0); max heartbeat gaps {f['max_heartbeat_gap_s']}"
        )
    if t := r.get("takeover"):
        res = t["resolution_s"]
        print(f"\n4. coordinator takeover ({t['takeovers']} kills of the active coordinator)")
        print(f"   lock won (epoch stamp)          {fmt(t['time_to_lock_won_s'])}")
        print(f"   active, polled every {res['polled']}s     {fmt(t['time_to_active_polled_s'])}")
        print(f"   active, reports every {res['report']}s     {fmt(t['time_to_active_report_s'])}")
        print(f"   active logged (consumers up)    {fmt(t['time_to_active_logged_s'])}")
        print(f"   worker alive in its report      {fmt(t['time_to_serving_report_s'])}")
    if b := r.get("broker_restart"):
        print(
            f"\n5. broker restart: stop_app {b['stop_app_s']}s, start_app {b['start_app_s']}s; "
            f"all consumers back {b['all_consumers_back_s']}s after start_app returned"
        )
        print(f"   per worker {b['consumers_back_s']}; heartbeats {b['heartbeat_seen_again_s']}")
        print(f"   ({b['note']})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--pauses", type=int, default=10)
    parser.add_argument("--false-death-seconds", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=4, help="workers under the nemesis")
    parser.add_argument("--takeovers", type=int, default=10)
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument(
        "--only", type=lambda s: s.split(","), default=list(PARTS), help=",".join(PARTS)
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-results/failover.json"))
    ns = parser.parse_args()
    bench = Bench(ns.keep_logs)
    try:
        out = asyncio.run(run(bench, ns))
    finally:
        bench.cleanup_sync()
    write(out, ns.out)
    report(out)

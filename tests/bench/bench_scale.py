"""How one coordinator reaches 10,000 agents: simulated fleets against a real coordinator.

Usage::

    python tests/bench/bench_scale.py [--sizes 100,1000,10000] [--mode flat|clustered|both]
                                      [--window 20] [--tasks 1000] [--crashes 5]

For each size N a fresh vhost (created, then deleted) gets a real coordinator
process, started as a user starts it (``robeing agent --role coordinator
--metrics-port P``), and N simulated agents:

* **Identities.** Each simulated agent has its own key pair and a certificate
  issued by the bench's keystore authority, as every test agent does.
* **Heartbeats.** Each sends its heartbeat every second (spread evenly over
  the second) through :class:`robeing.agents.runtime.heartbeats.Heartbeats`
  itself — the class a real agent sends with — over a small stand-in for the
  agent (:class:`SimAgent`: settings, codec, load, stats, task types). So the
  payload, the signed envelope, the routing key (and, for members of a named
  cluster, the member routing and its fallback) are a real agent's.
* **Connections.** Agents are split over ``ceil(N / --per-process)``
  simulator processes; each process shares one connection for publishing
  (heartbeats and results) and one for consuming its agents' work queues
  (one queue per agent, declared as an agent declares it, all on one channel).
* **Work.** An assignment is opened (signature, window, decryption: the
  agent's own codec) and run by :class:`~robeing.agents.tasking.executor.TaskExecutor`
  — the executor a real agent runs — whose result goes back through its
  :class:`~robeing.agents.tasking.executor.ResultReporter`, and only then is
  the assignment acknowledged.
* **Crash candidates.** ``--crashes + 1`` further agents run in the bench's
  own process, each with its *own* connection under its own broker user (as
  ``robeing broker users`` provisions one per agent), offering only the skill
  ``bench_crash``. A task needing that skill is held (not answered) by the
  agent that gets it; the bench then crashes that agent — stops its
  heartbeats and closes its connection — and times until another candidate
  receives the task's next attempt. The coordinator learns of the crash from
  the broker's connection event (a per-agent user makes it proof), as in a
  production deployment.

Measured per size (the coordinator's figures from ``/proc/<pid>/stat`` and
its Prometheus metrics, the broker's from the management API):

* ``coordinator_cores``: its user+system CPU per second of wall time over a
  steady window of ``--window`` seconds of heartbeats alone (a fraction of
  one core; ``idle_cores`` is the same before any agent started);
* ``heartbeats_per_s``: heartbeats the coordinator read per second in that
  window (``sent_per_s``: what the simulators sent; when the two differ the
  coordinator — or the broker — did not keep up);
* ``cpu_ms_per_heartbeat``: its CPU in the window, less its idle CPU, per
  heartbeat read; ``cores_for_all`` multiplies it by N — an extrapolation,
  labelled as one, of what reading every agent's beat each second would take
  (on a machine too small to deliver N beats a second, the one figure that
  says where the coordinator stands);
* ``lag_p50_ms`` / ``lag_p99_ms``: from a heartbeat's signed send time to
  its handler, which reads it into the registry (the coordinator's
  ``robeing_heartbeat_receive_seconds`` histogram over the window,
  interpolated within buckets as Prometheus' ``histogram_quantile`` does);
* ``registry``: agents in the coordinator's registry at the window's end;
* ``decisions_per_s``: assignments the coordinator made per second while
  ``--tasks`` small ``sha256`` tasks (submitted with ``Client.submit_many``)
  ran to their results on the simulated agents; ``tasks_per_s`` is finished
  tasks per second;
* ``crash_to_reassign``: seconds from a candidate's crash to another
  candidate receiving the task's next attempt (n, p50, p99, max);
* ``broker_mem_mb``: the broker node's ``mem_used`` at the window's end
  (``broker_mem_delta_mb``: less what it used before the coordinator
  started; other vhosts on a shared broker move this too);
* ``loadavg_1m``: the machine's load at the window's end (the simulators, the
  broker and the coordinator share its cores — and with other work).

``--mode clustered`` puts the agents in clusters of 100 (``c0``, ``c1``, …;
the crash candidates in ``c0``), each with one real agent process started
with its ``--cluster-id``, which the coordinator's leader score elects (it
alone contributes resources); members then heartbeat to their leader
(``member.<cluster>.…``) and the leader sends the coordinator one summary a
second (:mod:`robeing.protocol.clusters.summary`). The lag is then from a
member's beat to the summary that carries it to the coordinator; also
reported: ``clusters``, ``summaries_per_s`` the coordinator read, and
``leaders_cores``, the leaders' CPU together. Results go to
``bench-results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_failover import git_head, summary, write  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from agentproc import Samples, free_port, scrape_metrics  # noqa: E402
from bench_heartbeats import cpu_of  # noqa: E402

BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
READY_TIMEOUT = 120.0
CRASH_SKILL = "bench_crash"
FLEET_SKILL = "data_processing"  # the sha256 task's own skill
PAYLOAD = "robeing scale bench"
CLUSTER_SIZE = 100
SLICES = 50  # heartbeats go out in 20 ms slices: evenly enough, cheap to pace
LAG = "robeing_heartbeat_receive_seconds"
SUMMARY = "cluster.summary"

# -- pure helpers (tests/unit/test_bench_scale.py) ------------------------------------


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram, as Prometheus' ``histogram_quantile``.

    Args:
        buckets: ``(upper bound, observations at or below it)``, ascending,
            the last bound ``inf``.
        q: in ``[0, 1]``.

    Returns:
        Linearly interpolated within the bucket holding the rank (from 0 for
        the first bucket); the highest finite bound when the rank falls in
        the ``inf`` bucket; None without observations.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = (bound if not math.isinf(bound) else lower), count
    return lower


def histogram(samples: Samples, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets of the unlabelled histogram ``name`` in ``samples``."""
    out = [
        (float(dict(labels)["le"]), value)
        for (series, labels), value in samples.items()
        if series == f"{name}_bucket"
    ]
    return sorted(out)


def histogram_delta(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Observations made between two scrapes of one histogram, bucket by bucket."""
    was = dict(before)
    return [(bound, count - was.get(bound, 0.0)) for bound, count in after]


def metric(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value (0 when the series is absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def split_evenly(n: int, parts: int) -> list[int]:
    """``n`` items in ``parts`` shares differing by at most one, largest first."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


# -- a simulated agent ------------------------------------------------------------------


class SimAgent:
    """One simulated agent: what :class:`Heartbeats` and :class:`TaskExecutor` read of an
    agent, and nothing else (duck-typed; a real agent is
    :class:`robeing.agents.runtime.Agent`)."""

    def __init__(
        self,
        settings: Any,
        identity: Any,
        trust: Any,
        transport: Any,
        task_defs: Mapping[str, Any],
        incarnation: str | None = None,
    ) -> None:
        from robeing.agents.runtime.heartbeats import Heartbeats
        from robeing.agents.stats import Stats
        from robeing.protocol.codec import Codec
        from robeing.protocol.roles import get_role

        self.settings = settings
        self.id = settings.agent_id
        self.cluster_id = settings.cluster_id
        self.resources = settings.resources  # what it contributes (the context attribute)
        self.role = get_role(settings.role)
        self.identity = identity
        self.codec = Codec(identity, trust)
        self.transport = transport
        self.task_defs = task_defs
        self.state = "alive"
        self.load = 0
        self.started_at = time.time()
        self.incarnation = incarnation or uuid.uuid4().hex[:8]
        self.stats = Stats()
        self.heartbeats = Heartbeats(cast(Any, self))
        self._executor: Any = None
        self._outbox: Any = None

    def clock(self) -> float:
        return time.time()

    @asynccontextmanager
    async def working(self) -> Any:
        self.load += 1
        try:
            yield
        finally:
            self.load -= 1

    async def send(self, receiver: str, message_type: str, payload: Any, **kw: Any) -> None:
        """What the executor's result reporter calls: a real agent's point-to-point send."""
        from robeing.agents.outbox import Outbox

        if self._outbox is None:
            self._outbox = Outbox(self.codec, self.transport, "")
        await self._outbox.send(receiver, message_type, payload, **kw)

    async def run_assignment(self, opened: Any, redelivered: bool) -> None:
        """Run an opened ``task.assign`` through the real executor (which reports the
        results before returning).

        Raises:
            ProtocolError: the assignment did not decode (the caller drops it).
            Retry: the report was not confirmed (the caller requeues it).
        """
        from robeing.agents.context import Message
        from robeing.agents.tasking.executor import TaskExecutor

        if self._executor is None:
            self._executor = TaskExecutor(cast(Any, self))
        msg = Message(opened.envelope, opened.certificate, cast(Any, self), redelivered)
        await self._executor.on_assignment(msg)


def make_agents(
    keys: Path,
    url: str,
    ids: Sequence[str],
    skills: Sequence[str],
    transport: Any,
    cluster_of: Callable[[int], str] = lambda i: "default",
) -> list[SimAgent]:
    """Simulated workers with fresh identities from the keystore's authority."""
    from robeing.agents import Settings
    from robeing.agents.keystore import Keystore
    from robeing.agents.tasking.builtin_tasks import tasks
    from robeing.protocol.identity import Identity

    store = Keystore(keys)
    authority, trust, now = store.authority(), store.trust_store(), time.time()
    out = []
    for i, agent_id in enumerate(ids):
        settings = Settings(
            role="worker",
            agent_id=agent_id,
            specializations=tuple(skills),
            cluster_id=cluster_of(i),
            amqp_url=url,
            keys_dir=keys,
        )
        identity = Identity.create(authority, agent_id, "worker", now, 24 * 3600.0)
        out.append(SimAgent(settings, identity, trust, transport, dict(tasks.tasks)))
    return out


async def beat_forever(agents: Sequence[SimAgent], counts: dict[str, int]) -> None:
    """Each agent beats once a second, the agents spread evenly over it; a simulator
    that falls behind sends what it can (``counts`` says how much)."""
    per_slice = max(1, -(-len(agents) // SLICES))
    slices = -(-len(agents) // per_slice)  # per second
    start, tick = time.monotonic(), 0
    while True:
        for k in range(0, len(agents), per_slice):
            batch = agents[k : k + per_slice]
            done = await asyncio.gather(
                *(a.heartbeats.send() for a in batch), return_exceptions=True
            )
            errors = [d for d in done if isinstance(d, BaseException)]
            failed = len(errors)
            if errors and not counts["beat_errors"]:  # say why once, not 10,000 times a second
                print(f"simulator: a heartbeat failed: {errors[0]!r}", file=sys.stderr, flush=True)
            counts["beats"] += len(batch) - failed
            counts["beat_errors"] += failed
            tick += 1
            delay = start + tick / slices - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


# -- a simulator process ------------------------------------------------------------------


async def simulate(spec: dict[str, Any]) -> None:
    """One simulator process: its share of the fleet on two shared connections."""
    import aio_pika

    from robeing.broker import topology as topo
    from robeing.broker.amqp import AmqpTransport
    from robeing.protocol.errors import ProtocolError, Retry

    url, keys, out = spec["url"], Path(spec["keys"]), Path(spec["stats"])
    ids = [f"{spec['prefix']}-{i}" for i in range(spec["first"], spec["first"] + spec["count"])]
    size = spec["cluster_size"]
    first = spec["first"]
    clusters = spec["clustered"]
    transport = AmqpTransport(url, f"bench-scale simulator {spec['prefix']}:{first}")
    await transport.connect()

    def cluster_of(i: int) -> str:
        return f"c{(first + i) // size}" if clusters else "default"

    agents = make_agents(keys, url, ids, (FLEET_SKILL,), transport, cluster_of)
    counts = {"beats": 0, "beat_errors": 0, "answered": 0, "answer_errors": 0}
    conn = await aio_pika.connect(url, client_properties={"connection_name": "bench-scale work"})
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=256)
    topology = topo.TopologySettings()

    def consumer(agent: SimAgent) -> Callable[[Any], Awaitable[None]]:
        async def on_message(message: Any) -> None:
            try:
                opened = agent.codec.open(message.body, time.time(), message.redelivered)
                await agent.run_assignment(opened, message.redelivered)
            except Retry:
                counts["answer_errors"] += 1
                await message.nack(requeue=True)
                return
            except (ProtocolError, Exception):
                counts["answer_errors"] += 1
                await message.reject(requeue=False)
                return
            counts["answered"] += 1
            await message.ack()

        return on_message

    for agent in agents:
        work = topo.work_spec(agent.id, topology)
        queue = await channel.declare_queue(
            work.name, durable=work.durable, arguments=work.arguments
        )
        await queue.consume(consumer(agent))
    beating = asyncio.create_task(beat_forever(agents, counts))
    try:
        while True:
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({**counts, "ready": True, "cpu": time.process_time()}))
            tmp.replace(out)
            await asyncio.sleep(0.5)
    finally:
        beating.cancel()
        with contextlib.suppress(BaseException):
            await beating
        with contextlib.suppress(Exception):
            await conn.close()
        with contextlib.suppress(Exception):
            await transport.close()


# -- crash candidates (in the bench's own process) -----------------------------------------


class Candidate:
    """A simulated agent on a connection of its own, under its own broker user."""

    def __init__(self, agent: SimAgent, transport: Any, password: str) -> None:
        self.agent = agent
        self.transport = transport
        self.password = password
        self.beating: asyncio.Task[None] | None = None
        self.held: dict[str, float] = {}  # task id -> when its first attempt arrived
        self.reassigned: dict[str, float] = {}  # task id -> when a later attempt arrived

    async def start(self) -> None:
        from robeing.broker import topology as topo

        await self.transport.connect()
        spec = topo.work_spec(self.agent.id, topo.TopologySettings())
        await self.transport.consume(spec, self._on_delivery, prefetch=8)
        self.beating = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.agent.heartbeats.send()
            await asyncio.sleep(self.agent.settings.heartbeat_interval)

    async def _on_delivery(self, delivery: Any) -> None:
        from robeing.protocol.taskmsgs import AssignMsg

        now = time.time()
        opened = self.agent.codec.open(delivery.body, now, delivery.redelivered)
        payload = opened.envelope.payload
        items = payload if isinstance(payload, list) else [payload]
        msgs = [AssignMsg.from_data(p) for p in items]
        if all(m.attempt == 1 for m in msgs):
            for m in msgs:
                self.held.setdefault(m.task_id, now)  # held, never answered: it will "crash"
            return
        for m in msgs:
            self.reassigned.setdefault(m.task_id, now)
        await self.agent.run_assignment(opened, delivery.redelivered)
        await delivery.ack()

    async def crash(self) -> None:
        """Stop beating and drop the connection, the held attempt unanswered (also how a
        survivor is stopped at the end)."""
        if self.beating is not None:
            self.beating.cancel()
            with contextlib.suppress(BaseException):
                await self.beating
        await self.transport.close()


async def start_candidates(
    n: int, keys: Path, vhost: str, prefix: str, cluster: str
) -> tuple[list[Candidate], list[str]]:
    """``n`` crash candidates in ``cluster``, each with its own broker user (returned,
    to delete)."""
    from robeing.broker.amqp import AmqpTransport
    from robeing.broker.management import (
        Management,
        ManagementSettings,
        with_credentials,
        with_vhost,
    )
    from robeing.broker.permissions import agent_user, hash_password

    url = with_vhost(BASE_URL, vhost)
    ids = [f"{prefix}-{i}" for i in range(n)]
    agents = make_agents(keys, url, ids, (CRASH_SKILL,), None, lambda _i: cluster)
    out: list[Candidate] = []
    async with Management(ManagementSettings.from_amqp_url(BASE_URL)) as mgmt:
        for agent in agents:
            password = uuid.uuid4().hex
            await mgmt.put_user(agent_user(agent.id, "worker", vhost), hash_password(password))
            name = f"{agent.settings.connection_name} inst={agent.incarnation}"
            transport = AmqpTransport(with_credentials(url, agent.id, password), name)
            agent.transport = transport
            out.append(Candidate(agent, transport, password))
    for c in out:
        await c.start()
    return out, ids


async def crash_trials(
    client: Any, candidates: list[Candidate], trials: int, cluster: str | None
) -> list[float]:
    """Crash the holder of a fresh task ``trials`` times; seconds to the next attempt."""
    from robeing.protocol.envelope import new_id

    lags: list[float] = []
    alive = list(candidates)
    for _ in range(trials):
        if len(alive) < 2:
            break
        task_id = new_id()
        handle = await client.submit(
            "sha256",
            PAYLOAD,
            task_id=task_id,
            skills=[CRASH_SKILL],
            max_attempts=3,
            cluster=cluster,
        )
        holder = await _until(lambda t=task_id: next((c for c in alive if t in c.held), None), 20)
        if holder is None:
            print(f"  crash trial: nobody took {task_id} in 20 s; skipped", flush=True)
            continue
        await asyncio.sleep(0.2)  # let the assignment settle before the crash
        crashed_at = time.time()
        await holder.crash()
        alive.remove(holder)
        taker = await _until(
            lambda t=task_id: next((c for c in alive if t in c.reassigned), None), 30
        )
        if taker is None:
            print(f"  crash trial: {task_id} was not reassigned within 30 s", flush=True)
            continue
        lags.append(taker.reassigned[task_id] - crashed_at)
        with contextlib.suppress(Exception):
            await handle.result(30)
    return lags


async def _until(probe: Callable[[], Any], timeout: float, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        await asyncio.sleep(step)
    return None


# -- the coordinator, the broker, the simulators ---------------------------------------------


async def scrape(port: int) -> Samples:
    """The coordinator's metrics (slow to answer when it is swamped: a long timeout)."""
    return await scrape_metrics(port, 60.0)


async def broker_mem_mb() -> float:
    """``mem_used`` of the broker's nodes, summed, in MiB."""
    import httpx

    from robeing.broker.management import ManagementSettings

    ms = ManagementSettings.from_amqp_url(BASE_URL)
    base = ms.base_url.split(",")[0].rstrip("/")
    async with httpx.AsyncClient(auth=(ms.username, ms.password)) as http:
        resp = await http.get(f"{base}/api/nodes", timeout=10)
    resp.raise_for_status()
    return sum(n.get("mem_used", 0) for n in resp.json()) / 2**20


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started inside are stopped (SIGTERM, then SIGKILL) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_active(port: int, coord: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if coord.poll() is not None:
            raise RuntimeError(f"the coordinator exited with {coord.returncode}")
        with contextlib.suppress(Exception):
            if metric(await scrape(port), "robeing_coordinator_active") == 1:
                return
        await asyncio.sleep(0.3)
    raise RuntimeError("the coordinator did not become active")


def read_stats(paths: Sequence[Path]) -> dict[str, float]:
    """The simulators' counters, summed (a simulator not yet ready counts nothing)."""
    total: dict[str, float] = {"ready": 0}
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            for key, value in data.items():
                total[key] = total.get(key, 0) + float(value)
    return total


async def submit_stream(
    client: Any, n: int, clusters: int, batch: int = 100
) -> tuple[float, Counter[str]]:
    """Submit ``n`` small tasks for the fleet (round robin over the named clusters, if
    any); (seconds until all ended, their outcomes: final states, or ``no result`` for
    those without one after two minutes)."""
    from robeing.protocol.envelope import new_id
    from robeing.protocol.taskmsgs import TaskRequest

    started = time.monotonic()
    handles = []
    for k in range(0, n, batch):
        requests = [
            TaskRequest(
                id=new_id(),
                type="sha256",
                payload=PAYLOAD,
                cluster=f"c{(k + i) % clusters}" if clusters else None,
            )
            for i in range(min(batch, n - k))
        ]
        handles += await client.submit_many(requests)

    async def outcome(handle: Any) -> str:
        try:
            final = await handle.result(120)
        except Exception:
            return "no result"
        return "succeeded" if final.ok else f"{final.state}: {str(final.error)[:80]}"

    done = await asyncio.gather(*(outcome(h) for h in handles))
    return time.monotonic() - started, Counter(done)


async def task_phase(
    client: Any, port: int, pid: int, n_clusters: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Scheduling: a stream of small tasks the simulated agents answer."""
    a0, c0 = await scrape(port), cpu_of(pid)
    elapsed, outcomes = await submit_stream(client, args.tasks, n_clusters)
    ok = outcomes.pop("succeeded", 0)
    a1, c1 = await scrape(port), cpu_of(pid)
    kind = "robeing_coordinator_events_total"

    def delta(event: str) -> int:
        return int(metric(a1, kind, kind=event) - metric(a0, kind, kind=event))

    return {
        "reassigned": delta("reassigned"),
        "tasks": args.tasks,
        "tasks_ok": ok,
        "tasks_not_ok": dict(outcomes),
        "tasks_per_s": round(ok / elapsed, 1),
        "decisions_per_s": round(delta("assigned") / elapsed, 1),
        "task_phase_cores": round((c1 - c0) / elapsed, 3),
    }


async def one_size(
    n: int, mode: str, keys: Path, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Measure ``n`` agents against a fresh coordinator in a fresh vhost: all in
    ``default`` (``flat``), or in clusters of :data:`CLUSTER_SIZE` each led by a real
    agent process (``clustered``)."""
    from robeing.agents import Client, Settings
    from robeing.broker.management import Management, ManagementSettings, with_vhost

    tag = uuid.uuid4().hex[:6]
    vhost = f"robeing-bench-scale-{n}-{tag}"
    url = with_vhost(BASE_URL, vhost)
    port = free_port()
    users: list[str] = []
    level = "warning" if args.log else "error"
    env = {**os.environ, "AMQP_URL": url, "ROBEING_KEYS": str(keys), "ROBEING_LOG_LEVEL": level}
    log = open(args.log, "ab") if args.log else None
    robeing = str(Path(sys.executable).parent / "robeing")
    mgmt = Management(ManagementSettings.from_amqp_url(BASE_URL))
    await mgmt.create_vhost(vhost)
    result: dict[str, Any] = {"mode": mode, "agents": n}
    clustered = mode == "clustered"
    n_clusters = -(-n // CLUSTER_SIZE) if clustered else 0
    try:
        with processes() as procs:
            mem0 = await broker_mem_mb()
            coord = subprocess.Popen(
                [robeing, "agent", "--role", "coordinator", "--id", f"bench-scale-coord-{tag}",
                 "--metrics-port", str(port)],
                env=env, stderr=log,
            )  # fmt: skip
            procs.append(coord)
            await wait_active(port, coord)
            await asyncio.sleep(2.0)  # start-up work (stream replay, first scans)
            c0, t0 = cpu_of(coord.pid), time.monotonic()
            await asyncio.sleep(args.idle)
            result["idle_cores"] = (cpu_of(coord.pid) - c0) / (time.monotonic() - t0)

            # One real agent per cluster, the one the coordinator's score elects: it alone
            # contributes resources (simulated members contribute none), and the others
            # being equal, the resources weight (0.2) decides.
            leaders = []
            for c in range(n_clusters):
                cmd = [robeing, "agent", "--role", "worker", "--id", f"l{tag}-{c}",
                       "--cluster-id", f"c{c}", "--resources", "cpu=1"]  # fmt: skip
                leaders.append(subprocess.Popen(cmd, env=env, stderr=log))
            procs.extend(leaders)
            k = max(1, -(-n // args.per_process))
            stats = [tmp / f"sim-{n}-{i}.json" for i in range(k)]
            first = 0
            for i, count in enumerate(split_evenly(n, k)):
                spec = {
                    "url": url, "keys": str(keys), "stats": str(stats[i]), "prefix": f"s{tag}",
                    "first": first, "count": count, "clustered": clustered,
                    "cluster_size": CLUSTER_SIZE,
                }  # fmt: skip
                first += count
                procs.append(
                    subprocess.Popen([sys.executable, __file__, "--simulate", json.dumps(spec)])
                )
            candidates, users = await start_candidates(
                args.crashes + 1, keys, vhost, f"x{tag}", "c0" if clustered else "default"
            )
            started = time.monotonic()
            while read_stats(stats)["ready"] < k:
                if time.monotonic() - started > READY_TIMEOUT:
                    raise RuntimeError("the simulators did not start in time")
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a simulator or the coordinator exited")
                await asyncio.sleep(0.5)
            result["simulators"] = k
            result["fleet_ready_s"] = round(time.monotonic() - started, 1)
            want = n + len(candidates) + n_clusters
            summaries = "robeing_messages_received_total"
            while time.monotonic() - started < READY_TIMEOUT + 2 * n_clusters:
                before = await scrape(port)
                await asyncio.sleep(2.0)
                after = await scrape(port)
                led = (
                    metric(after, summaries, type=SUMMARY) - metric(before, summaries, type=SUMMARY)
                ) / 2.0
                # Every cluster led (about one summary a second each) and every agent known.
                if metric(after, "robeing_coordinator_agents") >= want and led >= 0.9 * n_clusters:
                    break
            result["ready_s"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(args.warmup)

            # The steady window: heartbeats alone.
            async def snapshot() -> tuple[Samples, dict[str, float], float, float]:
                return await scrape(port), read_stats(stats), cpu_of(coord.pid), time.monotonic()

            def leaders_cpu() -> float:
                return sum(cpu_of(p.pid) for p in leaders if p.poll() is None)

            s0, st0, cpu0, t0 = await snapshot()
            lc0 = leaders_cpu()
            await asyncio.sleep(args.window)
            s1, st1, cpu1, t1 = await snapshot()
            lc1 = leaders_cpu()
            wall = t1 - t0
            mem1 = await broker_mem_mb()
            load1 = os.getloadavg()[0]
            lag = histogram_delta(histogram(s0, LAG), histogram(s1, LAG))
            p50, p99 = histogram_quantile(lag, 0.5), histogram_quantile(lag, 0.99)
            sim_cpu = (st1.get("cpu", 0.0) - st0.get("cpu", 0.0)) / wall
            read = lag[-1][1] if lag else 0.0  # heartbeats read: one lag observation each
            net_ms = 1000 * ((cpu1 - cpu0) - result["idle_cores"] * wall) / max(1.0, read)
            result.update(
                window_s=round(wall, 2),
                coordinator_cores=round((cpu1 - cpu0) / wall, 3),
                heartbeats_per_s=round(read / wall),
                cpu_ms_per_heartbeat=round(net_ms, 3),
                # Extrapolated, not measured: what reading every agent's beat would take.
                cores_for_all=round(net_ms * n / 1000, 2),
                sent_per_s=round((st1.get("beats", 0) - st0.get("beats", 0)) / wall),
                lag_p50_ms=None if p50 is None else round(1000 * p50, 1),
                lag_p99_ms=None if p99 is None else round(1000 * p99, 1),
                registry=int(metric(s1, "robeing_coordinator_agents")),
                simulator_cores=round(sim_cpu, 2),
                broker_mem_mb=round(mem1),
                broker_mem_delta_mb=round(mem1 - mem0),
                loadavg_1m=round(load1, 2),
            )
            if clustered:
                got = metric(s1, summaries, type=SUMMARY) - metric(s0, summaries, type=SUMMARY)
                result.update(
                    clusters=n_clusters,
                    summaries_per_s=round(got / wall, 1),
                    leaders_cores=round((lc1 - lc0) / wall, 3),
                )
            result["idle_cores"] = round(result["idle_cores"], 3)

            settings = Settings(
                role="client", agent_id=f"bench-scale-client-{tag}", amqp_url=url, keys_dir=keys
            )
            lags: list[float] = []
            async with Client(settings) as client:
                try:
                    if args.tasks:
                        result.update(await task_phase(client, port, coord.pid, n_clusters, args))
                    cluster = "c0" if clustered else None
                    lags = await crash_trials(client, candidates, args.crashes, cluster)
                except Exception as exc:  # a swamped coordinator: keep what was measured
                    result["phase_error"] = f"{type(exc).__name__}: {exc}"[:300]
                    print(f"  {n} agents, {mode}: {result['phase_error']}", flush=True)
            result["crash_to_reassign"] = summary(lags)
            for c in candidates:
                with contextlib.suppress(Exception):
                    await c.crash()
            st = read_stats(stats)
            result["simulator_errors"] = int(st.get("beat_errors", 0) + st.get("answer_errors", 0))
            if coord.poll() is not None:
                result["coordinator_exit"] = coord.returncode
    finally:
        for user in users:
            with contextlib.suppress(Exception):
                await mgmt.delete_user(user)
        for _ in range(5):  # a broker busy with thousands of queues may time out
            try:
                await mgmt.delete_vhost(vhost)
                break
            except Exception:
                await asyncio.sleep(5.0)
        await mgmt.aclose()
        if log is not None:
            log.close()
    return result


# -- main ---------------------------------------------------------------------------------


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:,.1f}"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| mode | agents | coordinator, cores | ms CPU / beat (cores for all, extrapolated) "
        "| beats read/s (sent) | lag p50 / p99 ms | registry | decisions/s (tasks ok) "
        "| crash→reassign p50 / p99 s (n) | broker MiB (Δ) | load |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]
    for r in results:
        crash = r.get("crash_to_reassign", {})
        crash_s = (
            f"{crash['p50']:.2f} / {crash['p99']:.2f} ({crash['n']})" if crash.get("n") else "-"
        )
        tasks = f"{r['decisions_per_s']} ({r['tasks_ok']}/{r['tasks']})" if "tasks" in r else "-"
        mode = r["mode"]
        if "clusters" in r:
            mode += (
                f" ({r['clusters']} leader{'s' if r['clusters'] > 1 else ''}: "
                f"{r['leaders_cores']:.2f} cores, "
                f"{r['summaries_per_s']} summaries/s)"
            )
        rows.append(
            f"| {mode} | {r['agents']:,} | {r['coordinator_cores']:.3f} "
            f"| {r['cpu_ms_per_heartbeat']:.3f} ({r['cores_for_all']}) "
            f"| {r['heartbeats_per_s']:,} ({r['sent_per_s']:,}) "
            f"| {_ms(r['lag_p50_ms'])} / {_ms(r['lag_p99_ms'])} | {r['registry']:,} "
            f"| {tasks} | {crash_s} "
            f"| {r['broker_mem_mb']:,} ({r['broker_mem_delta_mb']:+,}) | {r['loadavg_1m']} |"
        )
    return "\n".join(rows)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from robeing.agents.keystore import Keystore

    # SIGTERM (like Ctrl-C) cancels the run once, so each size's cleanup still runs:
    # processes stopped, broker users and the vhost deleted.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    sizes = [int(x) for x in args.sizes.split(",")]
    modes = ["flat", "clustered"] if args.mode == "both" else [args.mode]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="robeing-bench-scale-") as tmp:
        keys = Path(tmp) / "keys"
        Keystore(keys).init()
        for n in sizes:
            for mode in modes:
                res = await one_size(n, mode, keys, Path(tmp), args)
                results.append(res)
                print(f"{n:6d} agents, {mode}: {json.dumps(res)}", flush=True)
                write(report(results, args), Path(args.out))  # what is done survives a crash
    return report(results, args)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "commit": git_head(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k != "simulate"},
        "results": results,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--mode", choices=("flat", "clustered", "both"), default="both")
    parser.add_argument("--window", type=float, default=20.0, help="steady seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle measurement")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the scheduling phase")
    parser.add_argument("--crashes", type=int, default=5, help="crash trials per size")
    parser.add_argument("--per-process", type=int, default=2500, help="agents per simulator")
    parser.add_argument("--out", default="bench-results/scale.json")
    parser.add_argument("--log", help="append the coordinator's warnings to this file")
    parser.add_argument("--simulate", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.simulate:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(simulate(json.loads(ns.simulate)))
        sys.exit(0)
    try:
        out = asyncio.run(main(ns))
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit(f"stopped; {ns.out} holds the sizes finished before")
    print(table(out["results"]))
    write(out, Path(ns.out))

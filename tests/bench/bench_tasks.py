"""Task benchmark at equal promises: robeing vs Celery (default and durable) vs the floors.

Usage::

    python tests/bench/bench_tasks.py [--n 3000] [--rounds 3] [--concurrency 500]
        [--systems robeing,robeing_asyncio,...] [--worker-concurrency 32]

Needs Celery (``pip install celery``) for the ``celery*`` systems, gevent for
``celery_gevent`` and uvloop for ``floor_uvloop`` (and for ``robeing`` to run
on uvloop); a system whose package is missing is skipped with a message.

Every system runs the same small task, the SHA-256 hex digest of one short
string, on two worker processes, fed by one client process that keeps up to
``--concurrency`` tasks in flight and waits for every result (each is
checked). Each round runs every system once; the order alternates between
rounds and medians over rounds are reported, with ratios. Measured:

* ``throughput``: tasks per second, from the first submission to the last result;
* ``rtt``: one task at a time (``--rtt`` of them), submission to result, p50/p99;
* ``cpu_ms_per_task``: CPU time of each process (and its children) during the
  throughput run, divided by the tasks; ``broker`` is the RabbitMQ node, which
  other users of the machine may load too.

The systems, each fleet in a vhost of its own on the same RabbitMQ:

``robeing``
    ``Client.submit`` per task → coordinator → worker → result back to the
    submitter; signed and encrypted throughout. One coordinator and two
    workers (``--worker-concurrency`` each: their prefetch and the capacity
    the coordinator fills) run as separate ``robeing`` processes, on the
    default event loop (``ROBEING_LOOP=auto``: uvloop when installed).
``robeing_asyncio``
    The same in a fleet of its own with ``ROBEING_LOOP=asyncio`` in every
    process (client included): what uvloop is worth.
``robeing_batch``
    The ``robeing`` fleet, tasks submitted with ``Client.submit_many`` in
    batches of ``--batch`` (one durable message per batch) within the same window.
``celery``
    ``apply_async`` + ``AsyncResult.get`` with the ``rpc://`` result backend,
    ``task_acks_late``, msgpack, default prefetch multiplier (see
    ``celery_app.py``). Two workers, ``--pool prefork --concurrency 1`` each:
    one executing process per worker, as robeing's workers each run one
    interpreter. Its client is the synchronous API in one thread of its
    own process, a sliding window that waits for the oldest result before
    sending the next task; results that arrive out of order are buffered by
    the rpc backend, so one thread drains the client's reply queue for all.
``celery_threads`` / ``celery_gevent``
    The same with ``--pool threads`` / ``--pool gevent`` and
    ``--worker-concurrency`` threads or greenlets per worker (one
    interpreter each, like robeing's workers): Celery's other pools; the
    report names the fastest of the three Celery defaults ("Celery's best").
``celery_durable`` / ``celery_durable_threads``
    Celery with robeing's durability (DESIGN §4): the task queue a quorum
    queue and publisher confirms on (``BENCH_CELERY_DURABLE=1``, see
    ``celery_app.py``), prefork and threads.
``aio_pika``
    Request/reply straight over the broker, no coordinator, signatures or
    encryption. Two server processes consume one durable queue (prefetch
    ``--worker-concurrency``), hash and reply to ``reply_to``; persistent
    requests with publisher confirms.
``floor`` / ``floor_uvloop``
    The least robeing's design allows (see ``floor.py``): the same four broker
    hops as a robeing task — confirmed into a quorum queue, relay → worker,
    worker → relay, relay → client — with no signing, encryption or
    scheduling at any hop, on asyncio's loop and on uvloop. Its RTT shows
    what the design's path costs before robeing does anything; Celery's path
    has two hops.

Then the coordinator's scheduling decision at 10, 100 and 1,000 registered
agents: ``AgentRegistry.select`` as in ``bench_scheduling.py`` and a whole
``dispatch`` of one ready task (selection, assignment, reservation).

Targets (issue 15), from the medians of one run: robeing's RTT p50 <=
``celery_durable``'s and <= 1.3x its floor; robeing one-by-one >= 4x
``celery_durable`` and >= 2x the best default Celery; ``submit_many`` >= 6x
the best default Celery. Results are printed and written to
``bench-results/tasks.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEXT = "robeing benchmark: the same small string for every system"
EXPECTED = hashlib.sha256(TEXT.encode()).hexdigest()
RAW_QUEUE = "bench.tasks.raw"
WORKERS = 2
RESULT_TIMEOUT = 120.0
READY_TIMEOUT = 60.0
SYSTEMS = (
    "robeing",
    "robeing_asyncio",
    "robeing_batch",
    "celery",
    "celery_threads",
    "celery_gevent",
    "celery_durable",
    "celery_durable_threads",
    "aio_pika",
    "floor",
    "floor_uvloop",
)
# The fleet (worker-side processes, vhost) each system's client talks to.
FLEET = {s: s for s in SYSTEMS} | {"robeing_batch": "robeing"}
# Celery systems: (pool, durable).
CELERY = {
    "celery": ("prefork", False),
    "celery_threads": ("threads", False),
    "celery_gevent": ("gevent", False),
    "celery_durable": ("prefork", True),
    "celery_durable_threads": ("threads", True),
}
CELERY_DEFAULTS = ("celery", "celery_threads", "celery_gevent")
# The Python packages a system needs beyond robeing's own.
NEEDS = {s: ("celery",) for s in CELERY} | {
    "celery_gevent": ("celery", "gevent"),
    "floor_uvloop": ("uvloop",),
}
# The event loop each system's processes run on (None: asyncio.run, a baseline's own).
LOOP = {"robeing": "auto", "robeing_batch": "auto", "robeing_asyncio": "asyncio"}
TARGETS = {
    "rtt_p50_vs_celery_durable": 1.0,
    "rtt_p50_vs_floor": 1.3,
    "submit_vs_celery_durable": 4.0,
    "submit_vs_best_celery": 2.0,
    "batch_vs_best_celery": 6.0,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def check(value: Any) -> None:
    if value != EXPECTED:
        raise RuntimeError(f"wrong result {value!r}")


# -- CPU accounting (read from /proc) -------------------------------------------------


def _cpu_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants."""
    table = _cpu_table()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    out = {}
    for name, root in pids.items():
        total, stack = 0.0, [root]
        while stack:
            pid = stack.pop()
            total += table.get(pid, (0, 0.0))[1]
            stack.extend(children.get(pid, ()))
        out[name] = total
    out["client"] = time.process_time()
    return out


def broker_pid(port: int = 5672) -> int | None:
    """The RabbitMQ node listening on ``port`` (other nodes may run on the machine)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
    return None


def throughput_result(
    n: int, wall: float, before: dict[str, float], after: dict[str, float]
) -> dict[str, Any]:
    return {
        "throughput": n / wall,
        "wall_s": wall,
        "cpu_ms_per_task": {k: (after[k] - before[k]) * 1000 / n for k in sorted(after)},
    }


def rtt_result(lat: list[float]) -> dict[str, float]:
    return {"rtt_p50_ms": pct(lat, 0.5), "rtt_p99_ms": pct(lat, 0.99)} if lat else {}


# -- async helpers ------------------------------------------------------------------


async def windowed(call: Callable[[], Awaitable[None]], n: int, concurrency: int) -> None:
    """Run ``call`` ``n`` times with at most ``concurrency`` in flight."""
    left = n

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(lane() for _ in range(min(concurrency, n))))


async def sequential(call: Callable[[], Awaitable[None]], n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        lat.append((time.perf_counter() - t) * 1000)
    return lat


async def timed_async(
    run: Callable[[], Awaitable[None]], n: int, pids: dict[str, int]
) -> dict[str, Any]:
    before = cpu_seconds(pids)
    t = time.perf_counter()
    await run()
    wall = time.perf_counter() - t
    return throughput_result(n, wall, before, cpu_seconds(pids))


# -- robeing client -----------------------------------------------------------------


async def robeing_ready(client: Any) -> None:
    """Wait until the coordinator is active and has registered both workers."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        agents = await client.live_agents(1.0)
        info = next(
            (s.extra.get("coordinator", {}) for s in agents.values() if s.role == "coordinator"),
            {},
        )
        if info.get("active") and info.get("agents", 0) >= WORKERS:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"robeing fleet not ready: {sorted(agents)} {info}")


async def robeing_client(a: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    from robeing.agents import Client, Settings
    from robeing.protocol.envelope import new_id
    from robeing.protocol.taskmsgs import FinalResult, TaskRequest

    def check_final(final: FinalResult) -> None:
        if not final.ok:
            raise RuntimeError(f"task {final.task_id} {final.state}: {final.error}")
        check(final.result)

    settings = Settings(
        role="client", agent_id="bench-tasks-client", amqp_url=a.url, keys_dir=Path(a.keys)
    )
    async with Client(settings) as client:
        await robeing_ready(client)

        async def call() -> None:
            handle = await client.submit("sha256", TEXT)
            check_final(await handle.result(RESULT_TIMEOUT))

        async def batches() -> None:
            window = asyncio.Semaphore(a.concurrency)
            waiters = []

            async def wait(handle: Any) -> None:
                try:
                    check_final(await handle.result(RESULT_TIMEOUT))
                finally:
                    window.release()

            sent = 0
            while sent < a.n:
                k = min(a.batch, a.n - sent)
                for _ in range(k):
                    await window.acquire()
                requests = [TaskRequest(id=new_id(), type="sha256", payload=TEXT) for _ in range(k)]
                waiters += [
                    asyncio.create_task(wait(h)) for h in await client.submit_many(requests)
                ]
                sent += k
            await asyncio.gather(*waiters)

        await windowed(call, a.warmup, a.concurrency)
        lat = await sequential(call, a.rtt)
        if a.client == "robeing_batch":
            res = await timed_async(batches, a.n, pids)
        else:
            res = await timed_async(lambda: windowed(call, a.n, a.concurrency), a.n, pids)
        return {**res, **rtt_result(lat)}


# -- raw aio-pika -------------------------------------------------------------------


async def raw_server(url: str, prefetch: int) -> None:
    import aio_pika
    import msgpack

    conn = await aio_pika.connect_robust(url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=prefetch)
    queue = await ch.declare_queue(RAW_QUEUE, durable=True)

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        text = msgpack.unpackb(msg.body)
        reply = msgpack.packb(hashlib.sha256(text.encode()).hexdigest())
        await ch.default_exchange.publish(
            aio_pika.Message(reply, correlation_id=msg.correlation_id), routing_key=msg.reply_to
        )
        await msg.ack()

    await queue.consume(on_message)
    print("ready", flush=True)
    await asyncio.Future()


async def raw_client(a: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    import aio_pika
    import msgpack

    conn = await aio_pika.connect_robust(a.url)
    try:
        ch = await conn.channel()
        reply = await ch.declare_queue(exclusive=True, auto_delete=True)
        futures: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            fut = futures.pop(msg.correlation_id or "", None)
            if fut is not None and not fut.done():
                fut.set_result(msg.body)

        await reply.consume(on_reply, no_ack=True)
        body = msgpack.packb(TEXT)
        loop = asyncio.get_running_loop()

        async def call() -> None:
            cid = uuid.uuid4().hex
            fut = futures[cid] = loop.create_future()
            await ch.default_exchange.publish(
                aio_pika.Message(
                    body,
                    correlation_id=cid,
                    reply_to=reply.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=RAW_QUEUE,
            )
            check(msgpack.unpackb(await asyncio.wait_for(fut, RESULT_TIMEOUT)))

        await windowed(call, a.warmup, a.concurrency)
        lat = await sequential(call, a.rtt)
        res = await timed_async(lambda: windowed(call, a.n, a.concurrency), a.n, pids)
        return {**res, **rtt_result(lat)}
    finally:
        await conn.close()


async def floor_client(a: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    import floor

    call, close = await floor.floor_client(a.url, TEXT, check)
    try:
        await windowed(call, a.warmup, a.concurrency)
        lat = await sequential(call, a.rtt)
        res = await timed_async(lambda: windowed(call, a.n, a.concurrency), a.n, pids)
        return {**res, **rtt_result(lat)}
    finally:
        await close()


# -- Celery client (synchronous) ----------------------------------------------------


def celery_client(a: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    os.environ["BENCH_CELERY_BROKER"] = a.url
    os.environ["BENCH_CELERY_DURABLE"] = "1" if CELERY[a.client][1] else "0"
    sys.path.insert(0, str(HERE))
    from celery_app import app, sha256

    deadline = time.monotonic() + READY_TIMEOUT
    while len(app.control.ping(timeout=1.0) or []) < WORKERS:
        if time.monotonic() > deadline:
            raise RuntimeError("celery workers not ready")

    def window(n: int) -> None:
        pending: deque[Any] = deque()
        for _ in range(n):
            if len(pending) >= a.concurrency:
                check(pending.popleft().get(timeout=RESULT_TIMEOUT))
            pending.append(sha256.apply_async((TEXT,)))
        while pending:
            check(pending.popleft().get(timeout=RESULT_TIMEOUT))

    window(a.warmup)
    lat = []
    for _ in range(a.rtt):
        t = time.perf_counter()
        check(sha256.apply_async((TEXT,)).get(timeout=RESULT_TIMEOUT))
        lat.append((time.perf_counter() - t) * 1000)
    before = cpu_seconds(pids)
    t = time.perf_counter()
    window(a.n)
    wall = time.perf_counter() - t
    return {**throughput_result(a.n, wall, before, cpu_seconds(pids)), **rtt_result(lat)}


def run_loop(main: Awaitable[Any], choice: str | None) -> Any:
    """Run ``main`` on asyncio's loop (``None``) or the loop robeing's ``choice`` names."""
    if choice is None:
        return asyncio.run(main)  # type: ignore[arg-type]
    from robeing.agents.loop import run

    return run(main, choice)  # type: ignore[arg-type]


def client_main(a: argparse.Namespace) -> None:
    pids = json.loads(a.pids)
    if a.client in CELERY:
        res = celery_client(a, pids)
    elif a.client == "aio_pika":
        res = asyncio.run(raw_client(a, pids))
    elif a.client == "floor":
        res = asyncio.run(floor_client(a, pids))
    elif a.client == "floor_uvloop":
        res = run_loop(floor_client(a, pids), "uvloop")
    else:
        res = run_loop(robeing_client(a, pids), LOOP[a.client])
    print(json.dumps(res), flush=True)


# -- scheduling -----------------------------------------------------------------------


def scheduling(decisions: int, seed: int) -> dict[str, dict[str, float]]:
    """Decision time (µs) of select() and of a one-task dispatch() at each fleet size."""
    import random

    sys.path.insert(0, str(HERE))
    import bench_scheduling as bs

    from robeing.protocol.scheduling import dispatch
    from robeing.protocol.taskgraph import TaskGraph, TaskSpec

    out = {}
    for size in (10, 100, 1000):
        f50, f99, s50, s99 = bs.bench(size, decisions, seed)
        rng = random.Random(seed * 7919 + size)
        registry, _ = bs.build_fleet(size, rng)
        times = []
        for i, (req, _n) in enumerate(bs.workload(decisions + 50, rng)):
            # One ready task per decision; one nobody can take must not pile up.
            graph = TaskGraph(rng=random.Random(seed))
            graph.submit(TaskSpec(f"t{i}", "sha256", skills=req.skills), now=10.0)
            start = time.perf_counter_ns()
            made = dispatch(graph, registry, now=10.0)
            times.append((time.perf_counter_ns() - start) / 1000.0)
            for assignment in made:  # keep the fleet's loads steady
                registry.release(assignment.agent_id)
        times = times[50:]
        out[str(size)] = {
            "select_p50_us": f50,
            "select_p99_us": f99,
            "naive_select_p50_us": s50,
            "naive_select_p99_us": s99,
            "dispatch_p50_us": pct(times, 0.5),
            "dispatch_p99_us": pct(times, 0.99),
        }
    return out


# -- orchestration ------------------------------------------------------------------


async def _vhosts(vhosts: list[str], create: bool) -> None:
    from robeing.broker.management import Management, ManagementSettings

    async with Management(ManagementSettings.from_amqp_url(BASE_URL)) as mgmt:
        for vhost in vhosts:
            if create:
                await mgmt.create_vhost(vhost)
            else:
                with contextlib.suppress(Exception):
                    await mgmt.delete_vhost(vhost)


def spawn(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    # A session of its own, so stopping it also stops its children (Celery's pool).
    return subprocess.Popen(cmd, env=env, start_new_session=True, text=True, **kw)


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def run_client(
    system: str, url: str, keys: Path, pids: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--client",
        system,
        "--url",
        url,
        "--keys",
        str(keys),
        "--pids",
        json.dumps(pids),
        "--n",
        str(args.n),
        "--concurrency",
        str(args.concurrency),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--rtt",
        "0" if system == "robeing_batch" else str(args.rtt),
    ]
    out = subprocess.run(
        cmd, stdout=subprocess.PIPE, text=True, check=True, timeout=300 + args.n / 20
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait_ready(proc: subprocess.Popen[str], name: str) -> None:
    stdout = proc.stdout
    if stdout is None or stdout.readline().strip() != "ready":
        raise RuntimeError(f"{name} did not start")


def start_fleet(
    fleet: str,
    url: str,
    keys: Path,
    args: argparse.Namespace,
    procs: dict[str, subprocess.Popen[str]],
) -> None:
    """Start the worker-side processes of ``fleet``, adding each to ``procs`` as
    ``<fleet>:<name>`` as it starts."""
    if fleet.startswith("robeing"):
        env = {
            **os.environ,
            "AMQP_URL": url,
            "ROBEING_KEYS": str(keys),
            "ROBEING_LOG_LEVEL": "warning",
            "ROBEING_LOOP": LOOP[fleet],
        }
        agents = [sys.executable, "-m", "robeing.agents"]
        procs[f"{fleet}:coordinator"] = spawn([*agents, "coordinator", "--id", "bench-coord"], env)
        for i in range(1, WORKERS + 1):
            procs[f"{fleet}:worker{i}"] = spawn(
                [
                    *(*agents, "agent", "--role", "worker", "--id", f"bench-w{i}"),
                    *("--specialization", "data_processing"),
                    *("--concurrency", str(args.worker_concurrency)),
                ],
                env,
            )
    elif fleet in CELERY:
        pool, durable = CELERY[fleet]
        concurrency = args.celery_concurrency if pool == "prefork" else args.worker_concurrency
        celery_env = {
            **os.environ,
            "BENCH_CELERY_BROKER": url,
            "BENCH_CELERY_DURABLE": "1" if durable else "0",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
        }
        for i in range(1, WORKERS + 1):
            procs[f"{fleet}:celery{i}"] = spawn(
                [
                    *(sys.executable, "-m", "celery", "-A", "celery_app", "--quiet", "worker"),
                    *("--pool", pool, "--concurrency", str(concurrency)),
                    *("-n", f"bench{i}@%h", "--loglevel", "warning"),
                    *("--without-gossip", "--without-mingle"),
                ],
                celery_env,
                cwd=HERE,
            )
    elif fleet == "aio_pika":
        for i in range(1, WORKERS + 1):
            name = f"{fleet}:raw{i}"
            procs[name] = spawn(
                [
                    *(sys.executable, __file__, "--raw-server", url),
                    *("--worker-concurrency", str(args.worker_concurrency)),
                ],
                os.environ.copy(),
                stdout=subprocess.PIPE,
            )
            _wait_ready(procs[name], name)
    elif fleet.startswith("floor"):
        import floor

        loop = ["--uvloop"] if fleet == "floor_uvloop" else []
        roles = [("relay", ["--floor-relay", url])] + [
            (f"echo{i}", ["--floor-echo", url, "--floor-index", str(i)])
            for i in range(floor.WORKERS)
        ]
        for name, extra in roles:  # the relay first: it declares the queues
            key = f"{fleet}:{name}"
            procs[key] = spawn(
                [
                    *(sys.executable, __file__, *extra, *loop),
                    *("--worker-concurrency", str(args.worker_concurrency)),
                ],
                os.environ.copy(),
                stdout=subprocess.PIPE,
            )
            _wait_ready(procs[key], key)


def available(systems: list[str]) -> list[str]:
    """``systems`` whose packages are installed; says why for each one left out."""
    import importlib.util

    out = []
    for system in systems:
        missing = [m for m in NEEDS.get(system, ()) if importlib.util.find_spec(m) is None]
        if missing:
            print(f"skipping {system}: {', '.join(missing)} not installed", flush=True)
        else:
            out.append(system)
    return out


def main(args: argparse.Namespace) -> dict[str, Any]:
    from robeing.agents.keystore import Keystore
    from robeing.broker.management import with_vhost

    wanted = args.systems.split(",")
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown system(s) {', '.join(unknown)}; choose from {SYSTEMS}")
    systems = available([s for s in SYSTEMS if s in wanted])
    fleets = list(dict.fromkeys(FLEET[s] for s in systems))
    tag = uuid.uuid4().hex[:6]
    vhost = {f: f"robeing-bench-tasks-{f}-{tag}" for f in fleets}
    url = {f: with_vhost(BASE_URL, v) for f, v in vhost.items()}
    keys = Path(tempfile.mkdtemp(prefix="robeing-bench-keys-"))
    procs: dict[str, subprocess.Popen[str]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    try:
        asyncio.run(_vhosts(list(vhost.values()), create=True))
        Keystore(keys).init()
        for fleet in fleets:
            start_fleet(fleet, url[fleet], keys, args, procs)
        beam = broker_pid(urlsplit(BASE_URL).port or 5672)
        broker = {"broker": beam} if beam else {}
        for r in range(args.rounds):
            for system in systems if r % 2 == 0 else reversed(systems):
                fleet = FLEET[system]
                pids = {
                    k.split(":", 1)[1]: p.pid
                    for k, p in procs.items()
                    if k.split(":", 1)[0] == fleet
                }
                res = run_client(system, url[fleet], keys, pids | broker, args)
                rounds[system].append(res)
                line = f"round {r + 1} {system:22s} {res['throughput']:9.1f} tasks/s"
                if "rtt_p50_ms" in res:
                    line += f"  rtt p50 {res['rtt_p50_ms']:.2f} ms p99 {res['rtt_p99_ms']:.2f} ms"
                cpu = " ".join(f"{k}={v:.3f}" for k, v in res["cpu_ms_per_task"].items())
                print(f"{line}\n    cpu ms/task: {cpu}", flush=True)
    finally:
        stop_all(list(procs.values()))
        asyncio.run(_vhosts(list(vhost.values()), create=False))
        shutil.rmtree(keys, ignore_errors=True)
    return summarize(rounds, args)


def _commit() -> str | None:
    """The checked-out commit, so results can be matched to the code they measured."""
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def _ratio(med: dict[str, dict[str, Any]], a: str, b: str, key: str) -> float | None:
    if a in med and b in med and key in med[a] and key in med[b]:
        return float(med[a][key] / med[b][key])
    return None


def targets(med: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's targets, each as (what, ratio measured, limit, met) from one run's medians."""
    defaults = [s for s in CELERY_DEFAULTS if s in med]
    best = max(defaults, key=lambda s: med[s]["throughput"]) if defaults else None
    floor = "floor_uvloop" if "floor_uvloop" in med else "floor"
    rows = []

    def add(what: str, ratio: float | None, limit: float, at_most: bool) -> None:
        if ratio is not None:
            met = ratio <= limit if at_most else ratio >= limit
            rows.append({"target": what, "ratio": ratio, "limit": limit, "met": met})

    add(
        "robeing RTT p50 / celery_durable RTT p50 <=",
        _ratio(med, "robeing", "celery_durable", "rtt_p50_ms"),
        TARGETS["rtt_p50_vs_celery_durable"],
        True,
    )
    add(
        f"robeing RTT p50 / {floor} RTT p50 <=",
        _ratio(med, "robeing", floor, "rtt_p50_ms"),
        TARGETS["rtt_p50_vs_floor"],
        True,
    )
    add(
        "robeing_asyncio RTT p50 / floor RTT p50 <=",
        _ratio(med, "robeing_asyncio", "floor", "rtt_p50_ms"),
        TARGETS["rtt_p50_vs_floor"],
        True,
    )
    add(
        "robeing one-by-one tasks/s / celery_durable >=",
        _ratio(med, "robeing", "celery_durable", "throughput"),
        TARGETS["submit_vs_celery_durable"],
        False,
    )
    if best is not None:
        add(
            f"robeing one-by-one tasks/s / {best} (Celery's best) >=",
            _ratio(med, "robeing", best, "throughput"),
            TARGETS["submit_vs_best_celery"],
            False,
        )
        add(
            f"robeing submit_many tasks/s / {best} (Celery's best) >=",
            _ratio(med, "robeing_batch", best, "throughput"),
            TARGETS["batch_vs_best_celery"],
            False,
        )
    if "floor" in med and "celery_durable" in med:
        # Not a target: what the design's four hops alone cost against Celery's two.
        rows.append(
            {
                "target": "floor RTT p50 / celery_durable RTT p50 (four hops, no work)",
                "ratio": _ratio(med, "floor", "celery_durable", "rtt_p50_ms"),
                "limit": None,
                "met": None,
            }
        )
    return rows


def summarize(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    med: dict[str, dict[str, Any]] = {}
    for system, rs in rounds.items():
        med[system] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("throughput", "rtt_p50_ms", "rtt_p99_ms")
            if k in rs[0]
        }
        med[system]["cpu_ms_per_task"] = {
            k: statistics.median(r["cpu_ms_per_task"][k] for r in rs)
            for k in rs[0]["cpu_ms_per_task"]
        }
    defaults = [s for s in CELERY_DEFAULTS if s in med]
    out: dict[str, Any] = {
        "commit": _commit(),
        "n": args.n,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "worker_concurrency": args.worker_concurrency,
        "celery_workers": f"{WORKERS} per system; prefork --concurrency "
        f"{args.celery_concurrency}, threads/gevent --concurrency {args.worker_concurrency}",
        "celery_best_default": max(defaults, key=lambda s: med[s]["throughput"])
        if defaults
        else None,
        "rounds_raw": rounds,
        "median": med,
        "targets": targets(med),
    }
    if args.decisions > 0:
        out["scheduling_us"] = scheduling(args.decisions, args.seed)
    return out


def report(result: dict[str, Any]) -> None:
    med = result["median"]
    print(
        f"\nmedian of {result['rounds']} round(s), n={result['n']}, "
        f"in flight <= {result['concurrency']}, submit_many batch={result['batch']}, "
        f"robeing worker concurrency={result['worker_concurrency']}, "
        f"celery workers {result['celery_workers']}"
    )
    print(f"{'':24s}{'tasks/s':>10s}{'RTT p50 ms':>12s}{'RTT p99 ms':>12s}")
    for system, m in med.items():
        p50, p99 = m.get("rtt_p50_ms"), m.get("rtt_p99_ms")
        rtt = f"{p50:12.2f}{p99:12.2f}" if p50 is not None else f"{'-':>12s}{'-':>12s}"
        print(f"{system:24s}{m['throughput']:10.1f}{rtt}")
    if result.get("celery_best_default"):
        print(f"Celery's best default pool here: {result['celery_best_default']}")
    print("\ntargets (ratios of this run's medians)")
    for t in result["targets"]:
        if t["limit"] is None:
            print(f"  {t['target']:62s} {t['ratio']:6.2f}")
        else:
            verdict = "met" if t["met"] else "NOT met"
            print(f"  {t['target']:62s} {t['ratio']:6.2f}  (limit {t['limit']}) {verdict}")
    print("\nCPU ms per task during the throughput run (median)")
    for system, m in med.items():
        print(f"{system:24s}" + " ".join(f"{k}={v:.3f}" for k, v in m["cpu_ms_per_task"].items()))
    if "scheduling_us" in result:
        print("\nscheduling decision, µs   select p50     p99   dispatch p50     p99")
        for size, s in result["scheduling_us"].items():
            print(
                f"{size:>6s} agents{'':12s}{s['select_p50_us']:9.1f}{s['select_p99_us']:8.1f}"
                f"{s['dispatch_p50_us']:15.1f}{s['dispatch_p99_us']:8.1f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per throughput run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=500, help="tasks in flight")
    parser.add_argument("--batch", type=int, default=100, help="tasks per submit_many")
    parser.add_argument("--rtt", type=int, default=300, help="one-at-a-time tasks for RTT")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--worker-concurrency", type=int, default=32)
    parser.add_argument(
        "--celery-concurrency", type=int, default=1, help="processes per prefork worker"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}"
    )
    parser.add_argument(
        "--decisions", type=int, default=2000, help="scheduling decisions (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)
    parser.add_argument("--pids", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--raw-server", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--floor-relay", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--floor-echo", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--floor-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if ns.raw_server:
        asyncio.run(raw_server(ns.raw_server, ns.worker_concurrency))
    elif ns.floor_relay:
        import floor

        # The coordinator's prefetch on submissions, as robeing's.
        run_loop(floor.relay_main(ns.floor_relay, 10_000), "uvloop" if ns.uvloop else None)
    elif ns.floor_echo:
        import floor

        run_loop(
            floor.echo_main(ns.floor_echo, ns.floor_index, ns.worker_concurrency),
            "uvloop" if ns.uvloop else None,
        )
    elif ns.client:
        client_main(ns)
    else:
        # A plain SIGTERM would skip the clean-up (processes, vhosts): make it an interrupt.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        out = main(ns)
        report(out)
        Path("bench-results").mkdir(exist_ok=True)
        Path("bench-results/tasks.json").write_text(json.dumps(out, indent=2))

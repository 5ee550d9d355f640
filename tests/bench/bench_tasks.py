"""Task benchmark: robeing vs Celery vs raw aio-pika request/reply, same broker, same run.

Usage::

    python tests/bench/bench_tasks.py [--n 10000] [--rounds 1] [--concurrency 500]
        [--systems robeing,robeing_batch,celery,aio_pika,floor] [--worker-concurrency 32]

Needs Celery (``pip install celery``) for the ``celery`` system.

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

The systems, each in a vhost of its own on the same RabbitMQ:

``robeing``
    ``Client.submit`` per task → coordinator → worker → result back to the
    submitter; signed and encrypted throughout. One coordinator and two
    workers (``--worker-concurrency`` each: their prefetch and the capacity
    the coordinator fills) run as separate ``robeing`` processes.
``robeing_batch``
    The same fleet, tasks submitted with ``Client.submit_many`` in batches of
    ``--batch`` (one durable message per batch) within the same window.
``celery``
    ``apply_async`` + ``AsyncResult.get`` with the ``rpc://`` result backend,
    ``task_acks_late``, msgpack, default prefetch multiplier (see
    ``celery_app.py``). Two workers, ``--pool prefork --concurrency 1`` each by
    default: one executing process per worker, as robeing's workers each run
    one interpreter. Its client is the synchronous API in one thread of its
    own process, a sliding window that waits for the oldest result before
    sending the next task; results that arrive out of order are buffered by
    the rpc backend, so one thread drains the client's reply queue for all.
``aio_pika``
    The floor: request/reply straight over the broker, no coordinator,
    signatures or encryption. Two server processes consume one durable queue
    (prefetch ``--worker-concurrency``), hash and reply to ``reply_to``;
    persistent requests with publisher confirms.
``floor``
    The least robeing's design allows (see ``floor.py``): the same four broker
    hops as a robeing task — confirmed into a quorum queue, relay → worker,
    worker → relay, relay → client — with no signing, encryption or
    scheduling at any hop. Its RTT shows what the design's path costs before
    robeing does anything; Celery's path has two hops.

Then the coordinator's scheduling decision at 10, 100 and 1,000 registered
agents: ``AgentRegistry.select`` as in ``bench_scheduling.py`` and a whole
``dispatch`` of one ready task (selection, assignment, reservation).

Targets: robeing's tasks/s >= 1.5x Celery's, robeing's RTT p50 <= Celery's.
Results are printed and written to ``bench-results/tasks.json``.
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

HERE = Path(__file__).resolve().parent
BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEXT = "robeing benchmark: the same small string for every system"
EXPECTED = hashlib.sha256(TEXT.encode()).hexdigest()
RAW_QUEUE = "bench.tasks.raw"
WORKERS = 2
RESULT_TIMEOUT = 120.0
READY_TIMEOUT = 60.0
SYSTEMS = ("robeing", "robeing_batch", "celery", "aio_pika", "floor")
TARGET_THROUGHPUT = 1.5
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


def broker_pid() -> int | None:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/comm") as fh:
                if fh.read().strip() == "beam.smp":
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


def client_main(a: argparse.Namespace) -> None:
    pids = json.loads(a.pids)
    if a.client == "celery":
        res = celery_client(a, pids)
    elif a.client == "aio_pika":
        res = asyncio.run(raw_client(a, pids))
    elif a.client == "floor":
        res = asyncio.run(floor_client(a, pids))
    else:
        res = asyncio.run(robeing_client(a, pids))
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


def start_fleets(
    systems: list[str],
    url: dict[str, str],
    keys: Path,
    args: argparse.Namespace,
    procs: dict[str, subprocess.Popen[str]],
) -> None:
    """Start the worker-side processes of ``systems``, adding each to ``procs`` as it starts."""
    if any(s.startswith("robeing") for s in systems):
        env = {
            **os.environ,
            "AMQP_URL": url["robeing"],
            "ROBEING_KEYS": str(keys),
            "ROBEING_LOG_LEVEL": "warning",
        }
        agents = [sys.executable, "-m", "robeing.agents"]
        procs["coordinator"] = spawn([*agents, "coordinator", "--id", "bench-coord"], env)
        for i in range(1, WORKERS + 1):
            procs[f"worker{i}"] = spawn(
                [
                    *(*agents, "agent", "--role", "worker", "--id", f"bench-w{i}"),
                    *("--specialization", "data_processing"),
                    *("--concurrency", str(args.worker_concurrency)),
                ],
                env,
            )
    if "celery" in systems:
        celery_env = {
            **os.environ,
            "BENCH_CELERY_BROKER": url["celery"],
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
        }
        for i in range(1, WORKERS + 1):
            procs[f"celery{i}"] = spawn(
                [
                    *(sys.executable, "-m", "celery", "-A", "celery_app", "--quiet", "worker"),
                    *("--pool", args.celery_pool, "--concurrency", str(args.celery_concurrency)),
                    *("-n", f"bench{i}@%h", "--loglevel", "warning"),
                    *("--without-gossip", "--without-mingle"),
                ],
                celery_env,
                cwd=HERE,
            )
    if "aio_pika" in systems:
        for i in range(1, WORKERS + 1):
            procs[f"raw{i}"] = spawn(
                [
                    *(sys.executable, __file__, "--raw-server", url["aio_pika"]),
                    *("--worker-concurrency", str(args.worker_concurrency)),
                ],
                os.environ.copy(),
                stdout=subprocess.PIPE,
            )
            stdout = procs[f"raw{i}"].stdout
            if stdout is None or stdout.readline().strip() != "ready":
                raise RuntimeError("raw aio-pika server did not start")
    if "floor" in systems:
        import floor

        roles = [("floor-relay", ["--floor-relay", url["floor"]])] + [
            (f"floor-echo{i}", ["--floor-echo", url["floor"], "--floor-index", str(i)])
            for i in range(floor.WORKERS)
        ]
        for name, extra in roles:  # the relay first: it declares the queues
            procs[name] = spawn(
                [
                    *(sys.executable, __file__, *extra),
                    *("--worker-concurrency", str(args.worker_concurrency)),
                ],
                os.environ.copy(),
                stdout=subprocess.PIPE,
            )
            stdout = procs[name].stdout
            if stdout is None or stdout.readline().strip() != "ready":
                raise RuntimeError(f"{name} did not start")


def main(args: argparse.Namespace) -> dict[str, Any]:
    from robeing.agents.keystore import Keystore
    from robeing.broker.management import with_vhost

    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    tag = uuid.uuid4().hex[:6]
    vhost = {
        s: f"robeing-bench-tasks-{s}-{tag}" for s in ("robeing", "celery", "aio_pika", "floor")
    }
    url = {s: with_vhost(BASE_URL, v) for s, v in vhost.items()}
    keys = Path(tempfile.mkdtemp(prefix="robeing-bench-keys-"))
    procs: dict[str, subprocess.Popen[str]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    try:
        asyncio.run(_vhosts(list(vhost.values()), create=True))
        Keystore(keys).init()
        start_fleets(systems, url, keys, args, procs)
        beam = broker_pid()
        broker = {"broker": beam} if beam else {}
        prefixes = {
            "robeing": ("coordinator", "worker"),
            "celery": ("celery",),
            "aio_pika": ("raw",),
            "floor": ("floor",),
        }
        for r in range(args.rounds):
            for system in systems if r % 2 == 0 else reversed(systems):
                base = "robeing" if system.startswith("robeing") else system
                pids = {k: p.pid for k, p in procs.items() if k.startswith(prefixes[base])}
                res = run_client(system, url[base], keys, pids | broker, args)
                rounds[system].append(res)
                line = f"round {r + 1} {system:14s} {res['throughput']:9.1f} tasks/s"
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
    modes = [s for s in ("robeing", "robeing_batch") if s in med]
    best = max(modes, key=lambda s: med[s]["throughput"]) if modes else None
    out: dict[str, Any] = {
        "commit": _commit(),
        "n": args.n,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "worker_concurrency": args.worker_concurrency,
        "celery_workers": f"{WORKERS} x --pool {args.celery_pool} "
        f"--concurrency {args.celery_concurrency}",
        "robeing_mode_used_for_ratios": {"robeing": "submit", "robeing_batch": "submit_many"}.get(
            best or ""
        ),
        "rounds_raw": rounds,
        "median": med,
    }
    for other in ("celery", "aio_pika", "floor"):
        if best is None or other not in med:
            continue
        theirs = med[other]
        ratio = {"throughput": med[best]["throughput"] / theirs["throughput"]}
        for mode, key in (("robeing", "throughput_submit"), ("robeing_batch", "throughput_batch")):
            if mode in med:
                ratio[key] = med[mode]["throughput"] / theirs["throughput"]
        if "robeing" in med:
            ratio["rtt_p50"] = med["robeing"]["rtt_p50_ms"] / theirs["rtt_p50_ms"]
            ratio["rtt_p99"] = med["robeing"]["rtt_p99_ms"] / theirs["rtt_p99_ms"]
        out[f"ratio_robeing_over_{other}"] = ratio
    if "floor" in med and "celery" in med and "rtt_p50_ms" in med["floor"]:
        out["ratio_floor_over_celery"] = {
            "rtt_p50": med["floor"]["rtt_p50_ms"] / med["celery"]["rtt_p50_ms"]
        }
    vs_celery = out.get("ratio_robeing_over_celery")
    if vs_celery and "rtt_p50" in vs_celery:
        out["targets"] = {
            "throughput_vs_celery": TARGET_THROUGHPUT,
            "throughput_met": vs_celery["throughput"] >= TARGET_THROUGHPUT,
            "rtt_p50_vs_celery": 1.0,
            "rtt_p50_met": vs_celery["rtt_p50"] <= 1.0,
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
    print(f"{'':16s}{'tasks/s':>10s}{'RTT p50 ms':>12s}{'RTT p99 ms':>12s}")
    for system, m in med.items():
        p50, p99 = m.get("rtt_p50_ms"), m.get("rtt_p99_ms")
        rtt = f"{p50:12.2f}{p99:12.2f}" if p50 is not None else f"{'-':>12s}{'-':>12s}"
        print(f"{system:16s}{m['throughput']:10.1f}{rtt}")
    for other in ("celery", "aio_pika", "floor"):
        r = result.get(f"ratio_robeing_over_{other}")
        if r is None:
            continue
        parts = [f"tasks/s {r['throughput']:.2f} ({result['robeing_mode_used_for_ratios']})"]
        if "throughput_submit" in r and "throughput_batch" in r:
            parts.append(
                f"[submit {r['throughput_submit']:.2f}, submit_many {r['throughput_batch']:.2f}]"
            )
        if "rtt_p50" in r:
            parts.append(f"RTT p50 {r['rtt_p50']:.2f}, p99 {r['rtt_p99']:.2f}")
        print(f"robeing/{other}: " + ", ".join(parts))
    floor_ratio = result.get("ratio_floor_over_celery")
    if floor_ratio:
        print(f"floor/celery: RTT p50 {floor_ratio['rtt_p50']:.2f} (four hops with no work vs two)")
    t = result.get("targets")
    if t:
        print(
            f"targets: tasks/s >= {t['throughput_vs_celery']}x Celery -> "
            f"{'met' if t['throughput_met'] else 'NOT met'}; RTT p50 <= Celery -> "
            f"{'met' if t['rtt_p50_met'] else 'NOT met'}"
        )
    print("\nCPU ms per task during the throughput run (median)")
    for system, m in med.items():
        print(f"{system:16s}" + " ".join(f"{k}={v:.3f}" for k, v in m["cpu_ms_per_task"].items()))
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
    parser.add_argument("--celery-pool", default="prefork")
    parser.add_argument("--celery-concurrency", type=int, default=1)
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
    ns = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if ns.raw_server:
        asyncio.run(raw_server(ns.raw_server, ns.worker_concurrency))
    elif ns.floor_relay:
        import floor

        # The coordinator's prefetch on submissions, as robeing's.
        asyncio.run(floor.relay_main(ns.floor_relay, 10_000))
    elif ns.floor_echo:
        import floor

        asyncio.run(floor.echo_main(ns.floor_echo, ns.floor_index, ns.worker_concurrency))
    elif ns.client:
        client_main(ns)
    else:
        # A plain SIGTERM would skip the clean-up (processes, vhosts): make it an interrupt.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        out = main(ns)
        report(out)
        Path("bench-results").mkdir(exist_ok=True)
        Path("bench-results/tasks.json").write_text(json.dumps(out, indent=2))

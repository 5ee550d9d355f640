"""What a heartbeat costs the coordinator: CPU per heartbeat at N simulated agents.

Usage::

    python tests/bench/bench_heartbeats.py [--agents 100,1000] [--window 10] [--profile]

For each N, starts a real coordinator process (``robeing coordinator``) in a
vhost of its own, measures its idle CPU first, then runs N simulated agents from this
process: N identities, each with its own key pair and a certificate issued by
the test authority, each sending a signed heartbeat with a real agent's
payload (worker, alive, one skill, capacity, stats) every second on
``heartbeat.worker.<id>``, spread evenly over the second, exactly as
:mod:`robeing.agents.runtime.heartbeats` publishes them. The coordinator
runs every check of DESIGN §2 on each (size, decode, certificate, signature,
window, replay, role) before its state machine sees it.

Reported per N:

* ``cpu_ms_per_heartbeat``: the coordinator's user+system CPU (``/proc/<pid>/stat``)
  over the window, less its idle CPU over as long, divided by the heartbeats
  it consumed in the window;
* ``backlog``: whether the heartbeat queue grew during the window (the
  coordinator cannot keep up, and the figure above understates the cost);
* ``core_percent``: the share of one core it used.

With ``--profile`` the coordinator runs under cProfile during each window
only (switched on and off by SIGUSR1/SIGUSR2 through a ``sitecustomize``
module on its ``PYTHONPATH``, so robeing carries no profiling code) and the
functions with the most own time are printed; the profiles are written to
``bench-results/heartbeats-<N>.prof``. Results go to ``bench-results/heartbeats.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 60.0

SITECUSTOMIZE = """
import os, signal
_out = os.environ.get("BENCH_PROFILE_OUT")
if _out:
    import cProfile
    _prof = cProfile.Profile()

    def _start(*_):
        _prof.enable()

    def _stop(*_):
        _prof.disable()
        _prof.dump_stats(_out)

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
"""


def stat_cpu(stat: str, clk_tck: int = CLK_TCK) -> float:
    """User + system CPU seconds in the text of a ``/proc/<pid>/stat`` file (the command
    name, in parentheses, may itself hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / clk_tck


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as fh:
        return stat_cpu(fh.read())


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: answered at once, unlike the
    management API's figures, which lag by seconds)."""
    import aio_pika

    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        result = q.declaration_result
        return int(result.message_count or 0)
    finally:
        await conn.close()


async def wait_active(settings: Any) -> None:
    from robeing.agents import Client

    deadline = time.monotonic() + READY_TIMEOUT
    async with Client(settings) as client:
        while True:
            agents = await client.live_agents(1.0)
            if any(
                s.role == "coordinator" and s.extra.get("coordinator", {}).get("active")
                for s in agents.values()
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the coordinator did not become active")


class Fleet:
    """N simulated agents sharing one connection, each signing its own heartbeats."""

    def __init__(self, keys: Path, n: int, prefix: str) -> None:
        from robeing.agents.keystore import Keystore
        from robeing.agents.stats import Stats
        from robeing.protocol.codec import Codec
        from robeing.protocol.heartbeat import Heartbeat
        from robeing.protocol.identity import Identity

        store = Keystore(keys)
        authority, trust, now = store.authority(), store.trust_store(), time.time()
        self.members = []
        stats = Stats().as_dict()
        for i in range(n):
            identity = Identity.create(authority, f"{prefix}-{i}", "worker", now, 24 * 3600.0)
            beat = Heartbeat(
                role="worker",
                state="alive",
                specializations=("data_processing",),
                capacity=32,
                started_at=now,
                incarnation=uuid.uuid4().hex,
                stats=stats,
                tasks=("sha256",),
            )
            self.members.append((identity.agent_id, Codec(identity, trust), beat.to_data()))
        self.sent = 0

    async def run(self, transport: Any, stop: asyncio.Event) -> None:
        """Each member beats once a second, the members spread evenly over it."""
        from robeing.broker import topology as topo
        from robeing.protocol.envelope import Envelope

        slices = 50  # publish in 20 ms slices: evenly enough, cheap to pace
        per_slice = max(1, -(-len(self.members) // slices))
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            for k in range(0, len(self.members), per_slice):
                for agent_id, codec, data in self.members[k : k + per_slice]:
                    body = codec.seal(Envelope("heartbeat", data, priority=9), time.time())
                    await transport.publish(
                        topo.EVENTS_EXCHANGE,
                        topo.heartbeat_routing_key("worker", agent_id),
                        body,
                        mandatory=False,
                        persistent=False,
                        expiration_s=3.0,
                        confirm=False,
                    )
                    self.sent += 1
                tick += 1
                delay = start + tick / slices - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if stop.is_set():
                    return


async def measure(
    n: int, url: str, keys: Path, coord_pid: int, idle_rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    from robeing.broker import topology as topo
    from robeing.broker.amqp import AmqpTransport

    fleet = Fleet(keys, n, f"hb{n}")
    transport = AmqpTransport(url, f"bench heartbeats x{n}")
    await transport.connect()
    stop = asyncio.Event()
    runner = asyncio.create_task(fleet.run(transport, stop))
    queue = topo.heartbeat_queue_spec(topo.TopologySettings()).name
    try:
        await asyncio.sleep(args.warmup)
        if args.profile:
            os.kill(coord_pid, signal.SIGUSR1)
        depth0, sent0, cpu0, t0 = await queue_depth(url, queue), fleet.sent, cpu_of(coord_pid), (
            time.monotonic()
        )
        await asyncio.sleep(args.window)
        cpu1, t1, sent1 = cpu_of(coord_pid), time.monotonic(), fleet.sent
        depth1 = await queue_depth(url, queue)
        if args.profile:
            os.kill(coord_pid, signal.SIGUSR2)
    finally:
        stop.set()
        await runner
        await transport.close()
    wall = t1 - t0
    sent = sent1 - sent0
    consumed = sent - max(0, depth1 - depth0)
    net = (cpu1 - cpu0) - idle_rate * wall
    return {
        "agents": n,
        "window_s": wall,
        "heartbeats_sent": sent,
        "heartbeats_per_s": sent / wall,
        "consumed": consumed,
        "coordinator_cpu_s": cpu1 - cpu0,
        "idle_cpu_s": idle_rate * wall,
        "core_percent": 100 * (cpu1 - cpu0) / wall,
        "cpu_ms_per_heartbeat": 1000 * net / max(1, consumed),
        "queue_depth_start": depth0,
        "queue_depth_end": depth1,
        "backlog": depth1 - depth0 > n,  # more than a second's worth piled up
    }


def print_profile(path: Path, top: int) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


async def _vhost(vhost: str, create: bool) -> None:
    from robeing.broker.management import Management, ManagementSettings

    async with Management(ManagementSettings.from_amqp_url(BASE_URL)) as mgmt:
        if create:
            await mgmt.create_vhost(vhost)
        else:
            with contextlib.suppress(Exception):
                await mgmt.delete_vhost(vhost)


def one_size(n: int, keys: Path, site: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``n`` agents against a fresh coordinator in a fresh vhost (no leftovers
    of a previous size: its silent agents would be declared dead during the window)."""
    from robeing.agents import Settings
    from robeing.broker.management import with_vhost

    vhost = f"robeing-bench-heartbeats-{n}-{uuid.uuid4().hex[:6]}"
    url = with_vhost(BASE_URL, vhost)
    prof = site.parent / f"coordinator-{n}.prof"
    env = {
        **os.environ,
        "AMQP_URL": url,
        "ROBEING_KEYS": str(keys),
        "ROBEING_LOG_LEVEL": "error",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    if args.profile:
        env["BENCH_PROFILE_OUT"] = str(prof)
    asyncio.run(_vhost(vhost, True))
    coord = subprocess.Popen(
        [sys.executable, "-m", "robeing.agents", "coordinator", "--id", "bench-hb-coord"],
        env=env,
    )
    try:
        client = Settings(role="client", agent_id="bench-hb-client", amqp_url=url, keys_dir=keys)
        asyncio.run(wait_active(client))
        time.sleep(2.0)  # let start-up work (stream replay, first scans) finish
        c0, t0 = cpu_of(coord.pid), time.monotonic()
        time.sleep(args.idle)
        idle_rate = (cpu_of(coord.pid) - c0) / (time.monotonic() - t0)
        res = asyncio.run(measure(n, url, keys, coord.pid, idle_rate, args))
        res["idle_core_percent"] = 100 * idle_rate
        if args.profile:
            time.sleep(0.5)  # the dump happens in the coordinator's signal handler
            kept = Path("bench-results") / f"heartbeats-{n}.prof"
            kept.write_bytes(prof.read_bytes())
            res["profile"] = str(kept)
        return res
    finally:
        coord.send_signal(signal.SIGTERM)
        try:
            coord.wait(30)
        except subprocess.TimeoutExpired:
            coord.kill()
            coord.wait()
        asyncio.run(_vhost(vhost, False))


def main(args: argparse.Namespace) -> dict[str, Any]:
    from robeing.agents.keystore import Keystore

    results: list[dict[str, Any]] = []
    Path("bench-results").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="robeing-bench-hb-") as tmp:
        keys, site = Path(tmp) / "keys", Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        Keystore(keys).init()
        for n in (int(x) for x in args.agents.split(",")):
            res = one_size(n, keys, site, args)
            results.append(res)
            flag = "  BACKLOG: cannot keep up" if res["backlog"] else ""
            short = res["heartbeats_per_s"] < 0.95 * n
            print(
                f"{n:5d} agents: {res['heartbeats_per_s']:7.1f} hb/s"
                f"{' (the simulator fell short)' if short else ''}, coordinator "
                f"{res['core_percent']:5.1f} % of a core (idle {res['idle_core_percent']:.1f} %), "
                f"{res['cpu_ms_per_heartbeat']:.3f} ms CPU per heartbeat{flag}",
                flush=True,
            )
            if args.profile:
                print_profile(Path(res["profile"]), args.top)
    return {"results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per size")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement")
    parser.add_argument("--profile", action="store_true", help="cProfile the coordinator")
    parser.add_argument("--top", type=int, default=25, help="profile lines printed")
    ns = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    out = main(ns)
    Path("bench-results/heartbeats.json").write_text(json.dumps(out, indent=2))

"""Messaging benchmark: robeing vs raw aio-pika request/reply, same broker, same run.

Usage::

    python tests/bench/bench_messaging.py [--n 3000] [--concurrency 64] [--rounds 3]

What is measured (each round runs both systems back to back, alternating
which goes first; medians over rounds are reported):

* ``rtt``: one request at a time, ACK/reply round-trip latency p50/p99.
* ``ack_throughput``: ``concurrency`` requests in flight, round trips per second.
* ``p2p_throughput``: fire-and-forget messages per second, each confirmed by
  the broker; the clock stops when the receiver has handled the last one
  (a final ACKed message behind them in the same FIFO queue).

robeing runs with signing and encryption on: a real ``robeing agent``
process receives, verifies, decrypts and answers with a signed ACK.
The baseline is the canonical aio-pika RPC shape: a separate server process
consumes a queue and publishes the reply to ``reply_to`` with the
correlation id; both sides use publisher confirms (aio-pika's default), and
the payload is the same msgpack bytes.

The target for this layer: robeing's ACK throughput >= 0.8x the baseline's.
Results are printed and written to ``bench-results/messaging.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import msgpack

from robeing.agents import Client, Settings
from robeing.agents.keystore import Keystore
from robeing.broker.management import Management, ManagementSettings, with_vhost

BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RAW_QUEUE = "bench.raw"


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "data": "x" * 100}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- raw aio-pika -----------------------------------------------------------------


async def raw_server(url: str, prefetch: int) -> None:
    conn = await aio_pika.connect_robust(url)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=prefetch)
    queue = await ch.declare_queue(RAW_QUEUE, durable=True)

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = msgpack.unpackb(msg.body)
        if msg.reply_to:  # a call; casts (no reply_to) are only decoded and acknowledged
            reply = msgpack.packb({"ok": True, "n": body["n"]})
            await ch.default_exchange.publish(
                aio_pika.Message(reply, correlation_id=msg.correlation_id),
                routing_key=msg.reply_to,
            )
        await msg.ack()

    await queue.consume(on_message)
    print("ready", flush=True)
    await asyncio.Future()


class RawClient:
    def __init__(self, url: str) -> None:
        self.url = url
        self.futures: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        self.conn = await aio_pika.connect_robust(self.url)
        self.ch = await self.conn.channel()
        self.reply = await self.ch.declare_queue(exclusive=True, auto_delete=True)
        await self.reply.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        fut = self.futures.pop(msg.correlation_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg.body)

    async def call(self, i: int) -> None:
        cid = uuid.uuid4().hex
        fut = asyncio.get_running_loop().create_future()
        self.futures[cid] = fut
        await self.ch.default_exchange.publish(
            aio_pika.Message(
                msgpack.packb(payload(i)),
                correlation_id=cid,
                reply_to=self.reply.name,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=RAW_QUEUE,
        )
        await asyncio.wait_for(fut, 30)

    async def cast(self, i: int) -> None:
        await self.ch.default_exchange.publish(
            aio_pika.Message(
                msgpack.packb(payload(i)), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=RAW_QUEUE,
        )

    async def close(self) -> None:
        await self.conn.close()


# -- the runs -----------------------------------------------------------------------


async def run_rtt(call, n: int) -> dict[str, float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        lat.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)}


async def run_concurrent(call, n: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await call(i)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


async def bench_robeing(client: Client, target: str, n: int, concurrency: int) -> dict[str, Any]:
    async def call(i: int) -> None:
        await client.send(target, "ping", payload(i), requires_ack=True, timeout=30)

    async def cast(i: int) -> None:
        await client.send(target, "ping", payload(i))

    for i in range(200):  # warm up: connections, caches, JIT-free but page-warm
        await call(i)
    rtt = await run_rtt(call, min(n, 2000))
    acks = await run_concurrent(call, n, concurrency)
    t = time.perf_counter()
    await run_concurrent(cast, n, concurrency)
    await call(-1)  # FIFO: when this is acknowledged, the casts were handled
    p2p = n / (time.perf_counter() - t)
    return {**rtt, "ack_throughput": acks, "p2p_throughput": p2p}


async def bench_raw(url: str, n: int, concurrency: int) -> dict[str, Any]:
    client = RawClient(url)
    await client.start()
    try:
        for i in range(200):
            await client.call(i)
        rtt = await run_rtt(client.call, min(n, 2000))
        acks = await run_concurrent(client.call, n, concurrency)
        # Fire-and-forget: confirmed casts that the server consumes and decodes;
        # a final call behind them in the same FIFO queue stops the clock once
        # they were handled, exactly as for robeing.
        t = time.perf_counter()
        await run_concurrent(client.cast, n, concurrency)
        await client.call(-1)
        p2p = n / (time.perf_counter() - t)
        return {**rtt, "ack_throughput": acks, "p2p_throughput": p2p}
    finally:
        await client.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    vhost = f"robeing-bench-{uuid.uuid4().hex[:6]}"
    mgmt = Management(ManagementSettings.from_amqp_url(BASE_URL))
    await mgmt.create_vhost(vhost)
    url = with_vhost(BASE_URL, vhost)
    keys = Path(tempfile.mkdtemp(prefix="robeing-bench-keys-"))
    Keystore(keys).init()
    env = {**os.environ, "AMQP_URL": url, "ROBEING_KEYS": str(keys), "ROBEING_LOG_LEVEL": "warning"}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robeing.agents",
            "agent",
            "--role",
            "worker",
            "--id",
            "bench-w",
            "--concurrency",
            str(args.concurrency),
        ],
        env=env,
    )
    server = subprocess.Popen(
        [sys.executable, __file__, "--raw-server", url, "--concurrency", str(args.concurrency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        settings = Settings(role="client", agent_id="bench-client", amqp_url=url, keys_dir=keys)
        rounds: dict[str, list[dict[str, Any]]] = {"robeing": [], "aio_pika": []}
        async with Client(settings) as client:
            deadline = time.monotonic() + 30
            while "bench-w" not in await client.live_agents(1.0):
                if time.monotonic() > deadline:
                    raise RuntimeError("benchmark agent did not start")
            for r in range(args.rounds):
                order = ["robeing", "aio_pika"] if r % 2 == 0 else ["aio_pika", "robeing"]
                for system in order:
                    if system == "robeing":
                        res = await bench_robeing(client, "bench-w", args.n, args.concurrency)
                    else:
                        res = await bench_raw(url, args.n, args.concurrency)
                    rounds[system].append(res)
                    print(
                        f"round {r + 1} {system:8s} "
                        + " ".join(f"{k}={v:.2f}" for k, v in res.items()),
                        flush=True,
                    )
    finally:
        agent.terminate()
        server.terminate()
        agent.wait(30)
        server.wait(30)
        await mgmt.delete_vhost(vhost)
        await mgmt.aclose()

    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in rounds.items()}
    ratios = {
        "ack_throughput": med["robeing"]["ack_throughput"] / med["aio_pika"]["ack_throughput"],
        "p2p_throughput": med["robeing"]["p2p_throughput"] / med["aio_pika"]["p2p_throughput"],
        "rtt_p50": med["robeing"]["p50_ms"] / med["aio_pika"]["p50_ms"],
        "rtt_p99": med["robeing"]["p99_ms"] / med["aio_pika"]["p99_ms"],
    }
    return {
        "n": args.n,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "median": med,
        "ratio_robeing_over_aio_pika": ratios,
        "target_ack_throughput_ratio": 0.8,
        "target_met": ratios["ack_throughput"] >= 0.8,
    }


def report(result: dict[str, Any]) -> None:
    med, ratio = result["median"], result["ratio_robeing_over_aio_pika"]
    print(
        f"\nmedian of {result['rounds']} rounds, n={result['n']}, "
        f"concurrency={result['concurrency']}"
    )
    print(f"{'':22s}{'robeing':>12s}{'aio-pika':>12s}{'ratio':>8s}")
    rows = [
        ("ACK round trips/s", "ack_throughput", "ack_throughput"),
        ("p2p messages/s", "p2p_throughput", "p2p_throughput"),
        ("RTT p50 ms", "p50_ms", "rtt_p50"),
        ("RTT p99 ms", "p99_ms", "rtt_p99"),
    ]
    for label, key, rkey in rows:
        print(
            f"{label:22s}{med['robeing'][key]:12.2f}{med['aio_pika'][key]:12.2f}{ratio[rkey]:8.2f}"
        )
    print(f"target: ACK throughput ratio >= 0.8 -> {'met' if result['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--raw-server", metavar="URL")
    ns = parser.parse_args()
    if ns.raw_server:
        asyncio.run(raw_server(ns.raw_server, ns.concurrency))
        sys.exit(0)
    out = asyncio.run(main(ns))
    report(out)
    Path("bench-results").mkdir(exist_ok=True)
    Path("bench-results/messaging.json").write_text(json.dumps(out, indent=2))

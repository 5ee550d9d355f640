"""Consensus benchmark: vote latency, PBFT commit latency and view-change time.

Usage::

    python tests/bench/bench_consensus.py [--proposals 50] [--commits 100] [--view-changes 3]

Everything runs in its own vhost against the local broker, with real
``robeing agent`` processes (``--app apps.consensus_app``):

* ``fanout_rtt``: the messaging floor: a client requests ``ping`` from the 7
  agents at once and waits for all 7 signed replies (p50/p99).
* ``vote``: a client proposes to 7 agents (default policy, 2/3 threshold):
  broadcast, 7 signed votes on the client's reply queue, decision as soon as 5
  approved, outcome broadcast (p50/p99 of :func:`propose`).
* ``pbft_n4`` / ``pbft_n7``: a client commits one value at a time through a
  group of 4 (f = 1) and of 7 (f = 2) of those agents; latency is from the
  request to the ``f + 1``-th matching reply (p50/p99), plus commits per second.
* ``view_change``: a fresh healthy group of 4 (view-change timeout
  ``--vc-timeout``); after a first commit its primary is SIGKILLed and the
  client commits again, re-sending every 0.25 s. Reported: the time from the
  kill to that commit (dominated by the timeout, by design), and the replicas'
  own view change from its first sign (timer or peer message) to the new view.

Signing and encryption are on as in production. The machine's load average is
recorded: other processes on it skew the figures. Results are printed and
written to ``bench-results/consensus.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from robeing.agents import Client, Settings
from robeing.agents.consensus import bft_commit, propose
from robeing.agents.keystore import Keystore
from robeing.broker.management import Management, ManagementSettings, with_vhost
from robeing.protocol.pbft import GroupSpec, parse_groups

BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TESTS = Path(__file__).resolve().parent.parent
AGENTS = [f"b-{i}" for i in range(1, 8)]
GROUPS = f"b4={','.join(AGENTS[:4])};b7={','.join(AGENTS)}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(ms, 0.5), 2),
        "p99_ms": round(pct(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


class Fleet:
    """Agent processes of one benchmark run."""

    def __init__(self, url: str, keys: Path) -> None:
        self.env = {
            **os.environ,
            "AMQP_URL": url,
            "ROBEING_KEYS": str(keys),
            "ROBEING_LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p
            ),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, agent_id: str, groups: str, timeout: float) -> None:
        env = {**self.env, "ROBEING_BFT_GROUP": groups, "ROBEING_BFT_TIMEOUT": str(timeout)}
        argv = [sys.executable, "-m", "robeing.agents", "agent", "--role", "worker",
                "--id", agent_id, "--app", "apps.consensus_app"]  # fmt: skip
        self.procs[agent_id] = subprocess.Popen(argv, env=env)

    def kill(self, agent_id: str) -> None:
        proc = self.procs.pop(agent_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


async def wait_live(client: Client, ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not set(ids) <= set(await client.live_agents(1.0)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents {ids} did not start")


async def bench_fanout(client: Client, n: int) -> dict[str, float]:
    lat = []
    for i in range(n + 5):
        t = time.perf_counter()
        await asyncio.gather(*(client.request(a, "ping", i, timeout=10) for a in AGENTS))
        if i >= 5:
            lat.append((time.perf_counter() - t) * 1000)
    return summary(lat)


async def bench_votes(client: Client, n: int) -> dict[str, float]:
    lat = []
    for i in range(n + 5):
        t = time.perf_counter()
        decision = await propose(client, {"n": i}, AGENTS, deadline=10)
        if not decision.approved:
            raise RuntimeError(f"proposal {i} was not approved")
        if i >= 5:
            lat.append((time.perf_counter() - t) * 1000)
    return summary(lat)


async def bench_pbft(client: Client, spec: GroupSpec, n: int) -> dict[str, float]:
    for i in range(5):
        await bft_commit(client, spec, {"warmup": i}, timeout=30)
    lat = []
    started = time.perf_counter()
    for i in range(n):
        result = await bft_commit(client, spec, {"n": i}, timeout=30)
        lat.append(result.latency_s * 1000)
    per_second = n / (time.perf_counter() - started)
    return {**summary(lat), "commits_per_s": round(per_second, 1)}


async def bench_view_change(
    client: Client, fleet: Fleet, round_no: int, timeout: float
) -> dict[str, Any]:
    members = [f"vc{round_no}-{i}" for i in range(1, 5)]
    spec = GroupSpec.build(f"vc{round_no}", members, view_change_timeout=timeout)
    for m in members:
        fleet.start(m, str(spec), timeout)
    await wait_live(client, members)
    await bft_commit(client, spec, "before", timeout=30)
    fleet.kill(members[0])
    killed = time.perf_counter()
    after = await bft_commit(client, spec, "after", timeout=60, retry=0.25)
    recovery = time.perf_counter() - killed
    later = await bft_commit(client, spec, "later", timeout=30)
    protocol = []
    for m in members[1:]:
        log = await client.request(m, "pbft.log", {"g": spec.name, "entries": 0}, timeout=10)
        protocol += [c["seconds"] * 1000 for c in log["view_changes"] if c["seconds"] is not None]
    for m in members[1:]:
        fleet.kill(m)
    return {
        "commit_after_kill_s": round(recovery, 3),
        "replica_view_change_ms": round(max(protocol), 2) if protocol else None,
        "next_commit_ms": round(later.latency_s * 1000, 2),
        "new_primary_confirmed": list(after.replicas),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    vhost = f"robeing-bench-consensus-{uuid.uuid4().hex[:6]}"
    mgmt = Management(ManagementSettings.from_amqp_url(BASE_URL))
    await mgmt.create_vhost(vhost)
    url = with_vhost(BASE_URL, vhost)
    keys = Path(tempfile.mkdtemp(prefix="robeing-bench-keys-"))
    Keystore(keys).init()
    fleet = Fleet(url, keys)
    load_before = os.getloadavg()[0]
    out: dict[str, Any] = {"agents": len(AGENTS), "cpus": os.cpu_count()}
    try:
        for agent_id in AGENTS:
            fleet.start(agent_id, GROUPS, 2.0)
        settings = Settings(role="client", agent_id="bench-cons", amqp_url=url, keys_dir=keys)
        async with Client(settings) as client:
            await wait_live(client, AGENTS)
            b4, b7 = parse_groups(GROUPS)
            out["fanout_rtt"] = await bench_fanout(client, args.proposals)
            print("fan-out RTT to 7", out["fanout_rtt"], flush=True)
            out["vote"] = await bench_votes(client, args.proposals)
            print("vote, 7 agents  ", out["vote"], flush=True)
            out["pbft_n4"] = await bench_pbft(client, b4, args.commits)
            print("PBFT n=4        ", out["pbft_n4"], flush=True)
            out["pbft_n7"] = await bench_pbft(client, b7, args.commits)
            print("PBFT n=7        ", out["pbft_n7"], flush=True)
            fleet.stop()  # the view-change groups get the machine to themselves
            rounds = []
            for r in range(args.view_changes):
                rounds.append(await bench_view_change(client, fleet, r, args.vc_timeout))
                print(f"view change {r + 1}  ", rounds[-1], flush=True)
            out["view_change"] = {
                "timeout_s": args.vc_timeout,
                "rounds": rounds,
                "commit_after_kill_s_median": statistics.median(
                    x["commit_after_kill_s"] for x in rounds
                ),
                "replica_view_change_ms_median": statistics.median(
                    x["replica_view_change_ms"] for x in rounds
                ),
            }
    finally:
        fleet.stop()
        await mgmt.delete_vhost(vhost)
        await mgmt.aclose()
    out["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    return out


def report(r: dict[str, Any]) -> None:
    print(f"\n{r['agents']} agents on {r['cpus']} CPUs, load average {r['load_average']}")
    print(f"{'':34s}{'p50 ms':>10s}{'p99 ms':>10s}")
    for label, key in (
        ("fan-out ping to 7 (floor)", "fanout_rtt"),
        ("vote, 7 agents (2/3)", "vote"),
        ("PBFT commit, n=4 (f=1)", "pbft_n4"),
        ("PBFT commit, n=7 (f=2)", "pbft_n7"),
    ):
        print(f"{label:34s}{r[key]['p50_ms']:10.2f}{r[key]['p99_ms']:10.2f}")
    vc = r["view_change"]
    print(
        f"view change after SIGKILL of the primary (timeout {vc['timeout_s']}s): commit "
        f"{vc['commit_after_kill_s_median']:.2f}s after the kill (median of "
        f"{len(vc['rounds'])}); replicas' view change {vc['replica_view_change_ms_median']:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--view-changes", type=int, default=3)
    parser.add_argument("--vc-timeout", type=float, default=1.0)
    result = asyncio.run(main(parser.parse_args()))
    report(result)
    Path("bench-results").mkdir(exist_ok=True)
    Path("bench-results/consensus.json").write_text(json.dumps(result, indent=2))

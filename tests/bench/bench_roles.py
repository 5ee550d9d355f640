"""Figures of issue 12: the HTTP gateway's rate against the CLI's submit rate, the
overhead of result validation at the default rate, and specialist-vs-worker placement.

Run: ``python tests/bench/bench_roles.py [--tasks N]`` (needs RabbitMQ on 127.0.0.1;
makes and deletes its own vhost). Writes ``bench-results/roles.json``.

* gateway: ``POST /tasks`` answered (202) per second through a messenger, one
  request at a time on a kept-alive connection and 16 at a time; ``GET /agents``
  likewise; against ``Client.submit`` one at a time (the code ``robeing submit``
  runs) and against ``robeing submit`` as a process per task (what a shell
  script pays);
* validation: N tiny tasks submitted together, to their last final, with a
  guardian at the default ``--verify-rate 0.05`` and with none, alternating
  rounds; reported: tasks per second of each and the audits made;
* placement: one specialist and two workers offering ``analysis``: ``whoami``
  tasks one at a time, then 60 at once; who ran them.
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
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from robeing.agents import Client, Settings
from robeing.agents.keystore import Keystore
from robeing.broker.management import Management, ManagementSettings, with_vhost
from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.taskmsgs import TaskRequest
from robeing.protocol.tokens import issue_token

BASE_URL = os.environ.get("ROBEING_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TESTS = Path(__file__).resolve().parents[1]


class Fleet:
    def __init__(self, url: str, keys: Path) -> None:
        self.env = {
            **os.environ,
            "AMQP_URL": url,
            "ROBEING_KEYS": str(keys),
            "ROBEING_LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, agent_id: str, *args: str) -> None:
        command = ["coordinator"] if role == "coordinator" else ["agent", "--role", role]
        self.procs[agent_id] = subprocess.Popen(
            [sys.executable, "-m", "robeing.agents", *command, "--id", agent_id, *args],
            env=self.env,
        )

    def stop(self, agent_id: str) -> None:
        proc = self.procs.pop(agent_id)
        proc.terminate()
        proc.wait(30)

    def cpu_seconds(self) -> float:
        """User + system CPU of every agent process of the fleet, and of this one."""
        tick = os.sysconf("SC_CLK_TCK")
        total = sum(os.times()[:2])
        for proc in self.procs.values():
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop_all(self) -> None:
        for agent_id in list(self.procs):
            self.stop(agent_id)


async def wait_for(client: Client, *ids: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not set(ids) <= set(await client.live_agents(1.0)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents {ids} did not start")


async def bench_gateway(client: Client, fleet: Fleet, keys: Path, n: int) -> dict[str, Any]:
    port = 18000 + os.getpid() % 1000
    fleet.start("messenger", "bench-m", "--http", f"127.0.0.1:{port}", "--http-rate", "100000")
    await wait_for(client, "bench-m")
    await asyncio.sleep(1.0)
    ident = Keystore(keys).load_identity("bench-http", "client")
    token = issue_token(ident.certificate.raw, ed25519_signer(ident.signing_key), time.time(), 3600)
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for _ in range(20):  # warm up
            await http.get("/agents")
        t = time.perf_counter()
        for i in range(n):
            r = await http.post("/tasks", json={"type": "sha256", "payload": f"s{i}"})
            assert r.status_code == 202, r.text
        out["post_tasks_sequential_per_s"] = n / (time.perf_counter() - t)

        async def burst(k: int) -> None:
            for i in range(n // 16):
                r = await http.post("/tasks", json={"type": "sha256", "payload": f"c{k}.{i}"})
                assert r.status_code == 202, r.text

        t = time.perf_counter()
        await asyncio.gather(*(burst(k) for k in range(16)))
        out["post_tasks_16_at_once_per_s"] = (n // 16) * 16 / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            assert (await http.get("/agents")).status_code == 200
        out["get_agents_sequential_per_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(n):
        await client.submit("sha256", f"cli{i}")
    out["client_submit_sequential_per_s"] = n / (time.perf_counter() - t)
    k = 10
    t = time.perf_counter()
    for i in range(k):
        subprocess.run(
            [sys.executable, "-m", "robeing.agents", "submit", "sha256", "--payload", f'"p{i}"'],
            env=fleet.env, check=True, capture_output=True,
        )  # fmt: skip
    out["robeing_submit_process_per_s"] = k / (time.perf_counter() - t)
    fleet.stop("bench-m")
    return out


async def run_tasks(client: Client, n: int) -> float:
    requests = [TaskRequest(id=uuid.uuid4().hex, type="sha256", payload=f"v{i}") for i in range(n)]
    t = time.perf_counter()
    handles = []
    for i in range(0, n, 500):
        handles += await client.submit_many(requests[i : i + 500])
    for h in handles:
        assert (await h.result(120)).state == "succeeded"
    return n / (time.perf_counter() - t)


async def bench_validation(client: Client, fleet: Fleet, n: int, rounds: int) -> dict[str, Any]:
    """No guardian, a guardian that validates nothing (its process alone), one at 0.05."""
    modes = {"no guardian": None, "guardian at 0": "0", "guardian at 0.05": "0.05"}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}  # CPU ms per task, whole fleet
    audits = 0
    for r in range(rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for mode in order:
            verify = modes[mode]
            if verify is not None:
                fleet.start("guardian", "bench-g", "--verify-rate", verify)
                await wait_for(client, "bench-g")
                await asyncio.sleep(2.0)  # the coordinator hears its verify rate
            before = fleet.cpu_seconds()
            rates[mode].append(await run_tasks(client, n))
            if verify is not None:
                await asyncio.sleep(3.0)  # its validations finish
                report = await client.request("bench-g", "guardian.report", timeout=10)
                audits += report["validation"].get("audits", 0)
            cpu[mode].append((fleet.cpu_seconds() - before) * 1000 / n)
            if verify is not None:
                fleet.stop("bench-g")
                await asyncio.sleep(6.0)  # the coordinator forgets it
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "tasks_per_s": med,
        "rounds_tasks_per_s": rates,
        "cpu_ms_per_task": cpu_med,
        "rounds_cpu_ms_per_task": cpu,
        "cpu_overhead_vs_guardian_at_0": cpu_med["guardian at 0.05"] / cpu_med["guardian at 0"] - 1,
        "overhead_vs_no_guardian": 1 - med["guardian at 0.05"] / med["no guardian"],
        "overhead_vs_guardian_at_0": 1 - med["guardian at 0.05"] / med["guardian at 0"],
        "audits_per_task": audits / (n * rounds),
        "rounds": rounds,
        "n": n,
    }


async def bench_placement(client: Client) -> dict[str, Any]:
    one_by_one = Counter()
    for _ in range(30):
        one_by_one[(await (await client.submit("whoami", None)).result(30)).result] += 1
    handles = [await client.submit("whoami", None) for _ in range(60)]
    at_once = Counter()
    for h in handles:
        at_once[(await h.result(60)).result] += 1
    return {"one_at_a_time": dict(one_by_one), "sixty_at_once": dict(at_once)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    vhost = f"robeing-bench-{uuid.uuid4().hex[:6]}"
    mgmt = Management(ManagementSettings.from_amqp_url(BASE_URL))
    await mgmt.create_vhost(vhost)
    url = with_vhost(BASE_URL, vhost)
    keys = Path(tempfile.mkdtemp(prefix="robeing-bench-keys-"))
    Keystore(keys).init()
    fleet = Fleet(url, keys)
    app = ("--app", "apps.roles_app")
    try:
        fleet.start("coordinator", "bench-c", *app)
        fleet.start("specialist", "bench-s", *app, "--specialization", "analysis",
                    "--concurrency", "4")  # fmt: skip
        skills = ("--specialization", "analysis,data_processing", "--concurrency", "4")
        for i in range(2):
            fleet.start("worker", f"bench-w{i}", *app, *skills)
        settings = Settings(role="client", agent_id="bench-client", amqp_url=url, keys_dir=keys)
        async with Client(settings) as client:
            await wait_for(client, "bench-c", "bench-s", "bench-w0", "bench-w1")
            await asyncio.sleep(2.0)
            out: dict[str, Any] = {}
            if "placement" in args.only:
                out["placement"] = await bench_placement(client)
            if "gateway" in args.only:
                out["gateway"] = await bench_gateway(client, fleet, keys, args.requests)
            if "validation" in args.only:
                out["validation"] = await bench_validation(client, fleet, args.tasks, args.rounds)
    finally:
        fleet.stop_all()
        await mgmt.delete_vhost(vhost)
        await mgmt.aclose()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", nargs="+", default=["placement", "gateway", "validation"], help="Parts to run."
    )
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    Path("bench-results").mkdir(exist_ok=True)
    Path("bench-results/roles.json").write_text(json.dumps(result, indent=2))

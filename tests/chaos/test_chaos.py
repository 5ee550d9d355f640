"""Chaos: faults injected while tasks flow; a Jepsen-style checker counts what came out.

While a client submits a steady stream of tasks to a fleet (an active and a
standby coordinator, three workers, all real processes under an in-test
supervisor that restarts what dies), a seeded nemesis:

* kills workers with SIGKILL mid-task,
* pauses workers with SIGSTOP and resumes them with SIGCONT,
* closes workers' broker connections (management API),
* kills the active coordinator (the standby takes over),
* restarts the broker once.

Then the faults stop and the checker waits for every accepted task and
reports: accepted (the broker confirmed the submission), completed (a correct
final result), lost (none within the bound after the last fault), duplicated
(more than one result delivered to the submitting application), unexpected
(wrong result or a state other than succeeded). Pass: lost = duplicated =
unexpected = 0.

CI runs a short version; ``ROBEING_CHAOS_SECONDS=300 ROBEING_CHAOS_SEED=7``
runs a longer one on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from supervisor import Supervisor, judge, stream_tasks

from robeing.agents import Client, Settings
from robeing.broker.management import Management

pytestmark = [pytest.mark.broker, pytest.mark.chaos, pytest.mark.broker_restart]

SECONDS = float(os.environ.get("ROBEING_CHAOS_SECONDS", "40"))
SEED = int(os.environ.get("ROBEING_CHAOS_SEED", "1"))
SETTLE_BOUND_S = 90.0
FAST = ("--acceptable-pause", "1.0", "--dead-after", "1.0")


async def nemesis(
    rng: random.Random,
    sup: Supervisor,
    watcher,
    management: Management,
    vhost: str,
    until: float,
    log: list[str],
) -> float:
    """Inject faults until ``until``; returns the time of the last fault."""
    workers = [a for a, (role, _, _) in sup.members.items() if role == "worker"]
    coordinators = [a for a, (role, _, _) in sup.members.items() if role == "coordinator"]
    broker_restart_at = time.monotonic() + (until - time.monotonic()) * rng.uniform(0.4, 0.6)
    restarted = False
    last = time.monotonic()
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(1.5, 3.0))
        if not restarted and time.monotonic() >= broker_restart_at:
            log.append("restart broker")
            subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
            await asyncio.sleep(1.0)
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
            restarted = True
            last = time.monotonic()
            continue
        fault = rng.choice(["kill", "kill", "pause", "close", "coordinator"])
        if fault == "coordinator":
            active = next(
                (
                    c
                    for c in coordinators
                    if watcher.latest.get(c)
                    and watcher.latest[c].extra.get("coordinator", {}).get("active")
                ),
                None,
            )
            if active is None:
                continue
            log.append(f"kill coordinator {active}")
            sup.proc(active).signal(signal.SIGKILL)
        else:
            target = rng.choice(workers)
            proc = sup.proc(target)
            if fault == "kill":
                log.append(f"kill {target}")
                proc.signal(signal.SIGKILL)
            elif fault == "pause":
                pause = rng.uniform(0.5, 3.0)
                log.append(f"pause {target} {pause:.1f}s")
                proc.signal(signal.SIGSTOP)
                await asyncio.sleep(pause)
                proc.signal(signal.SIGCONT)
            else:
                log.append(f"close connection of {target}")
                with contextlib.suppress(Exception):
                    for conn in await management.connections(vhost):
                        name = conn.get("client_properties", {}).get("connection_name", "")
                        if f" {target} " in name:
                            await management.close_connection(conn["name"], "chaos")
        last = time.monotonic()
    return last


@pytest.mark.timeout(SECONDS + SETTLE_BOUND_S + 120)  # longer runs on demand
async def test_chaos_loses_nothing_and_duplicates_nothing(
    spawn,
    watcher,
    management: Management,
    vhost: str,
    amqp_url: str,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "out"
    out.mkdir()
    sup = Supervisor(spawn, {"SAMPLE_OUT": str(out)})
    app = ("--app", "apps.sample_app")
    await sup.add("coordinator", "chaos-c1", *app, *FAST)
    await watcher.wait_coordinator("chaos-c1")
    await sup.add("coordinator", "chaos-c2", *app, *FAST, "--standby")
    for i in range(3):
        await sup.add(
            "worker", f"chaos-w{i}", *app, "--specialization", "math", "--concurrency", "4"
        )
    for i in range(3):
        await watcher.wait_alive(f"chaos-w{i}", timeout=20)
    sup.start()

    accepted: dict[str, object] = {}
    expected: dict[str, float] = {}
    faults: list[str] = []
    settings = Settings(
        role="client", agent_id="chaos-client", amqp_url=amqp_url, keys_dir=keys_dir
    )
    async with Client(settings) as client:
        until = time.monotonic() + SECONDS

        streaming = asyncio.create_task(
            stream_tasks(
                client, f"chaos-{SEED}", accepted, expected, lambda: time.monotonic() < until
            )
        )
        last_fault = await nemesis(rng, sup, watcher, management, vhost, until, faults)
        await streaming
        settle_deadline = last_fault + SETTLE_BOUND_S
        results = {}
        for task_id, handle in accepted.items():
            remaining = max(0.1, settle_deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                results[task_id] = await handle.result(remaining)
        raw_duplicates = client.duplicates
        duplicated = sum(n - 1 for n in client.delivered.values() if n > 1)
        resubmitted = client.resubmitted
    await sup.stop()

    completed = sum(1 for t, f in results.items() if f.ok and f.result == expected[t])
    unexpected = sum(1 for t, f in results.items() if not (f.ok and f.result == expected[t]))
    lost = len(accepted) - len(results)
    report = {
        "seed": SEED,
        "seconds": SECONDS,
        "accepted": len(accepted),
        "completed": completed,
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "duplicate_finals_absorbed": raw_duplicates,
        "resubmitted_batches": resubmitted,
        "faults": faults,
        "restarts": sup.restarts,
    }
    judge(f"chaos-{SEED}", report)
    assert completed == len(accepted), report

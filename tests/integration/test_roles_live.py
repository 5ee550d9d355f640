"""Roles that do their jobs, with real agent processes: specialists preferred, handlers
known, flooding agents quarantined and their work reassigned."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robeing.agents import Client, Settings

pytestmark = pytest.mark.broker

FAST = ("--acceptable-pause", "0.5", "--dead-after", "0.5")
APP = ("--app", "apps.roles_app")


@pytest.fixture
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as c:
        yield c


def tag() -> str:
    return str(time.monotonic_ns() % 10**7)


async def coordinator(spawn, watcher, name: str, env: dict[str, str] | None = None):
    proc = await spawn("coordinator", name, *APP, *FAST, env=env)
    await watcher.wait_coordinator(name)
    return proc


async def test_a_specialist_is_chosen_over_a_worker_and_handlers_are_respected(
    spawn, watcher, client: Client
) -> None:
    """Given a worker and a specialist both offering 'analysis', and a second specialist
    without the app's 'whoami' handler, When three 'whoami' tasks run one after another,
    Expect all three on the specialist with the handler (none on the worker, none failed
    on the one without it); Expect 'describe' (specialists only) never on the worker."""
    t = tag()
    coord = await coordinator(spawn, watcher, f"rc-{t}")
    try:
        await spawn("worker", f"rw-{t}", *APP, "--specialization", "analysis")
        await spawn("specialist", f"rs-{t}", *APP, "--specialization", "analysis:0.9")
        bare = await spawn("specialist", f"rb-{t}", "--specialization", "analysis")
        assert "whoami" not in (watcher.latest[f"rb-{t}"].extra["task_types"] or [])
        await asyncio.sleep(1.5)  # the coordinator has heard everyone
        ran = []
        for _ in range(3):
            final = await (await client.submit("whoami", None)).result(20)
            assert final.state == "succeeded", final
            ran.append(final.result)
        assert ran == [f"rs-{t}"] * 3
        final = await (await client.submit("describe", {"values": [1, 2, 3, 4]})).result(20)
        assert final.state == "succeeded" and final.result["mean"] == 2.5
        status = watcher.latest[f"rs-{t}"].extra
        assert status["priority"] == 2 and status["proficiency"] == {"analysis": 0.9}
        assert "no task" not in bare.log()
    finally:
        await coord.terminate(20)


def robeing_cli(amqp_url: str, keys_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"AMQP_URL": amqp_url, "ROBEING_KEYS": str(keys_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "robeing.agents", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def until(check, timeout: float = 20.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)


async def test_a_flooding_agent_is_quarantined_everywhere_and_its_task_reassigned(
    spawn, watcher, client: Client, amqp_url: str, keys_dir: Path, tmp_path: Path
) -> None:
    """Given a specialist holding a long task that floods two workers with messages they
    refuse, When the guardian has 10 verified refusals from both reporters, Expect a signed
    quarantine order: the coordinator reassigns the task to a worker (which finishes it),
    the workers refuse the flooder's messages ('quarantined'), status shows it, a worker
    restarted keeps refusing it (the order survives), and after `robeing guardian release`
    its messages are accepted again."""
    t = tag()
    out = tmp_path / "out"
    out.mkdir()
    env = {"SAMPLE_OUT": str(out)}
    coord = await coordinator(spawn, watcher, f"qc-{t}", env)
    try:
        g = f"qg-{t}"
        await spawn("guardian", g, "--quarantine-after", "10", env=env)
        w1, w2, bad = f"qw1-{t}", f"qw2-{t}", f"qbad-{t}"
        await spawn("worker", w1, *APP, "--specialization", "slow", env=env)
        w2_proc = await spawn("worker", w2, *APP, env=env)
        await spawn("specialist", bad, *APP, "--specialization", "slow", env=env)
        await asyncio.sleep(1.5)
        handle = await client.submit("hold", {"seconds": 8}, deadline=60)
        started = out / f"{bad}.tasks"
        assert await until(lambda: asyncio.sleep(0, started.exists()), 15), "not on the specialist"

        sent = await client.request(bad, "flood", {"targets": [w1, w2], "n": 8}, timeout=20)
        assert sent == 16

        final = await handle.result(40)
        assert final.state == "succeeded" and final.result == w1, final
        report = await client.request(g, "guardian.report", timeout=10)
        assert bad in report["quarantined"], report
        assert sorted(report["quarantined"][bad]["evidence"]) == [w1, w2]

        # Every agent refuses it now, with the reason.
        with pytest.raises(Exception, match="quarantined"):
            await client.request(bad, "poke", {"to": w2}, timeout=10)
        status = json.loads(robeing_cli(amqp_url, keys_dir, "status", "--json").stdout)
        row = next(r for r in status["agents"] if r["id"] == bad)
        assert row["health"] == "quarantined" and bad in status["quarantined"]

        # A worker restarted keeps the order: it refuses the flooder before any guardian speaks.
        await w2_proc.terminate(20)
        since = time.time()
        await spawn("worker", w2, *APP, env=env)
        await watcher.wait_alive(w2, since=since)
        with pytest.raises(Exception, match="quarantined"):
            await client.request(bad, "poke", {"to": w2}, timeout=10)

        done = robeing_cli(amqp_url, keys_dir, "guardian", "release", bad, "--guardian", g)
        assert done.returncode == 0, done.stderr + (tmp_path / f"{g}.log").read_text()[-3000:]
        reply = await until(lambda: poke_ok(client, bad, w2), 15, 0.5)
        assert reply and reply["pong"] == w2
    finally:
        await coord.terminate(20)


async def poke_ok(client: Client, via: str, to: str) -> dict | None:
    try:
        return await client.request(via, "poke", {"to": to}, timeout=5)
    except Exception:
        return None


async def test_a_lying_worker_is_caught_by_result_validation_and_quarantined(
    spawn, watcher, client: Client
) -> None:
    """Given a guardian validating every result (--verify-rate 1) and a specialist whose
    'square' is off by one, When it runs squares, Expect each re-run on an honest worker,
    the disagreement broken by a second one, the liar blamed with signed evidence and, at
    the second contradicted result, quarantined — later squares then run on honest
    workers and come out right; 'noisy' (verify=False) is never validated."""
    t = tag()
    coord = await coordinator(spawn, watcher, f"vc-{t}")
    try:
        g = f"vg-{t}"
        await spawn("guardian", g, "--verify-rate", "1.0")
        liar = f"vliar-{t}"
        await spawn("specialist", liar, *APP, "--specialization", "calc",
                    env={"ROBEING_TEST_LIE": "1"})  # fmt: skip
        for i in range(2):
            await spawn("worker", f"vw{i}-{t}", *APP, "--specialization", "calc")
        await asyncio.sleep(1.5)
        wrong = 0
        for x in range(2, 9):
            final = await (await client.submit("square", x)).result(20)
            wrong += final.result != x * x
            report = await client.request(g, "guardian.report", timeout=10)
            if liar in report["quarantined"]:
                break
            await asyncio.sleep(1.0)  # the validation of this one finishes first
        report = await until(
            lambda: guardian_report_if(client, g, lambda r: liar in r["quarantined"]), 20, 0.5
        )
        assert report, "the liar was not quarantined"
        v = report["validation"]
        assert v["blamed"] == {liar: 2} and v["mismatches"] >= 2 and wrong >= 2
        assert "results contradicted" in report["quarantined"][liar]["reason"]
        assert (await (await client.submit("square", 12)).result(20)).result == 144
        audits = v["audits"]
        for _ in range(3):
            assert (await (await client.submit("noisy", 0)).result(20)).state == "succeeded"
        await asyncio.sleep(1.5)
        after = (await client.request(g, "guardian.report", timeout=10))["validation"]
        assert after["audits"] == audits + 1  # the square of 12 only
    finally:
        await coord.terminate(20)


async def guardian_report_if(client: Client, guardian: str, ok) -> dict | None:
    report = await client.request(guardian, "guardian.report", timeout=10)
    return report if ok(report) else None


async def test_a_sudden_flood_of_accepted_messages_raises_a_rate_alert(
    spawn, watcher, client: Client
) -> None:
    """Given an agent that trickles messages to two workers (2/s), When it suddenly sends
    them 150/s each, Expect the guardian — from the counts both receivers announce — to
    raise one rate-anomaly alert naming it, though every message was accepted."""
    t = tag()
    g = f"rg-{t}"
    await spawn("guardian", g, "--anomaly-floor", "50", "--anomaly-factor", "5")
    w1, w2, chatty = f"rw1-{t}", f"rw2-{t}", f"rchat-{t}"
    procs = {w: await spawn("worker", w, *APP) for w in (w1, w2, chatty)}
    trickle = {"targets": [w1, w2], "n": 8, "rate": 2}
    assert await client.request(chatty, "chatter", trickle, timeout=30) == 16
    await asyncio.sleep(2.0)  # the guardian learns its usual rate
    burst = {"targets": [w1, w2], "n": 600, "rate": 150}
    assert await client.request(chatty, "chatter", burst, timeout=60) == 1200
    report = await until(
        lambda: guardian_report_if(client, g, lambda r: r["rates"]["alerts"] >= 1), 15, 0.5
    )
    assert report and report["rates"]["alerts"] == 1, report
    await asyncio.sleep(0.5)
    alert = [line for line in procs[w1].log().splitlines() if "rate_anomaly" in line]
    assert alert and f"'sender': '{chatty}'" in alert[0], procs[w1].log()[-2000:]


async def test_a_signed_access_policy_tightens_the_role_table_everywhere(
    spawn, watcher, client: Client, amqp_url: str, keys_dir: Path
) -> None:
    """Given a worker that may send 'chat' to another, When `robeing guardian policy
    --deny worker=chat` runs, Expect the receiver to refuse the worker's chat (reason
    'policy') while a client's chat still passes; a receiver started later applies it
    too (the guardian answers its hello with it); `--clear` lifts it."""
    t = tag()
    g, w1, w2 = f"pg-{t}", f"pw1-{t}", f"pw2-{t}"
    await spawn("guardian", g)
    for w in (w1, w2):
        await spawn("worker", w, *APP)
    done = robeing_cli(
        amqp_url, keys_dir, "guardian", "policy", "--deny", "worker=chat", "--guardian", g
    )
    assert done.returncode == 0 and "v1" in done.stdout, done.stderr
    await asyncio.sleep(1.0)
    with pytest.raises(Exception, match="policy"):
        await client.request(w1, "poke_chat", {"to": w2}, timeout=10)
    await client.request(w2, "chat", None, timeout=10)  # clients are not denied
    late = f"pw3-{t}"
    await spawn("worker", late, *APP)
    await asyncio.sleep(1.0)
    with pytest.raises(Exception, match="policy"):
        await client.request(w1, "poke_chat", {"to": late}, timeout=10)
    done = robeing_cli(amqp_url, keys_dir, "guardian", "policy", "--clear", "--guardian", g)
    assert done.returncode == 0 and "v2" in done.stdout
    reply = await until(lambda: poke_chat_ok(client, w1, w2), 10, 0.5)
    assert reply is not None


async def poke_chat_ok(client: Client, via: str, to: str) -> str | None:
    try:
        return await client.request(via, "poke_chat", {"to": to}, timeout=5)
    except Exception:
        return None

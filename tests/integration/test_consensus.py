"""Consensus between real agent processes: signed 2/3-majority votes and PBFT, with liars.

The fleet of this module runs as users run it (``robeing agent --app …``):

* ``cv-1`` … ``cv-4`` vote with the default policy (approve); ``cv-5`` … ``cv-7``
  follow a script in the proposal (``{"reject": [...], "abstain": [...],
  "sleep": {id: s}}``, :mod:`apps.voting_app`);
* ``cv-byz`` is Byzantine (:mod:`apps.byzantine_app`): it votes twice, changes
  its vote, forges a vote in another's name, and its PBFT replica equivocates,
  forges and sends garbage; ``cv-out`` is the same app but never a participant;
* ``cv-guard`` is a guardian, which records verified equivocation evidence;
* PBFT group ``cv-g4`` is ``cv-1, cv-2, cv-3, cv-byz`` (n = 4, f = 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from agentproc import AgentProcess, HeartbeatWatcher

from robeing.agents import Client, Settings
from robeing.agents.consensus import bft_commit, consensus_of, propose
from robeing.agents.keystore import Keystore
from robeing.protocol.errors import ConfigError
from robeing.protocol.pbft import GroupSpec, parse_groups
from robeing.protocol.voting import Choice, DecisionReason, Refusal, ed25519_verifier

pytestmark = pytest.mark.broker

DEFAULT = ["cv-1", "cv-2", "cv-3", "cv-4"]
SCRIPTED = ["cv-5", "cv-6", "cv-7"]
VOTERS = DEFAULT + SCRIPTED
BYZ, OUTSIDER, GUARD = "cv-byz", "cv-out", "cv-guard"
CORRECT_REPLICAS = ["cv-1", "cv-2", "cv-3"]
GROUPS = f"cv-g4={','.join([*CORRECT_REPLICAS, BYZ])}"
BFT_ENV = {"ROBEING_BFT_GROUP": GROUPS, "ROBEING_BFT_TIMEOUT": "1.0"}


@pytest.fixture(scope="module")
async def fleet(
    amqp_url: str,
    keys_dir: Path,
    watcher: HeartbeatWatcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, AgentProcess]]:
    """The module's ten agent processes, started together."""
    log_dir = tmp_path_factory.mktemp("consensus-logs")
    plan = {
        **{a: ("worker", "apps.consensus_app") for a in DEFAULT},
        **{a: ("specialist", "apps.voting_app") for a in SCRIPTED},
        BYZ: ("worker", "apps.byzantine_app"),
        OUTSIDER: ("worker", "apps.byzantine_app"),
        GUARD: ("guardian", "apps.consensus_app"),
    }
    procs = {
        a: AgentProcess(amqp_url, keys_dir, role, a, ["--app", app], log_dir, BFT_ENV)
        for a, (role, app) in plan.items()
    }
    try:
        for proc in procs.values():
            await proc.start()
        await asyncio.gather(
            *(watcher.wait_alive(a, timeout=40, process=p) for a, p in procs.items())
        )
        yield procs
    finally:
        for proc in procs.values():
            proc.kill_sync()


@pytest.fixture(scope="module")
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    settings = Settings(role="client", agent_id="cv-client", amqp_url=amqp_url, keys_dir=keys_dir)
    async with Client(settings) as c:
        yield c


async def report(client: Client, agent_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = await client.request(agent_id, "consensus.report", None, timeout=10)
    return answer


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


RunCli = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def run_cli(amqp_url: str, keys_dir: Path) -> RunCli:
    """Factory: ``robeing <args>`` as a subprocess."""

    async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        full = {**os.environ, "AMQP_URL": amqp_url, "ROBEING_KEYS": str(keys_dir), **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "robeing.agents", *args, env=full,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    return run


# -- voting ------------------------------------------------------------------------


async def test_seven_agents_approve_by_default_and_every_agent_records_the_outcome(
    fleet: dict[str, AgentProcess], client: Client, keys_dir: Path
) -> None:
    """Given seven voters (four without any policy), when a client proposes to them,
    expect an approval decided as soon as 5 of 7 (the 2/3 threshold) approved, every
    counted vote signed by its voter's certified key, and every agent, participant or
    not, holding the announced outcome and finding it consistent with its votes."""
    decision = await propose(client, {"action": "scale", "to": 3}, VOTERS, deadline=10)

    assert decision.approved
    assert decision.reason is DecisionReason.THRESHOLD_REACHED
    assert len(decision.votes) >= 5 and decision.approval_rate >= Fraction(5, 7)
    assert all(v.choice is Choice.APPROVE and v.voter in VOTERS for v in decision.votes)
    keys = {c.agent_id: c.verify_key for c in Keystore(keys_dir).list_agents()}
    assert all(ed25519_verifier(keys)(v) for v in decision.votes)

    async def recorded_everywhere() -> bool:
        reports = [await report(client, a) for a in [*VOTERS, GUARD]]
        found = [r["outcomes"].get(decision.proposal_id) for r in reports]
        return all(o is not None and o["approved"] and o["verified"] for o in found)

    await eventually(recorded_everywhere)
    assert (await report(client, "cv-1"))["policy"] == "approve_all"


async def test_without_participants_every_live_agent_is_asked(
    fleet: dict[str, AgentProcess], client: Client
) -> None:
    """Given no participant list, expect the proposal to go to the agents seen
    heartbeating (all ten of the fleet), and to pass."""
    decision = await propose(client, "default participants", deadline=10, listen=1.5)
    consensus = consensus_of(client.agent)
    assert consensus is not None
    proposal = consensus.voting.proposal(decision.proposal_id)
    assert proposal is not None
    assert set(fleet) <= proposal.participants
    assert decision.approved


@pytest.mark.parametrize(
    ("script", "threshold", "approvals", "approved"),
    [
        ({}, "2/3", 7, True),
        ({"reject": ["cv-6", "cv-7"]}, "2/3", 5, True),  # 5 * 3 = 15 >= 2 * 7
        ({"reject": ["cv-5", "cv-6", "cv-7"]}, "2/3", 4, False),  # 4 * 3 = 12 < 14
        ({"reject": ["cv-6", "cv-7"]}, "3/4", 5, False),  # 5 * 4 = 20 < 3 * 7
        ({"abstain": ["cv-5", "cv-6"], "reject": ["cv-7"]}, "2/3", 4, False),
    ],
)
async def test_the_threshold_is_exact_over_all_participants(
    fleet: dict[str, AgentProcess],
    client: Client,
    script: dict[str, Any],
    threshold: str,
    approvals: int,
    approved: bool,
) -> None:
    """Given seven participants of which only ``approvals`` approve, expect the
    proposal approved exactly when approvals * den >= num * 7 (integers, no floats),
    decided as soon as the outcome cannot change; abstentions count as not approving."""
    decision = await propose(client, script, VOTERS, threshold=threshold, deadline=10)

    assert decision.approved is approved
    counted = sum(v.choice is Choice.APPROVE for v in decision.votes)
    t = Fraction(threshold)
    assert (counted * t.denominator >= t.numerator * 7) is approved
    if approved:  # decided the moment approvals reach the threshold
        required = -(-t.numerator * 7 // t.denominator)
        assert decision.approval_rate == Fraction(required, 7) <= Fraction(approvals, 7)
    else:
        assert decision.reason is DecisionReason.THRESHOLD_UNREACHABLE
        assert decision.approval_rate <= Fraction(approvals, 7)


async def test_forged_duplicate_outsider_and_late_votes_are_refused_and_counted(
    fleet: dict[str, AgentProcess], client: Client
) -> None:
    """Given participants cv-1..cv-4, the Byzantine cv-byz and cv-7 (which takes 4 s
    to vote), unanimity required and a 2.5 s deadline, expect the decision at the
    deadline from the first vote of each participant; cv-byz's repeated vote
    refused as duplicate, its changed vote as equivocation (evidence that reaches
    the guardian), its vote forged in cv-1's name as bad signature, cv-out's vote
    as not from a participant, and cv-7's vote, arriving after the deadline, as late."""
    consensus = consensus_of(client.agent) or pytest.fail("no consensus state")
    late_before = consensus.voting.refused[Refusal.LATE.value]
    participants = [*DEFAULT, "cv-7", BYZ]

    decision = await propose(client, {"sleep": {"cv-7": 4.0}}, participants, 1, deadline=2.5)

    assert not decision.approved
    assert decision.reason is DecisionReason.DEADLINE
    assert {v.voter: v.choice for v in decision.votes} == dict.fromkeys(
        [*DEFAULT, BYZ], Choice.APPROVE
    )
    assert decision.refusals == {
        Refusal.DUPLICATE: 1,
        Refusal.EQUIVOCATION: 1,
        Refusal.BAD_SIGNATURE: 1,
        Refusal.NOT_PARTICIPANT: 1,
    }

    async def late_counted() -> bool:
        return consensus.voting.refused[Refusal.LATE.value] == late_before + 1

    await eventually(late_counted, timeout=5)

    async def guardian_has_evidence() -> bool:
        records = (await report(client, GUARD))["evidence_records"]
        return any(
            r["offender"] == BYZ and r["domain"] == "robeing.vote.v1"
            and r["slot"] == [decision.proposal_id]
            for r in records
        )  # fmt: skip

    await eventually(guardian_has_evidence)


async def test_propose_command_exits_0_when_approved_and_1_when_rejected(
    fleet: dict[str, AgentProcess], run_cli: RunCli
) -> None:
    """Given the voters, expect ``robeing propose --json`` to print the decision with
    its signed votes and to exit 0 for 5/7 approvals and 1 for 4/7 (threshold 2/3)."""
    voters = ",".join(VOTERS)
    code, out, err = await run_cli(
        "propose", "--as", "cv-cli", "--participants", voters, "--json",
        "--payload", json.dumps({"reject": ["cv-6", "cv-7"]}),
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["approved"] and data["approval_rate"] == "5/7" and data["required"] == 5
    assert len(data["votes"]) >= 5 and all(len(v["signature"]) == 128 for v in data["votes"])

    code, out, err = await run_cli(
        "propose", "--as", "cv-cli", "--participants", voters, "--threshold", "2/3",
        "--payload", json.dumps({"reject": ["cv-5", "cv-6", "cv-7"]}),
    )  # fmt: skip
    assert code == 1, err
    assert out.startswith("REJECTED")


# -- PBFT ------------------------------------------------------------------------------


async def bft_logs(client: Client, members: list[str], group: str) -> dict[str, dict[str, Any]]:
    return {m: await client.request(m, "pbft.log", {"g": group}, timeout=10) for m in members}


async def test_pbft_with_a_byzantine_replica_commits_the_same_values_everywhere(
    fleet: dict[str, AgentProcess], client: Client
) -> None:
    """Given group cv-g4 (n = 4, f = 1) whose member cv-byz equivocates, forges and
    sends garbage, when a client commits five values, expect each confirmed by at
    least f + 1 = 2 members, the three correct replicas holding identical decided
    logs and state digests, cv-byz's messages refused, and its equivocation
    recorded as evidence by the correct replicas and the guardian."""
    spec = parse_groups(GROUPS)[0]
    values = [{"decision": i, "leader": f"cv-{i % 3 + 1}"} for i in range(5)]

    results = [await bft_commit(client, spec, v, timeout=20) for v in values]

    assert [r.value for r in results] == values
    assert all(len(r.replicas) >= spec.f + 1 for r in results)
    assert [r.seq for r in results] == sorted({r.seq for r in results})

    async def caught_up() -> bool:
        logs = await bft_logs(client, CORRECT_REPLICAS, spec.name)
        return all(log["last_executed"] >= results[-1].seq for log in logs.values())

    await eventually(caught_up)
    logs = await bft_logs(client, CORRECT_REPLICAS, spec.name)
    last = min(log["last_executed"] for log in logs.values())
    decided = {m: [e for e in log["log"] if e[0] <= last] for m, log in logs.items()}
    assert decided["cv-1"] == decided["cv-2"] == decided["cv-3"]
    committed = {e[0]: e[5] for e in decided["cv-1"] if e[6]}
    assert [committed[r.seq] for r in results] == values
    if len({log["last_executed"] for log in logs.values()}) == 1:
        assert len({log["state_digest"] for log in logs.values()}) == 1
    for log in logs.values():
        assert log["refused"].get("signature", 0) > 0  # forged in another member's name
        assert log["refused"].get("malformed", 0) > 0  # garbage

    async def evidence_everywhere() -> bool:
        for agent_id in [*CORRECT_REPLICAS, GUARD]:
            records = (await report(client, agent_id))["evidence_records"]
            if not any(r["offender"] == BYZ and r["domain"] == "robeing.pbft.v1" for r in records):
                return False
        return True

    await eventually(evidence_everywhere)


async def test_bft_commands_commit_and_show_agreeing_logs(
    fleet: dict[str, AgentProcess], run_cli: RunCli
) -> None:
    """Given the group in ROBEING_BFT_GROUP, expect ``robeing propose --bft`` to commit
    a cluster-wide decision value and ``robeing bft log`` to show it at the same
    sequence number on every correct replica."""
    code, out, err = await run_cli(
        "propose", "--bft", "--as", "cv-cli", "--json", "--payload", '{"leader": "cv-2"}',
        env={"ROBEING_BFT_GROUP": GROUPS},
    )  # fmt: skip
    assert code == 0, err
    committed = json.loads(out)
    assert committed["group"] == "cv-g4" and committed["value"] == {"leader": "cv-2"}
    assert len(committed["replicas"]) >= 2

    code, out, err = await run_cli(
        "bft", "log", "--as", "cv-cli", "--json", "--entries", "50",
        env={"ROBEING_BFT_GROUP": GROUPS},
    )  # fmt: skip
    assert code == 0, err
    logs = json.loads(out)
    for member in CORRECT_REPLICAS:
        entries = {e[0]: e for e in logs[member]["log"]}
        assert entries[committed["seq"]][5] == {"leader": "cv-2"}
        assert entries[committed["seq"]][2] == committed["digest"]


async def test_groups_with_fewer_than_3f_plus_1_members_are_refused(
    amqp_url: str, keys_dir: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    """Expect n < 3f + 1 refused with one clear line: by the API, by the commands
    (exit 2), and by an agent asked to host such a group (it does not start)."""
    with pytest.raises(ConfigError, match=r"n=3 members.*n >= 3f \+ 1 = 4"):
        GroupSpec.build("g", ["a", "b", "c"], f=1)
    with pytest.raises(ConfigError, match=r"n >= 3f \+ 1 = 4"):
        GroupSpec.build("g", ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"n=6 .* f=2 .* n >= 3f \+ 1 = 7"):
        parse_groups("g=a,b,c,d,e,f/2")

    code, _, err = await run_cli("propose", "--bft", "--group", "bad=a,b,c/1", "--payload", "1")
    assert code == 2
    assert err.strip().splitlines() == [
        "robeing: error: BFT group 'bad' has n=3 members, but tolerating f=1 Byzantine "
        "agents needs n >= 3f + 1 = 4"
    ]

    env = {"ROBEING_BFT_GROUP": "bad=cv-bad,x,y/1"}
    proc = AgentProcess(
        amqp_url, keys_dir, "worker", "cv-bad", ["--app", "apps.consensus_app"], tmp_path, env
    )
    await proc.start()
    try:
        assert await proc.wait(30) == 2
        assert "n >= 3f + 1 = 4" in proc.log()
        assert "Traceback" not in proc.log()
    finally:
        proc.kill_sync()


async def test_killing_the_primary_changes_the_view_and_requests_still_commit(
    spawn: Any, client: Client
) -> None:
    """Given a healthy group of four with a 1 s view-change timeout, when its primary
    is killed (SIGKILL), expect the next request to commit in a later view with a
    new primary within a few timeouts, the following one at normal speed, and the
    surviving replicas to agree."""
    members = ["vc-1", "vc-2", "vc-3", "vc-4"]
    spec = GroupSpec.build("vc-g", members, view_change_timeout=1.0)
    env = {"ROBEING_BFT_GROUP": str(spec), "ROBEING_BFT_TIMEOUT": "1.0"}
    procs = await asyncio.gather(
        *(spawn("worker", m, "--app", "apps.consensus_app", env=env) for m in members)
    )
    before = await bft_commit(client, spec, "before", timeout=20)

    procs[0].signal(signal.SIGKILL)
    killed = time.monotonic()
    after = await bft_commit(client, spec, "after", timeout=30, retry=0.5)
    recovery = time.monotonic() - killed
    later = await bft_commit(client, spec, "later", timeout=10)

    assert before.seq < after.seq < later.seq
    assert "vc-1" not in after.replicas
    assert recovery < 10, f"committed {recovery:.2f}s after the primary died"
    assert later.latency_s < 2
    logs = await bft_logs(client, members[1:], spec.name)
    assert all(log["view"] >= 1 and log["primary"] != "vc-1" for log in logs.values())
    changes = [c for log in logs.values() for c in log["view_changes"] if c["seconds"] is not None]
    assert changes and all(c["seconds"] < 5 for c in changes)
    last = min(log["last_executed"] for log in logs.values())
    decided = [[e for e in log["log"] if e[0] <= last] for log in logs.values()]
    assert decided[0] == decided[1] == decided[2]
    print(
        f"\nview change: commit {recovery:.2f}s after SIGKILL of the primary "
        f"(timeout 1.0s); replicas took {max(c['seconds'] for c in changes) * 1000:.1f} ms "
        "from the first view-change message to the new view"
    )


async def test_a_replica_that_missed_checkpoints_catches_up_by_state_transfer(
    spawn: Any, client: Client
) -> None:
    """Given a group of four checkpointing every 2 requests, when one backup is
    paused, misses 8 commits (its inbox purged: the messages are gone) and
    resumes, expect it to fetch the decided entries from a peer, verified against
    the quorum-signed checkpoint, and then to hold the same log as the others."""
    members = ["st-1", "st-2", "st-3", "st-4"]
    spec = GroupSpec.build("st-g", members, checkpoint_interval=2)
    env = {"ROBEING_BFT_GROUP": str(spec), "ROBEING_BFT_CHECKPOINT": "2"}
    procs = await asyncio.gather(
        *(spawn("worker", m, "--app", "apps.consensus_app", env=env) for m in members)
    )
    await bft_commit(client, spec, "first", timeout=20)
    procs[3].signal(signal.SIGSTOP)
    try:
        missed = [await bft_commit(client, spec, f"missed-{i}", timeout=20) for i in range(8)]
        await client.agent.broker.purge("robeing.agent.st-4")
    finally:
        procs[3].signal(signal.SIGCONT)

    async def caught_up() -> bool:
        logs = await bft_logs(client, members, spec.name)
        return len({(log["last_executed"], log["state_digest"]) for log in logs.values()}) == 1

    await eventually(caught_up, timeout=20)
    last = await bft_commit(client, spec, "after", timeout=20)
    logs = await bft_logs(client, members, spec.name)
    values = {e[0]: e[5] for e in logs["st-4"]["log"] if e[6]}
    assert [values[r.seq] for r in [*missed, last]] == [*(f"missed-{i}" for i in range(8)), "after"]
    assert logs["st-4"]["log"] == logs["st-1"]["log"]

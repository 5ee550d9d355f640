"""Chunked transfers with real processes: 200 MiB through `robeing send --file`, in
bounded memory; an altered or a missing chunk fails the transfer cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robeing.agents import Client, Settings
from robeing.protocol.errors import RobeingError

pytestmark = pytest.mark.broker

SIZE = 200 << 20
MEMORY_BOUND_MIB = 160  # a Python agent idles at about 60-70 MiB; 200 MiB must not show up

# Runs the CLI and prints its peak resident memory (KiB) on the last line of stderr.
MEASURED_CLI = (
    "import resource, sys\n"
    "from robeing.agents.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "payload.bin"
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(SIZE >> 20):
            chunk = block[i:] + block[:i]  # every MiB differs
            digest.update(chunk)
            fh.write(chunk)
    return path, digest.hexdigest()


@pytest.fixture
async def client(amqp_url: str, keys_dir: Path) -> AsyncIterator[Client]:
    async with Client(Settings(role="client", amqp_url=amqp_url, keys_dir=keys_dir)) as c:
        yield c


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_200_mib_through_robeing_send_in_bounded_memory(
    spawn, amqp_url: str, keys_dir: Path, tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """Given a 200 MiB file, When `robeing send --file` sends it to a worker, Expect the
    worker's handler to get it with the same SHA-256, and the peak memory of both the
    sending CLI and the receiving agent far below the payload's size."""
    path, sha = big_file
    out = tmp_path / "out"
    out.mkdir()
    receiver = await spawn(
        "worker", f"tx-{os.getpid()}", "--app", "apps.transfer_app", env={"SAMPLE_OUT": str(out)}
    )
    env = {**os.environ, "AMQP_URL": amqp_url, "ROBEING_KEYS": str(keys_dir)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_CLI, "send", "--to", receiver.agent_id,
         "--type", "blob", "--file", str(path), "--json", "--timeout", "60"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    sent = json.loads(done.stdout)
    sender_mib = int(done.stderr.strip().splitlines()[-1]) / 1024
    receiver_mib = peak_rss_mib(receiver.pid)
    print(
        f"\n200 MiB transfer: {sent['seconds']} s in the CLI ({sent['mib_per_s']} MiB/s), "
        f"{seconds:.1f} s with start-up; peak RSS sender {sender_mib:.0f} MiB, "
        f"receiver {receiver_mib:.0f} MiB"
    )
    assert sent["transfer"]["sha256"] == sha
    record = json.loads((out / f"{receiver.agent_id}.blobs").read_text().splitlines()[-1])
    assert record["sha256"] == sha and record["size"] == SIZE and record["from"].startswith("cli-")
    assert sender_mib < MEMORY_BOUND_MIB and receiver_mib < MEMORY_BOUND_MIB


async def test_an_altered_chunk_fails_200_mib_cleanly(
    spawn, client: Client, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    """Given a sender whose chunk 123 is altered before it is signed (so its signature is
    valid), Expect the receiver to find the digest wrong, keep nothing, say so, and take
    the next intact transfer."""
    path, _ = big_file
    receiver = await spawn("worker", f"tx-alt-{os.getpid()}", "--app", "apps.transfer_app")

    def corrupt(index: int, data: bytes) -> bytes:
        return data if index != 123 else bytes([data[0] ^ 1]) + data[1:]

    with pytest.raises(RobeingError, match="altered"):
        await client.send_file(receiver.agent_id, "blob", path, corrupt=corrupt)
    spool = Path(receiver.env["ROBEING_KEYS"]).parent / "state" / f"{receiver.agent_id}.transfers"
    assert not any(spool.iterdir())
    assert peak_rss_mib(receiver.pid) < MEMORY_BOUND_MIB


async def test_a_missing_chunk_fails_the_transfer_with_the_missing_indexes(
    spawn, client: Client, tmp_path: Path
) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(3 << 20))
    receiver = await spawn("worker", f"tx-miss-{os.getpid()}")
    with pytest.raises(RobeingError, match=r"1 of 6 chunks missing \(first: \[2\]\)"):
        await client.send_file(receiver.agent_id, "blob", small, skip=frozenset({2}))


async def test_a_task_carries_200_mib_through_a_messenger_in_bounded_memory(
    spawn, watcher, client: Client, big_file: tuple[Path, str]
) -> None:
    """Given a 200 MiB input put on a messenger, When a task naming it runs on a worker,
    Expect the worker to fetch it (checked by digest) and compute its SHA-256, with the
    peak memory of the worker and the messenger far below the input's size."""
    path, sha = big_file
    tag = os.getpid()
    coord = await spawn("coordinator", f"bc-{tag}", "--app", "apps.roles_app",
                        "--acceptable-pause", "0.5", "--dead-after", "0.5")  # fmt: skip
    await watcher.wait_coordinator(f"bc-{tag}")
    try:
        holder = await spawn("messenger", f"bm-{tag}")
        worker = await spawn("worker", f"bw-{tag}", "--app", "apps.roles_app",
                             "--specialization", "bulk")  # fmt: skip
        await asyncio.sleep(1.2)
        started = time.perf_counter()
        ref = await client.put_blob(holder.agent_id, path)
        put_s = time.perf_counter() - started
        assert ref == {"blob": sha, "size": SIZE, "holder": holder.agent_id}
        final = await (await client.submit("blobsum", {"blob": ref})).result(120)
        total_s = time.perf_counter() - started
        assert final.state == "succeeded", final
        assert final.result == {"size": SIZE, "sha256": sha, "by": worker.agent_id}
        worker_mib, holder_mib = peak_rss_mib(worker.pid), peak_rss_mib(holder.pid)
        print(
            f"\n200 MiB task input: put in {put_s:.1f} s, task done {total_s:.1f} s after the "
            f"put began; peak RSS worker {worker_mib:.0f} MiB, messenger {holder_mib:.0f} MiB"
        )
        assert worker_mib < MEMORY_BOUND_MIB and holder_mib < MEMORY_BOUND_MIB
    finally:
        await coord.terminate(20)

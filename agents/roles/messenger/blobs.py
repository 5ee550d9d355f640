"""Blobs: payloads of any size for tasks, held by a messenger, fetched by whoever runs them.

A task's payload travels through the coordinator's durable queue, so it must
fit in a message. A larger input is put on a messenger first (a chunked
transfer, :mod:`.transfer`) and the task carries a *reference* to it::

    {"blob": "<sha256>", "size": N, "holder": "<messenger id>"}

(``Client.put_blob``, ``robeing submit TYPE --file PATH --holder MESSENGER``).
The agent that runs the task calls :func:`fetch_blob` with the reference:
it asks the holder (``blob.fetch``), which sends the file back as a chunked
transfer of type ``blob.fetched``; the digest checked on arrival is the
blob's name, so what the task reads is what was put. Memory stays bounded
on every side; the spool files are on disk.

The messenger keeps each blob (``Settings.state_file("blobs")``, named by
digest) for ``BLOB_TTL`` seconds after it was last put or fetched, and at
most ``MAX_BLOBS``; only the identity that put a blob, or an agent that may
run tasks, fetches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from ....protocol.errors import Reject
from ...context import AgentContext, Message
from .transfer import send_file

log = logging.getLogger(__name__)

BLOB_TTL = 24 * 3600.0
MAX_BLOBS = 1000
FETCH_TIMEOUT_MIN = 60.0
FETCH_BYTES_PER_S = 5 << 20  # the slowest transfer rate a fetch waits for


class BlobStore:
    """A messenger's blobs on disk, by digest."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.dir: Path = agent.settings.state_file("blobs")
        self.owners: dict[str, tuple[str, float]] = {}  # digest -> (who put it, last used)
        self._sending: set[asyncio.Task[Any]] = set()

    def on_store(self, msg: Message) -> dict[str, Any]:
        """The local delivery of a finished ``blob.store`` transfer: keep the file."""
        if msg.sender != self.agent.id:
            raise Reject("blob.store is what a transfer delivers; send the file instead")
        info = msg.payload
        digest, spooled = str(info["sha256"]), Path(info["file"])
        self._expire()
        if len(self.owners) >= MAX_BLOBS:
            spooled.unlink(missing_ok=True)
            raise Reject(f"{MAX_BLOBS} blobs held already")
        self.dir.mkdir(parents=True, exist_ok=True)
        spooled.replace(self.dir / digest)
        self.owners[digest] = (str(info["from"]), time.time())
        return {"blob": digest, "size": info["size"], "holder": self.agent.id}

    async def on_fetch(self, msg: Message) -> dict[str, Any]:
        """``blob.fetch``: ``{"blob": digest}`` — send it back as a ``blob.fetched`` transfer.

        Raises:
            Reject: no such blob, or the asker may not have it.
        """
        digest = msg.payload.get("blob") if isinstance(msg.payload, dict) else None
        for _ in range(50):  # a blob put a moment ago may still be on its way to the store
            if str(digest) in self.owners:
                break
            await asyncio.sleep(0.1)
        entry = self.owners.get(str(digest))
        path = self.dir / str(digest)
        if entry is None or not path.exists():
            raise Reject(f"no blob {str(digest)[:16]}… held here")
        if msg.sender != entry[0] and msg.sender_role not in ("worker", "specialist", "messenger"):
            raise Reject("only who put a blob, or an agent that runs tasks, may fetch it")
        self.owners[str(digest)] = (entry[0], time.time())
        task = asyncio.create_task(send_file(self.agent, msg.sender, "blob.fetched", path))
        self._sending.add(task)
        task.add_done_callback(self._sent)
        return {"blob": digest, "size": path.stat().st_size}

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("sending a blob failed: %s", task.exception())

    def _expire(self) -> None:
        now = time.time()
        for digest, (_, used) in list(self.owners.items()):
            if now - used > BLOB_TTL:
                del self.owners[digest]
                (self.dir / digest).unlink(missing_ok=True)


class BlobWaiters:
    """Every agent's side: the fetches it waits for, by digest."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[str]] = {}

    def on_fetched(self, msg: Message) -> None:
        """The local delivery of a ``blob.fetched`` transfer: wake whoever waits for it."""
        if msg.sender != msg.agent.id:
            raise Reject("blob.fetched is what a transfer delivers")
        fut = self.waiting.get(str(msg.payload.get("sha256")))
        if fut is not None and not fut.done():
            fut.set_result(str(msg.payload["file"]))
        else:
            Path(msg.payload["file"]).unlink(missing_ok=True)  # nobody waits: drop it


# Agent id -> its waiters: fetch_blob is called with a task's context, which has
# no slot for role state; one agent of an id runs per process.
WAITERS: dict[str, BlobWaiters] = {}


async def fetch_blob(agent: AgentContext, ref: Any) -> Path:
    """The local path of the blob ``ref`` names, fetched from its holder (checked by digest).

    Delete the file when done with it.

    Raises:
        Reject: ``ref`` is not a blob reference, or the holder refused.
        TimeoutError: the transfer did not arrive in time.
    """
    if not isinstance(ref, dict) or not all(k in ref for k in ("blob", "size", "holder")):
        raise Reject("a blob reference is {'blob': sha256, 'size': n, 'holder': messenger}")
    waiters = WAITERS[agent.id]
    digest = str(ref["blob"])
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    waiters.waiting[digest] = fut
    try:
        await agent.request(str(ref["holder"]), "blob.fetch", {"blob": digest}, timeout=30)
        wait = max(FETCH_TIMEOUT_MIN, int(ref["size"]) / FETCH_BYTES_PER_S)
        return Path(await asyncio.wait_for(fut, wait))
    finally:
        with contextlib.suppress(KeyError):
            del waiters.waiting[digest]


def accept_blobs(agent: AgentContext) -> BlobWaiters:
    """Let ``agent`` fetch blobs for its tasks (every agent that takes work)."""
    waiters = WAITERS.setdefault(agent.id, BlobWaiters())
    agent.handle("blob.fetched", waiters.on_fetched)
    return waiters


def hold_blobs(agent: AgentContext) -> BlobStore:
    """Give a messenger its blob store."""
    store = BlobStore(agent)
    agent.handle("blob.store", store.on_store)
    agent.handle("blob.fetch", store.on_fetch)
    return store

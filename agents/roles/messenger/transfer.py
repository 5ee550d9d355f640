"""Chunked transfers between agents: sending a file of any size, receiving it on disk.

Straight from sender to receiver (no hop through a messenger: a transfer is
already end-to-end signed, encrypted and checked, and one hop fewer is one
copy of 200 MiB fewer through the broker). See
:mod:`robeing.protocol.transfer` for the messages.

Memory is bounded by the window, not the payload: the sender reads one chunk
at a time and waits for the receiver's ACK of every ``window``-th chunk, so
at most ``window`` chunks wait in the broker; the receiver writes each chunk
at its offset in a spool file and hashes the file in blocks at the end.

When every chunk arrived and the digest matches, the receiver sends itself a
message of the transfer's type whose payload describes the file
(``{"file", "size", "sha256", "name", "from", "transfer"}``; ``from`` is the
verified sender), so the app's handler for that type gets it through the one
inbound path, then answers the sender's ``transfer.end``. A missing chunk
(nothing for ``idle_timeout`` seconds) or a digest mismatch fails the
transfer: the spool file is deleted and the sender's ``transfer.end`` gets
the error (:class:`~robeing.protocol.transfer.TransferFailed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ....protocol.envelope import new_id
from ....protocol.errors import DecodeError, Reject
from ....protocol.transfer import (
    DEFAULT_CHUNK,
    Begin,
    Chunk,
    End,
    Reassembly,
    TransferFailed,
    chunks_for,
)
from ...context import AgentContext, Message

log = logging.getLogger(__name__)

WINDOW = 8
MAX_TRANSFERS = 16
MAX_SIZE = 4 << 30
IDLE_TIMEOUT = 10.0  # seconds without a chunk before a transfer with chunks missing fails
HASH_BLOCK = 1 << 20


async def send_file(
    agent: AgentContext,
    receiver: str,
    message_type: str,
    path: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    window: int = WINDOW,
    timeout: float = 60.0,
    corrupt: Callable[[int, bytes], bytes] | None = None,
    skip: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Send the file at ``path`` to ``receiver`` for its ``message_type`` handler.

    Args:
        chunk_size: bytes per chunk (at most ``MAX_CHUNK``).
        window: chunks in flight before waiting for the receiver.
        timeout: seconds to wait for each windowed ACK and for the final one.
        corrupt, skip: test hooks — alter a chunk's bytes before it is
            signed, or leave chunks out (the receiver must refuse both).

    Returns:
        The receiver's answer: ``{"transfer", "size", "sha256", "file"}``.

    Raises:
        RobeingError: the receiver refused the transfer (rebuilt from its answer).
        AckTimeout: the receiver did not answer in time.
    """
    size = (await asyncio.to_thread(path.stat)).st_size
    begin = Begin(new_id(), size, chunk_size, chunks_for(size, chunk_size), message_type, path.name)
    await agent.request(receiver, "transfer.begin", begin.to_data(), timeout=timeout)
    digest = hashlib.sha256()
    fh: BinaryIO = await asyncio.to_thread(path.open, "rb")
    with fh:
        for index in range(begin.chunks):
            data = await asyncio.to_thread(fh.read, chunk_size)
            digest.update(data)
            if index in skip:
                continue
            if corrupt is not None:
                data = corrupt(index, data)
            chunk = Chunk(begin.id, index, data).to_data()
            if (index + 1) % window == 0:
                await agent.request(receiver, "transfer.chunk", chunk, timeout=timeout)
            else:
                await agent.send(receiver, "transfer.chunk", chunk, persistent=False)
    end = End(begin.id, digest.hexdigest())
    result: dict[str, Any] = await agent.request(
        receiver, "transfer.end", end.to_data(), timeout=timeout + IDLE_TIMEOUT
    )
    return result


class Receiver:
    """Reassembles the transfers sent to one agent, on disk."""

    def __init__(self, agent: AgentContext, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.agent = agent
        self.spool = agent.settings.state_file("transfers")
        self.idle_timeout = idle_timeout
        self.active: dict[str, Reassembly] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self.completed = 0
        self.failed = 0

    def _path(self, transfer_id: str) -> Path:
        return self.spool / transfer_id

    def on_begin(self, msg: Message) -> dict[str, Any]:
        """Raises: Reject: too large, too many at once, or a malformed begin."""
        try:
            begin = Begin.from_data(msg.payload)
        except DecodeError as exc:
            raise Reject(f"bad transfer.begin: {exc}") from exc
        self._expire()
        if begin.size > MAX_SIZE:
            raise Reject(f"transfer of {begin.size} bytes exceeds the {MAX_SIZE} accepted")
        if len(self.active) >= MAX_TRANSFERS and begin.id not in self.active:
            raise Reject(f"{MAX_TRANSFERS} transfers in progress; try again later")
        if begin.id not in self.active:
            try:
                self.spool.mkdir(parents=True, exist_ok=True)
                with self._path(begin.id).open("wb") as fh:
                    fh.truncate(begin.size)
            except OSError as exc:
                raise Reject(f"cannot spool a transfer in {self.spool}: {exc}") from exc
            now = self.agent.clock()
            self.active[begin.id] = Reassembly(begin, msg.sender, now, now)
            self._arrived[begin.id] = asyncio.Event()
        return {"transfer": begin.id, "chunks": begin.chunks}

    def on_chunk(self, msg: Message) -> bool:
        """Raises: Reject: a chunk of an unknown transfer, or one that does not fit it."""
        try:
            chunk = Chunk.from_data(msg.payload)
            state = self.active.get(chunk.id)
            if state is None:
                raise Reject(f"no transfer {chunk.id!r} in progress (expired or never begun)")
            if not state.accept(chunk, msg.sender, self.agent.clock()):
                return False
        except DecodeError as exc:
            raise Reject(f"bad transfer.chunk: {exc}") from exc
        fd = os.open(self._path(chunk.id), os.O_WRONLY)
        try:
            os.pwrite(fd, chunk.data, state.offset(chunk.index))
        finally:
            os.close(fd)
        self._arrived[chunk.id].set()
        return True

    async def on_end(self, msg: Message) -> dict[str, Any]:
        """Wait for the last chunks, check the digest, hand the file on.

        Raises:
            TransferFailed: chunks missing after ``idle_timeout``, or the digest differs.
        """
        try:
            end = End.from_data(msg.payload)
        except DecodeError as exc:
            raise Reject(f"bad transfer.end: {exc}") from exc
        state = self.active.get(end.id)
        if state is None or state.sender != msg.sender:
            raise Reject(f"no transfer {end.id!r} of {msg.sender} in progress")
        arrived = self._arrived[end.id]
        while not state.complete:
            arrived.clear()
            # The sender sent every chunk before this: wait only while they keep coming.
            quiet = self.agent.clock() - state.last
            try:
                await asyncio.wait_for(arrived.wait(), max(0.0, self.idle_timeout - quiet))
            except TimeoutError:
                self._drop(end.id)
                raise TransferFailed(
                    f"transfer {end.id}: {state.begin.chunks - len(state.have)} of "
                    f"{state.begin.chunks} chunks missing (first: {state.missing()})"
                ) from None
        path = self._path(end.id)
        actual = await asyncio.to_thread(_sha256_of, path)
        if actual != end.sha256:
            self._drop(end.id)
            raise TransferFailed(
                f"transfer {end.id}: the reassembled {state.begin.size} bytes have SHA-256 "
                f"{actual[:16]}…, the sender's is {end.sha256[:16]}…: a chunk was altered"
            )
        del self.active[end.id], self._arrived[end.id]
        self.completed += 1
        info = {
            "file": str(path),
            "size": state.begin.size,
            "sha256": actual,
            "name": state.begin.name,
            "from": msg.sender,
            "transfer": end.id,
            "seconds": round(self.agent.clock() - state.started, 3),
        }
        await self.agent.send(self.agent.id, state.begin.type, info)
        return info

    def _drop(self, transfer_id: str) -> None:
        self.failed += 1
        self.active.pop(transfer_id, None)
        self._arrived.pop(transfer_id, None)
        self._path(transfer_id).unlink(missing_ok=True)

    def _expire(self) -> None:
        now = self.agent.clock()
        for transfer_id, state in list(self.active.items()):
            if now - state.last > 4 * self.idle_timeout:
                log.warning("transfer %s from %s abandoned", transfer_id, state.sender)
                self._drop(transfer_id)

    def report(self) -> dict[str, Any]:
        return {"active": len(self.active), "completed": self.completed, "failed": self.failed}


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def receive_transfers(agent: AgentContext) -> Receiver:
    """Let ``agent`` receive chunked transfers (every agent that takes work does)."""
    receiver = Receiver(agent)
    agent.handle("transfer.begin", receiver.on_begin)
    agent.handle("transfer.chunk", receiver.on_chunk)
    agent.handle("transfer.end", receiver.on_end)
    return receiver
